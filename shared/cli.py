"""The `kexue` command: list, run and reproduce the registered experiments.

    kexue list
    kexue run NAME [--preset quick|full] [--config.KEY VALUE ...] [--resume] [--out DIR]
                   [--coordinator HOST:PORT --num-processes N --process-id I]
    kexue reproduce [--quick] [--only PKG] [--reports DIR]

Config overrides are parsed by `shared.overrides` against the experiment's config dataclass; an unknown
key or a value of the wrong type is a usage error (exit code 2, no traceback) that names it and lists
the valid keys.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import itertools
import json
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from shared import compilation_cache, workarounds
from shared.experiment import Experiment, Preempted, RunContext
from shared.overrides import ConfigError, UsageError, apply_overrides, describe_fields, load_config_file
from shared.report import Report, markdown_table, to_jsonable, write_index

PACKAGES = ("shared", "nvae_jax", "longtail", "flooding", "weissi", "rnn_grad", "mwp", "spaces")
PACKAGE_ORDER = {name: i for i, name in enumerate(PACKAGES)}  # the order of `kexue list` and `reproduce`


ENTRY_POINT_GROUP = "kexue.experiments"


def registry() -> dict[str, Experiment]:
    """Every experiment by full name, from the `kexue.experiments` entry points of the installed packages
    (each points at a package's `experiments.EXPERIMENTS`; `shared` imports no topic package)."""
    from importlib.metadata import entry_points

    found: dict[str, Experiment] = {}
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: PACKAGE_ORDER.get(e.name, 99)):
        for experiment in entry.load().values():
            found[experiment.name] = experiment
    if not found:
        raise UsageError(f"no experiments are registered (entry point group {ENTRY_POINT_GROUP!r}); install the "
                         "suite with `pip install -e .` so its packages' entry points exist")
    return found


# ------------------------------------------------------------------------------------- running
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: what a shell reports for a job ended by SIGTERM
# seconds to reach the coordinator and register (jax waits 300 s by default); KEXUE_COORDINATOR_TIMEOUT overrides
COORDINATOR_TIMEOUT_S = int(os.environ.get("KEXUE_COORDINATOR_TIMEOUT", "60"))


def _config_differences(saved: Mapping[str, Any], config: Any) -> list[str]:
    """`key: saved -> now` for every top-level config key whose JSON value differs."""
    now = to_jsonable(config)
    keys = sorted(set(saved) | set(now))
    return [f"{k}: {saved.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}" for k in keys
            if saved.get(k, "(absent)") != now.get(k, "(absent)")]


def _has_checkpoints(out_dir: pathlib.Path) -> bool:
    checkpoints = out_dir / "checkpoints"
    return checkpoints.is_dir() and any(checkpoints.rglob("*"))


def prepare_run_dir(experiment: Experiment, config: Any, out_dir: pathlib.Path, *, resume: bool, overwrite: bool,
                    allow_config_change: bool = False) -> None:
    """Checks a run directory before anything runs; never deletes unless `overwrite` says so.

    - `resume` and `overwrite` together are a usage error;
    - checkpoints from an earlier run, without `resume` or `overwrite`: usage error naming the directory;
    - `overwrite`: the earlier checkpoints are removed (the user asked);
    - `resume` with a saved `config.json` that differs from `config`: usage error naming the keys,
      unless `allow_config_change`;
    - a directory that cannot be written: usage error naming it.
    Writes the resolved `config.json` (with the experiment's name) at the start, so the run directory
    describes itself even before the run ends.
    """
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: --resume continues the checkpoints in "
                         f"{out_dir}, --overwrite deletes them")
    config_path = out_dir / "config.json"
    if _has_checkpoints(out_dir) and not (resume or overwrite):
        raise UsageError(f"{out_dir / 'checkpoints'} holds checkpoints of an earlier run. Pass --resume to continue "
                         "it, or --overwrite to delete them and start afresh")
    if resume and config_path.is_file():
        try:
            saved = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"{config_path} cannot be read ({error}); move it away to resume") from None
        saved_name = saved.pop("_experiment", experiment.name)
        if saved_name != experiment.name:
            raise UsageError(f"{out_dir} is a run of {saved_name}, not of {experiment.name}")
        differences = _config_differences(saved, config)
        if differences and not allow_config_change:
            raise UsageError(f"the config differs from the one the checkpoints in {out_dir} were trained with ("
                             + "; ".join(differences) + "). Pass --allow-config-change to resume anyway")
    if jax_process_index() != 0:
        return  # process 0 prepares the shared directory
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to the run directory {out_dir}: {error.strerror or error}") from None
    if overwrite and (out_dir / "checkpoints").exists():
        print(f"[kexue] --overwrite: removing the earlier checkpoints in {out_dir / 'checkpoints'}", flush=True)
        shutil.rmtree(out_dir / "checkpoints")
    config_path.write_text(json.dumps({"_experiment": experiment.name, **to_jsonable(config)}, indent=2))


