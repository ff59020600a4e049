"""The experiments `kexue` can run for `spaces`."""

from shared.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {}
