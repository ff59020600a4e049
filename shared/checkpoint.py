"""Orbax checkpointing of the train state, the loop's host state and the resolved config.

A checkpoint is an Orbax `Composite` of `state` (the `TrainState` pytree, saved sharded and restored
onto the current mesh's shardings), `data` (JSON host state: the logged history) and `config` (the
resolved config as JSON). Saving is asynchronous and atomic: Orbax writes into a temporary directory
and renames it when complete, so a step directory is never visible half-written. Kept: the newest
`keep` steps, and with `best_metric` also the step whose saved metrics were best (Orbax preservation
policies), so "the best epoch on valid" survives an interruption. `restore` tries the steps newest
first (or the one asked for) and skips (and reports, by path) any that cannot be read, e.g. a
truncated file after a crash.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from shared.overrides import ConfigError
from shared.report import to_jsonable
from shared.train import make_mesh, replicated

log = logging.getLogger(__name__)
# Orbax's messages when a checkpoint holds another parameter tree or other shapes than the target
MISMATCH_SIGNS = ("tree structures do not match", "is not compatible with the stored shape")


class CheckpointMismatch(ConfigError):
    """A readable checkpoint of another model (parameter tree or shapes): refused, never skipped, since
    every older step of the same run would be refused too and a fresh start would hide the mistake."""


class _DropUnscoredSaveWarning(logging.Filter):
    """Orbax warns on every save without metrics when a best metric is tracked; here most saves
    (periodic, SIGTERM) are unscored by design, so the warning carries no information."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropUnscoredSaveWarning())


@dataclasses.dataclass
class Restored:
    """What `Checkpointer.restore` found: the step, the state, and the loop's JSON host state (or None)."""

    step: int
    state: Any
    data_state: dict | None


def abstract_like(state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, to restore a state onto the current mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def replicated_globally(tree: Any) -> Any:
    """`tree`'s arrays as global arrays replicated over every process's devices, so that a multi-process run
    can save a state each process computed whole by itself (outside a sharded step: Orbax refuses host-local
    arrays there); `tree` unchanged in a single process."""
    if jax.process_count() == 1:
        return tree
    sharding = replicated(make_mesh())
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


class Checkpointer:
    """Keeps the newest `keep` checkpoints of a run under `directory`.

    Example:
        >>> ckpt = Checkpointer(run_dir / "checkpoints", keep=3)
        >>> ckpt.save(step, state, data_state={"history": history}, config=config)
        >>> restored = ckpt.restore(abstract_like(state, shardings))   # None when there is none
        >>> ckpt.close()
    """

    def __init__(self, directory: pathlib.Path | str, keep: int = 3, async_save: bool = True,
                 best_metric: str | None = None, best_mode: str = "max"):
        """Args:
          directory: where the step directories go (created; one directory shared by all processes).
          keep: how many of the newest steps to keep (>= 1).
          best_metric, best_mode: also keep the step whose `save(metrics=...)[best_metric]` is the
            largest ("max") or smallest ("min"); steps saved without metrics are never "best".
        """
        if keep < 1:
            raise ValueError(f"Checkpointer: keep must be >= 1, got {keep}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"Checkpointer: best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = pathlib.Path(directory).absolute()
        self.best_metric = best_metric
        policies = [checkpoint_managers.LatestN(keep)]
        best = {}
        if best_metric is not None:
            def metric(metrics: dict) -> float:
                return float(metrics[best_metric])

            policies.append(checkpoint_managers.BestN(get_metric_fn=metric, reverse=best_mode == "min", n=1,
                                                      keep_checkpoints_without_metrics=False))
            best = {"best_fn": metric, "best_mode": best_mode}  # best_fn makes Orbax write and read metrics
        options = ocp.CheckpointManagerOptions(
            create=True, enable_async_checkpointing=async_save,
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies), **best)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as error:
            raise PermissionError(f"cannot write checkpoints to {self.directory}: {error}") from error

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def best_step(self) -> int | None:
        """The kept step with the best saved metric (None without `best_metric` or such a step)."""
        if self.best_metric is None:
            return None
        self._manager.wait_until_finished()
        scored = [s for s in self._manager.all_steps() if self._manager.metrics(s) is not None]
        return self._manager.best_step() if scored else None

    def save(self, step: int, state: Any, data_state: dict | None = None, config: Any = None,
             force: bool = True, metrics: dict[str, float] | None = None) -> None:
        """Saves `step` (asynchronously); `metrics` (JSON floats) rank it for `best_metric`."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(to_jsonable(data_state))
        if config is not None:
            items["config"] = ocp.args.JsonSave(to_jsonable(config))
        if metrics is not None and self.best_metric is not None and self.best_metric not in metrics:
            raise KeyError(f"Checkpointer.save: metrics {sorted(metrics)} lack the best_metric {self.best_metric!r}")
        self._manager.save(int(step), args=ocp.args.Composite(**items), force=force,
                           metrics=to_jsonable(metrics) if metrics is not None and self.best_metric else None)

    def restore(self, abstract_state: Any, step: int | None = None) -> Restored | None:
        """Restores onto `abstract_state`'s shardings the given `step`, else the newest readable
        checkpoint; None when there is none. A `step` that is not kept raises `FileNotFoundError`."""
        self._manager.wait_until_finished()
        self._manager.reload()
        steps = sorted(self._manager.all_steps(), reverse=True)
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(f"no checkpoint of step {step} under {self.directory}; kept: {sorted(steps)}")
            return self._restore_step(step, abstract_state)  # asked for by name: an error is the answer
        for candidate in steps:
            try:
                return self._restore_step(candidate, abstract_state)
            except ValueError as error:
                if any(sign in str(error) for sign in MISMATCH_SIGNS):  # another model: older steps are too
                    raise CheckpointMismatch(
                        f"the checkpoint {self.directory / str(candidate)} was written for another model or config, "
                        "or by an earlier layout of this code (its parameter tree or shapes differ: "
                        f"{str(error).strip().splitlines()[0][:200]}); "
                        "train into a new directory, or --overwrite") from None
                self._report_unreadable(candidate, error)
            except Exception as error:  # a damaged checkpoint must not end the run: try an older one
                self._report_unreadable(candidate, error)
        return None

    def _report_unreadable(self, step: int, error: Exception) -> None:
        message = (f"checkpoint {self.directory / str(step)} is unreadable "
                   f"({type(error).__name__}: {error}); trying an older step")
        log.warning(message)
        print(f"[kexue] {message}", flush=True)

    def _restore_step(self, step: int, abstract_state: Any) -> Restored:
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        has_data = (self.directory / str(step) / "data").exists()
        if has_data:
            items["data"] = ocp.args.JsonRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return Restored(step, restored["state"], restored["data"] if has_data else None)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
