"""WEISSI, weight-scale-shift-invariant regularisation (Liu et al. 2020), against L2, weight decay
and AdamW (kexue.fm 2020-08-14).
"""

from weissi.attacks import accuracy, fgsm, pgd
from weissi.configs import METHODS, CifarConfig, DigitsConfig, InvarianceConfig
from weissi.digits import method_parts, train_method
from weissi.invariance import (init_relu_mlp, l2_penalty, mlp_layer_paths, relu_mlp, scale_shift, shift_factors,
                               shift_layer_params)

__all__ = [
    "METHODS",
    "CifarConfig",
    "DigitsConfig",
    "InvarianceConfig",
    "accuracy",
    "fgsm",
    "init_relu_mlp",
    "l2_penalty",
    "method_parts",
    "mlp_layer_paths",
    "pgd",
    "relu_mlp",
    "scale_shift",
    "shift_factors",
    "shift_layer_params",
    "train_method",
]
