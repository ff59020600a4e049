"""Multi-host through the command a user runs: `kexue run … --coordinator … --num-processes 2 --process-id i`
(2 processes × 4 CPU devices over gloo) against 1 process × 8 devices."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import chex
import jax
import pytest

from shared import train
from shared.checkpoint import Checkpointer, abstract_like
from shared.configs import DigitsMLPConfig
from shared.digits_mlp import build

REPO = pathlib.Path(__file__).resolve().parents[1]
DIGITS = ["--config.num_steps", "30", "--config.log_every", "10", "--config.checkpoint_every", "0",
          "--config.hidden", "64", "--config.batch_size", "64"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kexue(args, devices, extra_env=None, **popen):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               **(extra_env or {}))
    return subprocess.Popen([sys.executable, "-m", "shared.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, **popen)


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _final_params(run_dir: pathlib.Path, config: DigitsMLPConfig, mesh=None):
    trainer = build(config, mesh)
    ckpt = Checkpointer(run_dir / "checkpoints", async_save=False)
    restored = ckpt.restore(abstract_like(trainer.state, trainer.sharding))
    ckpt.close()
    return restored.step, jax.device_get(restored.state.params)


def _two_by_four(experiment, out, extra=(), process_extra=((), ())):
    addr = f"127.0.0.1:{_free_port()}"
    procs = [_kexue(["run", experiment, "--out", str(out), "--coordinator", addr, "--num-processes", "2",
                     "--process-id", str(i), *extra, *process_extra[i]], 4) for i in range(2)]
    return [_finish(p) for p in procs]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The digits run on 1 process x 8 devices: its directory."""
    out = tmp_path_factory.mktemp("single")
    code, _, err = _finish(_kexue(["run", "shared.digits_mlp", "--out", str(out), *DIGITS], 8))
    assert code == 0, err[-3000:]
    return out