def _barrier(name: str) -> None:
    if "jax" in sys.modules:
        import jax

        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


def jax_process_index() -> int:
    """This process's index; 0 without importing jax when no multi-process run was set up."""
    if "jax" not in sys.modules:
        return 0
    import jax

    return jax.process_index()


def run_experiment(experiment: Experiment, config: Any, out_dir: pathlib.Path, *, resume: bool = False,
                   overwrite: bool = False, allow_config_change: bool = False,
                   preset: str = "quick") -> tuple[dict, float]:
    """Runs one experiment into `out_dir` (checked by `prepare_run_dir`); returns its metrics and wall
    time in seconds. Every process checkpoints into `out_dir/checkpoints`; process 0 alone writes the
    report, the plots and TensorBoard."""
    _agree_on_config(experiment, config)
    prepare_run_dir(experiment, config, out_dir, resume=resume, overwrite=overwrite,
                    allow_config_change=allow_config_change)
    _barrier("kexue-run-dir-ready")  # nobody writes a checkpoint before every process has checked the directory
    main_process = jax_process_index() == 0
    report_dir = out_dir if main_process else pathlib.Path(tempfile.mkdtemp(prefix="kexue-report-"))
    ctx = RunContext(out_dir=out_dir, report=Report(experiment.name, report_dir), resume=resume, preset=preset,
                     main_process=main_process)
    ctx.report.text(f"{experiment.description}\n\nPreset `{preset}`; command: "
                    f"`kexue run {experiment.name}" + (" --preset full" if preset == "full" else "") + "`.")
    start = time.perf_counter()
    try:
        metrics = experiment.run(config, ctx)
        elapsed = time.perf_counter() - start
        if main_process:
            ctx.report.write(metrics, config, wall_time_s=elapsed)
            ctx.log_run_summary(config, metrics)
    finally:
        ctx.close()
    return metrics, elapsed


def _init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """`jax.distributed.initialize` before anything touches a JAX backend: with the flags when given,
    else with no arguments when the environment describes a cluster (`cluster_from_environment`)."""
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise UsageError("multi-host runs need all three of --coordinator HOST:PORT, --num-processes N and "
                         "--process-id I")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise UsageError(f"--process-id {process_id} is outside [0, {num_processes})")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU backend only; others ignore it
    cluster = None if all(given) else cluster_from_environment()
    if cluster is not None:
        print(f"[kexue] multi-host: {cluster} environment detected; jax.distributed.initialize() with no arguments",
              flush=True)
        try:
            jax.distributed.initialize(initialization_timeout=COORDINATOR_TIMEOUT_S)
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UsageError(f"could not start the multi-host run that the {cluster} environment describes: "
                             f"{first_line}") from None
    if coordinator is not None and num_processes is not None and process_id is not None:
        if process_id != 0:  # jax aborts the process (no Python error) when the coordinator never answers
            _wait_for_coordinator(coordinator, process_id, num_processes)
        try:
            jax.distributed.initialize(coordinator, num_processes, process_id,
                                       initialization_timeout=COORDINATOR_TIMEOUT_S)
        except Exception as error:  # jax raises XlaRuntimeError / RuntimeError, with a long gRPC message
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UsageError(f"could not join the multi-host run at --coordinator {coordinator} as process "
                             f"{process_id} of {num_processes} within {COORDINATOR_TIMEOUT_S} s: {first_line}. "
                             "Is process 0 running, and is the address reachable from here?") from None


