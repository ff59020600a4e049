"""The experiments `kexue` can run for `flooding`."""

from shared.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {}
