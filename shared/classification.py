"""Image classification on the harness: the ResNet factory, evaluation sums, and one complete
train-then-evaluate run (used by the CIFAR-10 configs of `flooding` and `weissi`, which read their
train/val/test splits with `shared.cifar_files.train_val_test`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shared.experiment import RunContext
from shared.models import ResNet18, cifar_resnet
from shared.trainer import Loop, Trainer

__all__ = ["make_resnet", "unit_images", "classification_sums", "train_and_evaluate"]


def make_resnet(name: str, num_classes: int, seed: int) -> nnx.Module:
    """"resnet18" (`shared.models.ResNet18`) or "resnet<6n+2>" (He et al.'s CIFAR ResNets, e.g. resnet20)."""
    rngs = nnx.Rngs(seed)
    if name == "resnet18":
        return ResNet18(num_classes, rngs=rngs)
    if name.startswith("resnet") and name[6:].isdigit():
        return cifar_resnet(int(name[6:]), num_classes, rngs=rngs)
    raise ValueError(f"config.model must be 'resnet18' or 'resnet<6n+2>', got {name!r}")


def unit_images(images: jax.Array) -> jax.Array:
    """uint8 images [B, H, W, C] -> float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def classification_sums(model: nnx.Module, batch: dict, preprocess: Callable = lambda x: x) -> dict:
    """Weighted sums of CE and of correct predictions over a padded batch (for `shared.train.evaluate`).

    batch: {"image": [B, ...], "label": int [B], "weight": [B] (0 on padding)}; returns scalars
    {"loss": Σ w·CE, "accuracy": Σ w·[argmax = label]}.
    """
    logits = model(preprocess(batch["image"]))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (logits.argmax(-1) == batch["label"]).astype(losses.dtype)
    return {"loss": (losses * batch["weight"]).sum(), "accuracy": (correct * batch["weight"]).sum()}


def train_and_evaluate(model: nnx.Module, tx: optax.GradientTransformation, loss: Callable, *, config,
                       ctx: RunContext, train_source, eval_sets: dict, num_steps: int, name: str) -> dict:
    """Trains `model` with `loss(model, batch, rng) -> (scalar, metrics)` through `shared.trainer`
    (checkpointed under `ctx.checkpoint_dir / name`, resumable), then evaluates on every set.

    `config` needs `seed`, `batch_size`, `eval_batch_size`, `checkpoint_every`; images are uint8 and
    scaled to [0, 1] for evaluation. Returns {"<set>_accuracy", "<set>_loss"} for each evaluation set.
    """
    trainer = Trainer(model, tx, loss, seed=config.seed,
                      eval_metrics=lambda m, b: classification_sums(m, b, unit_images))
    loop = Loop(num_steps=num_steps, batch_size=config.batch_size, seed=config.seed, log_every=min(100, num_steps),
                checkpoint_every=config.checkpoint_every)
    trainer.fit(train_source, loop, ctx=ctx, name=name, config=config)
    out = {}
    for split, arrays in eval_sets.items():
        res = trainer.evaluate(arrays, config.eval_batch_size)
        out[f"{split}_accuracy"], out[f"{split}_loss"] = res["accuracy"], res["loss"]
    return out