def cluster_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The multi-process cluster this process was started in, from its environment, else None.

    Recognised (as `jax.distributed.initialize()` detects them): a SLURM step of several tasks, an
    Open MPI job, a Cloud TPU pod slice (several worker hostnames), and `KEXUE_DISTRIBUTED=1` for any
    other environment that JAX detects by itself. A single-process job is not a cluster.
    """
    env = os.environ if environ is None else environ
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and int(env["SLURM_NTASKS"]) > 1:
        return "SLURM"
    if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "2")) > 1:
        return "Open MPI"
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return "Cloud TPU"
    if env.get("KEXUE_DISTRIBUTED", "").lower() in ("1", "true"):
        return "KEXUE_DISTRIBUTED"
    return None


def _wait_for_coordinator(coordinator: str, process_id: int, num_processes: int) -> None:
    """Polls the coordinator's TCP port for up to `COORDINATOR_TIMEOUT_S`; a usage error if it never opens."""
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--coordinator {coordinator!r} must be HOST:PORT")
    deadline = time.monotonic() + COORDINATOR_TIMEOUT_S
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise UsageError(f"could not join the multi-host run at --coordinator {coordinator} as process "
                                 f"{process_id} of {num_processes} within {COORDINATOR_TIMEOUT_S} s ({error}). "
                                 "Is process 0 running, and is the address reachable from here?") from None
            time.sleep(0.5)


def _agree_on_config(experiment: Experiment, config: Any) -> None:
    """On a multi-process run, refuses (on every process alike) unless all resolved the same config."""
    import jax

    if jax.process_count() == 1:
        return
    import numpy as np
    from jax.experimental import multihost_utils

    text = json.dumps({"experiment": experiment.name, "config": to_jsonable(config)}, sort_keys=True)
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int64)
    digests = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
    if len(set(digests.tolist())) != 1:
        differing = [i for i, d in enumerate(digests.tolist()) if d != digests[0]]
        raise UsageError(f"the processes of this run resolved different configs (processes {differing} differ "
                         "from process 0): start every process with the same experiment, preset and --config "
                         "overrides")


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


USE_COMMANDS = {"eval": "evaluate", "sample": "sample", "predict": "predict"}  # command -> Experiment hook


def use_commands(experiment: Experiment) -> list[str]:
    """The `kexue eval | sample | predict` commands `experiment` offers."""
    return [command for command, hook in USE_COMMANDS.items() if getattr(experiment, hook) is not None]


def cmd_list(experiments: Mapping[str, Experiment]) -> int:
    rows = [[name, ", ".join(exp.presets), "yes" if exp.reproduce else "no", ", ".join(use_commands(exp)) or "—",
             exp.description] for name, exp in experiments.items()]
    print(markdown_table(["experiment", "presets", "in reproduce", "use a run", "description"], rows))
    return 0


def run_help(experiment: Experiment, preset: str, config: Any) -> str:
    """`kexue run NAME --help`: the harness flags, then every config key with type, default and comment."""
    rows = [[f"--config.{key}", tp, default, comment] for key, tp, default, comment in describe_fields(config)]
    doc = inspect.cleandoc(type(config).__doc__ or "")
    return (build_parser().run_parser.format_help() + f"\n{experiment.name}: {experiment.description}\n\n"
            f"{type(config).__name__}: {doc}\n\nConfig keys (defaults of preset {preset!r}; presets: "
            f"{', '.join(experiment.presets)}; booleans take true/false or 1/0, tuples several values):\n\n"
            + markdown_table(["key", "type", "default", "meaning"], rows))


