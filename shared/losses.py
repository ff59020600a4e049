"""Classification losses for imbalanced / long-tailed data, per example (no reduction).

Logit adjustment and the pairwise-margin family (Menon et al., ICLR 2021), weighted CE, softmax
focal loss, soft dice, the smoothed-F1 weighted CE and multilabel "softmax + CE" (kexue posts of
2020-07-19, 2020-08-31 and kexue 7359). Dense softmax CE, binary dice and sigmoid focal loss are
optax's (`optax.softmax_cross_entropy_with_integer_labels`, `optax.losses.binary_dice_loss`,
`optax.sigmoid_focal_loss`); these build on them.

Conventions: logits [B, K] (class axis last, any leading batch shape), integer labels [B] in
[0, K), class_prior [K] positive (need not be normalised). Outputs are per example, in the dtype
of the logits (bf16 inputs are computed in float32 internally). Argument checks: shapes always;
values (prior > 0, labels in range, hyper-parameters ≥ 0) eagerly when they are concrete; under
`jax.jit` only the shape checks run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from shared.checks import check_labels, check_nonnegative, is_concrete

__all__ = [
    "logit_adjusted_cross_entropy",
    "posthoc_logit_adjustment",
    "pairwise_margin_loss",
    "logit_adjustment_margins",
    "ldam_margins",
    "balanced_class_weights",
    "weighted_cross_entropy",
    "softmax_focal_loss",
    "binary_dice_loss",
    "smoothed_f1_loss",
    "soft_f1_score",
    "multilabel_categorical_crossentropy",
]


def _check_prior(class_prior: ArrayLike, name: str = "class_prior", num_classes: int | None = None) -> jax.Array:
    prior = jnp.asarray(class_prior)
    if prior.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array [K], got shape {prior.shape}")
    if num_classes is not None and prior.shape[0] != num_classes:
        raise ValueError(f"{name} must have K={num_classes} entries (logits.shape[-1]), got {prior.shape[0]}")
    if is_concrete(prior) and not np.all(np.asarray(prior) > 0):
        raise ValueError(f"{name} must be strictly positive (zeros or negatives give log π = -inf/NaN), got {prior}")
    return prior


def _check_logits_labels(logits: ArrayLike, labels: ArrayLike) -> tuple[jax.Array, jax.Array]:
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must have shape logits.shape[:-1]={logits.shape[:-1]}, got {labels.shape}")
    check_labels(labels, logits.shape[-1])
    return logits, labels


def _f32(x):
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _gather(v, labels):
    """v[labels] for a [K] vector: labels [...] -> [...]."""
    return jnp.take(v, labels, axis=0)


def _at_labels(x, labels):
    """x[..., labels] per example: x [..., K], labels [...] -> [...]."""
    return jnp.take_along_axis(x, labels[..., None], axis=-1)[..., 0]


# The largest spread (nats) of the shifts for which `_shifted_logsumexp` uses its bound: its largest
# term then stays ≥ e^-60, a normal float32 far above the sum of any terms that underflow.
_BOUND_SPREAD = 60.0


def _spread(shifts, scale=1.0) -> float | None:
    """max over rows of (max − min) along the last axis of concrete `scale · shifts` ([K] or [K, K]);
    None when either is traced (computed from the caller's arguments: values derived inside a trace are
    tracers even when their inputs are constants)."""
    if not (is_concrete(shifts) and is_concrete(scale)):
        return None
    c = float(np.asarray(scale)) * np.asarray(shifts, np.float64)
    return float(np.max(c.max(axis=-1) - c.min(axis=-1)))


def _shifted_logsumexp(logits, shift, shift_max, spread):
    """log Σ_j exp(f_j + c_j) over the last axis in float32: logits f [..., K], shifts c [K] or [..., K],
    shift_max = max_j c_j (a scalar or [...]), spread = `_spread` of the shifts → [...].

    When the spread is known and ≤ `_BOUND_SPREAD`, the sum is stabilised by m = max_j f_j + max_j c_j,
    an upper bound of max_j (f_j + c_j) that overshoots it by at most the spread. XLA:CPU reduces with
    YNNPACK fusions that take materialised operands, so the exact max of f + c wrote f + c out as one
    more [B, K] pass; max_j f_j reads the logits in place (benchmarks/bench_losses.py).
    Otherwise (traced shifts, larger spreads) it is `jax.nn.logsumexp(f + c)`.
    """
    z = _f32(logits) + shift.reshape((1,) * (logits.ndim - shift.ndim) + shift.shape)
    if spread is None or spread > _BOUND_SPREAD:
        return jax.nn.logsumexp(z, axis=-1)
    m = jax.lax.stop_gradient(jnp.max(_f32(logits), axis=-1) + shift_max)
    return m + jnp.log(jnp.sum(jnp.exp(z - m[..., None]), axis=-1))


def logit_adjusted_cross_entropy(logits: ArrayLike, labels: ArrayLike, class_prior: ArrayLike,
                                 tau: float | jax.Array = 1.0) -> jax.Array:
    """Logit-adjusted softmax cross-entropy (Menon et al. 2021, Eq. 10).

    ℓ(y, f) = −log softmax(f + τ·log π)_y, i.e. optax's softmax CE on the shifted logits.

    Args: logits [..., K]; labels [...] int; class_prior π [K] > 0; tau τ ≥ 0 (scalar).
    Returns: [...] per-example losses.
    """
    logits, labels = _check_logits_labels(logits, labels)
    prior = _check_prior(class_prior, num_classes=logits.shape[-1])
    check_nonnegative(tau, "tau")
    spread = _spread(np.log(np.asarray(prior, np.float64)) if is_concrete(prior) else prior, tau)
    return _shifted_cross_entropy(logits, labels, tau * jnp.log(_f32(prior)), spread)


def _shifted_cross_entropy(logits, labels, shift, spread):
    """−log softmax(f + c)_y for a shift c [K] of known spread (`_spread`) → [...] in the logits' dtype."""
    f_y = _at_labels(_f32(logits), labels)
    lse = _shifted_logsumexp(logits, shift, jnp.max(shift), spread)
    return (lse - f_y - _gather(shift, labels)).astype(logits.dtype)


