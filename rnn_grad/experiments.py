"""The experiments `kexue` can run for `rnn_grad`."""

from shared.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {}
