"""The `kexue` command: list, run and reproduce the registered experiments.

    kexue list
    kexue run NAME [--preset quick|full] [--config.KEY VALUE ...] [--resume] [--out DIR]
                   [--coordinator HOST:PORT --num-processes N --process-id I]
    kexue reproduce [--quick] [--only PKG] [--reports DIR]

Config overrides are parsed by tyro against the experiment's config dataclass; an unknown key or a
value of the wrong type is a usage error (exit code 2, no traceback) that names it and lists the
valid keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from shared import compilation_cache, host_malloc
from shared.experiment import Experiment, RunContext
from shared.report import Report, markdown_table, write_index

PACKAGES = ("shared", "nvae_jax", "longtail", "flooding", "weissi", "rnn_grad", "mwp", "spaces")


class UsageError(Exception):
    """A bad command line: reported in one paragraph, exit code 2."""


def registry() -> dict[str, Experiment]:
    """Every experiment by full name, collected from each package's `experiments.EXPERIMENTS`."""
    from flooding import experiments as flooding_experiments
    from longtail import experiments as longtail_experiments
    from mwp import experiments as mwp_experiments
    from nvae_jax import experiments as nvae_experiments
    from rnn_grad import experiments as rnn_grad_experiments
    from shared import experiments as shared_experiments
    from spaces import experiments as spaces_experiments
    from weissi import experiments as weissi_experiments

    modules = (shared_experiments, nvae_experiments, longtail_experiments, flooding_experiments,
               weissi_experiments, rnn_grad_experiments, mwp_experiments, spaces_experiments)
    return {exp.name: exp for module in modules for exp in module.EXPERIMENTS.values()}


# ------------------------------------------------------------------------------ config overrides
def split_overrides(args: Sequence[str]) -> list[tuple[str, list[str]]]:
    """["--config.a", "1", "--config.b=2", "--config.c", "3", "4"] -> [("a", ["1"]), ("b", ["2"]), ("c", ["3", "4"])]."""
    overrides: list[tuple[str, list[str]]] = []
    for arg in args:
        if arg.startswith("--"):
            if not arg.startswith("--config."):
                raise UsageError(f"unknown option {arg!r}; config overrides are written --config.KEY VALUE")
            key, _, value = arg[len("--config."):].partition("=")
            overrides.append((key, [value] if value else []))
        elif overrides:
            overrides[-1][1].append(arg)
        else:
            raise UsageError(f"unexpected argument {arg!r}; config overrides are written --config.KEY VALUE")
    return overrides


def _tyro_parse(config: Any, args: list[str]) -> tuple[Any, list[str]]:
    import tyro

    sink = io.StringIO()
    with redirect_stdout(sink), redirect_stderr(sink):
        return tyro.cli(type(config), default=config, args=args, return_unknown_args=True,
                        use_underscores=True, console_outputs=False, add_help=False)


def _raise_validation_error(config: Any, key: str, values: list[str]) -> None:
    """If a scalar value converts to the field's type but the config rejects it, say why."""
    field_type = type(getattr(config, key))
    if len(values) != 1 or field_type not in (int, float, str):
        return
    try:
        value = field_type(values[0])
    except ValueError:
        return
    try:
        dataclasses.replace(config, **{key: value})
    except ValueError as error:
        raise UsageError(f"config.{key}={values[0]}: {error}") from None


def apply_overrides(config: Any, args: Sequence[str]) -> Any:
    """Returns `config` with `--config.KEY VALUE` overrides applied (types checked by tyro)."""
    overrides = split_overrides(args)
    if not overrides:
        return config
    fields = {f.name: f for f in dataclasses.fields(config)}
    valid = ", ".join(sorted(fields))
    for key, values in overrides:
        if key not in fields:
            raise UsageError(f"unknown config key {key!r} for {type(config).__name__}. Valid keys: {valid}")
        if not values:
            raise UsageError(f"config key {key!r} needs a value")
        try:
            _, unknown = _tyro_parse(config, [f"--{key}", *values])
        except SystemExit:
            _raise_validation_error(config, key, values)
            unknown = values
        except ValueError as error:  # the config's own validation (__post_init__)
            raise UsageError(f"config.{key}={' '.join(values)!s}: {error}") from None
        if unknown:
            raise UsageError(f"bad value {' '.join(values)!r} for config key {key!r} "
                             f"(expected {fields[key].type}). Valid keys: {valid}")
    flat = [token for key, values in overrides for token in (f"--{key}", *values)]
    try:
        parsed, _ = _tyro_parse(config, flat)
    except (SystemExit, ValueError) as error:
        raise UsageError(f"invalid config overrides {' '.join(args)!r}: {error}") from None
    return parsed


# ------------------------------------------------------------------------------------- running
def run_experiment(experiment: Experiment, config: Any, out_dir: pathlib.Path, *, resume: bool = False,
                   preset: str = "quick") -> tuple[dict, float]:
    """Runs one experiment into `out_dir`; returns its metrics and wall time in seconds."""
    import jax

    if jax.process_index() != 0:  # on a pod, process 0 writes the report; the others keep theirs apart
        out_dir = out_dir / f"process_{jax.process_index()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = out_dir / "checkpoints"
    if not resume and checkpoints.exists() and any(checkpoints.iterdir()):
        print(f"[kexue] fresh run (no --resume): removing the previous checkpoints in {checkpoints}", flush=True)
        shutil.rmtree(checkpoints)
    ctx = RunContext(out_dir=out_dir, report=Report(experiment.name, out_dir), resume=resume, preset=preset)
    ctx.report.text(f"{experiment.description}\n\nPreset `{preset}`; command: "
                    f"`kexue run {experiment.name}" + (" --preset full" if preset == "full" else "") + "`.")
    start = time.perf_counter()
    try:
        metrics = experiment.run(config, ctx)
    finally:
        ctx.close()
    elapsed = time.perf_counter() - start
    ctx.report.write(metrics, config, wall_time_s=elapsed)
    return metrics, elapsed


