"""Identical NNX modules applied in turn under `jax.lax.scan`, so the compiled program holds one copy of them.

A deep stack of same-shaped layers written as a Python loop is traced, and compiled by XLA, once per layer;
under `lax.scan` the layer is traced once and the program no longer grows with depth. The modules keep
their own variables (a list of modules, laid out as checkpoints and converted official weights lay them
out): inside the traced function their states are stacked along a new leading axis, one concatenation per
leaf, and the variables the layers change while running (batch statistics) are written back to each module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["scan_modules"]


def scan_modules(modules: Sequence[nnx.Module], fn: Callable[[Any, Any, Any], tuple[Any, Any]], carry: Any,
                 xs: Any = None, *, scan: bool = True, mutable: Any = nnx.BatchStat) -> tuple[Any, Any]:
    """(carry, ys) of carry, y_i = fn(modules[i], carry, x_i) for i = 0 … n − 1, as `jax.lax.scan` gives them.

    modules: n ≥ 1 modules of one structure (equal `nnx.graphdef`s: same classes, shapes and static
    attributes); xs: a pytree whose leaves have leading axis n, or None; ys: fn's outputs stacked on a new
    axis 0. Variables of type `mutable` that fn assigns are written back to their module afterwards.
    `scan=False` runs the same loop in Python (the program then grows with n), for comparison and debugging.
    """
    if not modules:
        raise ValueError("scan_modules: needs at least one module")
    if not scan:
        ys = []
        for i, module in enumerate(modules):
            carry, y = fn(module, carry, jax.tree.map(lambda a, i=i: a[i], xs))
            ys.append(y)
        return carry, jax.tree.map(lambda *a: jnp.stack(a), *ys)
    graphdef = nnx.graphdef(modules[0])
    for i, module in enumerate(modules[1:], start=1):
        if nnx.graphdef(module) != graphdef:
            raise ValueError(f"scan_modules: module {i} ({type(module).__name__}) differs in structure from module 0")
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *(nnx.state(m) for m in modules))

    def body(carry, inputs):
        state, x = inputs
        module = nnx.merge(graphdef, state)
        before = jax.tree.leaves(nnx.state(module, mutable))
        carry, y = fn(module, carry, x)
        after = nnx.state(module, mutable)
        # only what fn assigned goes back: eval-mode BN leaves its statistics alone, and a module called
        # inside an inner transform (a `lax.map` over IW samples) could not take them back anyway
        unchanged = all(a is b for a, b in zip(jax.tree.leaves(after), before))
        return carry, (y, None if unchanged else after)

    carry, (ys, changed) = jax.lax.scan(body, carry, (stacked, xs))
    if changed is not None:
        for i, module in enumerate(modules):
            nnx.update(module, jax.tree.map(lambda a, i=i: a[i], changed))
    return carry, ys
