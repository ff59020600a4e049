"""`longtail.synthetic`: Menon et al.'s 2-D Gaussian study (ICLR 2021, Sec. 6.1, Fig. 2), vectorised.

Two classes in 2-D, x | y ~ N(y·μ, I) with μ = (1, 1), y ∈ {−1, +1}, P(y = +1) = 5%. The balanced-error
Bayes rule is the bisector x₁ + x₂ = 0, with balanced error Φ(−‖μ‖) = Φ(−√2) ≈ 7.86%.

Each method fits an affine classifier, logits [0, w·x + b] (for two classes only the logit difference
matters), by minimising a member of the pairwise-margin family (Eq. 11, `shared.losses`):
    ℓ(y, f) = α_y · log(1 + Σ_{y'≠y} exp(Δ_{yy'} + f_{y'} − f_y))
  erm                  Δ = 0,                          α = 1
  balanced_ce          Δ = 0,                          α_y = 1 / (K π_y)
  ldam                 Δ_{yy'} = Δ_y ∝ π_y^{−1/4},      α = 1
  equalised            Δ_{yy'} = τ log(π_{y'} / π_y),   α_y = 1 / (K π_y)
  logit_adjusted_loss  Δ_{yy'} = τ log(π_{y'} / π_y),   α = 1      (= CE on f + τ log π, Eq. 10)
  posthoc              the ERM classifier scored as f − τ log π (Eq. 9)
The empirical risk is strictly convex in (w, b), so each is solved to convergence by Newton's method
(`jax.hessian` of the loss): the study compares minimisers, not optimisers. One trial is a pure
function of its key; `jax.vmap` runs all trials (and, inside a trial, all methods) as one program.

Since this model is well specified, the logit-adjusted loss's population minimiser is exactly the
log-likelihood ratio w = 2μ = (2, 2), b = 0 (its sigmoid gives the balanced posterior), and ERM's
is w = (2, 2), b = log(π₊/π₋): the post-hoc correction moves it back to the Bayes boundary.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from longtail import metrics
from longtail.configs import SyntheticConfig
from shared import losses
from shared.experiment import RunContext

MU = (1.0, 1.0)
TRAINED = ("erm", "balanced_ce", "ldam", "equalised", "logit_adjusted_loss")
METHODS = TRAINED + ("posthoc",)
BAYES_BALANCED_ERROR = 0.5 * math.erfc(math.sqrt(2.0) / math.sqrt(2.0))  # Φ(−√2) = ½ erfc(1)
# balanced error (%) of an independent JAX check of the study (longtail/README.md, sources; 20 trials)
PUBLISHED = {"erm": 18.1, "ldam": 16.3, "equalised": 9.0, "logit_adjusted_loss": 8.1,
             "bayes": 100 * BAYES_BALANCED_ERROR}


def sample(key: jax.Array, n: int, positive_prior: float) -> tuple[jax.Array, jax.Array]:
    """n points of the study: x [n, 2] float32, labels [n] int32 (1 = the rare positive class)."""
    label_key, noise_key = jax.random.split(key)
    labels = jax.random.bernoulli(label_key, positive_prior, (n,)).astype(jnp.int32)  # [n]
    sign = (2 * labels - 1).astype(jnp.float32)  # [n] in {−1, +1}
    x = sign[:, None] * jnp.asarray(MU, jnp.float32)[None, :] + jax.random.normal(noise_key, (n, 2))
    return x, labels


def affine_logits(theta: jax.Array, x: jax.Array) -> jax.Array:
    """theta = (w₁, w₂, b) [3]; x [n, 2] -> logits [n, 2] = [0, w·x + b]."""
    z = x @ theta[:2] + theta[2]  # [n]
    return jnp.stack([jnp.zeros_like(z), z], axis=-1)


def method_losses(prior: jax.Array, tau: float, ldam_scale: float) -> tuple[jax.Array, jax.Array]:
    """Margins Δ [M, 2, 2] and class weights α [M, 2] of the `TRAINED` methods, for prior π [2]."""
    k = prior.shape[0]
    zero = jnp.zeros((k, k), jnp.float32)
    ones = jnp.ones((k,), jnp.float32)
    la = losses.logit_adjustment_margins(prior, tau)
    balanced = losses.balanced_class_weights(prior)
    margins = jnp.stack([zero, zero, losses.ldam_margins(prior, ldam_scale), la, la])
    weights = jnp.stack([ones, balanced, ones, balanced, ones])
    return margins, weights


def empirical_risk(theta, x, labels, margins, weights) -> jax.Array:
    """Mean pairwise-margin loss of the affine classifier (scalar)."""
    return jnp.mean(losses.pairwise_margin_loss(affine_logits(theta, x), labels, margins, weights))


def fit_newton(x, labels, margins, weights, steps: int, ridge: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Minimises `empirical_risk` over θ [3] by `steps` damped Newton iterations from θ = 0.

    Each example's loss depends on θ only through its logit difference z_i = θ·(x_i, 1), so the
    gradient is Φᵀℓ'/n and the Hessian Φᵀ diag(ℓ'') Φ/n with Φ = [x, 1] [n, 3]; ℓ' is `jax.grad` of
    the summed loss in z and ℓ'' its `jax.jvp` along ones (the Hessian in z is diagonal) — cheaper
    than `jax.hessian` in θ, same numbers. Each iteration takes the best of the step sizes
    1, ½, ¼, ⅛, 1⁄16 along the Newton direction (an exhaustive backtracking line search, branch-free
    so it vmaps), so the risk never increases even where large margins make the full step overshoot.
    Returns (θ [3], final gradient norm [] — the convergence check).
    """
    n = x.shape[0]
    features = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)  # Φ [n, 3]
    zeros = jnp.zeros((n,), x.dtype)

    def total(z):  # z [n] -> Σ_i ℓ(y_i, [0, z_i])
        logits = jnp.stack([zeros, z], axis=-1)  # [n, 2]
        return jnp.sum(losses.pairwise_margin_loss(logits, labels, margins, weights))

    def risk(theta):
        return total(features @ theta) / n

    step_sizes = 0.5 ** jnp.arange(5, dtype=jnp.float32)  # [5]

    def newton(theta, _):
        d1, d2 = jax.jvp(jax.grad(total), (features @ theta,), (jnp.ones((n,), x.dtype),))  # ℓ', ℓ'' [n]
        g = features.T @ d1 / n  # [3]
        h = (features * d2[:, None]).T @ features / n + ridge * jnp.eye(3)  # [3, 3]
        direction = jnp.linalg.solve(h, g)  # [3]
        candidates = theta[None, :] - step_sizes[:, None] * direction[None, :]  # [5, 3]
        values = jax.vmap(risk)(candidates)  # [5]
        best = candidates[jnp.argmin(jnp.where(jnp.isfinite(values), values, jnp.inf))]
        return jnp.where(jnp.min(values) <= risk(theta), best, theta), None

    theta, _ = jax.lax.scan(newton, jnp.zeros(3, jnp.float32), None, length=steps)
    return theta, jnp.linalg.norm(jax.grad(risk)(theta))


