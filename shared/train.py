"""The training harness: train-state pytree, mesh and shardings, the jitted step, evaluation.

The math of a step is a pure function `step(state, batch) -> (state, metrics)` made by `make_step`
from a loss function and an optax transform; `build_train_step` jits it once with explicit
in/out shardings on a `("data", "fsdp")` mesh and donates the state. Checkpointing lives in
`shared.checkpoint`; `shared.trainer` assembles these pieces into a run and holds the host loop.

Example (a notebook):
    >>> model = MLP((64, 128, 10), rngs=nnx.Rngs(0))
    >>> graphdef, state = create_train_state(model, optax.adam(1e-3), jax.random.PRNGKey(0))
    >>> def xent(model, batch, rng):
    ...     logits = model(batch["image"])
    ...     loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    ...     return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}
    >>> mesh = make_mesh()
    >>> train_step = build_train_step(nnx_loss(graphdef, xent), optax.adam(1e-3), mesh, state)
    >>> state = jax.device_put(state, state_sharding(state, mesh))
    >>> state, metrics = train_step(state, shard_batch(batch, mesh))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from shared import data, workarounds

PyTree = Any
Metrics = dict[str, jax.Array]
# loss_fn(params, model_state, batch, rng) -> (scalar loss, (new model_state, metrics))
LossFn = Callable[[PyTree, PyTree, PyTree, jax.Array], tuple[jax.Array, tuple[PyTree, Metrics]]]
TrainStep = Callable[["TrainState", PyTree], tuple["TrainState", Metrics]]  # (state, batch) -> (state, metrics)

DATA_AXES = ("data", "fsdp")
# `global_norm` concatenates leaves up to this size: copying large kernels into one vector costs more than the
# reductions it saves, while NVAE's many small leaves gain (bench_harness.py; figures in benchmarks/RESULTS.md)
CONCAT_NORM_MAX_LEAF = 2 ** 14


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training, as one pytree (the graphdef stays outside, static).

    Attributes:
      step: int32 [], number of steps taken (skipped ones included).
      params: the model's `nnx.Param` state.
      opt_state: the optax state.
      model_state: the model's other state (BatchNorm statistics, power-iteration vectors, ...).
      rng: uint32 [2], the run's base key; step keys are `fold_in(rng, step)`.
      skipped: int32 [], steps whose loss or gradient was not finite (update skipped).
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    model_state: PyTree
    rng: jax.Array
    skipped: jax.Array


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, PyTree, PyTree]:
    """(graphdef, params, model_state) with params = the `nnx.Param` leaves, model_state = the rest."""
    return nnx.split(model, nnx.Param, ...)  # type: ignore[return-value]  # two filters: exactly two states


def eval_shape_model(build: Callable[[nnx.Rngs], nnx.Module], seed: int = 0) -> nnx.Module:
    """`build(nnx.Rngs(seed))` abstractly (`nnx.eval_shape`: shapes and dtypes, nothing allocated).

    The Rngs counter lives in an array ref (`nnx.var_defaults(ref=True)`), updated in place. A plain
    counter is re-assigned by `Variable.__setitem__`, which probes `value.sharding`; on a tracer jax
    (≤ 0.10.2) builds that AttributeError's message by walking every equation traced so far (fixed
    upstream by jax-ml/jax#40041), so one key per layer made the trace quadratic in the model size
    (NVAE's full MNIST model: benchmarks/RESULTS.md, Harness). Keys, and so the shapes, are the same
    either way. Only tests call it inside the suite; it stays as the documented way (shared/README.md)
    to see a full-size config's parameter shapes without allocating them.
    """
    def init():
        var_defaults = getattr(nnx, "var_defaults", None)  # flax without it (<= 0.12.0) has no probe either
        if var_defaults is None:
            return build(nnx.Rngs(seed))
        with var_defaults(ref=True):
            rngs = nnx.Rngs(seed)
        return build(rngs)

    return nnx.eval_shape(init)


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation,
                       rng: jax.Array) -> tuple[nnx.GraphDef, TrainState]:
    """Splits an NNX model into a static graphdef and a `TrainState` with a fresh optimiser state."""
    graphdef, params, model_state = split_model(model)
    # one compiled init instead of an eager op (and a tiny resident XLA program) per leaf
    opt_state = jax.jit(optax.with_extra_args_support(tx).init)(params)
    state = TrainState(step=jax.device_put(np.zeros((), np.int32)), params=params, opt_state=opt_state,
                       model_state=model_state, rng=jax.device_put(np.asarray(rng, np.uint32)),
                       skipped=jax.device_put(np.zeros((), np.int32)))
    return graphdef, state


def nnx_loss(graphdef: nnx.GraphDef,
             fn: Callable[[Any, PyTree, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]) -> LossFn:
    """Adapts `fn(model, batch, rng) -> (loss, metrics)` on an NNX module to the pure `LossFn`.

    The model is rebuilt from (graphdef, params, model_state); state it mutates (BatchNorm
    statistics) is split back out and returned, so the loss stays a pure function of its inputs.
    """

    def loss_fn(params, model_state, batch, rng):
        # copy=True: fresh Variables for this trace, so BatchNorm may update its statistics under grad
        model = nnx.merge(graphdef, params, model_state, copy=True)
        loss, metrics = fn(model, batch, rng)
        new_model_state = nnx.split(model, nnx.Param, ...)[2]
        return loss, (new_model_state, dict(metrics))

    return loss_fn


def global_norm(tree: PyTree, concatenate: bool | None = None) -> jax.Array:
    """‖tree‖₂ over all its leaves, accumulated in float32 (`optax.global_norm` sums in the leaf dtype).

    With `concatenate` (default: `shared.workarounds.concatenate_norms()`, on the CPU backend) the
    small leaves are raveled into one vector and reduced once instead of one kernel per leaf. Never
    concatenate FSDP-sharded leaves (it would gather them).
    """
    if concatenate is None:
        concatenate = workarounds.concatenate_norms()
    leaves = [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)]
    if concatenate:  # only the small leaves: copying a large one costs more than its own reduction
        small = [x for x in leaves if x.size <= CONCAT_NORM_MAX_LEAF]
        if len(small) > 1:
            leaves = [jnp.concatenate(small), *(x for x in leaves if x.size > CONCAT_NORM_MAX_LEAF)]
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def make_step(loss_fn: LossFn, tx: optax.GradientTransformation,
              concat_norms: bool | None = None) -> Callable[[TrainState, PyTree], tuple[TrainState, Metrics]]:
    """The pure train step: gradient, optimiser update with `value=loss`, non-finite guard.

    If the loss or any gradient is not finite, params, optimiser and model state keep their old
    values (`update_norm` is 0) and `skipped` grows by one; the step counter always advances (so data
    and keys move on).
    The step key is `fold_in(state.rng, state.step)`. The returned step is unjitted: jit it with
    `build_train_step`, or vmap it over seeds / hyper-parameters first.

    Metrics: the loss function's metrics plus `loss`, `grad_norm`, `param_norm`, `update_norm`
    (global L2 norms by `global_norm(·, concat_norms)`; `build_train_step` turns the concatenation
    off for FSDP) and `skipped`.
    """
    tx = optax.with_extra_args_support(tx)

    def step(state: TrainState, batch: PyTree) -> tuple[TrainState, Metrics]:
        rng = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (model_state, metrics)), grads = grad_fn(state.params, state.model_state, batch, rng)
        grad_norm = global_norm(grads, concat_norms)
        # the global norm is finite iff every gradient is (or their squares overflow: a blow-up too)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def apply(params, opt_state, grads, new_model_state, old_model_state):
            del old_model_state
            updates, opt_state = tx.update(grads, opt_state, params, value=loss)
            return (optax.apply_updates(params, updates), opt_state, new_model_state,
                    global_norm(updates, concat_norms))

        def keep(params, opt_state, grads, new_model_state, old_model_state):
            del grads, new_model_state
            return params, opt_state, old_model_state, jnp.zeros((), jnp.float32)

        # a cond, not a select of new and old values: the skipped branch computes nothing, and the update
        # can write into the donated buffers instead of keeping old and new state alive until a select
        params, opt_state, model_state, update_norm = jax.lax.cond(
            finite, apply, keep, state.params, state.opt_state, grads, model_state, state.model_state)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  model_state=model_state, skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = {**metrics, "loss": loss, "grad_norm": grad_norm,
                   "param_norm": global_norm(state.params, concat_norms),
                   "update_norm": update_norm, "skipped": new_state.skipped}
        return new_state, metrics

    return step


# ------------------------------------------------------------------------------------ shardings
def make_mesh(fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "fsdp") mesh over all (global) devices; batches are sharded over both axes.

    Args:
      fsdp: size of the FSDP axis (parameters sharded over it when `state_sharding(fsdp=True)`);
        must divide the device count. 1 gives plain data parallelism.
    """
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1 or len(devices) % fsdp:
        raise ValueError(f"fsdp={fsdp} must be >= 1 and divide the device count {len(devices)}")
    return jax.make_mesh((len(devices) // fsdp, fsdp), DATA_AXES, devices=devices,
                         axis_types=(AxisType.Auto, AxisType.Auto))


def _fsdp_spec(x: jax.Array, fsdp_size: int, min_size: int) -> P:
    if fsdp_size == 1 or x.ndim == 0 or x.size < min_size:
        return P()
    for axis in np.argsort(x.shape)[::-1]:  # the largest dimension that the axis divides
        if x.shape[axis] % fsdp_size == 0:
            spec: list[str | None] = [None] * x.ndim
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def state_sharding(state: PyTree, mesh: Mesh, fsdp: bool = False, min_size: int = 2 ** 14) -> PyTree:
    """NamedShardings for a state pytree: replicated, or with large leaves split over "fsdp"."""
    fsdp_size = mesh.shape["fsdp"] if fsdp else 1
    return jax.tree.map(lambda x: NamedSharding(mesh, _fsdp_spec(x, fsdp_size, min_size)), state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) dimension split over every device of the mesh."""
    return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Assembles this process's slice of a global batch into global arrays sharded on the batch axis.

    With one process the local batch is the global batch; on a pod every process passes its own
    share, the process-th contiguous block of the global batch (`shared.data.make_dataset(process_index=...)`),
    and the blocks land in process order, so the global array equals the one-process batch row for row.
    """
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def build_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, mesh: Mesh, state: TrainState,
                     fsdp: bool = False) -> TrainStep:
    """`jax.jit(make_step(loss_fn, tx))` with state and batch shardings and the state donated.

    Returns:
      step(state, batch) -> (state, metrics); the state is donated on GPU/TPU, and on CPU when it is large
      (`shared.workarounds.donate_state_argnums`; do not reuse the
      arrays passed in, nor the model they were split from); state must be placed with `state_sharding(state, mesh,
      fsdp)` and the batch with `shard_batch`. Metrics come back replicated.
    """
    return jit_train_step(make_step(loss_fn, tx, concat_norms=False if fsdp else None), mesh, state, fsdp)


def jit_train_step(step: Callable[[TrainState, PyTree], tuple[TrainState, Metrics]], mesh: Mesh, state: TrainState,
                   fsdp: bool = False, compiler_options: Mapping[str, Any] | None = None) -> TrainStep:
    """`jax.jit` of any `step(state, batch) -> (state, metrics)` (e.g. `make_step`'s, wrapped to add a
    schedule or an EMA) with the shardings and donation of `build_train_step`. With `fsdp`, build the
    step with `make_step(..., concat_norms=False)` so its norms do not gather the sharded leaves.
    `compiler_options` go to XLA for this program only (e.g. `shared.workarounds.cpu_compiler_options()`)."""
    shardings = state_sharding(state, mesh, fsdp)
    return jax.jit(step, in_shardings=(shardings, batch_sharding(mesh)), out_shardings=(shardings, replicated(mesh)),
                   donate_argnums=workarounds.donate_state_argnums(state_bytes(state)),
                   compiler_options=None if compiler_options is None else dict(compiler_options))


def state_bytes(state: PyTree) -> int:
    """Bytes of every array leaf of `state` (concrete or abstract), e.g. to decide on donating it."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state))


def warmup_cosine(learning_rate: float, warmup: int, total: int, end_fraction: float = 0.0) -> optax.Schedule:
    """Linear warm-up from 0 to `learning_rate` over `warmup` steps, then cosine decay to
    `end_fraction · learning_rate` at step `total` (warm-up ≥ 1 step, decay ≥ 1 step)."""
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup, 1), max(total, warmup + 1),
                                              end_fraction * learning_rate)


# ----------------------------------------------------------------------------------- evaluation
# metric_fn(params, model_state, batch) -> dict of per-batch SUMS; batch["weight"] is 1 for real
# examples and 0 for padding, and must weight every sum; "count" (sum of weights) is added for you.
MetricFn = Callable[[PyTree, PyTree, PyTree], Mapping[str, jax.Array]]
EvalStep = Callable[["TrainState", PyTree], Metrics]  # (state, batch) -> sums, with "count"


def nnx_metrics(graphdef: nnx.GraphDef,
                fn: Callable[[Any, PyTree], Mapping[str, jax.Array]]) -> MetricFn:
    """Adapts `fn(model, batch) -> sums` to a `MetricFn`; the model is put in eval mode."""

    def metric_fn(params, model_state, batch):
        model = nnx.merge(graphdef, params, model_state, copy=True)
        model.eval()
        return fn(model, batch)

    return metric_fn


def build_eval_step(metric_fn: MetricFn, mesh: Mesh, state: TrainState, fsdp: bool = False) -> EvalStep:
    """jit of `(state, batch) -> sums` (with "count"), state and batch sharded like the train step."""

    def eval_step(state, batch):
        sums = dict(metric_fn(state.params, state.model_state, batch))
        sums["count"] = batch["weight"].sum()
        return sums

    return jax.jit(eval_step, in_shardings=(state_sharding(state, mesh, fsdp), batch_sharding(mesh)),
                   out_shardings=replicated(mesh))


def evaluate(eval_step: EvalStep, state: TrainState, batches: Iterable[Mapping[str, np.ndarray]], mesh: Mesh,
             batch_size: int) -> dict[str, float]:
    """Runs `eval_step` over host batches (each padded to `batch_size`) and returns sums / count.

    Sums stay on device until the end; one host transfer per evaluation. The experiments evaluate
    through `shared.trainer.Trainer.evaluate`; this one stays for a notebook that drives the harness
    without a `Trainer` (the module's example).
    """
    totals = None
    for batch in batches:
        sums = eval_step(state, shard_batch(data.pad_batch(batch, batch_size), mesh))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("evaluate: no batches")
    totals = jax.device_get(totals)
    count = float(totals.pop("count"))
    return {k: float(v) / count for k, v in totals.items()}
