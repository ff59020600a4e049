"""The host-side training loop: batches in, jitted steps, progress, logging, checkpoints, resume.

`fit` only orchestrates: the math is the jitted step from `shared.train.build_train_step`. Metrics
stay on device between logging points (summed over the logging window, divided when logged).
The loop checkpoints the state, the grain iterator state and the logged history every
`checkpoint_every` steps; with `resume=True` it continues from the newest readable checkpoint, so
an interrupted run ends with exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain
import jax
import jax.numpy as jnp
import tqdm

from shared import host_malloc
from shared.checkpoint import Checkpointer, abstract_like
from shared.data import make_iterator
from shared.train import TrainState, shard_batch, state_sharding


def fit(*, state: TrainState, train_step: Callable, dataset: grain.MapDataset, mesh: jax.sharding.Mesh,
        num_steps: int, checkpointer: Checkpointer | None = None, checkpoint_every: int = 0,
        resume: bool = False, log_every: int = 50, evaluate_fn: Callable[[TrainState], dict] | None = None,
        eval_every: int = 0, config: Any = None, ctx=None, fsdp: bool = False,
        desc: str = "train") -> tuple[TrainState, list[dict]]:
    """Trains for `num_steps` steps (counted from 0, so a resumed run stops at the same step).

    Args:
      state: the initial state, already placed on the mesh.
      train_step: jitted `(state, batch) -> (state, metrics)` (donates its state argument).
      dataset: a batched, repeated `grain.MapDataset` (see `shared.data.make_dataset`).
      checkpointer, checkpoint_every: save every N steps and at the end (0: only at the end).
      resume: restore the newest readable checkpoint first; with none, start fresh and say so.
      log_every: host logging period; window means of the step metrics go to tqdm, TensorBoard
        (through `ctx.log_scalars`) and the returned history.
      evaluate_fn, eval_every: `evaluate_fn(state) -> dict`, merged into the history every N steps.
    Returns:
      The final state and the history: a list of `{"step": s, <metric>: value, ...}` dicts.
    """
    iterator = make_iterator(dataset)
    history: list[dict] = []
    if resume:
        if checkpointer is None:
            raise ValueError("resume=True needs a checkpointer")
        restored = checkpointer.restore(abstract_like(state, state_sharding(state, mesh, fsdp)))
        if restored is None:
            print(f"[kexue] --resume: no checkpoint under {checkpointer.directory}; starting fresh", flush=True)
        else:
            print(f"[kexue] resuming from step {restored.step} ({checkpointer.directory})", flush=True)
            state = restored.state
            iterator.set_state(restored.data_state["iterator"])
            history = list(restored.data_state["history"])
    start = int(jax.device_get(state.step))

    def save(step: int) -> None:
        if checkpointer is not None:
            checkpointer.save(step, state, data_state={"iterator": iterator.get_state(), "history": history},
                              config=config)

    window_sums: dict[str, jax.Array] = {}
    window = 0
    bar = tqdm.tqdm(total=num_steps, initial=start, desc=desc, dynamic_ncols=True, mininterval=1.0, leave=False)
    for step in range(start, num_steps):
        batch = next(iterator)
        state, metrics = train_step(state, shard_batch(batch, mesh))
        if step == start:  # the step compiled during this call: give the compiler's freed memory back
            host_malloc.release_free_memory()
        window_sums = metrics if not window_sums else jax.tree.map(jnp.add, window_sums, metrics)
        window += 1
        done = step + 1
        if done % log_every == 0 or done == num_steps:
            means = {k: float(v) / window for k, v in jax.device_get(window_sums).items()}
            means["skipped"] = int(jax.device_get(state.skipped))
            record = {"step": done, **means}
            if evaluate_fn is not None and eval_every and (done % eval_every == 0 or done == num_steps):
                record.update({f"eval_{k}": v for k, v in evaluate_fn(state).items()})
            history.append(record)
            bar.set_postfix(loss=f"{means['loss']:.4f}")
            if ctx is not None:
                ctx.log_scalars(done, {k: v for k, v in record.items() if k != "step"}, prefix=f"{desc}/")
            window_sums, window = {}, 0
        bar.update(1)
        if checkpoint_every and done % checkpoint_every == 0 and done != num_steps:
            save(done)
    bar.close()
    if start < num_steps:
        save(num_steps)
    if checkpointer is not None:
        checkpointer.wait()
    return state, history
