"""The post's derivation, checked numerically: flooding's descent/ascent pair is a gradient-norm penalty.

Around the flood level the flooded loss alternates a descent step and an ascent step of size ε:
θ₁ = θ₀ − ε g(θ₀), θ₂ = θ₁ + ε g(θ₁). With g(θ₁) = g(θ₀) − ε H g(θ₀) + O(ε²),
θ₂ − θ₀ = −ε² H g + O(ε³) = −ε² ∇(½‖∇L‖²) + O(ε³) (kexue.fm, 2020-07-31), i.e. the pair is one
gradient step of size ε² on ½‖∇L‖². The error of the approximation must shrink like ε³.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flooding.configs import DerivationConfig
from shared.experiment import RunContext


def descent_ascent_displacement(loss_fn: Callable[[Any], jax.Array], params: Any, eps: float | jax.Array) -> Any:
    """θ₂ − θ₀ for θ₁ = θ₀ − ε∇L(θ₀), θ₂ = θ₁ + ε∇L(θ₁), computed as ε(g(θ₁) − g(θ₀)) (no cancellation in θ)."""
    grad = jax.grad(loss_fn)
    g0 = grad(params)
    g1 = grad(jax.tree.map(lambda p, g: p - eps * g, params, g0))
    return jax.tree.map(lambda a, b: eps * (a - b), g1, g0)


def predicted_displacement(loss_fn: Callable[[Any], jax.Array], params: Any, eps: float | jax.Array) -> Any:
    """−ε² ∇(½‖∇L‖²) = −ε² H g, with one Hessian-vector product (forward over reverse)."""
    g = jax.grad(loss_fn)(params)
    _, hg = jax.jvp(jax.grad(loss_fn), (params,), (g,))
    return jax.tree.map(lambda v: -(eps ** 2) * v, hg)


def approximation_errors(loss_fn: Callable[[Any], jax.Array], params: Any, eps_values: Sequence[float]) -> np.ndarray:
    """‖(θ₂ − θ₀) − (−ε² H g)‖ for each ε in `eps_values` ([E] -> [E])."""
    @jax.jit
    def error(eps):
        actual = descent_ascent_displacement(loss_fn, params, eps)
        predicted = predicted_displacement(loss_fn, params, eps)
        diff = jax.tree.map(jnp.subtract, actual, predicted)
        return jnp.sqrt(sum(jnp.sum(jnp.square(d)) for d in jax.tree.leaves(diff)))

    return np.asarray([float(error(jnp.asarray(e, jnp.result_type(float)))) for e in eps_values])


def loglog_slope(eps_values: Sequence[float] | np.ndarray, errors: np.ndarray) -> float:
    """Least-squares slope of log(error) against log(ε) (3 for an O(ε³) error)."""
    return float(np.polyfit(np.log(np.asarray(eps_values)), np.log(np.asarray(errors)), 1)[0])


def tanh_mlp_problem(seed: int = 0, n: int = 32, d: int = 5, hidden: int = 16, dtype=jnp.float64):
    """A smooth test problem: a 1-hidden-layer tanh network, squared loss on random data.

    Returns (loss_fn, params) with params {"w1": [d, h], "w2": [h]}; needs x64 for dtype float64.
    """
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    x = jax.random.normal(k1, (n, d), dtype)
    y = jax.random.normal(k2, (n,), dtype)
    params = {"w1": jax.random.normal(k3, (d, hidden), dtype) / np.sqrt(d),
              "w2": jax.random.normal(k4, (hidden,), dtype) / np.sqrt(hidden)}

    def loss_fn(p):
        return 0.5 * jnp.mean(jnp.square(jnp.tanh(x @ p["w1"]) @ p["w2"] - y))

    return loss_fn, params


_DEFAULT_EPS = tuple(np.geomspace(0.3, 0.003, 9))


def check_derivation(eps_values: Sequence[float] = _DEFAULT_EPS,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(eps [E], errors [E], relative errors [E], slope) on the tanh problem in float64."""
    with jax.enable_x64(True):
        loss_fn, params = tanh_mlp_problem(seed)
        errors = approximation_errors(loss_fn, params, eps_values)
        scale = np.asarray([float(jnp.sqrt(sum(jnp.sum(jnp.square(v)) for v in jax.tree.leaves(
            predicted_displacement(loss_fn, params, e))))) for e in eps_values])
    return np.asarray(eps_values), errors, errors / scale, loglog_slope(eps_values, errors)


def run(config: DerivationConfig, ctx: RunContext) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = np.geomspace(config.eps_max, config.eps_min, config.num_eps)
    eps, errors, rel, slope = check_derivation(tuple(eps), config.seed)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.loglog(eps, errors, "o-", label="‖(θ₂−θ₀) + ε²Hg‖")
    ax.loglog(eps, errors[-1] * (eps / eps[-1]) ** 3, "k--", lw=0.8, label="∝ ε³")
    ax.set_xlabel("ε"), ax.legend()
    ctx.report.text("Descent then ascent step of size ε (flooding around b) against −ε²∇(½‖∇L‖²), on a "
                    "tanh network with squared loss in float64 (kexue.fm 2020-07-31).")
    ctx.report.figure(fig, "derivation_loglog", f"error of the ε² approximation; fitted slope {slope:.3f} (expected 3)")
    ctx.report.table(["ε", "absolute error", "relative error"], [[e, a, r] for e, a, r in zip(eps, errors, rel)])
    return {"slope": slope, "eps": eps.tolist(), "errors": errors.tolist(), "relative_errors": rel.tolist()}
