"""Long-tail evaluation: accuracy, balanced error, per-class and head/middle/tail errors, tuned post-hoc τ.

Balanced error (Menon et al. 2021, Sec. 2) is the mean of the per-class errors,
BER = (1/K) Σ_y P(argmax f(x) ≠ y | y), which weighs every class equally however rare it was in
training. Every function here is jit- and vmap-friendly; argument *values* (labels in range, priors
positive and normalised) are checked eagerly when they are concrete and skipped under tracing, so a
mistake in a notebook raises a `ValueError` naming the argument while a jitted study pays nothing.

Shapes: predictions / labels [N] int; logits [N, K]; class_prior [K]; per-class arrays [K].
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from shared.checks import check_labels, is_concrete
from shared.losses import posthoc_logit_adjustment

__all__ = [
    "check_class_prior",
    "class_prior",
    "accuracy",
    "per_class_error",
    "balanced_error",
    "class_groups",
    "group_errors",
    "posthoc_balanced_error",
    "tune_posthoc_tau",
    "holdout_split",
    "DEFAULT_TAUS",
]

DEFAULT_TAUS = tuple(float(t) for t in np.round(np.arange(0.0, 3.01, 0.25), 2))  # the post-hoc τ grid


def _labels(labels: ArrayLike, num_classes: int) -> jax.Array:
    """`labels` as an int array [N]; ValueError (naming them) unless 1-D ints in [0, num_classes)."""
    labels = jnp.asarray(labels)
    check_labels(labels, num_classes, ndim=1)
    return labels


def check_class_prior(class_prior: ArrayLike, num_classes: int | None = None, name: str = "class_prior",
                      atol: float = 1e-4) -> jax.Array:
    """Returns the prior [K]; ValueError if it is not 1-D, has zeros/negatives, or does not sum to 1."""
    prior = jnp.asarray(class_prior)
    if prior.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array [K], got shape {prior.shape}")
    if num_classes is not None and prior.shape[0] != num_classes:
        raise ValueError(f"{name} must have K={num_classes} entries, got {prior.shape[0]}")
    if is_concrete(prior):
        values = np.asarray(prior, np.float64)
        if not np.all(values > 0):
            raise ValueError(f"{name} must be strictly positive (a class with prior 0 has log π = -inf), "
                             f"got {values.tolist()}")
        if abs(values.sum() - 1.0) > atol:
            raise ValueError(f"{name} must sum to 1, got sum {values.sum():.6g}")
    return prior


def class_prior(labels: ArrayLike, num_classes: int) -> jax.Array:
    """Empirical class prior π_y = n_y / N ([K], float32) of training labels [N]; every class must occur."""
    labels = _labels(labels, num_classes)
    if is_concrete(labels):
        missing = np.flatnonzero(np.bincount(np.asarray(labels), minlength=num_classes) == 0).tolist()
        if missing:
            raise ValueError(f"labels: classes {missing} never occur, so their prior would be 0")
    counts = jnp.bincount(labels, length=num_classes).astype(jnp.float32)
    return counts / jnp.sum(counts)


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Fraction of predictions [N] equal to labels [N] (scalar)."""
    predictions, labels = jnp.asarray(predictions), jnp.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions shape {predictions.shape} != labels shape {labels.shape}")
    return jnp.mean((predictions == labels).astype(jnp.float32))