def _init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    if coordinator is None:
        return
    import jax

    if jax.default_backend() == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def _scalars(metrics: Mapping[str, Any], prefix: str = ""):
    """(dotted key, number) pairs of a nested metrics mapping, depth first."""
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            yield from _scalars(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{prefix}{k}", v


def _headline(metrics: Mapping[str, Any]) -> str:
    scalars = list(itertools.islice(_scalars(metrics), 3))
    return ", ".join(f"{k}={v:.4g}" for k, v in scalars) or "done"


def cmd_list(experiments: Mapping[str, Experiment]) -> int:
    rows = [[name, ", ".join(exp.presets), "yes" if exp.reproduce else "no", exp.description]
            for name, exp in experiments.items()]
    print(markdown_table(["experiment", "presets", "in reproduce", "description"], rows))
    return 0


def cmd_run(experiments: Mapping[str, Experiment], args: argparse.Namespace, rest: list[str]) -> int:
    if args.name not in experiments:
        raise UsageError(f"unknown experiment {args.name!r}. Known: {', '.join(experiments)}")
    experiment = experiments[args.name]
    if args.preset not in experiment.presets:
        raise UsageError(f"experiment {args.name!r} has no preset {args.preset!r}; it has {list(experiment.presets)}")
    config = apply_overrides(experiment.presets[args.preset], rest)
    _init_distributed(args.coordinator, args.num_processes, args.process_id)
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.reports) / experiment.package / experiment.short_name
    metrics, elapsed = run_experiment(experiment, config, out, resume=args.resume, preset=args.preset)
    print(f"[kexue] {experiment.name}: {_headline(metrics)} ({elapsed:.1f} s) -> {out / 'report.md'}")
    if not args.out:
        write_index(args.reports, {name: exp.description for name, exp in experiments.items()})
    return 0


def cmd_reproduce(experiments: Mapping[str, Experiment], args: argparse.Namespace) -> int:
    preset = "quick" if args.quick else "full"
    chosen = [exp for exp in experiments.values() if exp.reproduce and (not args.only or exp.package in args.only)]
    if args.only and not chosen:
        raise UsageError(f"--only {args.only}: no experiments in those packages; packages: {', '.join(PACKAGES)}")
    timings = []
    for exp in chosen:
        if preset not in exp.presets:
            print(f"[kexue] {exp.name}: no {preset!r} preset, skipped")
            continue
        out = pathlib.Path(args.reports) / exp.package / exp.short_name
        print(f"[kexue] {exp.name} ({preset}) ...", flush=True)
        metrics, elapsed = run_experiment(exp, exp.presets[preset], out, preset=preset)
        print(f"[kexue] {exp.name}: {_headline(metrics)} -- {elapsed:.1f} s", flush=True)
        timings.append({"experiment": exp.name, "wall_time_s": round(elapsed, 1)})
    write_index(args.reports, {name: exp.description for name, exp in experiments.items()})
    reports = pathlib.Path(args.reports)
    (reports / f"timings_{preset}.json").write_text(json.dumps(timings, indent=2))
    total = sum(t["wall_time_s"] for t in timings)
    print(markdown_table(["experiment", "wall time (s)"],
                         [[t["experiment"], t["wall_time_s"]] for t in timings] + [["total", round(total, 1)]]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kexue", description="kexue-jax experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered experiments")
    run = sub.add_parser("run", help="run one experiment (overrides: --config.KEY VALUE)")
    run.add_argument("name")
    run.add_argument("--preset", default="quick", help="quick (default, embedded data) or full")
    run.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint")
    run.add_argument("--out", default=None, help="run directory (default reports/<package>/<experiment>)")
    run.add_argument("--reports", default="reports", help="reports root (default ./reports)")
    run.add_argument("--coordinator", default=None, help="multi-host: HOST:PORT of process 0")
    run.add_argument("--num-processes", type=int, default=None)
    run.add_argument("--process-id", type=int, default=None)
    rep = sub.add_parser("reproduce", help="run every package's headline experiments")
    rep.add_argument("--quick", action="store_true", help="quick presets on embedded data (CPU minutes)")
    rep.add_argument("--only", nargs="+", default=None, metavar="PKG", help="only these packages")
    rep.add_argument("--reports", default="reports")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kexue` console script (argv None: re-executes once with huge-page malloc and
    turns on the persistent compilation cache, `shared.compilation_cache`)."""
    if argv is None:  # the console command (tests call main(argv) and keep their own settings)
        host_malloc.maybe_reexec()
        compilation_cache.enable()
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command != "run" and rest:
            raise UsageError(f"unrecognised arguments: {' '.join(rest)}")
        experiments = registry()
        if args.command == "list":
            return cmd_list(experiments)
        if args.command == "run":
            return cmd_run(experiments, args, rest)
        return cmd_reproduce(experiments, args)
    except UsageError as error:
        print(f"kexue: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
