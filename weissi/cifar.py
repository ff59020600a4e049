"""`weissi.cifar10`: the full-scale config, CIFAR-10 ResNet-18, each regulariser over a small λ grid.

Every (method, λ) is one run through `shared.trainer` (via `shared.classification.train_and_evaluate`,
crop + flip augmentation in the step); λ is chosen per method on a held-out validation split and the
chosen run's test accuracy reported. SGD (lr `sgd_lr`, cosine, momentum) for none / l2 / weight_decay /
weissi; Adam (`adam_lr`, cosine) for adamw / decoupled_weissi. Our choice of grids: the paper's recipe was
not obtained here. Data: `config.data_dir` holds the CIFAR-10 python release or a TFDS build
(`shared.cifar_files`). With BatchNorm after every conv, those kernels are scale-invariant on their own
(van Laarhoven 2017): the regularisers then mainly act as effective learning-rate controls.
`kexue eval weissi.cifar10 --run DIR` restores every (method, λ) run (or `--model weissi_0.01`) and reports
accuracy, per-class and balanced error on validation and test (`evaluate_run`).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from flax import nnx

from shared.augment import random_crop_flip
from shared.cifar_files import train_val_test
from shared.classification import make_resnet, num_steps, train_and_evaluate, unit_images
from shared.experiment import RunContext
from shared.transforms import add_decoupled_weissi, default_weissi_mask, weissi_penalty
from weissi.configs import CifarConfig
from weissi.invariance import l2_penalty


def method_parts(config: CifarConfig, method: str, lam: float, num_steps: int):
    """(optax transform, penalty(params) -> scalar) for one (method, λ)."""
    sgd = optax.sgd(optax.cosine_decay_schedule(config.sgd_lr, num_steps), momentum=config.momentum)
    adam_lr = optax.cosine_decay_schedule(config.adam_lr, num_steps)
    zero = lambda p: jnp.zeros((), jnp.float32)  # noqa: E731
    if method == "none":
        return sgd, zero
    if method == "l2":
        return sgd, lambda p: 0.5 * lam * l2_penalty(p)
    if method == "weight_decay":
        return optax.chain(optax.add_decayed_weights(lam, mask=default_weissi_mask), sgd), zero
    if method == "weissi":
        return sgd, lambda p: weissi_penalty(p, lam, config.weissi_lambda2)
    if method == "adamw":
        return optax.adamw(adam_lr, weight_decay=lam, mask=default_weissi_mask), zero
    if method == "decoupled_weissi":
        return optax.chain(optax.scale_by_adam(), add_decoupled_weissi(lam),
                           optax.scale_by_learning_rate(adam_lr)), zero
    raise ValueError(f"config.methods: unknown method {method!r}")


def run_parts(config: CifarConfig, method: str, lam: float, steps: int):
    """(optax transform, loss(model, batch, rng) -> (CE + penalty, metrics)) of one (method, λ) run."""
    tx, penalty = method_parts(config, method, lam, steps)

    def loss(model, batch, rng):
        logits = model(random_crop_flip(rng, unit_images(batch["image"])))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return ce + penalty(nnx.state(model, nnx.Param)), {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}

    return tx, loss


def train_one(config: CifarConfig, method: str, lam: float, ctx: RunContext, train_source, eval_sets) -> dict:
    steps = num_steps(config, len(train_source))
    tx, loss = run_parts(config, method, lam, steps)
    return train_and_evaluate(make_resnet(config.model, 10, config.seed), tx, loss, config=config, ctx=ctx,
                              train_source=train_source, eval_sets=eval_sets, num_steps=steps,
                              name=f"{method}_{lam:g}")


def run(config: CifarConfig, ctx: RunContext) -> dict:
    train_source, eval_sets = train_val_test(config.dataset, config.val_size, config.data_dir)
    metrics, rows = {}, []
    for method in config.methods:
        runs = {lam: train_one(config, method, lam, ctx, train_source, eval_sets) for lam in config.grid(method)}
        best = max(runs, key=lambda lam: runs[lam]["val_accuracy"])
        metrics[method] = {"clean_accuracy": runs[best]["test_accuracy"], "lambda": best}
        rows += [[method, lam, r["val_accuracy"], r["test_accuracy"], "✓" if lam == best else ""]
                 for lam, r in runs.items()]
    ctx.report.text(f"{config.model} on {config.dataset}; λ chosen per method on {config.val_size} held-out training "
                    f"images. Published (Liu et al. 2020): see paper.")
    ctx.report.table(["method", "λ", "val acc", "test acc", "chosen"], rows)
    return metrics


def evaluate_run(run) -> dict:
    """`kexue eval weissi.cifar10 --run DIR`: every (method, λ) checkpoint (or `--model METHOD_λ`) on the
    validation and test sets: accuracy, per-class and balanced error; per method the λ chosen on
    validation accuracy as the run chooses it. Writes eval.json and eval.md."""
    from shared.classification import cifar_eval_data, errors_table, evaluate_checkpoints, make_trainer
    from shared.use import write_outputs

    config = run.config
    names = {f"{m}_{lam:g}": (m, lam) for m in config.methods for lam in config.grid(m)}
    steps, eval_sets = cifar_eval_data(run, names)

    def build(method: str, lam: float):
        tx, loss = run_parts(config, method, lam, steps)
        return make_trainer(make_resnet(config.model, 10, config.seed), tx, loss, config)

    trainers = {name: (lambda ml=ml: build(*ml)) for name, ml in names.items() if run.model in (None, name)}
    results = evaluate_checkpoints(run, trainers, eval_sets, 10, config.eval_batch_size)
    chosen = {m: max((n for n in results if names[n][0] == m), key=lambda n: results[n]["val"]["accuracy"])
              for m in dict.fromkeys(names[n][0] for n in results)}
    metrics = {**results, "chosen": chosen}
    write_outputs(run, "eval", metrics, [
        f"# weissi.cifar10: evaluation of {run.path}", errors_table(results),
        "Chosen on validation accuracy: " + ", ".join(f"{m}: {n}" for m, n in chosen.items())
        + ". Published (Liu et al. 2020): see paper."])
    return metrics