def cmd_run(experiments: Mapping[str, Experiment], args: argparse.Namespace, rest: list[str]) -> int:
    if args.name is None:
        if args.help:
            print(build_parser().run_parser.format_help())
            return 0
        raise UsageError("kexue run needs an experiment NAME (see `kexue list`)")
    if args.name not in experiments:
        raise UsageError(f"unknown experiment {args.name!r}. Known: {', '.join(experiments)}")
    experiment = experiments[args.name]
    if args.preset not in experiment.presets:
        raise UsageError(f"experiment {args.name!r} has no preset {args.preset!r}; it has {list(experiment.presets)}")
    config = experiment.presets[args.preset]
    if args.help:
        print(run_help(experiment, args.preset, config))
        return 0
    if args.config_file:
        config = load_config_file(args.config_file, config, experiment.name)
    config = apply_overrides(config, rest)
    _init_distributed(args.coordinator, args.num_processes, args.process_id)
    out = (pathlib.Path(args.out) if args.out
           else pathlib.Path(args.reports) / experiment.package / experiment.short_name)
    metrics, elapsed = run_experiment(experiment, config, out, resume=args.resume, overwrite=args.overwrite,
                                      allow_config_change=args.allow_config_change, preset=args.preset)
    print(f"[kexue] {experiment.name}: {_headline(metrics)} ({elapsed:.1f} s) -> {out / 'report.md'}")
    if not args.out and jax_process_index() == 0:
        write_index(args.reports, {name: exp.description for name, exp in experiments.items()})
    return 0


def cmd_reproduce(experiments: Mapping[str, Experiment], args: argparse.Namespace) -> int:
    preset = "quick" if args.quick else "full"
    chosen = [exp for exp in experiments.values() if exp.reproduce and (not args.only or exp.package in args.only)]
    if args.only and not chosen:
        raise UsageError(f"--only {args.only}: no experiments in those packages; packages: {', '.join(PACKAGES)}")
    for exp in chosen:
        if preset not in exp.presets:
            print(f"[kexue] {exp.name}: no {preset!r} preset, skipped")
    chosen = [exp for exp in chosen if preset in exp.presets]
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: --resume continues the checkpoints "
                         "under --reports, --overwrite deletes them")
    for exp in chosen:  # refuse before running anything, not after an hour of the first experiments
        out = pathlib.Path(args.reports) / exp.package / exp.short_name
        if _has_checkpoints(out) and not (args.resume or args.overwrite):
            raise UsageError(f"{out / 'checkpoints'} holds checkpoints of an earlier run. Pass --resume to continue "
                             "the reproduction, or --overwrite to delete them and start afresh")
    timings: list[dict[str, Any]] = []
    for exp in chosen:
        out = pathlib.Path(args.reports) / exp.package / exp.short_name
        print(f"[kexue] {exp.name} ({preset}) ...", flush=True)
        metrics, elapsed = run_experiment(exp, exp.presets[preset], out, resume=args.resume, overwrite=args.overwrite,
                                          preset=preset)
        print(f"[kexue] {exp.name}: {_headline(metrics)} -- {elapsed:.1f} s", flush=True)
        timings.append({"experiment": exp.name, "wall_time_s": round(elapsed, 1)})
    write_index(args.reports, {name: exp.description for name, exp in experiments.items()})
    reports = pathlib.Path(args.reports)
    (reports / f"timings_{preset}.json").write_text(json.dumps(timings, indent=2))
    total = sum(t["wall_time_s"] for t in timings)
    print(markdown_table(["experiment", "wall time (s)"],
                         [[t["experiment"], t["wall_time_s"]] for t in timings] + [["total", round(total, 1)]]))
    return 0


