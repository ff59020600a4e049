"""`rnn_grad.adding`: the adding problem and the copy-memory task, simple RNN / LSTM / GRU, each
trained with Adam with and without gradient-norm clipping (both variants vmapped in one program).

Adding (Hochreiter & Schmidhuber 1997): inputs [T, 2] = (value ~ U(0,1), marker), one marker in
each half; target = sum of the two marked values; predicting the mean gives MSE 1/6.
Copy memory (Arjovsky et al. 2016): 10 symbols from 8, T − 1 blanks, a delimiter, 10 blanks; the
last 10 outputs must recall the symbols; CE averaged over the T + 20 steps; memoryless baseline
10·log 8 / (T + 20). Reference: kexue.fm 2020-11-13; Pascanu et al. 2013 §5.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_grad import cells
from rnn_grad.configs import AddingConfig
from shared.experiment import RunContext

TASKS = ("adding", "copy")
COPY_SYMBOLS, COPY_LEN = 8, 10


def adding_batch(key: jax.Array, batch: int, length: int):
    """(xs [B, T, 2], target [B]) of the adding problem."""
    if length < 2:
        raise ValueError(f"length must be >= 2 for the adding problem, got {length}")
    kv, k1, k2 = jax.random.split(key, 3)
    vals = jax.random.uniform(kv, (batch, length))
    half = length // 2
    i1 = jax.random.randint(k1, (batch,), 0, half)
    i2 = jax.random.randint(k2, (batch,), half, length)
    pos = jnp.arange(length)[None, :]
    marks = ((pos == i1[:, None]) | (pos == i2[:, None])).astype(jnp.float32)
    return jnp.stack([vals, marks], axis=-1), jnp.sum(vals * marks, axis=-1)


def copy_batch(key: jax.Array, batch: int, length: int):
    """(one-hot xs [B, T + 20, 10], labels [B, T + 20]) of the copy-memory task (0 blank, 9 delimiter)."""
    if length < 1:
        raise ValueError(f"length must be >= 1 for the copy task, got {length}")
    sym = jax.random.randint(key, (batch, COPY_LEN), 1, COPY_SYMBOLS + 1)
    total = length + 2 * COPY_LEN
    inp = jnp.zeros((batch, total), jnp.int32).at[:, :COPY_LEN].set(sym)
    inp = inp.at[:, COPY_LEN + length - 1].set(COPY_SYMBOLS + 1)
    lab = jnp.zeros((batch, total), jnp.int32).at[:, -COPY_LEN:].set(sym)
    return jax.nn.one_hot(inp, COPY_SYMBOLS + 2), lab


def baseline(task: str, length: int) -> float:
    """Loss of the best memoryless predictor: 1/6 (adding), 10·log 8/(T + 20) (copy)."""
    return 1.0 / 6.0 if task == "adding" else COPY_LEN * math.log(COPY_SYMBOLS) / (length + 2 * COPY_LEN)


def init_model(cell: str, key: jax.Array, task: str, hidden: int, *, gain=1.0, forget_bias=1.0):
    """{'cell': cell params, 'out': readout} for `task`."""
    if task not in TASKS:
        raise ValueError(f"task: unknown task {task!r}; expected one of {TASKS}")
    d_in, d_out = (2, 1) if task == "adding" else (COPY_SYMBOLS + 2, COPY_SYMBOLS + 2)
    kc, ko = jax.random.split(key)
    return {"cell": cells.init(cell, kc, d_in, hidden, gain=gain, forget_bias=forget_bias),
            "out": {"W": jax.random.normal(ko, (hidden, d_out)) / math.sqrt(hidden), "b": jnp.zeros((d_out,))}}


def per_example_loss(cell: str, task: str, params, xs, target):
    """Per-example loss [B]: squared error of the final readout (adding) or mean CE over steps (copy)."""
    def one(x, y):
        _, states = cells.run(cell, params["cell"], x)
        hs = cells.hidden(cell, states)
        if task == "adding":
            pred = hs[-1] @ params["out"]["W"][:, 0] + params["out"]["b"][0]
            return (pred - y) ** 2
        logits = hs @ params["out"]["W"] + params["out"]["b"][None, :]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    return jax.vmap(one)(xs, target)


def train(cell: str, task: str, length: int, config, clip_norms=(math.inf, 1.0)):
    """Trains one (cell, task, length) for every clip norm at once (vmapped); returns curves [C, steps]."""
    batch_fn = adding_batch if task == "adding" else copy_batch
    key = jax.random.PRNGKey(config.seed)
    params0 = init_model(cell, jax.random.fold_in(key, 1), task, config.hidden, gain=config.gain,
                         forget_bias=config.forget_bias)
    clips = jnp.asarray(clip_norms, jnp.float32)

    def loss_fn(p, xs, y):
        return jnp.mean(per_example_loss(cell, task, p, xs, y))  # the one reduction

    def run_one(clip):
        tx = optax.chain(optax.clip_by_global_norm(clip), optax.adam(config.learning_rate))

        def body(carry, step):
            p, opt = carry
            xs, y = batch_fn(jax.random.fold_in(jax.random.fold_in(key, 2), step), config.batch, length)
            loss, g = jax.value_and_grad(loss_fn)(p, xs, y)
            upd, opt = tx.update(g, opt, p)
            return (optax.apply_updates(p, upd), opt), (loss, optax.global_norm(g))

        (p, _), (losses, gnorms) = jax.lax.scan(body, (params0, tx.init(params0)), jnp.arange(config.steps))
        xs, y = batch_fn(jax.random.fold_in(key, 3), config.eval_batch, length)
        return losses, gnorms, loss_fn(p, xs, y)

    losses, gnorms, final = jax.jit(jax.vmap(run_one))(clips)
    return np.asarray(losses), np.asarray(gnorms), np.asarray(final)


def run(config: AddingConfig, ctx: RunContext) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name in ("hidden", "batch", "steps", "eval_batch"):
        if getattr(config, name) <= 0:
            raise ValueError(f"config.{name} must be positive, got {getattr(config, name)}")
    for c in config.cells:
        cells.check_cell(c)
    t0 = time.time()
    metrics: dict = {}
    rows = []
    jobs = [(task, T) for task in config.tasks
            for T in (config.lengths if task == "adding" else config.copy_lengths)]
    for task, T in jobs:
        if task not in TASKS:
            raise ValueError(f"config.tasks: unknown task {task!r}; expected one of {TASKS}")
        if T <= 0:
            raise ValueError(f"config lengths must be positive, got {T}")
        base = baseline(task, T)
        fig, ax = plt.subplots(figsize=(6, 4))
        for cell in ctx.progress(config.cells, desc=f"{task} T={T}"):
            losses, gnorms, final = train(cell, task, T, config, (math.inf, config.clip_norm))
            for ci, clip in enumerate(("no_clip", "clip")):
                curve = losses[ci]
                k = config.log_every
                smooth = curve[: len(curve) // k * k].reshape(-1, k).mean(1)
                solved = bool(final[ci] < 0.5 * base)
                metrics.setdefault(task, {}).setdefault(f"T={T}", {})[f"{cell}/{clip}"] = {
                    "final_loss": float(final[ci]), "baseline": base, "solved": solved,
                    "max_grad_norm": float(np.nanmax(gnorms[ci]))}
                rows.append([task, T, cell, clip, float(final[ci]), base, "yes" if solved else "no",
                             float(np.nanmax(gnorms[ci]))])
                ax.plot(np.arange(len(smooth)) * k, smooth, ls="-" if clip == "clip" else ":",
                        label=f"{cell} {clip}")
                for s, v in zip(range(0, len(curve), k), smooth):
                    ctx.log_scalars(int(s), {"loss": float(v)}, prefix=f"{task}_T{T}/{cell}_{clip}/")
        ax.axhline(base, color="k", lw=0.8, label="memoryless baseline")
        ax.set(title=f"{task}, T = {T}", xlabel="step", ylabel="training loss", yscale="log")
        ax.legend(fontsize=7)
        ctx.report.figure(fig, f"{task}_T{T}", f"{task} learning curves, T = {T}")
    ctx.report.section("Which models learn the long-range tasks")
    ctx.report.text(f"hidden {config.hidden}, batch {config.batch}, {config.steps} Adam steps "
                    f"(lr {config.learning_rate}), clip = clip_by_global_norm({config.clip_norm}); solved = "
                    "held-out loss < half the memoryless baseline. The post / literature: a tanh RNN stalls "
                    "at the baseline for T ≥ 100; an LSTM with forget bias 1 solves T = 100 in a few "
                    "thousand steps.")
    ctx.report.table(["task", "T", "cell", "clipping", "final loss", "baseline", "solved", "max ‖g‖"], rows)
    metrics["wall_time_s"] = time.time() - t0
    return metrics
