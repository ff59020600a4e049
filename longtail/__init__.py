"""Long-tail learning: logit adjustment (Menon et al., ICLR 2021) read as mutual information
(kexue.fm 2020-07-19), and class weighting vs focal / dice / logit-adjusted losses (kexue.fm 2020-08-31).
"""

from longtail.configs import CifarLTConfig, DigitsLTConfig, SyntheticConfig
from longtail.methods import class_balanced_weights, macro_smoothed_f1_loss, make_loss, switched_loss
from longtail.metrics import (
    accuracy,
    balanced_error,
    check_class_prior,
    class_groups,
    class_prior,
    group_errors,
    holdout_split,
    per_class_error,
    posthoc_balanced_error,
    tune_posthoc_tau,
)

__all__ = [
    "SyntheticConfig",
    "DigitsLTConfig",
    "CifarLTConfig",
    "accuracy",
    "balanced_error",
    "per_class_error",
    "class_groups",
    "group_errors",
    "class_prior",
    "check_class_prior",
    "posthoc_balanced_error",
    "tune_posthoc_tau",
    "holdout_split",
    "make_loss",
    "switched_loss",
    "class_balanced_weights",
    "macro_smoothed_f1_loss",
]
