"""Orbax checkpointing of the train state, the data-iterator state and the resolved config.

A checkpoint is an Orbax `Composite` of `state` (the `TrainState` pytree, saved sharded and restored
onto the current mesh's shardings), `data` (the grain iterator's `get_state()` dict) and `config`
(the resolved config as JSON). Saving is asynchronous and atomic: Orbax writes into a temporary
directory and renames it when complete, so a step directory is never visible half-written; the
newest `keep` steps are kept. `restore` tries the steps newest first and skips (and reports, by
path) any that cannot be read, e.g. a truncated file after a crash.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from shared.report import to_jsonable

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Restored:
    """What `Checkpointer.restore` found: the step, the state, and the data-iterator state (or None)."""

    step: int
    state: Any
    data_state: dict | None


def abstract_like(state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, to restore a state onto the current mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


class Checkpointer:
    """Keeps the newest `keep` checkpoints of a run under `directory`.

    Example:
        >>> ckpt = Checkpointer(run_dir / "checkpoints", keep=3)
        >>> ckpt.save(step, state, data_state=iterator.get_state(), config=config)
        >>> restored = ckpt.restore(abstract_like(state, shardings))   # None when there is none
        >>> ckpt.close()
    """

    def __init__(self, directory: pathlib.Path | str, keep: int = 3, async_save: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict | None = None, config: Any = None,
             force: bool = True) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(to_jsonable(data_state))
        if config is not None:
            items["config"] = ocp.args.JsonSave(to_jsonable(config))
        self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: Any) -> Restored | None:
        """Restores the newest readable checkpoint onto `abstract_state`'s shardings, or None."""
        self._manager.wait_until_finished()
        self._manager.reload()
        for step in sorted(self._manager.all_steps(), reverse=True):
            path = self.directory / str(step)
            try:
                items = {"state": ocp.args.StandardRestore(abstract_state)}
                has_data = (path / "data").exists()
                if has_data:
                    items["data"] = ocp.args.JsonRestore()
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
                return Restored(step, restored["state"], restored["data"] if has_data else None)
            except Exception as error:  # a damaged checkpoint must not end the run: try an older one
                message = f"checkpoint {path} is unreadable ({type(error).__name__}: {error}); trying an older step"
                log.warning(message)
                print(f"[kexue] {message}", flush=True)
        return None

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
