"""The long-tail training losses by name, built from `shared.losses` for a given training prior.

Every loss maps (logits [B, K], labels [B]) to per-example values [B]; `switched_loss` selects one by
an integer index with `jax.lax.switch`, so a study can `jax.vmap` one training program over methods.

  erm                  softmax cross-entropy
  balanced_ce          CE weighted by α_y = 1 / (K π_y)
  ldam                 pairwise margins Δ_y ∝ π_y^{−1/4} (Cao et al. 2019), rarest class `ldam_scale`
  equalised            pairwise margins τ log(π_{y'}/π_y) and weights α_y = 1 / (K π_y)
  logit_adjusted_loss  CE on f + τ log π (Menon et al. 2021, Eq. 10)
  focal                softmax focal loss −(1 − p_y)^γ log p_y (Lin et al. 2017)
  class_balanced       CE weighted by the inverse effective number (1 − β) / (1 − β^{n_y}) (Cui et al. 2019),
                       normalised so the weights sum to K
  smoothed_f1          one-vs-rest sigmoid outputs, per class the smoothed-F1 weighted binary CE of the
                       2020-08-31 post (weights 1 − F1_k/2 on positives, F1_k/2 on negatives; macro F1),
                       summed over classes
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from longtail.configs import TRAINED_METHODS
from longtail.metrics import check_class_prior
from shared import losses

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def class_balanced_weights(class_counts: ArrayLike, beta: float) -> jax.Array:
    """Cui et al. (2019, Eq. 3 / Sec. 4): w_y ∝ (1 − β) / (1 − β^{n_y}), normalised to Σ_y w_y = K ([K])."""
    counts = np.asarray(class_counts, np.float64)
    if counts.ndim != 1 or np.any(counts <= 0):
        raise ValueError(f"class_counts must be positive counts [K], got {counts.tolist()}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    w = (1.0 - beta) / (1.0 - beta ** counts)
    return jnp.asarray(w * counts.size / w.sum(), jnp.float32)


def macro_smoothed_f1_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Σ_k smoothed_f1_loss(logits[:, k], [labels == k]) with a separate soft F1 per class: [B, K] -> [B]."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)  # [B, K]
    per_class = jax.vmap(losses.smoothed_f1_loss, in_axes=1, out_axes=1)(logits, onehot)  # [B, K]
    return per_class.sum(axis=-1)


def make_loss(method: str, class_counts: ArrayLike, *, tau: float = 1.0, ldam_scale: float = 0.5,
              focal_gamma: float = 2.0, class_balanced_beta: float = 0.99) -> LossFn:
    """The per-example loss `(logits [B, K], labels [B]) -> [B]` of `method` for training counts [K]."""
    counts = np.asarray(class_counts, np.float64)
    if counts.ndim != 1 or np.any(counts <= 0):
        raise ValueError(f"class_counts must be positive counts [K], got {counts.tolist()}")
    prior = check_class_prior(jnp.asarray(counts / counts.sum(), jnp.float32))
    if method == "erm":
        return optax.softmax_cross_entropy_with_integer_labels
    if method == "balanced_ce":
        weights = losses.balanced_class_weights(prior)
        return lambda logits, labels: losses.weighted_cross_entropy(logits, labels, weights)
    if method == "ldam":
        margins = losses.ldam_margins(prior, ldam_scale)
        return lambda logits, labels: losses.pairwise_margin_loss(logits, labels, margins)
    if method == "equalised":
        margins = losses.logit_adjustment_margins(prior, tau)
        weights = losses.balanced_class_weights(prior)
        return lambda logits, labels: losses.pairwise_margin_loss(logits, labels, margins, weights)
    if method == "logit_adjusted_loss":
        return lambda logits, labels: losses.logit_adjusted_cross_entropy(logits, labels, prior, tau)
    if method == "focal":
        return lambda logits, labels: losses.softmax_focal_loss(logits, labels, gamma=focal_gamma)
    if method == "class_balanced":
        weights = class_balanced_weights(counts, class_balanced_beta)
        return lambda logits, labels: losses.weighted_cross_entropy(logits, labels, weights)
    if method == "smoothed_f1":
        return macro_smoothed_f1_loss
    raise ValueError(f"method must be one of {TRAINED_METHODS}, got {method!r}")


def switched_loss(
    methods: Sequence[str], class_counts: ArrayLike, **kwargs: float
) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """`(index [], logits, labels) -> [B]`: the loss of `methods[index]`, via `jax.lax.switch`.

    Under `jax.vmap` over the index every branch is evaluated and one selected, so the methods of a
    study share one compiled program (the branches are cheap next to the model).
    """
    branches = [make_loss(m, class_counts, **kwargs) for m in methods]
    return lambda index, logits, labels: jax.lax.switch(index, branches, logits, labels)