def per_class_error(predictions: ArrayLike, labels: ArrayLike, num_classes: int,
                    weights: ArrayLike | None = None) -> jax.Array:
    """err_y = P(prediction ≠ y | label = y) for each class ([K]); NaN for a class absent from `labels`.

    Args: predictions [N] int; labels [N] int in [0, K); weights optional [N] (0 drops an example,
      e.g. padding). Returns: [K] float32.
    """
    labels = _labels(labels, num_classes)
    predictions = jnp.asarray(predictions)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions shape {predictions.shape} != labels shape {labels.shape}")
    w = jnp.ones(labels.shape, jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * w[:, None]  # [N, K]
    wrong = (predictions != labels).astype(jnp.float32)  # [N]
    totals = jnp.sum(onehot, axis=0)  # [K]
    return jnp.sum(onehot * wrong[:, None], axis=0) / totals  # [K] (0/0 = NaN for absent classes)


def balanced_error(predictions: ArrayLike, labels: ArrayLike, num_classes: int,
                   weights: ArrayLike | None = None) -> jax.Array:
    """Balanced error BER = mean_y err_y over the classes present in `labels` (scalar in [0, 1])."""
    return jnp.nanmean(per_class_error(predictions, labels, num_classes, weights))


def class_groups(train_counts: ArrayLike, many: int | None = None, few: int | None = None) -> np.ndarray:
    """Head (0) / middle (1) / tail (2) group of each class from its training count ([K] int).

    With thresholds (ImageNet-LT convention: many=100, few=20): head n > many, tail n < few, the rest
    middle. Without: thirds by frequency rank (head = the ⌈K/3⌉ most frequent classes, tail = the ⌈K/3⌉
    rarest), the usual split for CIFAR-LT and for 10-class benchmarks.
    """
    counts = np.asarray(train_counts)
    if counts.ndim != 1 or counts.size < 1 or np.any(counts < 0):
        raise ValueError(f"train_counts must be a 1-D array of non-negative counts, got {counts}")
    if (many is None) != (few is None):
        raise ValueError("class_groups: give both `many` and `few`, or neither")
    if many is not None and few is not None:
        if few > many:
            raise ValueError(f"few={few} must be <= many={many}")
        return np.where(counts > many, 0, np.where(counts < few, 2, 1)).astype(np.int32)
    k = counts.size
    third = -(-k // 3)
    rank = np.empty(k, np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(k)
    return np.where(rank < third, 0, np.where(rank >= k - third, 2, 1)).astype(np.int32)


def group_errors(per_class_errors: ArrayLike, groups: ArrayLike) -> dict[str, float]:
    """Mean per-class error of the head / middle / tail groups ({"head", "middle", "tail"}; NaN if empty)."""
    errors = np.asarray(per_class_errors, np.float64)
    groups = np.asarray(groups)
    if errors.shape != groups.shape:
        raise ValueError(f"per_class_errors shape {errors.shape} != groups shape {groups.shape}")
    out = {}
    for gid, name in enumerate(("head", "middle", "tail")):
        member = groups == gid
        out[name] = float(np.nanmean(errors[member])) if member.any() else float("nan")
    return out


def posthoc_balanced_error(logits: ArrayLike, labels: ArrayLike, class_prior: ArrayLike,
                           tau: float | jax.Array) -> jax.Array:
    """Balanced error of argmax_y f_y(x) − τ·log π_y (Menon et al. 2021, Eq. 9). logits [N, K]."""
    logits = jnp.asarray(logits)
    num_classes = logits.shape[-1]
    prior = check_class_prior(class_prior, num_classes)
    predictions = jnp.argmax(posthoc_logit_adjustment(logits, prior, tau), axis=-1)
    return balanced_error(predictions, labels, num_classes)


def tune_posthoc_tau(logits: ArrayLike, labels: ArrayLike, class_prior: ArrayLike,
                     taus: Sequence[float] = DEFAULT_TAUS) -> tuple[float, np.ndarray]:
    """Grid search of the post-hoc τ on a held-out split: argmin_τ BER(argmax f − τ log π).

    Args: logits [N, K] of the held-out examples; labels [N]; class_prior [K] (training prior);
      taus: the grid (all evaluated in one vmapped program).
    Returns: (best τ as a Python float, balanced errors [len(taus)] as numpy). Ties go to the
      smallest τ.
    """
    logits = jnp.asarray(logits)
    num_classes = logits.shape[-1]
    _labels(labels, num_classes)
    prior = check_class_prior(class_prior, num_classes)
    grid = jnp.asarray(taus, jnp.float32)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"taus must be a non-empty 1-D grid, got {taus}")
    if bool(jnp.any(grid < 0)):
        raise ValueError(f"taus must be >= 0, got {taus}")
    log_prior = jnp.log(prior)

    @jax.jit
    def errors_for(grid):
        def one(tau):
            predictions = jnp.argmax(logits - tau * log_prior[None, :], axis=-1)
            return balanced_error(predictions, labels, num_classes)

        return jax.vmap(one)(grid)

    errors = np.asarray(errors_for(grid))
    return float(np.asarray(grid)[int(np.argmin(errors))]), errors


def holdout_split(labels: ArrayLike, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of example indices into (held-out, rest): `fraction` of each class held out.

    Used to tune the post-hoc τ on part of a balanced test set and report on the rest.
    """
    labels = np.asarray(labels)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        held.append(idx[: max(1, round(fraction * idx.size))])
    held_idx = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(labels.size), held_idx)
    return held_idx, rest
