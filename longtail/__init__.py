"""Long-tail learning: logit adjustment (Menon et al., ICLR 2021) read as mutual information
(kexue.fm 2020-07-19), and class weighting vs focal / dice / logit-adjusted losses (kexue.fm 2020-08-31).
"""

from longtail.configs import CifarLTConfig, DigitsLTConfig, SyntheticConfig
from shared.lazy import lazy_exports

# every other name loads its module on first use (`kexue list` must not import jax)
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "methods": ("class_balanced_weights", "macro_smoothed_f1_loss", "make_loss", "switched_loss"),
    "metrics": (
        "accuracy", "balanced_error", "check_class_prior", "class_groups", "class_prior", "group_errors",
        "holdout_split", "per_class_error", "posthoc_balanced_error", "tune_posthoc_tau"
    ),
}, eager=("CifarLTConfig", "DigitsLTConfig", "SyntheticConfig"))
