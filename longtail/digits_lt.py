"""`longtail.digits_lt`: the imbalance losses on long-tailed digits, every method x seed in one program.

The training split of scikit-learn's digits (1,347 images) is subsampled to a long tail,
n_i = ⌊n_max·ρ^{−i/9}⌋ for digit i (ρ = 10 and 100; `shared.data.long_tail_subsample`), the test
split (450) stays balanced. For each ρ, an MLP is trained full-batch with AdamW for every method of
`longtail.methods` and every seed; methods and seeds are two `jax.vmap` axes over the harness's pure
`make_step`, scanned over steps inside one `jax.jit`. Post-hoc adjustment re-scores the ERM models
(τ = 1, and τ tuned on a held-out half of the test set); all methods are reported on the other half.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from longtail import metrics
from longtail.configs import DIGITS_METHODS, TRAINED_METHODS, DigitsLTConfig
from longtail.methods import switched_loss
from shared import data, train
from shared.experiment import RunContext
from shared.losses import posthoc_logit_adjustment
from shared.models import MLP

NUM_CLASSES = 10


def long_tailed_digits(rho: float, seeds: int, base_seed: int):
    """Train images [S, N, 8, 8, 1], labels [S, N] (one long-tailed subsample per seed), counts [K].

    Every subsample has the same class counts (only which examples are kept differs), so the seeds
    stack into one array.
    """
    images, labels = data.digits("train")
    picks = [data.long_tail_subsample(labels, rho, seed=base_seed * 1000 + s) for s in range(seeds)]
    x = np.stack([images[p] for p in picks])
    y = np.stack([labels[p] for p in picks])
    counts = np.bincount(y[0], minlength=NUM_CLASSES)
    return x, y, counts


def init_states(config: DigitsLTConfig, tx, num_methods: int):
    """(graphdef, TrainState with leading axes [S, M]): one MLP init per seed, shared by its methods."""
    states = []
    for s in range(config.seeds):
        seed = config.seed * 1000 + s
        model = MLP((64, *config.hidden, NUM_CLASSES), rngs=nnx.Rngs(seed))
        graphdef, state = train.create_train_state(model, tx, jax.random.PRNGKey(seed))
        states.append(state)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    state = jax.tree.map(lambda a: jnp.broadcast_to(a[:, None], (a.shape[0], num_methods) + a.shape[1:]), stacked)
    return graphdef, state


def make_program(config: DigitsLTConfig, counts, graphdef, tx, methods=TRAINED_METHODS):
    """The jitted study: (state [S, M], x [S, N, ...], y [S, N], x_test [T, ...])
    -> (state, test logits [S, M, T, K], losses [steps, S, M])."""
    loss_of = switched_loss(methods, counts, tau=config.tau, ldam_scale=config.ldam_scale,
                            focal_gamma=config.focal_gamma, class_balanced_beta=config.class_balanced_beta)

    def objective(model, batch, rng):
        del rng
        logits = model(batch["image"])  # [N, K]
        per_example = loss_of(batch["method"], logits, batch["label"])  # [N]
        return per_example.mean(), {}

    step = train.make_step(train.nnx_loss(graphdef, objective), tx)
    per_method = jax.vmap(step, in_axes=(0, {"image": None, "label": None, "method": 0}))
    per_seed = jax.vmap(per_method, in_axes=(0, {"image": 0, "label": 0, "method": None}))

    def predict(params, model_state, x_test):
        return nnx.merge(graphdef, params, model_state)(x_test)

    @jax.jit
    def program(state, x, y, x_test):
        batch = {"image": x, "label": y, "method": jnp.arange(len(methods))}

        def body(state, _):
            state, out = per_seed(state, batch)
            return state, out["loss"]

        state, loss_curve = jax.lax.scan(body, state, None, length=config.steps)
        logits = jax.vmap(jax.vmap(predict, in_axes=(0, 0, None)), in_axes=(0, 0, None))(
            state.params, state.model_state, x_test)  # [S, M, T, K]
        return state, logits, loss_curve

    return program


def method_errors(test_logits: np.ndarray, y_test: np.ndarray, counts: np.ndarray, config: DigitsLTConfig,
             methods=TRAINED_METHODS) -> dict:
    """Per-class errors [S, K] and balanced errors [S] of every method of `DIGITS_METHODS`, on the report half."""
    prior = jnp.asarray(counts / counts.sum(), jnp.float32)
    held, rest = metrics.holdout_split(y_test, config.holdout_fraction, seed=config.seed)
    erm = methods.index("erm")
    per_class, taus = {}, []
    for m in DIGITS_METHODS:
        rows = []
        for s in range(test_logits.shape[0]):
            if m == "posthoc":
                logits = posthoc_logit_adjustment(test_logits[s, erm], prior, config.tau)
            elif m == "posthoc_tuned":
                tau, _ = metrics.tune_posthoc_tau(test_logits[s, erm][held], y_test[held], prior)
                taus.append(tau)
                logits = posthoc_logit_adjustment(test_logits[s, erm], prior, tau)
            else:
                logits = test_logits[s, methods.index(m)]
            predictions = np.asarray(jnp.argmax(logits[rest], axis=-1))
            rows.append(np.asarray(metrics.per_class_error(predictions, y_test[rest], NUM_CLASSES)))
        per_class[m] = np.stack(rows)  # [S, K]
    return {"per_class": per_class, "balanced": {m: v.mean(axis=1) for m, v in per_class.items()},
            "tuned_tau": taus}


def run_rho(config: DigitsLTConfig, rho: float) -> dict:
    """Trains every method x seed at imbalance ρ; returns evaluation, counts, losses and timings."""
    x, y, counts = long_tailed_digits(rho, config.seeds, config.seed)
    x_test, y_test = data.digits("test")
    tx = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    graphdef, state = init_states(config, tx, len(TRAINED_METHODS))
    program = make_program(config, counts, graphdef, tx)
    start = time.perf_counter()
    state, logits, loss_curve = jax.block_until_ready(program(state, x, y, x_test))
    seconds = time.perf_counter() - start
    result = method_errors(np.asarray(logits), y_test, counts, config)
    result.update(counts=counts, seconds=seconds, final_loss=np.asarray(loss_curve[-1]),
                  skipped=int(np.asarray(state.skipped).sum()))
    return result


def plot_per_class(results: dict, config: DigitsLTConfig):
    """Per-class test error (mean over seeds) of the main methods, one panel per ρ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("erm", "balanced_ce", "logit_adjusted_loss", "posthoc", "focal", "class_balanced", "smoothed_f1")
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.6), squeeze=False)
    for ax, (rho, res) in zip(axes[0], results.items()):
        for m in shown:
            ax.plot(np.arange(NUM_CLASSES), 100 * np.nanmean(res["per_class"][m], axis=0), "o-", ms=3, label=m)
        ax.set_title(f"ρ = {rho:g} (train counts {res['counts'].tolist()})", fontsize=8)
        ax.set_xlabel("class (most → least frequent)"), ax.set_ylabel("test error %")
        ax.set_xticks(range(NUM_CLASSES))
    axes[0][0].legend(fontsize=7)
    return fig


