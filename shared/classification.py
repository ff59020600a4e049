"""Image classification on the harness: the ResNet factory, evaluation sums, one complete
train-then-evaluate run (used by the CIFAR-10 configs of `flooding` and `weissi`, which read their
train/val/test splits with `shared.cifar_files.train_val_test`), and what `kexue eval` reports for a
classifier: accuracy, per-class error and balanced error (`class_errors`, `evaluate_checkpoints`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shared.experiment import RunContext
from shared.models import ResNet18, cifar_resnet
from shared.train import TrainState
from shared.trainer import Loop, Trainer

if TYPE_CHECKING:
    from shared.use import RunDir

__all__ = ["make_resnet", "unit_images", "classification_sums", "make_trainer", "train_and_evaluate", "class_errors",
           "predict_labels", "evaluate_checkpoints", "errors_table"]


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


def make_trainer(model: nnx.Module, tx: optax.GradientTransformation, loss: Callable, config: Any) -> Trainer:
    """The trainer of `train_and_evaluate` (also what `kexue eval` restores a checkpoint into)."""
    return Trainer(model, tx, loss, seed=config.seed, eval_metrics=lambda m, b: classification_sums(m, b, unit_images))


def train_and_evaluate(model: nnx.Module, tx: optax.GradientTransformation, loss: Callable, *, config,
                       ctx: RunContext, train_source, eval_sets: dict, num_steps: int, name: str) -> dict:
    """Trains `model` with `loss(model, batch, rng) -> (scalar, metrics)` through `shared.trainer`
    (checkpointed under `ctx.checkpoint_dir / name`, resumable), then evaluates on every set.

    `config` needs `seed`, `batch_size`, `eval_batch_size`, `checkpoint_every`; images are uint8 and
    scaled to [0, 1] for evaluation. Returns {"<set>_accuracy", "<set>_loss"} for each evaluation set.
    """
    trainer = make_trainer(model, tx, loss, config)
    loop = Loop(num_steps=num_steps, batch_size=config.batch_size, seed=config.seed, log_every=min(100, num_steps),
                checkpoint_every=config.checkpoint_every)
    trainer.fit(train_source, loop, ctx=ctx, name=name, config=config)
    out = {}
    for split, arrays in eval_sets.items():
        res = trainer.evaluate(arrays, config.eval_batch_size)
        out[f"{split}_accuracy"], out[f"{split}_loss"] = res["accuracy"], res["loss"]
    return out


def class_errors(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy, per-class error e_c = P(ŷ ≠ c | y = c) (None for a class without examples) and the balanced
    error, the mean of e_c over the classes present. predicted, labels: int [N]."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    per_class = [float(np.mean(predicted[labels == c] != c)) if np.any(labels == c) else None
                 for c in range(num_classes)]
    return {"accuracy": float(np.mean(predicted == labels)), "per_class_error": per_class,
            "balanced_error": float(np.mean([e for e in per_class if e is not None]))}


def predict_labels(trainer: Trainer, state: TrainState, images: np.ndarray, batch_size: int,
                   preprocess: Callable = lambda x: x) -> np.ndarray:
    """argmax of the restored model's logits (eval mode) on images [N, ...]: int [N], in fixed-size batches."""
    from shared.data import map_fixed_batches

    @jax.jit
    def labels(params, model_state, x):
        model = nnx.merge(trainer.graphdef, params, model_state)
        model.eval()
        return model(preprocess(x)).argmax(-1)

    return map_fixed_batches(lambda x: labels(state.params, state.model_state, x), (images,), batch_size)


def evaluate_checkpoints(run: RunDir, trainers: Mapping[str, Callable[[], Trainer]], eval_sets: Mapping[str, dict],
                         num_classes: int, batch_size: int, preprocess: Callable = unit_images) -> dict[str, dict]:
    """`kexue eval` of classification runs: each named model's checkpoint (`run.checkpoint_dir(name)`, best
    else newest, or `--step`) restored into `trainers[name]()` and scored on every evaluation set.

    Returns {name: {"step": int, set: `class_errors`}}.
    """
    from shared.use import restore_model

    out: dict[str, dict] = {}
    for name, build in trainers.items():
        trainer = build()
        state = restore_model(trainer, run, name)
        out[name] = {"step": int(state.step)}
        for split, arrays in eval_sets.items():
            predicted = predict_labels(trainer, state, arrays["image"], batch_size, preprocess)
            out[name][split] = class_errors(predicted, arrays["label"], num_classes)
    return out


def num_steps(config: Any, num_train: int) -> int:
    """Training steps of a CIFAR classification config: `steps_override`, else `num_epochs` full batches."""
    return config.steps_override or config.num_epochs * (num_train // config.batch_size)


def cifar_eval_data(run: RunDir, names: Mapping[str, Any]) -> tuple[int, dict]:
    """For `kexue eval` of a CIFAR run: checks `--model` against the run's model `names` and reloads its data.

    Returns (the run's number of training steps, {"val": arrays, "test": arrays}); a `--model` the run did not
    train, or data that is gone or damaged, is one line (UsageError)."""
    from shared.cifar_files import train_val_test
    from shared.overrides import UsageError

    config = run.config
    if run.model is not None and run.model not in names:
        raise UsageError(f"--model {run.model!r}: the run trained {', '.join(names)}")
    try:
        train_source, eval_sets = train_val_test(config.dataset, config.val_size, config.data_dir)
    except ValueError as error:  # the data the run was trained on is gone or damaged
        raise UsageError(str(error).splitlines()[0]) from None
    return num_steps(config, len(train_source)), eval_sets


def errors_table(results: Mapping[str, dict], splits: tuple[str, ...] = ("val", "test")) -> str:
    """A markdown table of `evaluate_checkpoints`'s results: accuracy and balanced error (%) per set,
    and the per-class errors (%) of the last set."""
    head = ["model", "step"] + [f"{s} {m} %" for s in splits for m in ("accuracy", "balanced error")]
    rows = ["| " + " | ".join(head) + f" | {splits[-1]} per-class error % |", "|" + "---|" * (len(head) + 1)]
    for name, r in results.items():
        cells = [name, str(r["step"])]
        cells += [f"{100 * r[s][k]:.2f}" for s in splits for k in ("accuracy", "balanced_error")]
        cells.append(" ".join("—" if e is None else f"{100 * e:.0f}" for e in r[splits[-1]]["per_class_error"]))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
