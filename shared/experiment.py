"""The experiment contract: what a package registers and what a run receives.

A package's `experiments.py` fills `EXPERIMENTS: dict[str, Experiment]`; `shared.cli` collects those
dicts explicitly (no string imports). A run is `experiment.run(config, ctx) -> metrics`, where `config`
is a frozen dataclass (one of `experiment.presets`, possibly with `--config.key value` overrides) and
`ctx` is the `RunContext` below. The CLI writes `config.json`, `metrics.json`, `report.md` and the
index; the run only fills the report and returns its JSON-able metrics.

Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Config:
    ...     steps: int = 100
    >>> def run(config: Config, ctx: RunContext) -> dict:
    ...     ctx.report.text(f"trained for {config.steps} steps")
    ...     return {"accuracy": 1.0}
    >>> EXPERIMENTS = {"demo": Experiment("pkg.demo", run, {"quick": Config(), "full": Config(10_000)},
    ...                                    "what the demo shows")}
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from shared.report import Report

T = TypeVar("T")


class Preempted(Exception):
    """Raised by `shared.trainer.Trainer.fit` after SIGTERM once the current step is checkpointed;
    `kexue` then exits with code 143 and `--resume` continues exactly."""

    def __init__(self, step: int, directory: pathlib.Path | None):
        where = f"checkpoint saved under {directory}" if directory is not None else "no checkpoint directory"
        super().__init__(f"preempted (SIGTERM) at step {step}; {where}")
        self.step, self.directory = step, directory


@dataclasses.dataclass
class RunContext:
    """Everything a run may touch outside its pure math.

    Attributes:
      out_dir: `reports/<package>/<experiment>/` (or `--out`); the run may write files here.
      report: the `Report` that becomes `report.md`.
      resume: whether `--resume` was given: restore the newest good checkpoint under
        `checkpoint_dir` if there is one, start fresh (and say so) otherwise.
      preset: the preset the config came from (`quick` or `full`).
      main_process: whether this is process 0, the one that writes reports and TensorBoard (every
        process trains and checkpoints into `checkpoint_dir`).
    """

    out_dir: pathlib.Path
    report: Report
    resume: bool = False
    preset: str = "quick"
    main_process: bool = True
    _writer: Any = dataclasses.field(default=None, repr=False)

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        return self.out_dir / "checkpoints"

    @property
    def writer(self):
        """A TensorBoard `SummaryWriter` logging under `out_dir/tensorboard`, made on first use."""
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        return self._writer

    def log_scalars(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
        """Writes host-side scalars to TensorBoard (call only at logging points, never per step);
        only process 0 writes."""
        if not self.main_process:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"{prefix}{key}", float(value), int(step))

    def progress(self, iterable: Iterable[T] | None = None, *, total: int | None = None,
                 desc: str = "", initial: int = 0) -> Any:
        """A tqdm bar (`tqdm.auto`: a widget in notebooks; shows ETA; callers `set_postfix(loss=...)`
        at logging points)."""
        from tqdm import auto as tqdm_auto

        return tqdm_auto.tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True,
                         mininterval=1.0, leave=False)

    def log_run_summary(self, config: Any, metrics: Mapping[str, Any]) -> None:
        """TensorBoard hparams (the config's fields, with the run's top-level numbers as metrics) and
        every PNG the run wrote into `out_dir` (samples, reconstructions, plots) as an image."""
        if not self.main_process:
            return
        hparams = {f.name: _hparam(getattr(config, f.name)) for f in dataclasses.fields(config)}
        scores = {f"hparam/{k}": float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.writer.add_hparams(hparams, scores, name="hparams")
        import matplotlib.image

        for png in sorted(self.out_dir.glob("*.png")):
            image = matplotlib.image.imread(png)  # float [H, W, 3 | 4] in [0, 1], or [H, W] grey
            if image.ndim == 2:
                image = image[..., None].repeat(3, axis=-1)
            self.writer.add_image(f"images/{png.stem}", image[..., :3], dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _hparam(value: Any) -> bool | int | float | str:
    """A config value as TensorBoard's hparams plugin takes it (tuples as text)."""
    return value if isinstance(value, (bool, int, float, str)) else " ".join(map(str, value))


def lazy_run(target: str) -> Callable[..., Any]:
    """The function named "module:function", imported on the first call (so that listing experiments
    imports no model code, nor jax); used for run functions and for the use hooks."""
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"lazy_run: target must be 'module:function', got {target!r}")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module_name), function_name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"lazy_run({target})"
    return call


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A runnable experiment.

    Attributes:
      name: `"<package>.<experiment>"`, e.g. `"longtail.synthetic"`; reports go to
        `reports/<package>/<experiment>/`.
      run: `run(config, ctx) -> metrics` (a JSON-able dict).
      presets: frozen dataclass configs by preset name; must hold `"quick"` (embedded data, CPU
        minutes) and should hold `"full"` (the paper's scale).
      description: one line for `kexue list` and the reports index.
      reproduce: whether `kexue reproduce` runs it.
      evaluate, sample, predict: what `kexue eval | sample | predict` call with the opened run directory
        (`shared.use.RunDir`); each returns a JSON-able dict. None: the command is not offered.
      models: the models the run trains (`--model`), the headline model first.
    """

    name: str
    run: Callable[[Any, RunContext], dict]
    presets: Mapping[str, Any]
    description: str
    reproduce: bool = True
    evaluate: Callable[[Any], dict] | None = None
    sample: Callable[[Any], dict] | None = None
    predict: Callable[[Any], dict] | None = None
    models: tuple[str, ...] = ()

    def __post_init__(self):
        if "quick" not in self.presets:
            raise ValueError(f"experiment {self.name!r}: presets must include 'quick'")
        for preset, config in self.presets.items():
            if not dataclasses.is_dataclass(config):
                raise TypeError(f"experiment {self.name!r}: preset {preset!r} is not a dataclass")

    @property
    def package(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]