def run(config: DigitsLTConfig, ctx: RunContext) -> dict:
    """The experiment: per ρ, every method x seed; tables of balanced and head/middle/tail errors."""
    results: dict = {}
    out: dict[str, dict] = {"balanced_error": {}, "balanced_error_std": {}, "groups": {}, "seconds": {}}
    for rho in ctx.progress(config.rhos, desc="digits_lt ρ"):
        res = run_rho(config, rho)
        results[rho] = res
        key = f"rho{rho:g}"
        groups = metrics.class_groups(res["counts"])
        out["balanced_error"][key] = {m: float(v.mean()) for m, v in res["balanced"].items()}
        out["balanced_error_std"][key] = {m: float(v.std()) for m, v in res["balanced"].items()}
        out["groups"][key] = {m: metrics.group_errors(np.nanmean(v, axis=0), groups)
                              for m, v in res["per_class"].items()}
        out["seconds"][key] = res["seconds"]
        out.setdefault("tuned_tau", {})[key] = [float(t) for t in res["tuned_tau"]]
        out.setdefault("skipped_steps", {})[key] = res["skipped"]

    ctx.report.text(
        f"scikit-learn digits, train subsampled to a long tail (n_i = ⌊n_max ρ^(−i/9)⌋), balanced test "
        f"(τ tuned on {config.holdout_fraction:.0%} of it, all errors on the rest). MLP "
        f"{(64, *config.hidden, 10)}, full-batch AdamW lr {config.learning_rate}, {config.steps} steps; "
        f"{len(TRAINED_METHODS)} losses x {config.seeds} seeds trained as one vmapped program per ρ.")
    rhos = [f"rho{r:g}" for r in config.rhos]
    ctx.report.table(["method"] + [f"BER % ρ={r:g}" for r in config.rhos],
                     [[m] + [f"{100 * out['balanced_error'][k][m]:.1f} ± {100 * out['balanced_error_std'][k][m]:.1f}"
                             for k in rhos] for m in DIGITS_METHODS],
                     caption=f"Balanced test error, mean ± std over {config.seeds} seeds.")
    for k in rhos:
        g = out["groups"][k]
        ctx.report.table(["method (" + k + ")", "head %", "middle %", "tail %"],
                         [[m, 100 * g[m]["head"], 100 * g[m]["middle"], 100 * g[m]["tail"]] for m in DIGITS_METHODS],
                         caption="Head / middle / tail: the 4 / 2 / 4 most / middle / least frequent classes.",
                         floatfmt=".1f")
    ctx.report.figure(plot_per_class(results, config), "per_class_error", "Per-class test error (mean over seeds)")
    return out


__all__ = ["long_tailed_digits", "init_states", "make_program", "method_errors", "run_rho", "run"]
