"""The experiments `kexue` can run for `weissi`."""

from shared.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {}