def _assert_same_history(multi, single):
    history_multi = json.loads((multi / "metrics.json").read_text())["history"]
    history_single = json.loads((single / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history_multi] == [h["step"] for h in history_single] == [10, 20, 30]
    for a, b in zip(history_multi, history_single):
        for key in ("loss", "accuracy", "grad_norm", "param_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key


def test_two_processes_by_four_devices_equal_one_by_eight(tmp_path, devices, single):
    """Fails if a process feeds another share than its own (or all of every batch), if the processes
    checkpoint into different directories, or if a process other than 0 writes the report."""
    multi = tmp_path / "multi"
    results = _two_by_four("shared.digits_mlp", multi, DIGITS)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    assert not any(p.name.startswith("process_") for p in multi.iterdir())  # one directory for everybody
    _assert_same_history(multi, single)
    config = DigitsMLPConfig(hidden=(64,), batch_size=64, num_steps=30)
    step_multi, params_multi = _final_params(multi, config)
    step_single, params_single = _final_params(single, config)
    assert step_multi == step_single == 30
    chex.assert_trees_all_close(params_multi, params_single, rtol=1e-4, atol=1e-6)
    # the checkpoint written across 2 processes x 4 devices restores onto 4 devices and onto 1 (re-sharded)
    for mesh_devices in (devices[:4], devices[:1]):
        _, params = _final_params(multi, config, mesh=train.make_mesh(devices=mesh_devices))
        chex.assert_trees_all_close(params, params_multi, rtol=0, atol=0)


@pytest.mark.slow
def test_a_faked_slurm_step_initialises_without_flags(tmp_path, single):
    """Two local processes that see only SLURM's variables (as `srun -n 2` sets them) join one run."""
    for port in range(65535, 61439, -1):  # JAX puts SLURM's coordinator on port 61440 + job id % 4096
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                break
    out, job = tmp_path / "slurm", 4096 * 7 + port - 61440
    procs = []
    for i in range(2):
        env = {"SLURM_JOB_ID": str(job), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
               "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i), "SLURM_STEP_NUM_NODES": "1"}
        procs.append(_kexue(["run", "shared.digits_mlp", "--out", str(out), *DIGITS], 4, extra_env=env))
    for code, out_text, err in (_finish(p) for p in procs):
        assert code == 0, err[-3000:]
        assert "SLURM environment detected" in out_text
    _assert_same_history(out, single)


def test_cluster_detection_needs_several_processes():
    from shared.cli import cluster_from_environment

    slurm = {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    assert cluster_from_environment({**slurm, "SLURM_NTASKS": "2"}) == "SLURM"
    assert cluster_from_environment({**slurm, "SLURM_NTASKS": "1"}) is None
    assert cluster_from_environment({"TPU_WORKER_HOSTNAMES": "t0,t1"}) == "Cloud TPU"
    assert cluster_from_environment({"TPU_WORKER_HOSTNAMES": "t0"}) is None
    assert cluster_from_environment({}) is None


def test_processes_with_different_configs_are_refused(tmp_path):
    results = _two_by_four("shared.digits_mlp", tmp_path / "run", DIGITS,
                           process_extra=(("--config.learning_rate", "0.001"), ()))
    for code, _, err in results:
        assert code == 2, err[-2000:]
        assert "resolved different configs" in err and "Traceback" not in err


@pytest.mark.parametrize("timeout", [pytest.param(None, marks=pytest.mark.slow), 5])
def test_unreachable_coordinator_fails_with_one_line_in_time(tmp_path, timeout):
    """The default (slow: the real minute) and a shortened KEXUE_COORDINATOR_TIMEOUT."""
    env = {} if timeout is None else {"KEXUE_COORDINATOR_TIMEOUT": str(timeout)}
    start = time.monotonic()
    code, _, err = _finish(_kexue(["run", "shared.digits_mlp", "--out", str(tmp_path), "--coordinator",
                                   f"127.0.0.1:{_free_port()}", "--num-processes", "2", "--process-id", "1",
                                   *DIGITS], 4, extra_env=env), timeout=150)
    assert code == 2 and "could not join the multi-host run" in err and "Traceback" not in err
    assert time.monotonic() - start < (timeout or 60) + 30


@pytest.mark.parametrize("args, needle", [
    (["--coordinator", "127.0.0.1:1"], "all three"),
    (["--num-processes", "2", "--process-id", "0"], "all three"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "outside [0, 2)"),
])
def test_bad_multihost_flags_are_one_line(tmp_path, args, needle):
    code, _, err = _finish(_kexue(["run", "shared.digits_mlp", "--out", str(tmp_path), *args], 1), timeout=120)
    assert code == 2 and needle in err and "Traceback" not in err


def test_a_batch_that_does_not_split_is_one_line(tmp_path):
    code, _, err = _finish(_kexue(["run", "shared.digits_mlp", "--out", str(tmp_path), "--config.batch_size", "12"],
                                  8), timeout=120)
    assert code == 2 and "config.batch_size=12 is the global batch" in err and "Traceback" not in err


def _raw_checkpoints(run_dir):
    """{checkpoint directory: the newest step's saved state as NumPy arrays} of a run (no model needed)."""
    import orbax.checkpoint as ocp

    found, one_device = {}, jax.sharding.SingleDeviceSharding(jax.devices()[0])
    for steps_dir in {p.parent.parent for p in run_dir.glob("checkpoints/**/[0-9]*/state")}:
        step = max(int(p.name) for p in steps_dir.iterdir() if p.name.isdigit())
        path, checkpointer = steps_dir / str(step) / "state", ocp.StandardCheckpointer()
        metadata = checkpointer.metadata(path).item_metadata  # shapes and dtypes, restored onto one device
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), metadata)
        found[str(steps_dir.relative_to(run_dir))] = jax.device_get(checkpointer.restore(path, target))
    return found


# every other trainer, at sizes that train in about a minute; each config's batch divides by 8
TRAINERS = {
    "nvae_jax.digits": ["--config.train_steps", "6", "--config.batch_size", "16", "--config.num_iw_samples", "2",
                        "--config.num_eval", "16"],
    "mwp.synthetic_solver": ["--config.num_steps", "20", "--config.log_every", "10", "--config.train_size", "200",
                             "--config.valid_size", "16", "--config.test_size", "16", "--config.beams", "1"],
    "spaces.synthetic_pipeline": ["--config.generator_steps", "6", "--config.extractor_steps", "4", "--config.n_train",
                                  "24", "--config.n_test", "8", "--config.variants", "sparse-copy"],
    "longtail.cifar_lt": ["--config.methods", "erm", "--config.mock_data", "false", "--config.data_dir", "{cifar}",
                          "--config.rho", "2"],
    "flooding.cifar10": ["--config.flood_levels", "0.05", "--config.data_dir", "{cifar}"],  # shared.classification
}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(TRAINERS))
def test_every_trainer_two_by_four_equals_one_by_eight(tmp_path, experiment):
    """Each trainer through the command: the same history (1e-4) and final parameters (1e-4) on 2 processes x
    4 devices as on 1 process x 8."""
    from tests.test_shared_cifar_files import write_release

    write_release(tmp_path / "cifar", per_file=8)  # a small CIFAR-10 python release in the real format
    args = [a.replace("{cifar}", str(tmp_path / "cifar")) for a in TRAINERS[experiment]]
    multi, single = tmp_path / "multi", tmp_path / "single"
    for code, _, err in _two_by_four(experiment, multi, args):
        assert code == 0, err[-3000:]
    code, _, err = _finish(_kexue(["run", experiment, "--out", str(single), *args], 8))
    assert code == 0, err[-3000:]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (multi, single))
    histories = [(k, a[k], b[k]) for k in a if k.endswith("history") or k == "history"]
    for key, ha, hb in histories:
        for ra, rb in zip(ha, hb, strict=True):
            for name, value in ra.items():
                if isinstance(value, float):
                    # Adam's update divides by sqrt(v) + eps, which magnifies the all-reduce's summation order
                    # in coordinates whose gradient is tiny: its norm gets 1e-3, everything else 1e-4
                    rel = 1e-3 if name == "update_norm" else 1e-4
                    assert value == pytest.approx(rb[name], rel=rel, abs=1e-6), (key, name)
    ckpt_a, ckpt_b = _raw_checkpoints(multi), _raw_checkpoints(single)
    assert ckpt_a.keys() == ckpt_b.keys() and ckpt_a
    for name in ckpt_a:
        chex.assert_trees_all_close(ckpt_a[name]["params"], ckpt_b[name]["params"], rtol=1e-4, atol=1e-6)
