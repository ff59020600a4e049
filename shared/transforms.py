"""Optax-compatible regularisers (flooding, the gradient-norm penalty, WEISSI) and a flattening wrapper.

- `flood`, `iflood`: the flooded objectives |L − b| + b (Ishida et al. 2020; iFlood, Xie et al. 2022).
- `flooding(b)`: the same as a `GradientTransformationExtraArgs` reading the loss from `value=`.
- `gradient_norm_penalty(loss_fn, eps)`: L + (ε/2)‖∇L‖² and its gradient with one Hessian-vector
  product (kexue post of 2020-07-31: flooding's descent/ascent pair approximates this).
- `weissi_penalty`, `add_decoupled_weissi`: the weight-scale-shift-invariant regulariser (Liu et al.
  2020) in the loss, and decoupled like `optax.add_decayed_weights`.
- `flatten_small_leaves(inner, max_leaf_size)`: `optax.flatten` for the small leaves only.
For SAM use `optax.contrib.sam`; for weight decay `optax.add_decayed_weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from shared.checks import check_nonnegative

__all__ = [
    "flood",
    "iflood",
    "flooding",
    "FloodingState",
    "gradient_norm_penalty",
    "weissi_penalty",
    "add_decoupled_weissi",
    "default_weissi_mask",
    "flatten_small_leaves",
]


def flood(loss: jax.Array, b: float | jax.Array) -> jax.Array:
    """Flooded objective (Ishida et al. 2020, Eq. 2): L̃ = |L − b| + b; its gradient is sign(L − b)·∇L.

    Apply to the mini-batch mean loss. Args: loss scalar (or any array, elementwise); b ≥ 0.
    Returns: same shape as `loss`. With b = 0 (and L ≥ 0) it is the plain loss.
    """
    check_nonnegative(b, "flood level b")
    return jnp.abs(loss - b) + b


def iflood(per_example_losses: jax.Array, b: float | jax.Array) -> jax.Array:
    """Individual flooding (iFlood, Xie et al. 2022): each example's loss flooded, |ℓ_i − b| + b.

    Per example ([B] -> [B]); the iFlood objective is the mean of the result. Each example's
    gradient is sign(ℓ_i − b)·∇ℓ_i, so examples below the flood level are pushed back up.
    """
    check_nonnegative(b, "flood level b")
    return jnp.abs(per_example_losses - b) + b


class FloodingState(NamedTuple):
    """State of `flooding`: the sign applied at the last update (1 descent, −1 ascent, 0 at b)."""

    last_sign: jax.Array


def flooding(b: float | jax.Array) -> optax.GradientTransformationExtraArgs:
    """Flooding as a transform: multiplies updates by sign(value − b).

    Needs the extra argument `value=` (the mini-batch mean loss, the scalar whose gradient the updates
    are), as `optax.contrib.reduce_on_plateau` does. Chained first (before the optimiser) on the
    gradients of L, it gives exactly the gradients of `flood(L, b)`:

        tx = optax.chain(flooding(0.1), optax.sgd(0.1))
        updates, opt_state = tx.update(grads, opt_state, params, value=loss)
    """
    check_nonnegative(b, "flood level b")

    def init_fn(params):
        del params
        return FloodingState(last_sign=jnp.ones((), jnp.float32))

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is None:
            raise ValueError("flooding(b).update needs the loss as the extra argument `value=`")
        sign = jnp.sign(jnp.asarray(value, jnp.float32) - b)
        updates = jax.tree.map(lambda u: (u * sign.astype(u.dtype)) if u is not None else None, updates)
        return updates, FloodingState(last_sign=sign)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def gradient_norm_penalty(loss_fn: Callable[..., jax.Array],
                          eps: float | jax.Array) -> Callable[..., tuple[jax.Array, Any]]:
    """Gradient-norm-penalised objective and its gradient, with one Hessian-vector product.

    L̃(θ) = L(θ) + (ε/2)‖∇L(θ)‖²,  ∇L̃ = g + ε·H g  (g = ∇L, H = ∇²L).
    `jax.linearize` of `value_and_grad(loss_fn)` gives g and the forward-mode map v ↦ H v; it is
    applied once, to g (forward-over-reverse). Flooding's descent/ascent pair of step ε amounts to
    descent on L + (ε/2)‖∇L‖² (kexue post of 2020-07-31).

    Args:
      loss_fn: `loss_fn(params, *args) -> scalar`, differentiable in params.
      eps: ε ≥ 0 (a float or traced scalar).
    Returns:
      `fn(params, *args) -> (value, grads)` with value = L̃ (scalar) and grads = ∇L̃ (tree of params).
    """
    check_nonnegative(eps, "eps")

    def fn(params, *args):
        vg = lambda p: jax.value_and_grad(loss_fn)(p, *args)  # noqa: E731
        (value, g), lin = jax.linearize(vg, params)
        _, hg = lin(g)
        sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(g))
        total = value + 0.5 * eps * sq
        grads = jax.tree.map(lambda a, b: a + eps * b, g, hg)
        return total, grads

    return fn


def default_weissi_mask(params: Any) -> Any:
    """The default WEISSI selection: leaves with ndim ≥ 2 (dense matrices and conv kernels), not biases/scales."""
    return jax.tree.map(lambda p: hasattr(p, "ndim") and p.ndim >= 2, params)


def _resolve_mask(where, params):
    if where is None:
        return default_weissi_mask(params)
    if callable(where):
        return where(params)
    return where


def weissi_penalty(params: Any, lambda1: float | jax.Array, lambda2: float | jax.Array, where: Any = None) -> jax.Array:
    """WEISSI penalty (Liu et al. 2020): λ₁ Σ_l log‖W_l‖ + λ₂ Σ_l ‖W_l / ‖W_l‖‖₁.

    Invariant to weight-scale shifts W_l → c_l W_l with Π c_l = 1 (first term) and scale-free
    (second term). Norms are Frobenius norms of the flattened weight. ∇ log‖W‖ = W/‖W‖².

    Args:
      params: a pytree of arrays.
      lambda1, lambda2: ≥ 0.
      where: None (leaves with ndim ≥ 2: matrices and conv kernels), a pytree of bools with the
        structure of params, or a callable params -> such a pytree (as `optax.masked`).
    Returns: scalar (float32).
    Raises: ValueError if a lambda is negative or no leaf is selected.
    """
    check_nonnegative(lambda1, "lambda1")
    check_nonnegative(lambda2, "lambda2")
    mask = _resolve_mask(where, params)
    selected = [p for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m]
    if len(jax.tree.leaves(mask)) != len(jax.tree.leaves(params)):
        raise ValueError("where must have one bool per leaf of params")
    if not selected:
        raise ValueError("weissi_penalty: `where` selected no parameter leaf (default: leaves with ndim >= 2)")
    total = jnp.zeros((), jnp.float32)
    for w in selected:
        w = w.astype(jnp.promote_types(w.dtype, jnp.float32))
        norm = jnp.sqrt(jnp.sum(jnp.square(w)))
        total = total + lambda1 * jnp.log(norm) + lambda2 * jnp.sum(jnp.abs(w)) / norm
    return total


class AddDecoupledWeissiState(NamedTuple):
    """Empty state of `add_decoupled_weissi`."""


def add_decoupled_weissi(weight: float | jax.Array, mask: Any = None) -> optax.GradientTransformationExtraArgs:
    """Decoupled WEISSI: updates += weight · W/‖W‖², like `optax.add_decayed_weights` adds weight·W.

    Chained before the learning-rate scaling, e.g.
    `optax.chain(optax.scale_by_adam(), add_decoupled_weissi(1e-3), optax.scale_by_learning_rate(lr))`
    it applies W ← W − η·(u + weight·W/‖W‖²), the decoupled form of ∇(weight·log‖W‖).

    Args:
      weight: ≥ 0 (λ₁ of the penalty).
      mask: None (leaves with ndim ≥ 2), a pytree of bools, or a callable params -> pytree of bools.
    Needs `params` in `update`.
    """
    check_nonnegative(weight, "weight")

    def init_fn(params):
        del params
        return AddDecoupledWeissiState()

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("add_decoupled_weissi needs `params` in update")

        def add(u, p):
            pf = p.astype(jnp.promote_types(p.dtype, jnp.float32))
            sq = jnp.sum(jnp.square(pf))
            return (u + (weight * pf / sq).astype(u.dtype)) if u is not None else None

        updates = jax.tree.map(add, updates, params)
        return updates, state

    inner = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return optax.masked(inner, default_weissi_mask if mask is None else mask)


def flatten_small_leaves(inner: optax.GradientTransformation,
                         max_leaf_size: int = 65_536) -> optax.GradientTransformationExtraArgs:
    """Run an elementwise `inner` on (one vector of all leaves of ≤ `max_leaf_size` elements, the larger leaves).

    `optax.flatten` ravels every leaf into one vector, which turns a model's hundreds of small leaves
    (biases, norms, gains) into one kernel per operation, but also copies every gradient into a fresh
    parameter-sized vector and back each step. Here only the small leaves are raveled (their copy is
    cheap); the large ones, which hold almost all the bytes, are updated as they are. `inner` sees the
    pytree `(flat_small, (large_0, large_1, ...))` in the leaf order of the parameters, so it must not
    depend on the tree's structure (Adam, Adamax, SGD, weight decay, lr scaling; not a mask). Under FSDP
    the large leaves keep their shardings (`optax.flatten` would gather every leaf into its vector); take
    `max_leaf_size` below `shared.train.state_sharding`'s `min_size` to keep every sharded leaf out of it.

    Args:
      inner: the transformation to run on the split view.
      max_leaf_size: leaves with at most this many elements go into the flat vector.
    """
    inner = optax.with_extra_args_support(inner)

    def split(tree: Any) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        leaves = jax.tree.leaves(tree)
        small = [jnp.ravel(x) for x in leaves if x.size <= max_leaf_size]
        flat = jnp.concatenate(small) if small else jnp.zeros((0,), jnp.float32)
        return flat, tuple(x for x in leaves if x.size > max_leaf_size)

    def merge(like: Any, view: tuple[jax.Array, tuple[jax.Array, ...]]) -> Any:
        flat, large = view
        leaves, treedef = jax.tree.flatten(like)
        merged, start, next_large = [], 0, iter(large)
        for x in leaves:
            if x.size <= max_leaf_size:
                merged.append(flat[start:start + x.size].reshape(x.shape).astype(x.dtype))
                start += x.size
            else:
                merged.append(next(next_large))
        return jax.tree.unflatten(treedef, merged)

    def init(params: Any) -> optax.OptState:
        return inner.init(split(params))

    def update(updates: Any, state: optax.OptState, params: Any = None, **extra_args: Any) -> tuple[Any, Any]:
        new, state = inner.update(split(updates), state, None if params is None else split(params), **extra_args)
        return merge(updates, new), state

    return optax.GradientTransformationExtraArgs(init, update)