def run_trial(key: jax.Array, config: SyntheticConfig) -> dict[str, jax.Array]:
    """One trial: fresh data, every method fitted (vmapped over methods), balanced test errors.

    Returns: {"balanced_error": [len(METHODS)], "theta": [len(METHODS), 3] (posthoc's with its
    adjusted bias), "grad_norm": [len(TRAINED)], "bayes_empirical": [] (the x₁ + x₂ = 0 rule on this
    test set), "prior": [2]}.
    """
    train_key, test_key = jax.random.split(key)
    x, y = sample(train_key, config.n_train, config.positive_prior)
    x_test, y_test = sample(test_key, config.n_test, config.positive_prior)
    counts = jnp.maximum(jnp.bincount(y, length=2), 1).astype(jnp.float32)  # a class is never empty
    prior = counts / jnp.sum(counts)  # [2] the empirical training prior
    margins, weights = method_losses(prior, config.tau, config.ldam_scale)
    thetas, grad_norms = jax.vmap(fit_newton, in_axes=(None, None, 0, 0, None, None))(
        x, y, margins, weights, config.newton_steps, config.ridge)  # [M, 3], [M]
    # post-hoc: argmax of f − τ log π, i.e. the ERM bias minus τ log(π₊ / π₋)
    posthoc = thetas[0].at[2].add(-config.tau * (jnp.log(prior[1]) - jnp.log(prior[0])))
    thetas = jnp.concatenate([thetas, posthoc[None]], axis=0)  # [M + 1, 3]

    def test_error(theta):
        predictions = (x_test @ theta[:2] + theta[2] > 0).astype(jnp.int32)
        return metrics.balanced_error(predictions, y_test, 2)

    bayes = metrics.balanced_error((x_test.sum(axis=1) > 0).astype(jnp.int32), y_test, 2)
    return {"balanced_error": jax.vmap(test_error)(thetas), "theta": thetas, "grad_norm": grad_norms,
            "bayes_empirical": bayes, "prior": prior}


def trial_keys(config: SyntheticConfig) -> jax.Array:
    """Keys [trials, 2]: trial t uses fold_in(PRNGKey(seed), t)."""
    base = jax.random.PRNGKey(config.seed)
    return jax.vmap(lambda t: jax.random.fold_in(base, t))(jnp.arange(config.trials))


