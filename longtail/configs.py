"""Frozen configs of the long-tail experiments, with `quick` (CPU, embedded data) and `full` presets.

Variants derive with `dataclasses.replace`; every field is a plain type so `--config.key value` parses.
"""

from __future__ import annotations

import dataclasses

# The methods of Menon et al.'s synthetic study (Sec. 6.1), all members of the pairwise-margin family
# (their Eq. 11) except `posthoc`, which re-scores the ERM model (Eq. 9).
SYNTHETIC_METHODS = ("erm", "balanced_ce", "ldam", "equalised", "logit_adjusted_loss", "posthoc")
# The extra losses of the 2020-08-31 post, compared on digits.
DIGITS_METHODS = SYNTHETIC_METHODS + ("posthoc_tuned", "focal", "class_balanced", "smoothed_f1")
TRAINED_METHODS = ("erm", "balanced_ce", "ldam", "equalised", "logit_adjusted_loss", "focal",
                   "class_balanced", "smoothed_f1")


def _positive(config, *names):
    for name in names:
        if getattr(config, name) <= 0:
            raise ValueError(f"config.{name} must be > 0, got {getattr(config, name)}")


def _check_rho(rho, name="rho"):
    values = rho if isinstance(rho, tuple) else (rho,)
    for r in values:
        if r < 1:
            raise ValueError(f"config.{name} (imbalance ratio) must be >= 1, got {rho}")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The 2-D Gaussian study: x | y ~ N(y·(1, 1), I), y ∈ {±1}, P(y = +1) = `positive_prior`.

    Each trial draws `n_train` / `n_test` points, fits an affine classifier to convergence with each
    loss (`newton_steps` Newton iterations on the strictly convex empirical risk) and measures the
    balanced test error; `trial_batch` trials are vmapped at a time (`jax.lax.map`). `tau` is the
    logit-adjustment temperature (loss, equalised margins, post-hoc);
    `ldam_scale` the margin of the rarest class in the LDAM-style loss.
    """

    seed: int = 0
    trials: int = 100
    n_train: int = 10_000
    n_test: int = 10_000
    positive_prior: float = 0.05
    tau: float = 1.0
    ldam_scale: float = 0.5
    newton_steps: int = 12
    ridge: float = 1e-6
    trial_batch: int = 10
    plot_points: int = 2_000

    def __post_init__(self):
        _positive(self, "trials", "n_train", "n_test", "newton_steps", "trial_batch")
        if not 0 < self.positive_prior < 1:
            raise ValueError(f"config.positive_prior must be in (0, 1), got {self.positive_prior}")
        if self.tau < 0 or self.ldam_scale < 0 or self.ridge < 0:
            raise ValueError("config.tau, config.ldam_scale and config.ridge must be >= 0")


SYNTHETIC_FULL = SyntheticConfig()
SYNTHETIC_QUICK = SYNTHETIC_FULL  # the whole study takes seconds on a CPU


@dataclasses.dataclass(frozen=True)
class DigitsLTConfig:
    """Long-tailed digits: train subsampled to n_i = ⌊n_max·ρ^{−i/9}⌋, balanced test.

    Every method of `TRAINED_METHODS` x every seed is trained in one vmapped, jitted program per ρ
    (full-batch AdamW on an MLP 64-hidden-10); `posthoc` / `posthoc_tuned` re-score the ERM models,
    with τ tuned on `holdout_fraction` of the test set (reported on the rest).
    """

    seed: int = 0
    rhos: tuple[float, ...] = (10.0, 100.0)
    seeds: int = 3
    hidden: tuple[int, ...] = (64,)
    learning_rate: float = 1e-2
    weight_decay: float = 1e-4
    steps: int = 300
    tau: float = 1.0
    ldam_scale: float = 0.5
    focal_gamma: float = 2.0
    class_balanced_beta: float = 0.99
    holdout_fraction: float = 0.5

    def __post_init__(self):
        _positive(self, "seeds", "steps", "learning_rate")
        _check_rho(self.rhos, "rhos")
        if not self.rhos:
            raise ValueError("config.rhos must name at least one imbalance ratio")
        if not 0 <= self.class_balanced_beta < 1:
            raise ValueError(f"config.class_balanced_beta must be in [0, 1), got {self.class_balanced_beta}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"config.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


DIGITS_QUICK = DigitsLTConfig()
DIGITS_FULL = dataclasses.replace(DIGITS_QUICK, seeds=10, hidden=(256, 256), steps=1000)


CIFAR_MODELS = ("la_resnet32", "he_resnet")
INPUT_SCALINGS = ("centre", "standardise")


@dataclasses.dataclass(frozen=True)
class CifarLTConfig:
    """CIFAR-10-LT / CIFAR-100-LT (Menon et al. 2021, Sec. 6.2); the defaults are the official CIFAR-10-LT recipe.

    The official code (google-research `logit_adjustment/`: `main.py`, `utils.py`, `models.py`) trains
    `model="la_resnet32"` (`shared.models.la_resnet32`; `"he_resnet"` is He et al.'s basic-block net of
    `depth`) with SGD momentum 0.9, `nesterov`, batch 128, lr 0.1 warmed up linearly from 0 over
    `warmup_epochs`, times `decay_factor` at each of `decay_epochs`, for `epochs`; Keras `l2(1e-4)` on
    conv kernels and the dense kernel and bias, i.e. `weight_decay` = 2e-4 times w added to the gradient
    with `weight_decay_batchnorm=False`; inputs x/255 - 0.5 (`input_scaling="centre"`; `"standardise"`
    uses the per-channel mean / std), 4-pixel pad + random crop + flip.
    Data: `data_dir` holds the CIFAR python release or a TFDS build (`shared.cifar_files`); the
    long-tailed training set keeps n_i = floor(n_max rho^(-i/(K-1))) images of class i (12,406 for
    CIFAR-10, 10,847 for CIFAR-100 at rho = 100), drawn with `subsample_seed`: the same counts as the
    official pre-built files, not the same images. `methods` are trained one after the other (each
    resumable); `posthoc` (tau = 1) and `posthoc_tuned` (tau tuned on `holdout_fraction` of the test
    set) re-score the ERM model. `mock_data=True` runs on `tfds.testing.mock_data` (a smoke test).
    """

    seed: int = 0
    dataset: str = "cifar10"
    data_dir: str = ""
    mock_data: bool = False
    mock_examples: int = 400
    rho: float = 100.0
    subsample_seed: int = 0
    model: str = "la_resnet32"
    depth: int = 32  # of model="he_resnet"
    methods: tuple[str, ...] = ("erm", "balanced_ce", "ldam", "equalised", "logit_adjusted_loss")
    epochs: int = 1241
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 2e-4
    weight_decay_batchnorm: bool = False
    input_scaling: str = "centre"
    warmup_epochs: int = 20
    decay_epochs: tuple[int, ...] = (604, 926, 1128)
    decay_factor: float = 0.1
    tau: float = 1.0
    ldam_scale: float = 0.5
    holdout_fraction: float = 0.2
    eval_batch_size: int = 500
    max_steps: int = 0  # > 0 caps the number of steps (smoke tests)
    log_every: int = 100
    checkpoint_every: int = 1000

    def __post_init__(self):
        if self.dataset not in ("cifar10", "cifar100"):
            raise ValueError(f"config.dataset must be 'cifar10' or 'cifar100', got {self.dataset!r}")
        _check_rho(self.rho)
        _positive(self, "epochs", "batch_size", "learning_rate", "eval_batch_size", "log_every")
        unknown = set(self.methods) - set(TRAINED_METHODS)
        if unknown or not self.methods:
            raise ValueError(f"config.methods must be a non-empty subset of {TRAINED_METHODS}, got {self.methods}")
        if "erm" not in self.methods:
            raise ValueError("config.methods must include 'erm' (post-hoc adjustment re-scores it)")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"config.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.model not in CIFAR_MODELS:
            raise ValueError(f"config.model must be one of {CIFAR_MODELS}, got {self.model!r}")
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"config.depth must be 6n + 2, got {self.depth}")
        if self.input_scaling not in INPUT_SCALINGS:
            raise ValueError(f"config.input_scaling must be one of {INPUT_SCALINGS}, got {self.input_scaling!r}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("config.weight_decay must be >= 0 and config.momentum in [0, 1)")
        if self.warmup_epochs < 0 or not 0 < self.decay_factor <= 1:
            raise ValueError("config.warmup_epochs must be >= 0 and config.decay_factor in (0, 1]")
        if list(self.decay_epochs) != sorted(set(self.decay_epochs)) or any(e <= 0 for e in self.decay_epochs):
            raise ValueError(f"config.decay_epochs must be increasing positive epochs, got {self.decay_epochs}")

    @property
    def num_classes(self) -> int:
        return 10 if self.dataset == "cifar10" else 100


# google-research logit_adjustment/utils.py `dataset_mappings`: (1241 epochs, warm-up 20, decays 604 / 926 / 1128)
# for CIFAR-10-LT and (1419, 22, 691 / 1059 / 1290) for CIFAR-100-LT; the rest of the recipe is shared.
CIFAR10_FULL = CifarLTConfig()
CIFAR100_FULL = dataclasses.replace(CIFAR10_FULL, dataset="cifar100", epochs=1419, warmup_epochs=22,
                                    decay_epochs=(691, 1059, 1290))
# A smoke run of the whole pipeline on mock data (seconds); the numbers mean nothing.
CIFAR_QUICK = dataclasses.replace(CIFAR10_FULL, mock_data=True, mock_examples=200, rho=10.0, model="he_resnet",
                                  depth=8, methods=("erm",), epochs=1, batch_size=16, max_steps=2,
                                  eval_batch_size=64, log_every=1, checkpoint_every=1, warmup_epochs=0,
                                  decay_epochs=())
