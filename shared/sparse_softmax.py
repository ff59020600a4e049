"""Sparse Softmax: softmax and cross-entropy restricted to the k largest logits (SPACES, kexue 8046).

Ω_k(s) is the set of the k largest entries of s; ties are broken by index (the lower index wins, as
`jax.lax.top_k` does), so Ω_k always has exactly k entries.

    sparse_softmax(s)_i = e^{s_i} / Σ_{j∈Ω_k} e^{s_j}   for i ∈ Ω_k, exactly 0 otherwise,
    sparse CE(s, t)     = log Σ_{i∈Ω_k} e^{s_i} − s_t.

The target t is not added to Ω_k (as in SPACES); the loss is still ≥ 0 because the top-k
log-sum-exp is ≥ the largest logit. With k = K both reduce to the dense softmax / cross-entropy.
Reference: Su, "SPACES" (kexue.fm/archives/8046, 2021); Sun et al. 2021, arXiv:2112.12433.

Both functions have a custom JVP that works on the [..., k] top-k values and writes them into zeros
at the top-k indices (exactly Ω_k, ties included); JAX transposes it for reverse mode, and forward
mode (jvp, linearize, Hessians) works too. The sparse CE forward + backward costs about the same as
the dense CE's on CPU; rebuilding the mask with an elementwise threshold test s > v_k or
(s = v_k and index ≤ i_k) over the whole [B, K] array was slower (benchmarks/bench_losses.py; figures
in benchmarks/RESULTS.md).

Validation: `k` must be a Python int with 1 ≤ k ≤ K (checked at trace time). Label range is
checked eagerly when labels are concrete; under `jax.jit` only shapes are checked (out-of-range
labels then give a wrong value, never an error), as for optax's cross-entropy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from shared.checks import check_labels

__all__ = ["sparse_softmax", "sparse_softmax_cross_entropy", "top_k_mask"]


def _check_k(k, num_classes: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        try:
            k = int(k)  # numpy ints; a tracer raises here
        except Exception as e:
            raise ValueError(f"k must be a static Python int, got {type(k).__name__}") from e
    if not 1 <= k <= num_classes:
        raise ValueError(f"k must satisfy 1 <= k <= K={num_classes} (number of classes), got k={k}")
    return k


_CHUNK = 128  # chunk width of the two-stage top-k


def _top_k(x, k: int):
    """Exactly `jax.lax.top_k(x, k)` (values descending, ties by lower index), faster for large K
    (benchmarks/bench_losses.py).

    Two stages for K ≥ 16·c: (1) maxima of contiguous chunks of width c (one streaming
    `reduce_window` max over [B, K], the last chunk padded with −inf); (2) `lax.top_k` on the
    entries of the k chunks with the largest maxima ([B, k·c] candidates, gathered in increasing
    index order). Exact: an entry among the k largest has fewer than k entries above it, so fewer
    than k other chunks can beat its chunk, which is therefore among the k best chunks (ties between
    chunks resolve by chunk index, i.e. by entry index, as in top_k).
    """
    num = x.shape[-1]
    c = _CHUNK
    n_chunks = -(-num // c)
    if num < 16 * c or n_chunks <= k:
        return jax.lax.top_k(x, k)
    neg_inf = jnp.asarray(-jnp.inf, x.dtype)
    window = (1,) * (x.ndim - 1) + (c,)
    padding = ((0, 0),) * (x.ndim - 1) + ((0, n_chunks * c - num),)
    maxima = jax.lax.reduce_window(x, neg_inf, jax.lax.max, window, window, padding)  # [..., n_chunks]
    _, chunks = jax.lax.top_k(maxima, k)  # [..., k]
    chunks = jnp.sort(chunks, axis=-1)  # increasing index order keeps top_k's tie-breaking
    offs = jnp.arange(c, dtype=chunks.dtype).reshape((1,) * chunks.ndim + (c,))
    cand_idx = (chunks[..., None] * c + offs).reshape(x.shape[:-1] + (k * c,))  # [..., k*c]
    cand = jnp.take_along_axis(x, cand_idx, axis=-1, mode="fill", fill_value=-float("inf"))
    vals, pos = jax.lax.top_k(cand, k)
    return vals, jnp.take_along_axis(cand_idx, pos, axis=-1)


def _scatter_last(values, idx, num_classes: int):
    """Zeros of shape [..., K] with `values` [..., k] written at the (distinct) positions `idx` [..., k]."""
    lead = values.shape[:-1]
    n = 1
    for d in lead:
        n *= d
    v2 = values.reshape(n, values.shape[-1])
    i2 = idx.reshape(n, idx.shape[-1])
    rows = jax.lax.broadcasted_iota(jnp.int32, i2.shape, 0)
    out = jnp.zeros((n, num_classes), values.dtype).at[rows, i2].set(v2, unique_indices=True, mode="drop")
    return out.reshape(lead + (num_classes,))


def top_k_mask(logits: ArrayLike, k: int, axis: int = -1) -> jax.Array:
    """Boolean mask of the k largest entries along `axis` (exactly k True; ties broken by lower index).

    logits: [..., K] (any axis); returns bool of the same shape.
    """
    x = jnp.moveaxis(jnp.asarray(logits), axis, -1)
    k = _check_k(k, x.shape[-1])
    _, idx = _top_k(x, k)
    mask = _scatter_last(jnp.ones(idx.shape, bool), idx, x.shape[-1])
    return jnp.moveaxis(mask, -1, axis)


# Both functions are `jax.custom_jvp`s whose tangent rules gather the tangent at the top-k indices
# and scatter into zeros there. The rules are linear in the tangent, so JAX transposes them for reverse
# mode into the gathers and scatters of the hand-written VJPs they replaced (as fast:
# benchmarks/bench_forward_mode.py), and forward mode (jvp, linearize, Hessians) works as well.


def _top_k_softmax(x, k: int):
    """(softmax of the k largest logits [..., k], in at least float32; their indices [..., k])."""
    vals, idx = _top_k(x, k)
    return jax.nn.softmax(vals.astype(jnp.promote_types(x.dtype, jnp.float32)), axis=-1), idx


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sparse_softmax_last(x, k):
    q, idx = _top_k_softmax(x, k)
    return _scatter_last(q.astype(x.dtype), idx, x.shape[-1])


@_sparse_softmax_last.defjvp
def _sparse_softmax_jvp(k, primals, tangents):
    """ṗ_i = p_i (ṡ_i − Σ_{j∈Ω_k} p_j ṡ_j) on Ω_k, 0 elsewhere (Ω_k is locally constant)."""
    (x,), (dx,) = primals, tangents
    q, idx = _top_k_softmax(x, k)
    dk = jnp.take_along_axis(dx, idx, axis=-1).astype(q.dtype)  # [..., k]
    dq = q * (dk - jnp.sum(q * dk, axis=-1, keepdims=True))
    num_classes = x.shape[-1]
    return _scatter_last(q.astype(x.dtype), idx, num_classes), _scatter_last(dq.astype(dx.dtype), idx, num_classes)


def sparse_softmax(logits: ArrayLike, k: int, axis: int = -1) -> jax.Array:
    """Softmax over the k largest logits, exact zeros elsewhere (SPACES' Sparse Softmax).

    p_i = e^{s_i} / Σ_{j∈Ω_k} e^{s_j} for i ∈ Ω_k (exactly k entries, ties broken by index), else 0.

    Args:
      logits: [..., K, ...] float array; `axis` is the class axis.
      k: static Python int, 1 ≤ k ≤ K.
      axis: class axis.
    Returns:
      probabilities, same shape and dtype as `logits`, summing to 1 along `axis`.
    Reference: kexue.fm/archives/8046; arXiv:2112.12433.
    """
    x = jnp.moveaxis(jnp.asarray(logits), axis, -1)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"logits must be floating point, got {x.dtype}")
    k = _check_k(k, x.shape[-1])
    p = _sparse_softmax_last(x, k)
    return jnp.moveaxis(p, -1, axis)


def _sparse_ce_parts(x, labels, k):
    """(loss [B] in x's dtype, softmax of the top-k logits [B, k], their indices [B, k]).

    loss = logsumexp(top-k logits) − s_label, in at least float32.
    """
    vals, idx = _top_k(x, k)  # [B, k]
    vals = vals.astype(jnp.promote_types(x.dtype, jnp.float32))
    lse = jax.nn.logsumexp(vals, axis=-1)  # [B]
    s_t = jnp.take_along_axis(x, labels[..., None], axis=-1)[..., 0].astype(vals.dtype)  # [B]
    return (lse - s_t).astype(x.dtype), jnp.exp(vals - lse[..., None]), idx


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _sparse_ce(x, labels, k):
    return _sparse_ce_parts(x, labels, k)[0]


@_sparse_ce.defjvp
def _sparse_ce_jvp(k, primals, tangents):
    """ℓ̇ = Σ_{i∈Ω_k} p_i ṡ_i − ṡ_label, p the sparse softmax; the integer labels get no tangent."""
    x, labels = primals
    dx = tangents[0]
    loss, pk, idx = _sparse_ce_parts(x, labels, k)
    dxk = jnp.take_along_axis(dx, idx, axis=-1).astype(pk.dtype)  # [B, k]
    dxt = jnp.take_along_axis(dx, labels[..., None], axis=-1)[..., 0].astype(pk.dtype)  # [B]
    return loss, (jnp.sum(pk * dxk, axis=-1) - dxt).astype(x.dtype)


def sparse_softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike, k: int) -> jax.Array:
    """Sparse-softmax cross-entropy, per example (SPACES, kexue 8046).

    ℓ = log Σ_{i∈Ω_k} e^{s_i} − s_label, Ω_k the k largest logits (label not added; ℓ ≥ 0).
    Equals dense softmax cross-entropy when k = K. The gradient is sparse_softmax(s) − onehot(label):
    it reaches only the top-k logits and the label's.

    Args:
      logits: [..., K] float array (class axis last).
      labels: [...] integer class indices in [0, K).
      k: static Python int, 1 ≤ k ≤ K.
    Returns:
      [...] per-example losses, dtype of `logits` (computed in at least float32).
    Reference: kexue.fm/archives/8046; arXiv:2112.12433.
    """
    x = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"logits must be floating point, got {x.dtype}")
    if labels.shape != x.shape[:-1]:
        raise ValueError(f"labels must have shape logits.shape[:-1]={x.shape[:-1]}, got {labels.shape}")
    k = _check_k(k, x.shape[-1])
    check_labels(labels, x.shape[-1])
    return _sparse_ce(x, labels.astype(jnp.int32), k)
