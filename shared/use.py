"""Using a trained run: the run directory that `kexue run` wrote, and restoring its checkpoints.

A run directory holds `config.json` (with `_experiment`, the experiment's name), `checkpoints/` (one
Orbax directory per trained model, or the checkpoints themselves for a single model) and whatever the
experiment saved for later use (e.g. a tokeniser's vocabulary). `kexue eval | sample | predict` open it
with `open_run`, and an experiment's use functions restore models with `restore_model`, which picks
`--step N`, else the best evaluation's checkpoint when the run kept one, else the newest.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from shared.overrides import UsageError, apply_overrides, load_config_file


@dataclasses.dataclass(frozen=True)
class RunDir:
    """An opened run directory and what the command line asked of it.

    Attributes:
      path: the run directory.
      experiment: the experiment's full name.
      config: the run's saved config, with `--config.KEY VALUE` overrides applied.
      step: `--step N`, or None (best, else newest).
      model: `--model NAME`, or None (the experiment's headline model).
      options: the command's own options (temperature, inputs, ...).
    """

    path: pathlib.Path
    experiment: str
    config: Any
    step: int | None = None
    model: str | None = None
    options: dict = dataclasses.field(default_factory=dict)

    def checkpoint_dir(self, name: str = "") -> pathlib.Path:
        return self.path / "checkpoints" / name if name else self.path / "checkpoints"


def open_run(path: str | pathlib.Path, experiment: str, preset_config: Any, overrides: list[str], *,
             step: int | None = None, model: str | None = None, options: dict | None = None) -> RunDir:
    """Checks that `path` is a run directory of `experiment` with checkpoints; reads its config.

    Raises UsageError (one line, the command exits with code 2) for a directory that is not a run
    directory, a run of another experiment, or a run without checkpoints. Nothing is written.
    """
    path = pathlib.Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{path} is not a run directory of `kexue run` (it has no config.json)")
    try:
        owner = json.loads(config_path.read_text()).get("_experiment")
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise UsageError(f"{config_path} cannot be read as a run's config ({error})") from None
    if owner is not None and owner != experiment:
        raise UsageError(f"{path} is a run of {owner}, not of {experiment}")
    checkpoints = path / "checkpoints"
    if not checkpoints.is_dir() or not any(p.name.isdigit() for p in checkpoints.rglob("*")):
        raise UsageError(f"{path} has no checkpoint (nothing under {checkpoints}); train it with kexue run first")
    if step is not None and step < 0:
        raise UsageError(f"--step must be >= 0, got {step}")
    config = apply_overrides(load_config_file(config_path, preset_config, experiment), overrides)
    return RunDir(path, experiment, config, step, model, dict(options or {}))


def restore_model(trainer, run: RunDir, name: str = "", best_metric: str | None = None,
                  best_mode: str = "max"):
    """The state of `trainer`'s model from `run.checkpoint_dir(name)`: `run.step`, else the best
    evaluation's (with `best_metric`, when the run kept scored checkpoints), else the newest.

    A checkpoint whose parameter shapes differ from the config's model is a UsageError naming them.
    """
    from shared.checkpoint import Checkpointer

    directory = run.checkpoint_dir(name)
    if not directory.is_dir() or not any(p.name.isdigit() for p in directory.iterdir()):
        raise UsageError(f"no checkpoint under {directory}")
    checkpointer = Checkpointer(directory, async_save=False, best_metric=best_metric, best_mode=best_mode)
    try:
        kept = checkpointer.all_steps()
        best = checkpointer.best_step() if best_metric is not None else None
    finally:
        checkpointer.close()
    if run.step is not None and run.step not in kept:
        raise UsageError(f"--step {run.step}: no such checkpoint under {directory}; kept steps: {kept}")
    step = run.step if run.step is not None else best if best is not None else kept[-1]
    try:
        return trainer.restore(directory, step)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None
    except (ValueError, TypeError) as error:  # Orbax: the saved arrays do not fit the target's shapes
        first = str(error).strip().splitlines()[0][:300]
        raise UsageError(f"the checkpoint in {directory} does not fit the model of this config "
                         f"(parameter shapes differ: {first})") from None


def write_outputs(run: RunDir, name: str, metrics: dict, lines: list[str]) -> None:
    """Writes `<name>.json` (metrics) and `<name>.md` (lines) into the run directory."""
    from shared.report import to_jsonable

    (run.path / f"{name}.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
    (run.path / f"{name}.md").write_text("\n\n".join(lines) + "\n")
