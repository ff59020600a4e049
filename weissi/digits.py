"""`weissi.digits`: none / L2 / weight decay / AdamW / WEISSI / decoupled WEISSI on digits, with attacks.

Each method trains an MLP (or `SmallCNN`) on scikit-learn's digits with mini-batches, in one jitted
program vmapped over seeds × {standard, scale-shifted} initialisations; at the end clean test
accuracy and robust accuracy under FGSM and PGD-10 (L∞, `weissi.attacks`) are measured at every ε.
The scale-shifted init multiplies the first layer by e^s and the last by e^−s (same function,
`weissi.invariance.shift_layer_params`): WEISSI is blind to the shift, L2 / weight decay are not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shared import data
from shared.experiment import RunContext
from shared.models import MLP, SmallCNN
from shared.transforms import add_decoupled_weissi, default_weissi_mask, weissi_penalty
from weissi.attacks import classifier_accuracy, fgsm, pgd
from weissi.configs import DigitsConfig
from weissi.invariance import l2_penalty, mlp_layer_paths, shift_factors, shift_layer_params


def make_model_and_layers(config: DigitsConfig, seed: int):
    """(model, layer paths in forward order) for config.model."""
    if config.model == "mlp":
        return MLP((64, *config.hidden, 10), rngs=nnx.Rngs(seed)), mlp_layer_paths(len(config.hidden) + 1)
    return SmallCNN(10, rngs=nnx.Rngs(seed)), [("conv1",), ("conv2",), ("head",)]


def method_parts(method: str, config: DigitsConfig) -> tuple[optax.GradientTransformation, Callable[[Any], jax.Array]]:
    """(optax transform, penalty(params) -> scalar added to the mean loss) of a method."""
    zero = lambda p: jnp.zeros((), jnp.float32)  # noqa: E731
    adam = optax.adam(config.adam_lr)
    if method == "none":
        return adam, zero
    if method == "l2":
        return adam, lambda p: 0.5 * config.l2 * l2_penalty(p)
    if method == "weight_decay":
        return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=default_weissi_mask),
                           optax.sgd(config.sgd_lr, momentum=0.9)), zero
    if method == "adamw":
        return optax.adamw(config.adam_lr, weight_decay=config.adamw, mask=default_weissi_mask), zero
    if method == "weissi":
        return adam, lambda p: weissi_penalty(p, config.weissi_lambda1, config.weissi_lambda2)
    if method == "decoupled_weissi":
        return optax.chain(optax.scale_by_adam(), add_decoupled_weissi(config.decoupled_weissi),
                           optax.scale_by_learning_rate(config.adam_lr)), zero
    raise ValueError(f"method must be one of none/l2/weight_decay/adamw/weissi/decoupled_weissi, got {method!r}")


def images(split: str, model: str):
    x, y = data.digits(split)
    return (x.reshape(len(x), -1) if model == "mlp" else x), y


def train_method(config: DigitsConfig, method: str, seeds: list[int]) -> dict:
    """Trains `method` for every seed × {standard, shifted} init; returns numpy arrays [S, 2] of
    clean_accuracy, and fgsm_accuracy / pgd_accuracy [S, 2, E] (E = len(config.eps)), plus weight norms."""
    x_tr, y_tr = map(jnp.asarray, images("train", config.model))
    x_te, y_te = map(jnp.asarray, images("test", config.model))
    models = [make_model_and_layers(config, s) for s in seeds]
    paths = models[0][1]
    splits = [nnx.split(m, nnx.Param) for m, _ in models]
    graphdef = splits[0][0]
    factors = shift_factors(len(paths), config.init_shift)
    inits = [[p, shift_layer_params(p, paths, factors)] for _, p in splits]
    params0 = jax.tree.map(lambda *xs: jnp.stack(xs).reshape((len(seeds), 2) + xs[0].shape),
                           *[q for pair in inits for q in pair])
    tx, penalty = method_parts(method, config)
    eps = jnp.asarray(config.eps, jnp.float32)

    def logits_fn(params):
        return lambda x: nnx.merge(graphdef, params, copy=True)(x)

    def loss(params, x, y):
        ce = optax.softmax_cross_entropy_with_integer_labels(logits_fn(params)(x), y)
        return ce.mean() + penalty(params)

    def run_one(params, seed):
        base = jax.random.PRNGKey(seed)

        def step(carry, t):
            params, opt_state = carry
            idx = jax.random.choice(jax.random.fold_in(base, t), len(y_tr), (config.batch_size,), replace=False)
            grads = jax.grad(loss)(params, x_tr[idx], y_tr[idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(config.num_steps))
        f = logits_fn(params)
        robust = lambda attack: jax.vmap(lambda e: classifier_accuracy(f, attack(e), y_te))(eps)  # noqa: E731
        norms = jnp.stack([jnp.sqrt(jnp.sum(jnp.square(w))) for w in jax.tree.leaves(params) if w.ndim >= 2])
        return {"clean_accuracy": classifier_accuracy(f, x_te, y_te),
                "fgsm_accuracy": robust(lambda e: fgsm(f, x_te, y_te, e)),
                "pgd_accuracy": robust(lambda e: pgd(f, x_te, y_te, e, steps=config.pgd_steps)),
                "layer_norms": norms}

    fn = jax.vmap(jax.vmap(run_one, in_axes=(0, None)), in_axes=(0, 0))
    out = jax.jit(fn)(params0, jnp.asarray(seeds, jnp.uint32))
    return {k: np.asarray(v) for k, v in out.items()}


def run(config: DigitsConfig, ctx: RunContext) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(range(config.seed, config.seed + config.num_seeds))
    main = config.eps.index(config.main_eps)
    metrics, rows, results = {}, [], {}
    for method in ctx.progress(config.methods, desc="weissi.digits"):
        start = time.perf_counter()
        res = train_method(config, method, seeds)
        results[method] = res
        metrics[method] = {"clean_accuracy": float(res["clean_accuracy"][:, 0].mean()),
                           "fgsm_accuracy": float(res["fgsm_accuracy"][:, 0, main].mean()),
                           "pgd_accuracy": float(res["pgd_accuracy"][:, 0, main].mean())}
        for init, name in ((0, "standard"), (1, f"shifted (s={config.init_shift:g})")):
            r = res
            clean, fgsm = r["clean_accuracy"][:, init], r["fgsm_accuracy"][:, init, main]
            pgd = r["pgd_accuracy"][:, init, main]
            rows.append([method, name,
                         f"{clean.mean():.4f} ± {clean.std():.4f}",
                         f"{fgsm.mean():.4f} ± {fgsm.std():.4f}",
                         f"{pgd.mean():.4f} ± {pgd.std():.4f}",
                         " / ".join(f"{v:.1f}" for v in r["layer_norms"][:, init].mean(0)),
                         round(time.perf_counter() - start, 1) if init == 0 else None])
    arch = f"MLP {(64, *config.hidden, 10)}" if config.model == "mlp" else "SmallCNN (32, 64 channels)"
    ctx.report.text(
        f"{arch} on digits (1,347 train / 450 test), {config.num_steps} steps of batch {config.batch_size}, mean ± "
        f"std over {config.num_seeds} seeds. Adam {config.adam_lr} for none / l2 (λ={config.l2}) / weissi "
        f"(λ₁={config.weissi_lambda1}, λ₂={config.weissi_lambda2}) / adamw (wd={config.adamw}) / decoupled_weissi "
        f"(w={config.decoupled_weissi}); SGD {config.sgd_lr} momentum 0.9 + weight decay {config.weight_decay}. "
        f"Robust accuracy at ε = {config.main_eps} (L∞, inputs in [0, 1]); PGD: {config.pgd_steps} steps of 2.5ε/"
        f"{config.pgd_steps}. The shifted init scales the first layer by e^{config.init_shift:g} and the last by "
        f"e^-{config.init_shift:g} (same function). Published (Liu et al. 2020): WEISSI improves generalisation "
        f"and adversarial robustness over L2 / weight decay; exact numbers: see paper.")
    ctx.report.table(["method", "init", "clean acc", f"FGSM acc (ε={config.main_eps})",
                      f"PGD-{config.pgd_steps} acc (ε={config.main_eps})", "final ‖W_l‖", "time (s)"], rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for method, res in results.items():
        axes[0].plot(config.eps, res["fgsm_accuracy"][:, 0].mean(0), "o-", label=method)
        axes[1].plot(config.eps, res["pgd_accuracy"][:, 0].mean(0), "o-", label=method)
    for ax, name in zip(axes, ("FGSM", f"PGD-{config.pgd_steps}")):
        ax.set_title(f"{name} accuracy"), ax.set_xlabel("ε (L∞)")
    axes[0].legend(fontsize=7)
    ctx.report.figure(fig, "robust_accuracy", "Robust test accuracy against ε (standard init, mean over seeds)")
    return metrics
