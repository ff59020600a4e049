"""One trainer for every package: a model, an optax transform, a loss and a data source become a run.

`Trainer(model, tx, loss, seed=...)` builds, once, everything a run needs on the device side: the
mesh, the `TrainState`, its shardings and the jitted train (and, with `eval_metrics`, eval) steps;
the optimiser is given once. `Trainer.fit(source, Loop(...))` then runs the host loop: batches
indexed by step, progress, logging, periodic evaluation, the newest and the best checkpoints, exact
resume, and a checkpoint on SIGTERM. The maths stays in `shared.train` (pure step functions), so a
notebook can still `jax.grad` the loss or call `make_step` without the trainer.

Data by step: the training data is a random-access `grain.MapDataset` whose item `s` is the global
batch of step `s` (`shared.data.make_dataset`: a new permutation every epoch); a run starting at step
`s` reads `dataset[s:]`. So an epoch loop sees a fresh permutation each epoch, and a resumed run sees
exactly the batches an uninterrupted run would have seen, with no iterator state to save.

Multi-host: `Loop.batch_size` is the global batch; every process reads its own share and
`shared.train.shard_batch` assembles the global arrays. All processes write into one checkpoint
directory (Orbax coordinates them).

Example:
    >>> trainer = Trainer(MLP((64, 128, 10), rngs=nnx.Rngs(0)), optax.adam(1e-3), cross_entropy, seed=0,
    ...                   eval_metrics=classification_sums)
    >>> evaluate = lambda state: trainer.evaluate({"image": x_val, "label": y_val}, 256, state)
    >>> state, history = trainer.fit(ArraySource({"image": x, "label": y}),
    ...                              Loop(num_steps=600, batch_size=64, eval_every=100, best_metric="accuracy"),
    ...                              evaluate=evaluate, checkpoint_dir="run/checkpoints")
    >>> best = trainer.best_state                     # the state of the best evaluation, or None
"""

from __future__ import annotations

import dataclasses
import pathlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import auto as tqdm_auto

from shared import data, train, workarounds
from shared.checkpoint import Checkpointer, abstract_like
from shared.experiment import Preempted, RunContext
from shared.overrides import ConfigError

__all__ = ["Loop", "Trainer", "check_global_batch", "compile_step"]

