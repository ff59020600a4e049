"""The experiments `kexue` can run for `rnn_grad`.

Only configs are imported here; each run function imports its (heavier) module when called.
"""

from rnn_grad import configs
from shared.experiment import Experiment


def run_jacobians(config, ctx):
    from rnn_grad import sweep

    return sweep.run(config, ctx)


def run_adding(config, ctx):
    from rnn_grad import adding

    return adding.run(config, ctx)


EXPERIMENTS: dict[str, Experiment] = {
    "jacobians": Experiment(
        "rnn_grad.jacobians", run_jacobians,
        {"quick": configs.JACOBIANS_QUICK, "full": configs.JACOBIANS_FULL},
        "‖∂h_T/∂h_t‖ vs lag for simple RNN / LSTM / GRU: fitted vs mean-field log-rates (Pascanu et al. 2013)"),
    "adding": Experiment(
        "rnn_grad.adding", run_adding,
        {"quick": configs.ADDING_QUICK, "full": configs.ADDING_FULL},
        "adding problem and copy memory: simple RNN / LSTM / GRU with and without gradient clipping"),
}
