"""The experiments `kexue` can run for `rnn_grad`.

Only configs are imported here; each run function imports its (heavier) module when called.
"""

from rnn_grad import configs
from shared.experiment import Experiment, lazy_run

EXPERIMENTS: dict[str, Experiment] = {
    "jacobians": Experiment(
        "rnn_grad.jacobians", lazy_run("rnn_grad.sweep:run"),
        {"quick": configs.JACOBIANS_QUICK, "full": configs.JACOBIANS_FULL},
        "‖∂h_T/∂h_t‖ vs lag for simple RNN / LSTM / GRU: fitted vs mean-field log-rates (Pascanu et al. 2013)"),
    "adding": Experiment(
        "rnn_grad.adding", lazy_run("rnn_grad.adding:run"),
        {"quick": configs.ADDING_QUICK, "full": configs.ADDING_FULL},
        "adding problem and copy memory: simple RNN / LSTM / GRU with and without gradient clipping"),
}
