"""The `kexue` command and checkpointing: usage errors, kill and resume, corrupt checkpoints."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import cli, train
from shared.checkpoint import Checkpointer, abstract_like
from shared.digits_mlp import Config

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = ["--config.num_steps", "240", "--config.checkpoint_every", "40", "--config.log_every", "20",
         "--config.hidden", "64", "64"]


def kexue(*args, check=False, **kwargs):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, check=check, **kwargs)


@pytest.mark.parametrize("args, needle", [
    (["--config.no_such_key", "3"], "'no_such_key'"),
    (["--config.num_steps", "many"], "'many'"),
    (["--config.learning_rate", "-1"], "learning_rate"),
])
def test_bad_override_is_a_short_usage_error(args, needle):
    result = kexue("run", "shared.digits_mlp", *args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    if "no_such_key" in needle or "many" in needle:
        assert "Valid keys: batch_size, checkpoint_every" in result.stderr


def test_apply_overrides_parses_types():
    config = cli.apply_overrides(Config(), ["--config.num_steps", "7", "--config.hidden", "3", "4",
                                            "--config.learning_rate=0.5"])
    assert (config.num_steps, config.hidden, config.learning_rate) == (7, (3, 4), 0.5)


def test_unknown_experiment_lists_known_ones():
    result = kexue("run", "nope.nothing")
    assert result.returncode == 2 and "shared.digits_mlp" in result.stderr


def test_list_shows_every_registered_experiment():
    result = kexue("list", check=True)
    for name in cli.registry():
        assert name in result.stdout


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    result = kexue("run", "shared.digits_mlp", "--out", str(tmp_path), "--resume", *SMALL[:2],
                   "--config.num_steps", "40")
    assert result.returncode == 0, result.stderr
    assert "no checkpoint" in result.stdout and "starting fresh" in result.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 40


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    assert kexue("run", "shared.digits_mlp", "--out", str(reference), *SMALL).returncode == 0
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "run", "shared.digits_mlp", "--out",
                             str(interrupted), *SMALL], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = interrupted / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.exists() and any(p.name.isdigit() and int(p.name) >= 80 for p in checkpoints.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (interrupted / "metrics.json").exists()
    resumed = kexue("run", "shared.digits_mlp", "--out", str(interrupted), "--resume", *SMALL)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step" in resumed.stdout
    expected = json.loads((reference / "metrics.json").read_text())
    got = json.loads((interrupted / "metrics.json").read_text())
    assert got == expected


def _tiny_state(value):
    return train.TrainState(step=jnp.asarray(value, jnp.int32), params={"w": jnp.full((64, 32), float(value))},
                            opt_state=(), model_state={}, rng=jnp.zeros((2,), jnp.uint32),
                            skipped=jnp.zeros((), jnp.int32))


def test_corrupt_latest_checkpoint_falls_back_to_older(tmp_path, capsys):
    ckpt = Checkpointer(tmp_path / "ckpt", keep=5, async_save=False)
    for step in (1, 2, 3):
        ckpt.save(step, _tiny_state(step), data_state={"next_index": step})
    ckpt.wait()
    newest = tmp_path / "ckpt" / "3"
    for path in sorted(p for p in newest.rglob("*") if p.is_file()):
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated by a crash
    state = _tiny_state(0)
    restored = ckpt.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state))
    assert restored is not None and restored.step == 2
    assert restored.data_state == {"next_index": 2}
    np.testing.assert_array_equal(np.asarray(restored.state.params["w"]), 2.0)
    assert str(newest) in capsys.readouterr().out
    ckpt.close()


def test_unfinished_checkpoint_is_invisible(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep=5, async_save=False)
    ckpt.save(1, _tiny_state(1))
    ckpt.wait()
    # what an interrupted save leaves behind: a temporary directory, never a step directory
    (tmp_path / "ckpt" / "2.orbax-checkpoint-tmp-1234").mkdir()
    restored = ckpt.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _tiny_state(0)))
    assert restored.step == 1 and ckpt.all_steps() == [1]
    ckpt.close()


def test_async_save_is_complete_once_listed(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    for step in range(1, 5):
        ckpt.save(step, _tiny_state(step))
    ckpt.wait()
    assert ckpt.all_steps() == [3, 4]  # keeps N
    restored = ckpt.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _tiny_state(0)))
    assert restored.step == 4 and float(restored.state.params["w"][0, 0]) == 4.0
    ckpt.close()


def test_restore_onto_a_different_mesh(tmp_path, devices):
    mesh8, mesh2 = train.make_mesh(fsdp=4, devices=devices), train.make_mesh(devices=devices[:2])
    state = _tiny_state(5).replace(params={"w": jnp.full((256, 128), 5.0)})
    state8 = jax.device_put(state, train.state_sharding(state, mesh8, fsdp=True))
    assert state8.params["w"].sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
    ckpt = Checkpointer(tmp_path / "ckpt", async_save=False)
    ckpt.save(5, state8)
    ckpt.wait()
    shardings2 = train.state_sharding(state, mesh2)
    restored = ckpt.restore(abstract_like(state, shardings2))
    assert restored.state.params["w"].sharding == shardings2.params["w"]
    np.testing.assert_array_equal(np.asarray(restored.state.params["w"]), 5.0)
    ckpt.close()
