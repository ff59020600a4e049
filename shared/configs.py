"""Configs of `shared`'s own experiments, importable without jax (`kexue list` reads them)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DigitsMLPConfig:
    """Digits MLP. `hidden` widths, Adam with a cosine schedule, global batch `batch_size`."""

    seed: int = 0  # initialisation, data order and step keys
    hidden: tuple[int, ...] = (128, 128)  # hidden widths of the MLP 64 -> hidden -> 10
    learning_rate: float = 3e-3  # Adam's peak learning rate, cosine-decayed to 0
    batch_size: int = 64  # the global batch (split over processes and devices)
    num_steps: int = 600  # training steps
    log_every: int = 50  # steps per logged window (evaluation every 4 windows)
    checkpoint_every: int = 100  # steps between checkpoints (0: only at evaluations and the end)
    eval_batch_size: int = 256  # evaluation batch (padded to a multiple of the device count)
    fsdp: int = 1  # size of the FSDP mesh axis (1: data parallel)

    def __post_init__(self):
        for name in ("batch_size", "num_steps", "log_every", "eval_batch_size", "fsdp"):
            if getattr(self, name) < 1:
                raise ValueError(f"config.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"config.learning_rate must be > 0, got {self.learning_rate}")


DIGITS_MLP_QUICK = DigitsMLPConfig()
DIGITS_MLP_FULL = dataclasses.replace(DIGITS_MLP_QUICK, hidden=(512, 512), num_steps=3000)