def make_study(config: SyntheticConfig):
    """The jitted, vectorised study: keys [T, 2] -> `run_trial` outputs stacked over T.

    `jax.lax.map(..., batch_size=config.trial_batch)` vmaps chunks of trials and loops over the
    chunks inside the one program: on a CPU a chunk's working set stays in cache, which a single
    vmap over all trials (10k points x 5 methods x T) does not.
    """
    one = lambda key: run_trial(key, config)  # noqa: E731
    if config.trial_batch >= config.trials:
        return jax.jit(jax.vmap(one))
    return jax.jit(lambda keys: jax.lax.map(one, keys, batch_size=config.trial_batch))


def study(config: SyntheticConfig) -> dict[str, np.ndarray]:
    """Runs all trials of `config` in one program; numpy outputs with a leading trials axis."""
    return jax.device_get(make_study(config)(trial_keys(config)))


def summarise(outputs: dict[str, np.ndarray]) -> dict:
    """metrics.json: balanced error mean / std over trials per method (fractions), plus the Bayes rate."""
    errors = np.asarray(outputs["balanced_error"])  # [T, M]
    mean = {m: float(errors[:, i].mean()) for i, m in enumerate(METHODS)}
    std = {m: float(errors[:, i].std()) for i, m in enumerate(METHODS)}
    mean["bayes"] = BAYES_BALANCED_ERROR
    return {"balanced_error": mean, "balanced_error_std": std,
            "bayes_empirical": float(np.mean(outputs["bayes_empirical"])),
            "max_grad_norm": float(np.max(outputs["grad_norm"])), "trials": int(errors.shape[0])}


def plot_boundaries(config: SyntheticConfig, theta: np.ndarray):
    """Scatter of trial 0's test points and each method's decision boundary w·x + b = 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = jax.device_get(sample(jax.random.split(trial_keys(config)[0])[1], config.n_test,
                                 config.positive_prior))
    x, y = x[: config.plot_points], y[: config.plot_points]
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.scatter(x[y == 0, 0], x[y == 0, 1], s=3, c="tab:blue", alpha=0.35, label="y = −1 (95%)")
    ax.scatter(x[y == 1, 0], x[y == 1, 1], s=6, c="tab:red", alpha=0.8, label="y = +1 (5%)")
    grid = np.linspace(-4.5, 4.5, 2)
    ax.plot(grid, -grid, "k--", lw=2, label="Bayes (balanced)")
    for (w1, w2, b), name in zip(theta, METHODS):
        ax.plot(grid, -(w1 * grid + b) / w2, lw=1.5, label=name)
    ax.set_xlim(-4.5, 4.5), ax.set_ylim(-4.5, 4.5), ax.set_xlabel("x₁"), ax.set_ylabel("x₂")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Decision boundaries, trial 0")
    return fig


def run(config: SyntheticConfig, ctx: RunContext) -> dict:
    """The experiment: all trials, a mean ± std table beside the published numbers, the boundary plot."""
    program = make_study(config)
    keys = trial_keys(config)
    start = time.perf_counter()
    compiled = program.lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    outputs = jax.device_get(jax.block_until_ready(compiled(keys)))
    run_s = time.perf_counter() - start
    result = summarise(outputs)
    result.update(compile_seconds=compile_s, run_seconds=run_s)

    ctx.report.text(
        f"Menon et al. (2021), Sec. 6.1: x | y ~ N(y·(1,1), I), P(y=+1) = {config.positive_prior}, "
        f"{config.n_train} train / {config.n_test} test points, affine classifier fitted to convergence "
        f"({config.newton_steps} Newton steps, max final gradient norm {result['max_grad_norm']:.1e}), "
        f"{config.trials} trials in one vmapped program ({run_s:.2f} s run + {compile_s:.2f} s compile). "
        f"τ = {config.tau}, LDAM scale {config.ldam_scale}.")
    rows = [[m, 100 * result["balanced_error"][m], 100 * result["balanced_error_std"][m], PUBLISHED.get(m)]
            for m in METHODS]
    rows.append(["bayes Φ(−√2)", 100 * BAYES_BALANCED_ERROR, None, PUBLISHED["bayes"]])
    rows.append(["bayes rule on the test sets", 100 * result["bayes_empirical"], None, None])
    ctx.report.table(["method", "balanced error % (mean)", "std", "published %"], rows,
                     caption="Published: the independent JAX check quoted in longtail/README.md (20 trials).")
    ctx.report.figure(plot_boundaries(config, np.asarray(outputs["theta"][0])), "boundaries",
                      "Decision boundaries of each method on trial 0 (dashed: balanced Bayes rule)")
    return result


__all__ = ["METHODS", "BAYES_BALANCED_ERROR", "sample", "affine_logits", "method_losses", "empirical_risk",
           "fit_newton", "run_trial", "trial_keys", "make_study", "study", "summarise", "run"]