# fn(model, batch, rng) -> (scalar loss, metrics); the model is an NNX module rebuilt inside the step
# the model argument is Any: a loss written for one nnx.Module subclass is not a function of every Module
ModelLoss = Callable[[Any, Any, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]
Step = Callable[[train.TrainState, Any], tuple[train.TrainState, train.Metrics]]


@dataclasses.dataclass(frozen=True)
class Loop:
    """The host loop's settings (all steps count from 0, so a resumed run stops at the same step).

    Attributes:
      num_steps: total steps of the run.
      batch_size: the GLOBAL batch; it must divide by the number of processes and of mesh devices.
      seed: the data order's seed (each epoch is its own permutation).
      log_every: host logging period: window means of the step metrics go to the progress bar,
        TensorBoard and the returned history.
      checkpoint_every: save every N steps (0: only at evaluations and at the end).
      eval_every: call `evaluate(state)` every N steps and at the end (0: never).
      keep: the newest checkpoints kept.
      best_metric, best_mode: also keep the checkpoint whose evaluation had the largest ("max") or
        smallest ("min") `best_metric`; `Trainer.best_state` is that state after `fit`.
      prefetch: host threads preparing the next batches while the device computes (0: none). None: 2
        on an accelerator; 0 on the CPU backend, where the host computes the step too and a thread
        competes with it (bench_harness: `loop` and `data_bound`).
      batch_field: the config field that holds the batch size, named in errors.
    """

    num_steps: int
    batch_size: int
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 0
    eval_every: int = 0
    keep: int = 2
    best_metric: str | None = None
    best_mode: str = "max"
    prefetch: int | None = None
    batch_field: str = "batch_size"

    def __post_init__(self):
        for name in ("num_steps", "batch_size", "log_every", "keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"Loop.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"Loop.{name} must be >= 0, got {getattr(self, name)}")
        if self.prefetch is not None and self.prefetch < 0:
            raise ValueError(f"Loop.prefetch must be >= 0 or None, got {self.prefetch}")
        if self.best_mode not in ("max", "min"):
            raise ValueError(f"Loop.best_mode must be 'max' or 'min', got {self.best_mode!r}")
        if self.best_metric is not None and not self.eval_every:
            raise ValueError("Loop.best_metric needs eval_every > 0 (the best is chosen among evaluations)")


def check_global_batch(batch_size: int, field: str = "batch_size", num_devices: int | None = None) -> int:
    """This process's share of a global batch; raises naming `config.<field>` unless the batch divides
    by the number of processes and of devices (default: every global device)."""
    processes = jax.process_count()
    num_devices = jax.device_count() if num_devices is None else num_devices
    if batch_size % processes or batch_size % num_devices:
        raise ConfigError(f"config.{field}={batch_size} is the global batch and must divide by the {processes} "
                         f"process(es) and by the {num_devices} device(s) of the mesh")
    return batch_size // processes


@jax.jit
def _add_metrics(sums: train.Metrics, metrics: train.Metrics) -> train.Metrics:
    """The logging window's running sums: one dispatch per step instead of one per metric."""
    return jax.tree.map(jnp.add, sums, metrics)


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop reads between steps (single process; on a pod JAX's
    preemption sync point makes every process stop at the same step)."""

    def __init__(self):
        self.raised = False
        self._previous = None
        self._multi_process = jax.process_count() > 1

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def should_stop(self, step: int) -> bool:
        if self._multi_process:
            from jax.experimental import multihost_utils

            return bool(multihost_utils.reached_preemption_sync_point(step)) or self.raised
        return self.raised


def compile_step(step: Step, state: train.TrainState, batch: Any) -> Step:
    """The jitted `step` compiled ahead for these arguments, with the compiler's freed memory given back before
    the first execution allocates the step's buffers (else a large program's compile peak and its first step
    add up); a step without `.lower` (a Python wrapper around the jitted one) is returned as it is."""
    lower = getattr(step, "lower", None)
    if lower is None:
        return step
    compiled = lower(state, batch).compile()
    workarounds.release_free_memory()
    return compiled


class Trainer:
    """The device side of a run, built once: mesh, state, shardings, jitted steps.

    Args:
      model: the NNX model (split into a static graphdef and the state's params / model_state).
      tx: the optax transform (given once: the state's optimiser state and the step both use it).
      loss: `loss(model, batch, rng) -> (scalar, metrics)`.
      seed: the run's base key (`TrainState.rng`).
      mesh: default `shared.train.make_mesh(fsdp)` over every (global) device.
      fsdp: size of the FSDP axis (1: data parallel, parameters replicated).
      learning_rate: the schedule (or constant) `tx` uses, logged beside the loss; None: not logged.
      eval_metrics: `fn(model, batch) -> weighted sums` (see `shared.train.build_eval_step`) for `evaluate`.
      wrap_step: `fn(step) -> step` around the pure `make_step` step, e.g. to feed a schedule
        value into the batch or to update an EMA kept in an extended state.
      extend_state: `fn(TrainState) -> state` before placement (e.g. a subclass with an EMA).
      compiler_options: XLA options for the train step only (e.g. `workarounds.cpu_compiler_options()`).
    """

    def __init__(self, model: nnx.Module, tx: optax.GradientTransformation, loss: ModelLoss, *, seed: int = 0,
                 mesh: jax.sharding.Mesh | None = None, fsdp: int = 1,
                 learning_rate: optax.ScalarOrSchedule | None = None,
                 eval_metrics: Callable[[Any, Any], Mapping[str, jax.Array]] | None = None,
                 wrap_step: Callable[[Step], Step] | None = None,
                 extend_state: Callable[[train.TrainState], train.TrainState] | None = None,
                 compiler_options: Mapping[str, Any] | None = None):
        self.mesh = train.make_mesh(fsdp) if mesh is None else mesh
        self.fsdp = self.mesh.shape["fsdp"] > 1
        self.learning_rate = learning_rate
        self.graphdef, state = train.create_train_state(model, tx, jax.random.PRNGKey(seed))
        if extend_state is not None:
            state = extend_state(state)
        step = train.make_step(train.nnx_loss(self.graphdef, loss), tx, concat_norms=False if self.fsdp else None)
        if wrap_step is not None:
            step = wrap_step(step)
        self.train_step = train.jit_train_step(step, self.mesh, state, self.fsdp, compiler_options)
        self.eval_step = (train.build_eval_step(train.nnx_metrics(self.graphdef, eval_metrics), self.mesh, state,
                                                self.fsdp) if eval_metrics is not None else None)
        self.sharding = train.state_sharding(state, self.mesh, self.fsdp)
        self.state = jax.device_put(state, self.sharding)
        workarounds.release_free_memory()  # building a large model leaves its NumPy initialisers' memory resident
        self.best_state: train.TrainState | None = None
        self.best_step: int | None = None
        self.data_wait: float | None = None  # the last logged window's share of time waiting for data

    # ------------------------------------------------------------------------------------- data
    def dataset(self, source: Sequence, loop: Loop, transform: Callable[[data.Example], data.Example] | None = None,
                random_transform: data.RandomTransform | None = None) -> grain.MapDataset:
        """The training `MapDataset` whose item s is this process's share of step s's global batch."""
        local = check_global_batch(loop.batch_size, loop.batch_field, self.mesh.size)
        return data.make_dataset(source, batch_size=local, seed=loop.seed, process_index=jax.process_index(),
                                 process_count=jax.process_count(), transform=transform,
                                 random_transform=random_transform)

    @staticmethod
    def _batches(dataset: grain.MapDataset, start: int, prefetch: int | None) -> Iterator:
        if prefetch is None:
            prefetch = workarounds.default_prefetch()
        sliced = dataset[start:]
        if prefetch:
            return iter(sliced.to_iter_dataset(grain.ReadOptions(num_threads=prefetch,
                                                                  prefetch_buffer_size=2 * prefetch)))
        return (sliced[i] for i in range(len(sliced)))

    # ------------------------------------------------------------------------------- evaluation
    def evaluate(self, arrays: Mapping[str, np.ndarray], batch_size: int,
                 state: train.TrainState | None = None) -> dict[str, float]:
        """`eval_metrics` sums over every row of `arrays` (padded batches), divided by the row count.

        Every process passes the same full arrays and feeds its own share of each padded batch.
        """
        if self.eval_step is None:
            raise ValueError("Trainer.evaluate needs eval_metrics")
        state = self.state if state is None else state
        size = -(-batch_size // self.mesh.size) * self.mesh.size  # a multiple of the device count
        pi, pc = jax.process_index(), jax.process_count()
        totals = None
        for batch in data.batches_of(arrays, size):
            padded = data.pad_batch(batch, size)
            share = {k: v[pi * size // pc:(pi + 1) * size // pc] for k, v in padded.items()}
            sums = self.eval_step(state, train.shard_batch(share, self.mesh))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        if totals is None:
            raise ValueError("Trainer.evaluate: no rows to evaluate")
        totals = jax.device_get(totals)
        count = float(totals.pop("count"))
        return {k: float(v) / count for k, v in totals.items()}

    # ------------------------------------------------------------------------------------ state
    def restore(self, directory: pathlib.Path | str, step: int | Literal["best"] | None = None, *,
                best_metric: str | None = None,
                best_mode: str = "max") -> train.TrainState:
        """A checkpointed state of this trainer's model, onto its shardings.

        step: an int, None (the newest readable) or "best": the step whose saved evaluation had the best
        `best_metric` (the run's `Loop.best_metric` / `best_mode`).
        """
        if step == "best" and best_metric is None:
            raise ValueError('restore(step="best") needs the best_metric the run was saved with')
        checkpointer = Checkpointer(directory, async_save=False, best_metric=best_metric, best_mode=best_mode)
        try:
            if step == "best":
                step = checkpointer.best_step()
                if step is None:
                    raise FileNotFoundError(f"no checkpoint with evaluation metrics under {directory}")
            restored = checkpointer.restore(abstract_like(self.state, self.sharding), step)
        finally:
            checkpointer.close()
        if restored is None:
            raise FileNotFoundError(f"no readable checkpoint under {pathlib.Path(directory).absolute()}")
        return restored.state

    # ------------------------------------------------------------------------------------- loop
    def fit(self, source: Sequence, loop: Loop, *, ctx: RunContext | None = None, name: str = "",
            checkpoint_dir: pathlib.Path | str | None = None, resume: bool | None = None,
            evaluate: Callable[[train.TrainState], Mapping[str, float]] | None = None,
            transform: Callable[[data.Example], data.Example] | None = None,
            random_transform: data.RandomTransform | None = None, config: Any = None,
            desc: str | None = None) -> tuple[train.TrainState, list[dict]]:
        """Trains `self.state` for `loop.num_steps` steps on `source`; returns (final state, history).

        Args:
          source: random-access examples (`shared.data.ArraySource`, a TFDS data source, ...).
          loop: the loop's settings.
          ctx: the run's `RunContext`: checkpoints go to `ctx.checkpoint_dir / name` (unless
            `checkpoint_dir` is given), `resume` defaults to `ctx.resume`, scalars go to TensorBoard.
          evaluate: `evaluate(state) -> {metric: float}` every `loop.eval_every` steps and at the
            end; merged into the history as `eval_<metric>`.
          transform, random_transform: per-example functions (see `shared.data.make_dataset`).
          config: saved with every checkpoint.
        Returns:
          The final state (also `self.state`) and the history: `{"step": s, <metric>: window mean, ...,
          "skipped": n, "eval_<metric>": ...}` records every `log_every` steps.
        Raises:
          Preempted: after SIGTERM, once the current step is checkpointed.
        """
        desc = desc or name or "train"
        if checkpoint_dir is None and ctx is not None:
            checkpoint_dir = ctx.checkpoint_dir / name if name else ctx.checkpoint_dir
        resume = (ctx is not None and ctx.resume) if resume is None else resume
        if loop.best_metric is not None and evaluate is None:
            raise ValueError("Loop.best_metric needs an evaluate function")
        checkpointer = (Checkpointer(checkpoint_dir, keep=loop.keep, best_metric=loop.best_metric,
                                     best_mode=loop.best_mode) if checkpoint_dir is not None else None)
        try:
            state, history = self._run(source, loop, ctx, checkpointer, resume, evaluate, transform,
                                       random_transform, config, desc)
            if checkpointer is not None and loop.best_metric is not None:
                self.best_step = checkpointer.best_step()
                best = (checkpointer.restore(abstract_like(state, self.sharding), self.best_step)
                        if self.best_step is not None else None)
                self.best_state = None if best is None else best.state
        finally:
            if checkpointer is not None:
                checkpointer.close()
        return state, history

    def _run(self, source, loop, ctx: RunContext | None, checkpointer, resume, evaluate, transform, random_transform,
             config, desc):
        state, history, window_state = self.state, [], None
        if resume:
            if checkpointer is None:
                raise ValueError("resume=True needs a checkpoint directory")
            restored = checkpointer.restore(abstract_like(state, self.sharding))
            if restored is None:
                print(f"[kexue] --resume: no checkpoint under {checkpointer.directory}; starting fresh", flush=True)
            else:
                print(f"[kexue] resuming from step {restored.step} ({checkpointer.directory})", flush=True)
                state = restored.state
                host = restored.data_state or {}
                history = list(host.get("history", []))
                window_state = host.get("window")
        start = int(jax.device_get(state.step))
        dataset = self.dataset(source, loop, transform, random_transform)
        # the logging window's running sums (float32, as on device) continue across a resume, so a
        # run interrupted mid-window logs the same means as an uninterrupted one
        window_sums: dict[str, jax.Array] = {}
        window = 0
        if resume and window_state:
            window = int(window_state["count"])
            window_sums = {k: jnp.float32(v) for k, v in window_state["sums"].items()}

        def save(step: int, metrics: Mapping[str, float] | None = None) -> None:
            if checkpointer is not None:
                sums = {k: float(v) for k, v in jax.device_get(window_sums).items()}
                checkpointer.save(step, state, data_state={"history": history,
                                                           "window": {"count": window, "sums": sums}},
                                  config=config, metrics=dict(metrics) if metrics is not None and loop.best_metric
                                  else None)

        window_start, timed_steps, waited = time.perf_counter(), 0, 0.0
        bar = tqdm_auto.tqdm(total=loop.num_steps, initial=start, desc=desc, dynamic_ncols=True, mininterval=1.0,
                             leave=False)
        batches = self._batches(dataset, start, loop.prefetch) if start < loop.num_steps else iter(())
        evaluated = None
        with _SigtermFlag() as sigterm:
            for step in range(start, loop.num_steps):
                ready = time.perf_counter()
                batch = next(batches)
                waited += time.perf_counter() - ready
                sharded = train.shard_batch(batch, self.mesh)
                if step == start:
                    train_step = compile_step(self.train_step, state, sharded)
                state, metrics = train_step(state, sharded)
                timed_steps += 1
                window_sums = metrics if not window_sums else _add_metrics(window_sums, metrics)
                window += 1
                done = step + 1
                evaluated = None
                if done % loop.log_every == 0 or done == loop.num_steps:
                    means = {k: float(v) / window for k, v in jax.device_get(window_sums).items()}
                    means["skipped"] = int(jax.device_get(state.skipped))
                    record = {"step": done, **means}
                    if evaluate is not None and loop.eval_every and (done % loop.eval_every == 0
                                                                    or done == loop.num_steps):
                        evaluated = dict(evaluate(state))
                        record.update({f"eval_{k}": v for k, v in evaluated.items()})
                    history.append(record)
                    seconds = time.perf_counter() - window_start
                    # data_wait: the share of the window's wall time spent waiting for the host's batches
                    speed = {"steps_per_s": timed_steps / seconds,
                             "examples_per_s": timed_steps * loop.batch_size / seconds, "data_wait": waited / seconds}
                    if self.learning_rate is not None:
                        lr = self.learning_rate(step) if callable(self.learning_rate) else self.learning_rate
                        speed["learning_rate"] = float(lr)
                    bar.set_postfix(loss=f"{means['loss']:.4f}", **{k: f"{v:.3g}" for k, v in speed.items()})
                    if ctx is not None:
                        ctx.log_scalars(done, {**{k: v for k, v in record.items() if k != "step"}, **speed},
                                        prefix=f"{desc}/")
                    window_sums, window = {}, 0
                    window_start, timed_steps, waited = time.perf_counter(), 0, 0.0
                    self.data_wait = speed["data_wait"]
                elif evaluate is not None and loop.eval_every and done % loop.eval_every == 0:
                    evaluated = dict(evaluate(state))
                    history.append({"step": done, **{f"eval_{k}": v for k, v in evaluated.items()}})
                bar.update(1)
                if done == loop.num_steps:
                    break
                if sigterm.should_stop(done):
                    save(done, evaluated)
                    bar.close()
                    self.state = state
                    if checkpointer is not None:
                        checkpointer.wait()
                    raise Preempted(done, checkpointer.directory if checkpointer is not None else None)
                if evaluated is not None or (loop.checkpoint_every and done % loop.checkpoint_every == 0):
                    save(done, evaluated)
        bar.close()
        if start < loop.num_steps:
            save(loop.num_steps, evaluated)
        if checkpointer is not None:
            checkpointer.wait()
        self.state = state
        return state, history
