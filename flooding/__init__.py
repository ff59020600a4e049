"""Flooding (Ishida et al., ICML 2020) and its reading as a gradient-norm penalty (kexue.fm 2020-07-31).
"""

from flooding.configs import CifarConfig, DerivationConfig, DigitsConfig, SyntheticConfig
from shared.lazy import lazy_exports

# every other name loads its module on first use (`kexue list` must not import jax)
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "datasets": ("flip_labels", "make_synthetic"),
    "derivation": (
        "approximation_errors", "check_derivation", "descent_ascent_displacement", "loglog_slope",
        "predicted_displacement"
    ),
    "digits": ("symmetric_noise", "train_family"),
    "synthetic": ("choose_level", "paper_mlp", "softmax_losses", "sweep"),
}, eager=("CifarConfig", "DerivationConfig", "DigitsConfig", "SyntheticConfig"))
