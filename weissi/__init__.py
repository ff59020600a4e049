"""WEISSI, weight-scale-shift-invariant regularisation (Liu et al. 2020), against L2, weight decay
and AdamW (kexue.fm 2020-08-14).
"""

from shared.lazy import lazy_exports
from weissi.configs import METHODS, CifarConfig, DigitsConfig, InvarianceConfig

# every other name loads its module on first use (`kexue list` must not import jax)
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "attacks": ("classifier_accuracy", "fgsm", "pgd"),
    "digits": ("method_parts", "train_method"),
    "invariance": (
        "init_relu_mlp", "l2_penalty", "mlp_layer_paths", "relu_mlp", "scale_shift", "shift_factors",
        "shift_layer_params"
    ),
}, eager=("METHODS", "CifarConfig", "DigitsConfig", "InvarianceConfig"))