def cmd_use(experiments: Mapping[str, Experiment], args: argparse.Namespace, rest: list[str]) -> int:
    """`kexue eval | sample | predict NAME --run DIR ...`: the experiment's hook on the opened run directory."""
    from shared.use import open_run

    if args.name not in experiments:
        raise UsageError(f"unknown experiment {args.name!r}. Known: {', '.join(experiments)}")
    experiment = experiments[args.name]
    hook = getattr(experiment, USE_COMMANDS[args.command])
    if hook is None:
        offered = [n for n, e in experiments.items() if args.command in use_commands(e)]
        raise UsageError(f"{args.name} offers no `kexue {args.command}`; experiments that do: {', '.join(offered)}")
    if args.model is not None and experiment.models and args.model not in experiment.models:
        raise UsageError(f"--model {args.model!r}: {args.name} trains {', '.join(experiment.models) or 'one model'}")
    options = {k: v for k, v in vars(args).items()
               if k not in ("command", "name", "run", "step", "model", "preset")}
    if args.command == "sample":
        if args.temperature <= 0:
            raise UsageError(f"--temperature must be > 0, got {args.temperature}")
        if args.num < 1:
            raise UsageError(f"--num must be >= 1, got {args.num}")
        if args.interpolate is not None and len(args.interpolate) % 2:
            raise UsageError(f"--interpolate takes test-image indices in pairs, got {len(args.interpolate)}")
        if args.steps < 2:
            raise UsageError(f"--steps must be >= 2 (the two ends), got {args.steps}")
    overrides = _split_predict_args(rest, options) if args.command == "predict" else rest
    run = open_run(args.run, experiment.name, next(iter(experiment.presets.values())), overrides, step=args.step,
                   model=args.model or (experiment.models[0] if experiment.models else None), options=options)
    _init_distributed(None, None, None)
    result = hook(run)
    if args.command == "predict":
        for line in result.get("predictions", []):
            print(json.dumps(line, ensure_ascii=False))
    else:
        print(f"[kexue] {experiment.name} {args.command}: {_headline(result)} -> {run.path}")
    return 0


def _split_predict_args(rest: list[str], options: dict) -> list[str]:
    """`kexue predict` takes free-text inputs (questions) and `--config.KEY=VALUE` overrides (with `=`, so
    that a question is never read as a value)."""
    overrides, texts = [], []
    for arg in rest:
        if arg.startswith("--config."):
            if "=" not in arg:
                raise UsageError(f"kexue predict takes config overrides as --config.KEY=VALUE, got {arg!r}")
            overrides.append(arg)
        elif arg.startswith("--"):
            raise UsageError(f"unknown option {arg!r} for kexue predict")
        else:
            texts.append(arg)
    options["texts"] = texts
    return overrides


class KexueParser(argparse.ArgumentParser):
    """The `kexue` parser; `run_parser` is its `run` subcommand's (for `kexue run NAME --help`)."""

    run_parser: argparse.ArgumentParser


