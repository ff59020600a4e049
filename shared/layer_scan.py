"""Identical NNX modules stored stacked and applied in turn under `jax.lax.scan`, so the program holds one copy.

A deep stack of same-shaped layers written as a Python loop is traced, and compiled by XLA, once per layer;
under `lax.scan` the layer is traced once. Storing the layers' variables stacked along a new leading axis
(one array per variable, not one per layer) also keeps everything outside the scan independent of depth:
the gradient, the optimiser update and the checkpoint see one leaf per variable, where a list of layers
would give them one leaf per layer each, and XLA one kernel per leaf.

`stack_modules` builds the stacked module from n modules of one structure (so their initial values are
drawn exactly as the unstacked layers would draw them), `unstack_module` gives the layers back as separate
modules (copies: read them, change them, `stack_modules` them again), and `scan_stacked` applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared import workarounds

__all__ = ["num_layers", "scan_stacked", "stack_modules", "unstack_module"]

M = TypeVar("M", bound=nnx.Module)


def stack_modules(modules: Sequence[M]) -> M:
    """One module of `modules[0]`'s structure whose every variable holds the n modules' values stacked on a
    new axis 0 ([n, *shape]). The modules must share one `nnx.graphdef` (classes, shapes, static attributes).

    Concrete values stack in NumPy (eager `jnp.stack` would compile one program per shape); under
    `nnx.eval_shape` or `jit` they stack as traced arrays.
    """
    if not modules:
        raise ValueError("stack_modules: needs at least one module")
    graphdef = nnx.graphdef(modules[0])
    for i, module in enumerate(modules[1:], start=1):
        if nnx.graphdef(module) != graphdef:
            raise ValueError(f"stack_modules: module {i} ({type(module).__name__}) differs in structure from module 0")

    def stack(*leaves):
        xp = workarounds.init_math(leaves[0])
        out = xp.stack([xp.asarray(a) for a in leaves])
        return jax.device_put(out) if xp is np else out

    return nnx.merge(graphdef, jax.tree.map(stack, *(nnx.state(m) for m in modules)))


def num_layers(stacked: nnx.Module) -> int:
    """The number of layers n of a module built by `stack_modules` (the leading axis of its variables)."""
    return jax.tree.leaves(nnx.state(stacked))[0].shape[0]


def _layer_state(state: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], state)


def unstack_module(stacked: M) -> list[M]:
    """The n layers of a stacked module as separate modules (copies of layer i's variables)."""
    graphdef, state = nnx.split(stacked)
    return [nnx.merge(graphdef, _layer_state(state, i)) for i in range(num_layers(stacked))]


def scan_stacked(stacked: nnx.Module, fn: Callable[[Any, Any, Any], tuple[Any, Any]], carry: Any, xs: Any = None,
                 *, scan: bool = True, remat: bool = False, mutable: Any = nnx.BatchStat) -> tuple[Any, Any]:
    """(carry, ys) of carry, y_i = fn(layer_i, carry, x_i) for i = 0 … n − 1, as `jax.lax.scan` gives them.

    stacked: a module from `stack_modules` (n layers); xs: a pytree whose leaves have leading axis n, or None;
    ys: fn's outputs stacked on a new axis 0. Variables of type `mutable` that fn assigns (train-mode batch
    statistics) are written back to the stacked module. `scan=False` runs the same loop in Python (the program
    then grows with n), for comparison and debugging. `remat=True` wraps each layer in `jax.checkpoint`: the
    backward pass keeps only each layer's input and recomputes its internals (one more forward, less memory).
    """
    graphdef, state = nnx.split(stacked)

    def body(carry, inputs):
        layer_state, x = inputs
        layer = nnx.merge(graphdef, layer_state)
        before = jax.tree.leaves(nnx.state(layer, mutable))
        carry, y = fn(layer, carry, x)
        after = nnx.state(layer, mutable)
        # only what fn assigned goes back: eval-mode BN leaves its statistics alone, and a layer called
        # inside an inner transform (a `lax.map` over IW samples) could not take them back anyway
        unchanged = all(a is b for a, b in zip(jax.tree.leaves(after), before))
        return carry, (y, None if unchanged else after)

    if remat:
        body = jax.checkpoint(body)
    if scan:
        with workarounds.loop_body():  # convs as dots on CPU, whose loop-body gradients XLA:CPU runs fast
            carry, (ys, changed) = jax.lax.scan(body, carry, (state, xs))
    else:
        outs = []
        for i in range(num_layers(stacked)):
            carry, out = body(carry, (_layer_state(state, i), None if xs is None else _layer_state(xs, i)))
            outs.append(out)
        ys, changed = jax.tree.map(lambda *a: jnp.stack(a), *outs)
    if changed is not None:
        nnx.update(stacked, changed)
    return carry, ys
