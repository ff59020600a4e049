"""Gradient vanishing and exploding in simple RNN, LSTM and GRU (kexue.fm 2020-11-13; Pascanu,
Mikolov & Bengio 2013), measured with autodiff and confirmed by training.
"""

from shared.lazy import lazy_exports

# every other name loads its module on first use (`kexue list` must not import jax)
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "cells": ("CELLS", "gru_gates", "init", "initial_state", "lstm_gates", "orthogonal", "run", "step"),
    "jacobians": (
        "fitted_log_rate", "gated_path_coefficients", "gru_jacobian", "input_grad_norms", "long_range_norms",
        "lstm_cell_jacobian", "lstm_state_jacobian", "naive_jacobian_norm", "predicted_log_rate_diag",
        "predicted_log_rate_gated", "predicted_log_rate_simple", "simple_rnn_jacobian"
    ),
}, eager=())
