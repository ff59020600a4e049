"""L∞ adversarial attacks written with `jax.grad`: FGSM and PGD, for robust-accuracy evaluation.

`logits_fn(x) -> [B, K]` is any classifier; inputs live in [lo, hi] (digits: [0, 1]).
- FGSM (Goodfellow et al. 2015): x' = clip(x + ε·sign(∇ₓ CE(f(x), y))).
- PGD (Madry et al. 2018): from x (or a uniform random start in the ε-ball), repeat
  x ← Π_{B∞(x₀, ε) ∩ [lo, hi]}(x + α·sign(∇ₓ CE)), `steps` times (PGD-10: steps = 10, α = 2.5ε/steps).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

LogitsFn = Callable[[jax.Array], jax.Array]


def _input_grad(logits_fn: LogitsFn, x: jax.Array, y: jax.Array) -> jax.Array:
    """∇ₓ Σ_i CE(f(x)_i, y_i): [B, ...] (a sum, so each example's gradient is its own)."""
    return jax.grad(lambda z: optax.softmax_cross_entropy_with_integer_labels(logits_fn(z), y).sum())(x)


def _check_eps(eps):
    if not isinstance(eps, jax.core.Tracer) and not eps >= 0:
        raise ValueError(f"attack radius eps must be >= 0, got {eps}")


def fgsm(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, eps: float, lo: float = 0.0, hi: float = 1.0) -> jax.Array:
    """FGSM adversarial examples. x [B, ...] in [lo, hi], y int [B] -> x' [B, ...], ‖x' − x‖∞ ≤ ε."""
    _check_eps(eps)
    return jnp.clip(x + eps * jnp.sign(_input_grad(logits_fn, x, y)), lo, hi)


def pgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, eps: float, steps: int = 10, step_size: float | None = None,
        key: jax.Array | None = None, lo: float = 0.0, hi: float = 1.0) -> jax.Array:
    """L∞ PGD adversarial examples (random start if `key` is given). Shapes as `fgsm`."""
    _check_eps(eps)
    if steps < 1:
        raise ValueError(f"pgd: steps must be >= 1, got {steps}")
    alpha = 2.5 * eps / steps if step_size is None else step_size
    x_adv = x if key is None else jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), lo, hi)

    def body(_, z):
        z = z + alpha * jnp.sign(_input_grad(logits_fn, z, y))
        return jnp.clip(jnp.clip(z, x - eps, x + eps), lo, hi)

    return jax.lax.fori_loop(0, steps, body, x_adv)


def classifier_accuracy(logits_fn: LogitsFn, x: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of x [B, ...] classified as y [B]; scalar."""
    return (logits_fn(x).argmax(-1) == y).mean()
