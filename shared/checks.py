"""Argument checks shared by the losses, transforms, sparse softmax and metrics: one ValueError line that
names the argument.

Value checks run on concrete arrays only: under `jit` / `grad` an argument is a tracer whose values are
unknown, and the check is skipped (shapes and dtypes are still checked). Constants closed over by a
jitted function are concrete, so they are checked on the host.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["is_concrete", "check_nonnegative", "check_labels"]


def is_concrete(*xs: Any) -> bool:
    """True when none of `xs` is a tracer, so their values can be read on the host."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def check_nonnegative(value: Any, name: str) -> None:
    """ValueError "`name` must be >= 0" if a concrete `value` (scalar or array) has a negative entry."""
    if is_concrete(value) and not np.all(np.asarray(value) >= 0):
        raise ValueError(f"{name} must be >= 0, got {value}")


def check_labels(labels: Any, num_classes: int, name: str = "labels", *, ndim: int | None = None) -> None:
    """ValueError naming `name` unless `labels` are integer class indices in [0, num_classes).

    With `ndim`, `labels` must also have that many dimensions (e.g. 1: [N]). The range is checked on
    concrete labels only (on the host: also right for constants closed over by a jit).
    """
    if ndim is not None and np.ndim(labels) != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {np.shape(labels)}")
    dtype = jnp.result_type(labels)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not is_concrete(labels):
        return
    values = np.asarray(labels)
    if values.size == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}) (K = number of classes), got values in [{lo}, {hi}]")
