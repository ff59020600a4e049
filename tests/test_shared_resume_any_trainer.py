"""Exact resume after SIGKILL at a random moment, through `kexue run`, for one experiment of each trainer kind
(NVAE, a classification run, the mwp solver, the spaces generator). Slow: each trains twice; the digits MLP
case of the default suite is in tests/test_shared_cli.py."""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _is_timing(key: str) -> bool:
    """Wall-clock entries differ between runs by nature: durations (`wall_s`, `train_time_s`, `train_seconds`,
    `timings`), speeds (`steps_per_s`, `examples_per_s`) and the share of time spent waiting for data."""
    return key.endswith("_s") or any(w in key for w in ("wall", "time", "seconds")) or key == "data_wait"


RUNS = {
    "nvae_jax.digits": ["--config.train_steps", "30", "--config.batch_size", "16", "--config.num_iw_samples", "2",
                        "--config.num_eval", "16"],
    "longtail.cifar_lt": ["--config.methods", "erm", "--config.max_steps", "24", "--config.checkpoint_every", "5",
                          "--config.log_every", "4"],
    "mwp.synthetic_solver": ["--config.num_steps", "60", "--config.log_every", "10", "--config.checkpoint_every", "7",
                             "--config.train_size", "200", "--config.valid_size", "16", "--config.test_size", "16",
                             "--config.beams", "1"],
    "spaces.synthetic_pipeline": ["--config.generator_steps", "40", "--config.checkpoint_every", "7",
                                  "--config.extractor_steps", "4", "--config.n_train", "24", "--config.n_test", "8",
                                  "--config.variants", "sparse-copy"],
}


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not _is_timing(k)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(RUNS))
def test_sigkill_at_a_random_moment_then_resume_matches(tmp_path, experiment):
    """Fails if any trainer's resume does not restore the state, the data position, the step keys or the
    logged history exactly (metrics.json, timings aside, would differ from the uninterrupted run's)."""
    args = RUNS[experiment]
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    done = subprocess.run([sys.executable, "-m", "shared.cli", "run", experiment, "--out", str(reference), *args],
                          env=_env(), cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "run", experiment, "--out", str(interrupted), *args],
                            env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:  # wait for the first checkpoint, then a random moment
        if any((interrupted / "checkpoints").rglob("*/state")):
            time.sleep(random.uniform(0.0, 3.0))
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([sys.executable, "-m", "shared.cli", "run", experiment, "--out", str(interrupted),
                              "--resume", *args], env=_env(), cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = _without_timings(json.loads((reference / "metrics.json").read_text()))
    got = _without_timings(json.loads((interrupted / "metrics.json").read_text()))
    assert got == expected