def build_parser() -> KexueParser:
    parser = KexueParser(prog="kexue", description="kexue-jax experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered experiments")
    run = sub.add_parser("run", help="run one experiment (overrides: --config.KEY VALUE)", add_help=False,
                         usage="kexue run NAME [--preset P] [--config-file FILE] [--config.KEY VALUE ...] [options]")
    parser.run_parser = run
    run.add_argument("name", nargs="?")
    run.add_argument("-h", "--help", action="store_true", help="show the flags and every config key of NAME")
    run.add_argument("--config-file", default=None, metavar="FILE",
                     help="start from a saved config.json (e.g. reports/<package>/<experiment>/config.json); "
                          "--config.KEY overrides still apply on top")
    run.add_argument("--preset", default="quick", help="quick (default, embedded data) or full")
    run.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint")
    run.add_argument("--overwrite", action="store_true",
                     help="delete the checkpoints of an earlier run in the run directory and start afresh")
    run.add_argument("--allow-config-change", action="store_true",
                     help="with --resume: continue although the config differs from the saved one")
    run.add_argument("--out", default=None, help="run directory (default reports/<package>/<experiment>)")
    run.add_argument("--reports", default="reports", help="reports root (default ./reports)")
    run.add_argument("--coordinator", default=None, help="multi-host: HOST:PORT of process 0")
    run.add_argument("--num-processes", type=int, default=None)
    run.add_argument("--process-id", type=int, default=None)
    for command, what in (("eval", "re-run an experiment's evaluation on a run's checkpoint "
                                   "(writes eval.json, eval.md)"),
                          ("sample", "draw samples from a run's generative model (NVAE)"),
                          ("predict", "apply a run's model to new inputs (mwp: questions or --input FILE.jsonl; "
                                      "spaces: --input DOC.json)")):
        use = sub.add_parser(command, help=what, description=f"{what}. `kexue list` shows, in its column "
                             "'use a run', which experiments offer it.")
        use.add_argument("name", help="the experiment, e.g. nvae_jax.digits")
        use.add_argument("--run", required=True, metavar="DIR", help="the run directory that `kexue run` wrote")
        use.add_argument("--step", type=int, default=None, help="this checkpoint (default: best, else newest)")
        use.add_argument("--model", default=None, help="which of the run's models (default: the headline one)")
        if command == "sample":
            use.add_argument("--temperature", type=float, default=1.0)
            use.add_argument("--num", type=int, default=64, help="number of samples")
            use.add_argument("--readjust-bn", action="store_true",
                             help="re-estimate the batch-norm statistics at this temperature first (as the official "
                                  "evaluate.py --readjust_bn)")
            use.add_argument("--bn-iterations", type=int, default=500,
                             help="sampling passes of --readjust-bn (the official code's 500)")
            use.add_argument("--seed", type=int, default=0)
            use.add_argument("--reconstruct", action="store_true",
                             help="also a grid of test images and reconstructions")
            use.add_argument("--interpolate", nargs="*", type=int, default=None, metavar="I",
                             help="also interpolate between the top-group posterior means of test images I J (in "
                                  "pairs; none given: 0 1 2 3 4 5 6 7), the lower groups sampled at the temperature")
            use.add_argument("--steps", type=int, default=8, help="images per interpolation row, both ends included")
        if command == "predict":
            use.add_argument("--input", default=None, metavar="FILE",
                             help="a JSON-lines file of inputs (spaces: one CAIL2020 document or JSON lines of them)")
            use.add_argument("--fold", type=int, default=0, help="spaces: which fold's extractor (default 0)")
    rep = sub.add_parser("reproduce", help="run every package's headline experiments")
    rep.add_argument("--quick", action="store_true", help="quick presets on embedded data (CPU minutes)")
    rep.add_argument("--only", nargs="+", default=None, metavar="PKG", help="only these packages")
    rep.add_argument("--resume", action="store_true", help="continue each experiment from its newest checkpoint")
    rep.add_argument("--overwrite", action="store_true",
                     help="delete the checkpoints of earlier runs under --reports and start afresh")
    rep.add_argument("--reports", default="reports")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kexue` console script (argv None: re-executes once with huge-page malloc and
    turns on the persistent compilation cache, `shared.compilation_cache`)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if argv is None and args.command != "list":  # the console command (tests call main(argv) with their settings)
        workarounds.maybe_reexec()
        compilation_cache.enable()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        if args.command not in ("run", "eval", "sample", "predict") and rest:
            raise UsageError(f"unrecognised arguments: {' '.join(rest)}")
        experiments = registry()
        if args.command == "list":
            return cmd_list(experiments)
        if args.command == "run":
            return cmd_run(experiments, args, rest)
        if args.command in ("eval", "sample", "predict"):
            return cmd_use(experiments, args, rest)
        return cmd_reproduce(experiments, args)
    except (UsageError, ConfigError) as error:
        print(f"kexue: error: {error}", file=sys.stderr)
        return 2
    except Preempted as preempted:
        print(f"[kexue] {preempted}. Continue with the same command and --resume.", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
