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
from shared.configs import DigitsMLPConfig
from shared.overrides import apply_overrides

# one xdist worker runs this module, so its costly module-scoped fixtures are built once (`--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_shared_cli")

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
    config = apply_overrides(DigitsMLPConfig(), ["--config.num_steps", "7", "--config.hidden", "3", "4",
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


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run of the SMALL digits config: its directory."""
    reference = tmp_path_factory.mktemp("reference")
    result = kexue("run", "shared.digits_mlp", "--out", str(reference), *SMALL)
    assert result.returncode == 0, result.stderr
    return reference


def _start_and_wait(out, min_step):
    """Starts the SMALL run into `out` and returns the process once a checkpoint of step >= min_step exists."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "run", "shared.digits_mlp", "--out", str(out),
                             *SMALL], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = out / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.exists() and any(p.name.isdigit() and int(p.name) >= min_step for p in checkpoints.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    return proc


def _resume_and_compare(out, reference):
    resumed = kexue("run", "shared.digits_mlp", "--out", str(out), "--resume", *SMALL)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step" in resumed.stdout
    expected = json.loads((reference / "metrics.json").read_text())
    got = json.loads((out / "metrics.json").read_text())
    assert got == expected


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, reference_run):
    interrupted = tmp_path / "interrupted"
    proc = _start_and_wait(interrupted, 80)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (interrupted / "metrics.json").exists()
    _resume_and_compare(interrupted, reference_run)


def test_sigterm_saves_the_current_step_and_resume_matches(tmp_path, reference_run):
    """Fails if SIGTERM kills the run without a checkpoint of the step it reached, with a traceback or
    with exit code 0, or if resuming does not end with the uninterrupted run's numbers."""
    interrupted = tmp_path / "interrupted"
    proc = _start_and_wait(interrupted, 40)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "preempted (SIGTERM) at step" in err and "--resume" in err and "Traceback" not in err
    stopped_at = int(err.split("preempted (SIGTERM) at step ")[1].split(";")[0])
    assert stopped_at in {int(p.name) for p in (interrupted / "checkpoints").iterdir() if p.name.isdigit()}
    _resume_and_compare(interrupted, reference_run)


def test_fresh_run_refuses_existing_checkpoints_and_overwrite_starts_afresh(tmp_path, reference_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    refused = kexue("run", "shared.digits_mlp", "--out", str(run), *SMALL)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert str(run / "checkpoints") in refused.stderr and "--resume" in refused.stderr
    assert "--overwrite" in refused.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing lost
    both = kexue("run", "shared.digits_mlp", "--out", str(run), "--resume", "--overwrite", *SMALL)
    assert both.returncode == 2 and "contradict" in both.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    fresh = kexue("run", "shared.digits_mlp", "--out", str(run), "--overwrite", *SMALL[:2],
                  "--config.num_steps", "20", "--config.checkpoint_every", "10")
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads((run / "metrics.json").read_text())["steps"] == 20
    assert max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == 20


def test_resume_with_another_config_names_the_keys(tmp_path, reference_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    changed = kexue("run", "shared.digits_mlp", "--out", str(run), "--resume", *SMALL, "--config.learning_rate", "0.01")
    assert changed.returncode == 2 and "learning_rate: 0.003 -> 0.01" in changed.stderr
    assert "--allow-config-change" in changed.stderr and "Traceback" not in changed.stderr
    allowed = kexue("run", "shared.digits_mlp", "--out", str(run), "--resume", "--allow-config-change", *SMALL,
                    "--config.learning_rate", "0.01")
    assert allowed.returncode == 0, allowed.stderr


def test_unwritable_run_directory_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = kexue("run", "shared.digits_mlp", "--out", str(blocker / "run"), *SMALL)
    assert result.returncode == 2 and "cannot write to the run directory" in result.stderr
    assert str(blocker / "run") in result.stderr and "Traceback" not in result.stderr


def test_reproduce_refuses_before_running_anything(tmp_path):
    (tmp_path / "shared" / "digits_mlp" / "checkpoints" / "5").mkdir(parents=True)
    result = kexue("reproduce", "--quick", "--only", "shared", "--reports", str(tmp_path))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert not (tmp_path / "shared" / "digits_mlp" / "metrics.json").exists()
    both = kexue("reproduce", "--quick", "--resume", "--overwrite", "--reports", str(tmp_path))
    assert both.returncode == 2 and "contradict" in both.stderr


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


def _tensorboard_tags(run_dir):
    """Every summary tag in the run's TensorBoard event files (read with tensorboardX's protobufs)."""
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for path in run_dir.glob("tensorboard/**/events.out.tfevents.*"):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + length])
            tags.update(v.tag for v in event.summary.value)
            i += 12 + length + 4
    return tags


def test_tensorboard_has_speed_learning_rate_hparams_and_images(reference_run):
    tags = _tensorboard_tags(reference_run)
    for name in ("loss", "learning_rate", "steps_per_s", "examples_per_s", "data_wait", "eval_accuracy"):
        assert f"digits_mlp/{name}" in tags
    assert "_hparams_/experiment" in tags and "hparam/test_accuracy" in tags
    assert "images/loss" in tags  # the report's figure