def _difference_form(margins: np.ndarray) -> np.ndarray | None:
    """c [K] with Δ_yy' = c_y' − c_y for every entry of a concrete Δ [K, K] with a zero diagonal (the
    form of `logit_adjustment_margins`, up to float32 rounding), else None."""
    c = margins[0]
    tol = 1e-6 * max(1.0, float(np.max(np.abs(margins))))
    return c if np.allclose(margins, c[None, :] - c[:, None], rtol=0.0, atol=tol) else None


def posthoc_logit_adjustment(logits: ArrayLike, class_prior: ArrayLike, tau: float | jax.Array = 1.0) -> jax.Array:
    """Post-hoc logit adjustment (Menon et al. 2021, Eq. 9): f_y(x) − τ·log π_y; predict its argmax.

    With τ = 1 this is the pointwise mutual information log p(y|x) − log p(y) up to a constant.
    Args: logits [..., K]; class_prior [K] > 0; tau ≥ 0. Returns: adjusted logits [..., K].
    """
    logits = jnp.asarray(logits)
    prior = _check_prior(class_prior, num_classes=logits.shape[-1])
    check_nonnegative(tau, "tau")
    shift = (tau * jnp.log(_f32(prior))).astype(logits.dtype)
    return logits - shift.reshape((1,) * (logits.ndim - 1) + shift.shape)


def pairwise_margin_loss(logits: ArrayLike, labels: ArrayLike, margins: ArrayLike,
                         class_weights: ArrayLike | None = None) -> jax.Array:
    """Pairwise-margin softmax loss (Menon et al. 2021, Eq. 11).

    ℓ(y, f) = α_y · log(1 + Σ_{y'≠y} exp(Δ_{yy'} + f_{y'} − f_y))
            = α_y · (logsumexp_{y'}(f_{y'} + Δ_{yy'}) − f_y)   with Δ_{yy} := 0.
    Computed from the gathered rows Δ[y] ([B, K]); no [B, K, K] tensor is formed. The diagonal of
    `margins` is ignored. Concrete margins of the form Δ_yy' = c_y' − c_y (`logit_adjustment_margins`)
    are recognised and computed as the softmax CE of f + c (Eq. 10), without the gathered rows.

    Args:
      logits: [..., K]; labels: [...] int.
      margins: Δ [K, K] (row = true class y, column = competitor y'); see
        `logit_adjustment_margins`, `ldam_margins`.
      class_weights: α [K] ≥ 0 or None (all ones); see `balanced_class_weights`.
    Returns: [...] per-example losses.
    """
    logits, labels = _check_logits_labels(logits, labels)
    num_classes = logits.shape[-1]
    margins = jnp.asarray(margins)
    if margins.shape != (num_classes, num_classes):
        raise ValueError(f"margins must have shape [K, K]=({num_classes}, {num_classes}), got {margins.shape}")
    off_diagonal = np.where(np.eye(num_classes, dtype=bool), 0.0, np.asarray(margins, np.float64)) \
        if is_concrete(margins) else None
    c = None if off_diagonal is None else _difference_form(off_diagonal)
    if c is not None:  # Δ_yy' = c_y' − c_y: the loss is CE on f + c, with no [B, K] rows gathered
        loss = _shifted_cross_entropy(logits, labels, jnp.asarray(c, jnp.float32), _spread(c))
    else:
        # Δ_yy := 0 on the [K, K] matrix (cheaper than masking the gathered [B, K] rows)
        margins = _f32(jnp.where(jnp.eye(num_classes, dtype=bool), 0.0, margins))
        rows = jnp.take(margins, labels, axis=0)  # Δ[y], [..., K]
        # logsumexp(f + Δ[y]) − f_y; f_y is gathered from the logits, not from f + Δ[y] (a gather from
        # the sum made XLA materialise it: slower on CPU, benchmarks/bench_losses.py)
        f_y = _at_labels(_f32(logits), labels)
        row_max = _gather(jnp.max(margins, axis=-1), labels)  # max_y' Δ_yy', [...]
        spread = None if off_diagonal is None else _spread(off_diagonal)
        loss = (_shifted_logsumexp(logits, rows, row_max, spread) - f_y).astype(logits.dtype)
    if class_weights is not None:
        w = jnp.asarray(class_weights)
        if w.shape != (num_classes,):
            raise ValueError(f"class_weights must have shape [K]=({num_classes},), got {w.shape}")
        check_nonnegative(w, "class_weights")
        loss = loss * _gather(w, labels).astype(loss.dtype)
    return loss


