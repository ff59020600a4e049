"""Configs of the flooding experiments: frozen dataclasses, `quick` (CPU minutes) and `full` presets."""

from __future__ import annotations

import dataclasses
import math


def _grid(start: float, stop: float, step: float) -> tuple[float, ...]:
    """start, start + step, ... up to stop, rounded to 4 decimals (as numpy.arange(start, stop + step / 2, step))."""
    count = math.ceil((stop + step / 2 - start) / step)
    return tuple(round(start + i * step, 4) for i in range(count))


def _check_levels(name: str, levels: tuple[float, ...]) -> None:
    if not levels:
        raise ValueError(f"config.{name} must hold at least one flood level")
    bad = [b for b in levels if not b >= 0]
    if bad:
        raise ValueError(f"config.{name}: flood levels must be >= 0, got {bad}")


def _check_positive(config, *names: str) -> None:
    for name in names:
        if not getattr(config, name) > 0:
            raise ValueError(f"config.{name} must be > 0, got {getattr(config, name)}")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The paper's synthetic study: MLP (depth × width, Linear → BatchNorm → ReLU, two output logits),
    full batch SGD with momentum, a flood-level sweep per data set (vmapped over levels and seeds).

    Sizes are points per class. The official demo (takashiishida/flooding `run_demo_synth.py` through
    its `MLproject` defaults) draws 100 training, 100 validation and 20,000 test points of the
    sinusoid: 50 + 50 train, 50 + 50 validation, 10,000 + 10,000 test here.
    """

    seed: int = 0
    datasets: tuple[str, ...] = ("gaussian", "sinusoid", "spiral")
    width: int = 500
    depth: int = 4
    epochs: int = 200
    learning_rate: float = 0.01
    momentum: float = 0.9
    label_noise: float = 0.1
    n_train: int = 50
    n_val: int = 50
    n_test: int = 10_000
    num_seeds: int = 5
    eval_every: int = 5
    # the demo's levels {0, .26, .27, .28} plus a finer grid 0.02..0.40
    sinusoid_levels: tuple[float, ...] = tuple(sorted({0.0, 0.26, 0.27, 0.28, *_grid(0.02, 0.40, 0.02)}))
    gaussian_levels: tuple[float, ...] = _grid(0.0, 0.40, 0.01)
    spiral_levels: tuple[float, ...] = _grid(0.0, 0.40, 0.01)

    def __post_init__(self):
        _check_positive(self, "width", "depth", "epochs", "learning_rate", "n_train", "n_val", "n_test",
                        "num_seeds", "eval_every")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"config.momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.label_noise < 0.5:
            raise ValueError(f"config.label_noise must be in [0, 0.5), got {self.label_noise}")
        if self.epochs % self.eval_every:
            raise ValueError(f"config.eval_every={self.eval_every} must divide config.epochs={self.epochs}")
        for name in ("sinusoid_levels", "gaussian_levels", "spiral_levels"):
            _check_levels(name, getattr(self, name))
        unknown = set(self.datasets) - {"gaussian", "sinusoid", "spiral"}
        if unknown or not self.datasets:
            raise ValueError(f"config.datasets must be a non-empty subset of gaussian/sinusoid/spiral, "
                             f"got {self.datasets}")

    def levels(self, dataset: str) -> tuple[float, ...]:
        return getattr(self, f"{dataset}_levels")


SYNTHETIC_FULL = SyntheticConfig()
# quick: width 500 -> 100, 2,000 test points per class, 3 seeds, coarser grids (2.5-min CPU budget)
SYNTHETIC_QUICK = dataclasses.replace(
    SYNTHETIC_FULL, width=100, n_test=1000, num_seeds=3, eval_every=10,
    sinusoid_levels=(0.0, 0.1, 0.2, 0.26, 0.27, 0.28, 0.34, 0.4),
    gaussian_levels=_grid(0.0, 0.40, 0.05), spiral_levels=_grid(0.0, 0.40, 0.05))


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """Flooding vs its relatives on digits: MLP, mini-batch SGD with momentum, symmetric label noise.

    Methods: plain; flooding (sweep `flood_levels`); iFlood (sweep `iflood_levels`); the explicit
    gradient-norm penalty L + (ε/2)‖∇L‖² (sweep `gnp_eps`); SAM (`optax.contrib.sam`, radius `sam_rho`).
    Every hyper-parameter is chosen on a validation split (with the same label noise as training).
    """

    seed: int = 0
    hidden: tuple[int, ...] = (256, 256)
    learning_rate: float = 0.05
    momentum: float = 0.9
    batch_size: int = 64
    num_steps: int = 3000
    num_seeds: int = 5
    val_size: int = 200
    label_noises: tuple[float, ...] = (0.0, 0.2)
    flood_levels: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    iflood_levels: tuple[float, ...] = (0.05, 0.1, 0.3, 0.5)
    gnp_eps: tuple[float, ...] = (0.01, 0.05, 0.2)
    sam_rho: tuple[float, ...] = (0.02, 0.05, 0.1)

    def __post_init__(self):
        _check_positive(self, "learning_rate", "batch_size", "num_steps", "num_seeds", "val_size")
        _check_levels("flood_levels", self.flood_levels)
        _check_levels("iflood_levels", self.iflood_levels)
        for name in ("gnp_eps", "sam_rho"):
            values = getattr(self, name)
            if not values or any(not v >= 0 for v in values):
                raise ValueError(f"config.{name}: penalty weights must be >= 0 (and at least one), got {values}")
        if any(not 0 <= p < 0.9 for p in self.label_noises):
            raise ValueError(f"config.label_noises must be in [0, 0.9), got {self.label_noises}")


DIGITS_FULL = DigitsConfig()
DIGITS_QUICK = dataclasses.replace(DIGITS_FULL, hidden=(64, 64), num_steps=600, num_seeds=3,
                                   flood_levels=(0.05, 0.2, 0.4, 0.7), iflood_levels=(0.1, 0.4),
                                   gnp_eps=(0.05,), sam_rho=(0.05,))


@dataclasses.dataclass(frozen=True)
class CifarConfig:
    """CIFAR-10, ResNet-18, SGD momentum 0.9, lr 0.1 cosine, batch 128, flood grid chosen on validation.

    Our choice (the paper's CIFAR recipe was not obtained here): 45k/5k train/validation split of
    the train split, weight decay 5e-4, random crop + flip. `data_dir` holds the CIFAR-10 python release
    (`cifar-10-batches-py/`) or a TFDS array_record build (`shared.cifar_files`).
    """

    seed: int = 0
    data_dir: str = ""
    dataset: str = "cifar10"
    model: str = "resnet18"  # or "resnet20" / "resnet8" (tests)
    flood_levels: tuple[float, ...] = _grid(0.0, 0.10, 0.01)
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    num_epochs: int = 200
    val_size: int = 5000
    eval_batch_size: int = 500
    steps_override: int = 0  # > 0: train this many steps per level (tests, smoke runs)
    checkpoint_every: int = 2000

    def __post_init__(self):
        _check_levels("flood_levels", self.flood_levels)
        _check_positive(self, "learning_rate", "batch_size", "num_epochs", "eval_batch_size")
        if self.weight_decay < 0:
            raise ValueError(f"config.weight_decay must be >= 0, got {self.weight_decay}")


CIFAR_FULL = CifarConfig()
CIFAR_QUICK = dataclasses.replace(CIFAR_FULL, model="resnet8", flood_levels=(0.0, 0.05), steps_override=2,
                                  batch_size=16, val_size=16, eval_batch_size=16)


@dataclasses.dataclass(frozen=True)
class DerivationConfig:
    """Step sizes ε (geometric from eps_max down to eps_min) for the descent/ascent check."""

    seed: int = 0
    eps_max: float = 0.3
    eps_min: float = 0.003
    num_eps: int = 9

    def __post_init__(self):
        if not 0 < self.eps_min < self.eps_max:
            raise ValueError(f"config.eps_min / eps_max must satisfy 0 < eps_min < eps_max, "
                             f"got {self.eps_min}, {self.eps_max}")
        if self.num_eps < 2:
            raise ValueError(f"config.num_eps must be >= 2, got {self.num_eps}")
