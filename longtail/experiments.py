"""The experiments `kexue` can run for `longtail`."""

from shared.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {}
