"""`shared.digits_mlp`: an MLP classifier on scikit-learn's digits, run end to end through the harness.

It exercises every piece of the foundation through `shared.trainer`: the embedded data through a grain
pipeline indexed by step, the jitted, sharded train step with its non-finite guard, the evaluation loop,
the newest and best Orbax checkpoints, `--resume`, the SIGTERM checkpoint, TensorBoard, and the report.
"""

from __future__ import annotations

import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optax
from flax import nnx

from shared import data
from shared.classification import class_errors, classification_sums, predict_labels
from shared.configs import DigitsMLPConfig
from shared.experiment import RunContext
from shared.models import MLP
from shared.trainer import Loop, Trainer


def cross_entropy(model: nnx.Module, batch: dict, rng: jax.Array):
    """Mean softmax CE of the model's logits [B, 10] against batch["label"] [B]; metrics: accuracy."""
    del rng
    logits = model(batch["image"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}


def build(config: DigitsMLPConfig, mesh=None) -> Trainer:
    """The trainer (model, Adam with cosine decay, cross-entropy, evaluation sums) for `config`."""
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.num_steps)
    model = MLP((64, *config.hidden, 10), rngs=nnx.Rngs(config.seed))
    return Trainer(model, optax.adam(schedule), cross_entropy, seed=config.seed, mesh=mesh, fsdp=config.fsdp,
                   learning_rate=schedule, eval_metrics=classification_sums)


def loop(config: DigitsMLPConfig) -> Loop:
    return Loop(num_steps=config.num_steps, batch_size=config.batch_size, seed=config.seed,
                log_every=config.log_every, checkpoint_every=config.checkpoint_every, eval_every=config.log_every * 4,
                keep=3, best_metric="accuracy")


def run(config: DigitsMLPConfig, ctx: RunContext) -> dict:
    trainer = build(config)
    images, labels = data.digits("train")
    test = dict(zip(("image", "label"), data.digits("test")))

    def evaluate(state):
        return trainer.evaluate(test, config.eval_batch_size, state)

    start = time.perf_counter()
    state, history = trainer.fit(data.ArraySource({"image": images, "label": labels}), loop(config), ctx=ctx,
                                 evaluate=evaluate, config=config, desc="digits_mlp")
    elapsed = time.perf_counter() - start
    final = evaluate(state)

    ctx.report.text(f"MLP {(64, *config.hidden, 10)} on scikit-learn digits (1,347 train / 450 test), "
                    f"Adam {config.learning_rate} with cosine decay, batch {config.batch_size}, "
                    f"{config.num_steps} steps on {trainer.mesh.size} device(s).")
    ctx.report.table(["metric", "ours", "target"],
                     [["test accuracy", final["accuracy"], ">= 0.95"], ["test loss", final["loss"], None],
                     ["skipped (non-finite) steps", int(state.skipped), 0],
                     ["training time (s)", elapsed, "< 60"]])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss")
    evals = [h for h in history if "eval_loss" in h]
    ax.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="test loss")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend()
    ctx.report.figure(fig, "loss", "Training and test loss")
    return {"test_accuracy": final["accuracy"], "test_loss": final["loss"], "steps": int(state.step),
            "skipped_steps": int(state.skipped), "best_step": trainer.best_step, "history": history}


def evaluate_run(run) -> dict:
    """`kexue eval shared.digits_mlp --run DIR`: the restored model (best checkpoint by test accuracy, else
    the newest) on the test split: accuracy, loss, per-class error and balanced error (their mean)."""
    from shared.use import restore_model, write_outputs

    trainer = build(run.config)
    state = restore_model(trainer, run, best_metric="accuracy")
    test = dict(zip(("image", "label"), data.digits("test")))
    result = trainer.evaluate(test, run.config.eval_batch_size, state)
    errors = class_errors(predict_labels(trainer, state, test["image"], run.config.eval_batch_size), test["label"], 10)
    per_class = errors["per_class_error"]
    metrics = {"test_accuracy": result["accuracy"], "test_loss": result["loss"], "per_class_error": per_class,
               "balanced_error": errors["balanced_error"], "step": int(state.step)}
    write_outputs(run, "eval", metrics, [
        f"# shared.digits_mlp: evaluation of {run.path} at step {int(state.step)}",
        f"test accuracy {metrics['test_accuracy']:.4f} (target >= 0.95), test loss {metrics['test_loss']:.4f}, "
        f"balanced error {metrics['balanced_error']:.4f}",
        "per-class error: " + ", ".join(f"{c}: {e:.3f}" for c, e in enumerate(per_class))])
    return metrics
