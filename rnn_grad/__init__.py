"""Gradient vanishing and exploding in simple RNN, LSTM and GRU (kexue.fm 2020-11-13; Pascanu,
Mikolov & Bengio 2013), measured with autodiff and confirmed by training.
"""

from rnn_grad.cells import CELLS, gru_gates, init, initial_state, lstm_gates, orthogonal, run, step
from rnn_grad.jacobians import (fitted_log_rate, gated_path_coefficients, gru_jacobian, input_grad_norms,
                                long_range_norms, lstm_cell_jacobian, lstm_state_jacobian, naive_jacobian_norm,
                                predicted_log_rate_diag, predicted_log_rate_gated, predicted_log_rate_simple,
                                simple_rnn_jacobian)

__all__ = ["CELLS", "init", "initial_state", "lstm_gates", "gru_gates", "orthogonal", "run", "step",
           "fitted_log_rate", "gated_path_coefficients", "gru_jacobian", "input_grad_norms", "long_range_norms",
           "lstm_cell_jacobian", "lstm_state_jacobian", "naive_jacobian_norm", "predicted_log_rate_diag",
           "predicted_log_rate_gated", "predicted_log_rate_simple", "simple_rnn_jacobian"]