def logit_adjustment_margins(class_prior: ArrayLike, tau: float | jax.Array = 1.0) -> jax.Array:
    """Logit-adjustment margins Δ_{yy'} = τ·log(π_{y'} / π_y), [K, K] (Menon et al. 2021, Eq. 11).

    With α = 1, `pairwise_margin_loss` then equals `logit_adjusted_cross_entropy`.
    """
    prior = _check_prior(class_prior)
    check_nonnegative(tau, "tau")
    log_p = jnp.log(_f32(prior))
    return tau * (log_p[None, :] - log_p[:, None])  # [K, K]


def ldam_margins(class_prior: ArrayLike, scale: float | jax.Array = 0.5) -> jax.Array:
    """LDAM-style margins (Cao et al. 2019): Δ_{yy'} = Δ_y ∝ π_y^{-1/4} for y' ≠ y, 0 on the diagonal.

    Δ_y = scale · π_y^{-1/4} / max_c π_c^{-1/4}, so the rarest class gets margin `scale`
    (LDAM's `max_m`). Returns [K, K].
    """
    prior = _check_prior(class_prior)
    check_nonnegative(scale, "scale")
    m = _f32(prior) ** -0.25
    m = scale * m / jnp.max(m)  # [K]
    k = prior.shape[0]
    return jnp.where(jnp.eye(k, dtype=bool), 0.0, jnp.broadcast_to(m[:, None], (k, k)))


def balanced_class_weights(class_prior: ArrayLike) -> jax.Array:
    """Balanced class weights α_y = 1 / (K·π̂_y), π̂ = π / Σπ ([K]); their π̂-weighted mean is 1."""
    prior = _f32(_check_prior(class_prior))
    prior = prior / jnp.sum(prior)
    return 1.0 / (prior.shape[0] * prior)


def weighted_cross_entropy(logits: ArrayLike, labels: ArrayLike, class_weights: ArrayLike) -> jax.Array:
    """Class-weighted softmax CE: ℓ = w_y · (−log softmax(f)_y).

    Args: logits [..., K]; labels [...] int; class_weights [K] ≥ 0. Returns: [...].
    """
    logits, labels = _check_logits_labels(logits, labels)
    w = jnp.asarray(class_weights)
    if w.shape != (logits.shape[-1],):
        raise ValueError(f"class_weights must have shape [K]=({logits.shape[-1]},), got {w.shape}")
    check_nonnegative(w, "class_weights")
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return ce * _gather(w, labels).astype(ce.dtype)


def softmax_focal_loss(logits: ArrayLike, labels: ArrayLike, gamma: float | jax.Array = 2.0,
                       alpha: ArrayLike | None = None) -> jax.Array:
    """Multiclass (softmax) focal loss (Lin et al. 2017, Eq. 5): ℓ = −α_y (1 − p_y)^γ log p_y.

    γ = 0 and α = None give softmax CE. For the binary/sigmoid version use `optax.sigmoid_focal_loss`.
    Args: logits [..., K]; labels [...] int; gamma ≥ 0; alpha None, a scalar, or [K] per-class weights.
    Returns: [...].
    """
    logits, labels = _check_logits_labels(logits, labels)
    check_nonnegative(gamma, "gamma")
    x = _f32(logits)
    log_p = _at_labels(jax.nn.log_softmax(x, axis=-1), labels)
    one_minus_p = -jnp.expm1(log_p)  # accurate 1 − p_y, in [0, 1]
    loss = -(one_minus_p**gamma) * log_p
    if alpha is not None:
        a = jnp.asarray(alpha, x.dtype)
        check_nonnegative(a, "alpha")
        if a.ndim == 1:
            if a.shape != (logits.shape[-1],):
                raise ValueError(f"alpha must be a scalar or shape [K]=({logits.shape[-1]},), got {a.shape}")
            a = _gather(a, labels)
        elif a.ndim != 0:
            raise ValueError(f"alpha must be a scalar or shape [K], got {a.shape}")
        loss = a * loss
    return loss.astype(logits.dtype)


