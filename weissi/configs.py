"""Configs of the weissi experiments: frozen dataclasses with `quick` and `full` presets."""

from __future__ import annotations

import dataclasses

METHODS = ("none", "l2", "weight_decay", "adamw", "weissi", "decoupled_weissi")


def _nonneg(config, *names):
    for name in names:
        if not getattr(config, name) >= 0:
            raise ValueError(f"config.{name}: penalty weights must be >= 0, got {getattr(config, name)}")


@dataclasses.dataclass(frozen=True)
class InvarianceConfig:
    """The invariance demo: a bias-free ReLU MLP of `widths`, shifts s ∈ [−max_shift, max_shift]."""

    seed: int = 0
    widths: tuple[int, ...] = (10, 32, 32, 32, 2)
    max_shift: float = 3.0

    def __post_init__(self):
        if len(self.widths) < 3:
            raise ValueError(f"config.widths needs >= 2 layers (>= 3 widths), got {self.widths}")


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """Regularisers on digits: MLP (or SmallCNN), mini-batch training, clean / FGSM / PGD-10 accuracy.

    Optimisers: Adam (lr `adam_lr`) for none / l2 / weissi / adamw / decoupled_weissi; SGD with
    momentum (lr `sgd_lr`) + decoupled weight decay for weight_decay. Penalties act on matrices and
    conv kernels only (not biases). Also trained from a scale-shifted init: first layer ×e^s, last ×e^−s.
    """

    seed: int = 0
    model: str = "mlp"  # "mlp" or "cnn"
    hidden: tuple[int, ...] = (128, 128)
    num_steps: int = 2000
    batch_size: int = 64
    num_seeds: int = 5
    adam_lr: float = 1e-3
    sgd_lr: float = 0.05
    l2: float = 1e-3  # loss += (l2 / 2) Σ‖W‖²
    weight_decay: float = 5e-4  # SGD: updates += wd·W
    adamw: float = 0.5  # optax.adamw weight_decay (multiplied by the learning rate)
    weissi_lambda1: float = 1e-2
    weissi_lambda2: float = 1e-4
    decoupled_weissi: float = 3.0  # updates += w·W/‖W‖² (times the learning rate)
    init_shift: float = 1.5
    eps: tuple[float, ...] = (0.05, 0.1, 0.2)
    main_eps: float = 0.1
    pgd_steps: int = 10
    methods: tuple[str, ...] = METHODS

    def __post_init__(self):
        _nonneg(self, "l2", "weight_decay", "adamw", "weissi_lambda1", "weissi_lambda2", "decoupled_weissi")
        for name in ("num_steps", "batch_size", "num_seeds", "pgd_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"config.{name} must be >= 1, got {getattr(self, name)}")
        if self.model not in ("mlp", "cnn"):
            raise ValueError(f"config.model must be 'mlp' or 'cnn', got {self.model!r}")
        if self.main_eps not in self.eps:
            raise ValueError(f"config.main_eps={self.main_eps} must be one of config.eps={self.eps}")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"config.methods: unknown {sorted(unknown)}; choose from {METHODS}")


DIGITS_FULL = DigitsConfig()
DIGITS_CNN = dataclasses.replace(DIGITS_FULL, model="cnn")
DIGITS_QUICK = dataclasses.replace(DIGITS_FULL, hidden=(64, 64), num_steps=600, num_seeds=3)


@dataclasses.dataclass(frozen=True)
class CifarConfig:
    """CIFAR-10 ResNet-18, one run per (method, λ) of a small grid, λ chosen on validation (our choice).

    `data_dir` holds the CIFAR-10 python release (`cifar-10-batches-py/`) or a TFDS array_record build
    (`shared.cifar_files`); the last `val_size` training images are the validation split.
    """

    seed: int = 0
    data_dir: str = ""
    dataset: str = "cifar10"
    model: str = "resnet18"
    methods: tuple[str, ...] = METHODS
    l2_grid: tuple[float, ...] = (1e-4, 5e-4)
    weight_decay_grid: tuple[float, ...] = (1e-4, 5e-4)
    adamw_grid: tuple[float, ...] = (0.05, 0.25)
    weissi_grid: tuple[float, ...] = (1e-3, 1e-2)  # λ₁; λ₂ = weissi_lambda2
    weissi_lambda2: float = 1e-5
    decoupled_weissi_grid: tuple[float, ...] = (0.1, 1.0)
    sgd_lr: float = 0.1
    adam_lr: float = 1e-3
    momentum: float = 0.9
    batch_size: int = 128
    num_epochs: int = 200
    val_size: int = 5000
    eval_batch_size: int = 500
    steps_override: int = 0
    checkpoint_every: int = 2000

    def __post_init__(self):
        for name in ("l2_grid", "weight_decay_grid", "adamw_grid", "weissi_grid", "decoupled_weissi_grid"):
            values = getattr(self, name)
            if any(not v >= 0 for v in values):
                raise ValueError(f"config.{name}: penalty weights must be >= 0, got {values}")
        _nonneg(self, "weissi_lambda2")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"config.methods: unknown {sorted(unknown)}; choose from {METHODS}")

    def grid(self, method: str) -> tuple[float, ...]:
        return (0.0,) if method == "none" else getattr(self, f"{method}_grid")


CIFAR_FULL = CifarConfig()
CIFAR_QUICK = dataclasses.replace(CIFAR_FULL, model="resnet8", steps_override=2, batch_size=16, val_size=16,
                                  eval_batch_size=16, l2_grid=(5e-4,), weight_decay_grid=(5e-4,), adamw_grid=(0.05,),
                                  weissi_grid=(1e-2,), decoupled_weissi_grid=(1.0,))
