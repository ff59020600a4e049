"""Flooding (Ishida et al., ICML 2020) and its reading as a gradient-norm penalty (kexue.fm 2020-07-31).
"""

from flooding.configs import CifarConfig, DerivationConfig, DigitsConfig, SyntheticConfig
from flooding.datasets import flip_labels, make_synthetic
from flooding.derivation import (approximation_errors, check_derivation, descent_ascent_displacement, loglog_slope,
                                 predicted_displacement)
from flooding.digits import symmetric_noise, train_family
from flooding.synthetic import choose_level, paper_mlp, softmax_losses, sweep

__all__ = [
    "CifarConfig",
    "DerivationConfig",
    "DigitsConfig",
    "SyntheticConfig",
    "approximation_errors",
    "check_derivation",
    "choose_level",
    "descent_ascent_displacement",
    "flip_labels",
    "loglog_slope",
    "make_synthetic",
    "paper_mlp",
    "predicted_displacement",
    "softmax_losses",
    "sweep",
    "symmetric_noise",
    "train_family",
]