def binary_dice_loss(logits: ArrayLike, labels: ArrayLike, smooth: float | jax.Array = 1.0) -> jax.Array:
    """Soft dice loss over a batch (binary): 1 − (2 Σ y p + smooth) / (Σ y + Σ p + smooth), p = σ(z).

    Dice is a batch-level quantity: the sums run over the whole batch (all axes), and the result is a
    scalar (this is the one loss here that is not per example). Uses `optax.losses.dice_loss`.
    Args: logits [...] real; labels [...] in {0, 1} (or soft targets in [0, 1]); smooth > 0.
    Returns: scalar.
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.shape != labels.shape:
        raise ValueError(f"labels must have the shape of logits {logits.shape}, got {labels.shape}")
    check_nonnegative(smooth, "smooth")
    x = _f32(logits).reshape(1, -1, 1)  # one "image" whose pixels are the batch, one channel
    y = labels.astype(x.dtype).reshape(1, -1, 1)
    # optax's dice is the Tversky form with α = β = ½: 1 − (TP + s)/(½(Σy + Σp) + s); pass s/2 so that
    # it equals 1 − (2 Σ y p + s)/(Σ y + Σ p + s).
    loss = optax.losses.dice_loss(x, y, smooth=smooth / 2, apply_softmax=True, reduction="none")
    return loss.reshape(()).astype(logits.dtype)


def soft_f1_score(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Smoothed (soft) F1 over a batch: F1 = 2 Σ y p / Σ (y + p), p = σ(z) (kexue post of 2020-08-31).

    Args: logits [...]; labels [...] in {0, 1}. Returns: scalar in [0, 1].
    """
    x = _f32(jnp.asarray(logits))
    y = jnp.asarray(labels).astype(x.dtype)
    p = jax.nn.sigmoid(x)
    return 2.0 * jnp.sum(y * p) / jnp.maximum(jnp.sum(y + p), jnp.finfo(x.dtype).tiny)


def smoothed_f1_loss(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Per-example weighted binary CE whose gradient is the smoothed-F1 gradient (post of 2020-08-31).

    ℓ_i = −(1 − F1/2)·y_i·log p_i − (F1/2)·(1 − y_i)·log(1 − p_i),  p = σ(z),
    with F1 = `soft_f1_score(logits, labels)` over the batch, held constant (stop_gradient). Per
    sample, −∂F1/∂z_i is a positive multiple of ∂ℓ_i/∂z_i, so minimising Σ ℓ_i ascends the F1.
    Args: logits [B] (or any shape); labels same shape in {0, 1}. Returns: same shape as logits.
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.shape != labels.shape:
        raise ValueError(f"labels must have the shape of logits {logits.shape}, got {labels.shape}")
    x = _f32(logits)
    y = labels.astype(x.dtype)
    f1 = jax.lax.stop_gradient(soft_f1_score(x, y))
    loss = -(1.0 - f1 / 2) * y * jax.nn.log_sigmoid(x) - (f1 / 2) * (1.0 - y) * jax.nn.log_sigmoid(-x)
    return loss.astype(logits.dtype)


def multilabel_categorical_crossentropy(logits: ArrayLike, targets: ArrayLike) -> jax.Array:
    """Multilabel "softmax + cross-entropy" (kexue 7359), per example.

    ℓ = log(1 + Σ_{i∈neg} e^{s_i}) + log(1 + Σ_{j∈pos} e^{−s_j}); predict label j when s_j > 0.
    Args: logits [..., K]; targets [..., K] multi-hot (0/1 or bool). Returns: [...].
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    if logits.shape != targets.shape:
        raise ValueError(f"targets must have the shape of logits {logits.shape}, got {targets.shape}")
    x = _f32(logits)
    pos = targets.astype(bool)
    zeros = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
    neg_inf = jnp.asarray(-jnp.inf, x.dtype)
    s_neg = jnp.concatenate([zeros, jnp.where(pos, neg_inf, x)], axis=-1)  # [..., K+1]
    s_pos = jnp.concatenate([zeros, jnp.where(pos, -x, neg_inf)], axis=-1)  # [..., K+1]
    loss = jax.nn.logsumexp(s_neg, axis=-1) + jax.nn.logsumexp(s_pos, axis=-1)
    return loss.astype(logits.dtype)
