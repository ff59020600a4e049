"""The experiments `kexue` can run for `nvae_jax`."""

from shared.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {}
