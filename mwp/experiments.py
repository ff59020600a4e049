"""The experiments `kexue` can run for `mwp`."""

from shared.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {}
