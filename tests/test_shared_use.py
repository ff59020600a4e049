"""`kexue eval | sample | predict` on run directories that `kexue run` wrote (reduced configs)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

# one xdist worker runs this module, so its costly module-scoped fixtures are built once (`--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_shared_use")

REPO = pathlib.Path(__file__).resolve().parents[1]
MWP = ["--config.num_steps", "20", "--config.log_every", "10", "--config.train_size", "120", "--config.valid_size",
       "8", "--config.test_size", "8", "--config.beams", "1", "2", "--config.hidden", "32", "--config.layers", "1"]
NVAE = ["--config.train_steps", "2", "--config.batch_size", "8", "--config.num_eval", "8",
        "--config.num_iw_samples", "2"]


def kexue(*args, timeout=900):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)


def _trained(tmp_path_factory, experiment, args):
    out = tmp_path_factory.mktemp(experiment.replace(".", "_"))
    result = kexue("run", experiment, "--out", str(out), "--overwrite", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return _trained(tmp_path_factory, "shared.digits_mlp", ["--config.num_steps", "100", "--config.log_every", "25"])


@pytest.fixture(scope="module")
def mwp_run(tmp_path_factory):
    return _trained(tmp_path_factory, "mwp.synthetic_solver", MWP)


@pytest.fixture(scope="module")
def nvae_run(tmp_path_factory):
    return _trained(tmp_path_factory, "nvae_jax.digits", NVAE)


def _snapshot(run_dir):
    return {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


def test_eval_gives_the_runs_own_numbers_and_writes_eval_files(digits_run):
    result = kexue("eval", "shared.digits_mlp", "--run", str(digits_run))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((digits_run / "eval.json").read_text())
    trained = json.loads((digits_run / "metrics.json").read_text())
    best = trained["best_step"]
    # eval restores the best checkpoint (by test accuracy) when one is kept: its evaluation in the history
    assert evaluated["step"] == best
    logged = next(h for h in trained["history"] if h["step"] == best and "eval_accuracy" in h)
    assert evaluated["test_accuracy"] == pytest.approx(logged["eval_accuracy"], abs=1e-6)
    assert evaluated["balanced_error"] == pytest.approx(np.mean(evaluated["per_class_error"]))
    assert "balanced error" in (digits_run / "eval.md").read_text()
    at_step = kexue("eval", "shared.digits_mlp", "--run", str(digits_run), "--step", "100")
    assert at_step.returncode == 0 and json.loads((digits_run / "eval.json").read_text())["step"] == 100


@pytest.mark.parametrize("args, needle", [
    (["--run", "{tmp}"], "is not a run directory"),
    (["--run", "{mwp}"], "is a run of mwp.synthetic_solver, not of shared.digits_mlp"),
    (["--run", "{empty}"], "has no checkpoint"),
    (["--run", "{digits}", "--config.hidden", "16"], "does not fit the model of this config"),
    (["--run", "{digits}", "--step", "7"], "--step 7: no such checkpoint"),
])
def test_eval_bad_input_is_one_line_and_changes_nothing(tmp_path, digits_run, mwp_run, args, needle):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(digits_run / "config.json", empty / "config.json")
    places = {"{tmp}": tmp_path, "{mwp}": mwp_run, "{empty}": empty, "{digits}": digits_run}
    args = [str(places.get(a, a)) for a in args]
    before = _snapshot(digits_run)
    result = kexue("eval", "shared.digits_mlp", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert _snapshot(digits_run) == before


def test_predict_solves_new_problems_one_json_line_each(mwp_run):
    questions = ["小明有3个苹果，又买了5个苹果，现在一共有多少个苹果？", "一本书有120页，小红每天看8页，几天能看完？"]
    result = kexue("predict", "mwp.synthetic_solver", "--run", str(mwp_run), *questions)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["question"] for line in lines] == questions
    for line in lines:
        assert line["beam"] == 2 and isinstance(line["expression"], str)
        if line["value"] is None:  # an expression that does not evaluate is reported, not raised
            assert line["error"].startswith("the expression does not evaluate")
        else:
            assert line["answer"] is not None


def test_predict_reads_ape210k_jsonl(tmp_path, mwp_run):
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({"id": "a1", "original_text": "学校有男生12人，女生比男生多3人，女生有多少人？"},
                               ensure_ascii=False) + "\n")
    result = kexue("predict", "mwp.synthetic_solver", "--run", str(mwp_run), "--input", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["id"] == "a1"


@pytest.mark.parametrize("question, needle", [("", "is empty"), ("题" * 10_000, "10,000 characters")])
def test_predict_bad_questions(mwp_run, question, needle):
    before = _snapshot(mwp_run)
    result = kexue("predict", "mwp.synthetic_solver", "--run", str(mwp_run), question)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and _snapshot(mwp_run) == before


def test_mwp_eval_reports_every_beam(mwp_run):
    result = kexue("eval", "mwp.synthetic_solver", "--run", str(mwp_run))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((mwp_run / "eval.json").read_text())
    trained = json.loads((mwp_run / "metrics.json").read_text())
    for key in ("valid_beam1", "test_beam1", "valid_beam2", "test_beam2"):
        assert evaluated[key] == trained[key]  # greedy / beam decoding is deterministic


def test_sample_with_readjusted_bn_writes_a_grid_and_an_array(nvae_run):
    result = kexue("sample", "nvae_jax.digits", "--run", str(nvae_run), "--temperature", "0.7", "--num", "8",
                   "--readjust-bn", "--bn-iterations", "3", "--reconstruct")
    assert result.returncode == 0, result.stderr[-3000:]
    samples = np.load(nvae_run / "samples_t0.7.npy")
    assert samples.shape == (8, 16, 16, 1) and samples.min() >= 0.0 and samples.max() <= 1.0
    assert (nvae_run / "samples_t0.7.png").exists() and (nvae_run / "reconstructions.png").exists()


def test_sample_interpolates_between_test_images(nvae_run):
    result = kexue("sample", "nvae_jax.digits", "--run", str(nvae_run), "--temperature", "0.6", "--num", "4",
                   "--interpolate", "0", "1", "5", "5", "--steps", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = np.load(nvae_run / "interpolation_t0.6.npy")
    assert rows.shape == (2, 5, 16, 16, 1) and rows.min() >= 0.0 and rows.max() <= 1.0
    assert (nvae_run / "interpolation_t0.6.png").exists()
    np.testing.assert_allclose(rows[1], np.repeat(rows[1, :1], 5, axis=0), atol=1e-6)  # image 5 to itself: constant
    assert np.abs(rows[0, 0] - rows[0, -1]).max() > 1e-5  # image 0 to image 1: the ends differ (2 training steps)


@pytest.mark.parametrize("args, needle", [(["--temperature", "0"], "--temperature must be > 0"),
                                          (["--temperature", "-1"], "--temperature must be > 0"),
                                          (["--num", "0"], "--num must be >= 1"),
                                          (["--model", "gan"], "--model 'gan'"),
                                          (["--interpolate", "0"], "--interpolate takes test-image indices in pairs"),
                                          (["--interpolate", "0", "9999"], "--interpolate 9999: the run's test set"),
                                          (["--interpolate", "--steps", "1"], "--steps must be >= 2")])
def test_sample_bad_input(capsys, nvae_run, args, needle):
    """In-process (`shared.cli.main`, as the console command calls it): exit code 2, one line, nothing changed."""
    from shared.cli import main

    before = _snapshot(nvae_run)
    capsys.readouterr()
    assert main(["sample", "nvae_jax.digits", "--run", str(nvae_run), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and _snapshot(nvae_run) == before


def test_list_names_the_commands_each_experiment_offers():
    result = kexue("list")
    rows = {line.split("|")[1].strip(): line.split("|")[4].strip() for line in result.stdout.splitlines()[2:]}
    assert rows["nvae_jax.digits"] == "eval, sample" and rows["mwp.ape210k"] == "eval, predict"
    assert rows["rnn_grad.adding"] == "—"
    refused = kexue("sample", "mwp.synthetic_solver", "--run", "/nonexistent")
    assert refused.returncode == 2
    assert "offers no `kexue sample`; experiments that do: nvae_jax.digits" in refused.stderr


@pytest.mark.slow
def test_nvae_eval_within_monte_carlo_error_of_the_run(nvae_run):
    """The IW bound again with the run's K and images: other keys, so equal within Monte-Carlo error."""
    for model in ("nvae", "vae_1group"):
        result = kexue("eval", "nvae_jax.digits", "--run", str(nvae_run), "--model", model)
        assert result.returncode == 0, result.stderr[-3000:]
        evaluated = json.loads((nvae_run / "eval.json").read_text())["test_nll_nats"]
        trained = json.loads((nvae_run / "metrics.json").read_text())[f"{model}_test_nll_nats"]
        assert evaluated == pytest.approx(trained, rel=0.05)


@pytest.mark.slow
def test_quick_presets_end_to_end(tmp_path):
    """The quick presets as the READMEs show them: NVAE eval within Monte-Carlo error of the run, 64 samples
    with --readjust-bn (500 passes) and interpolation rows; mwp predict of 100 problems in one batch."""
    nvae = tmp_path / "nvae"
    assert kexue("run", "nvae_jax.digits", "--out", str(nvae)).returncode == 0
    assert kexue("eval", "nvae_jax.digits", "--run", str(nvae)).returncode == 0
    evaluated = json.loads((nvae / "eval.json").read_text())["test_nll_nats"]
    assert evaluated == pytest.approx(json.loads((nvae / "metrics.json").read_text())["nvae_test_nll_nats"], rel=0.02)
    sampled = kexue("sample", "nvae_jax.digits", "--run", str(nvae), "--temperature", "0.7", "--num", "64",
                    "--readjust-bn", "--interpolate")
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert np.load(nvae / "samples_t0.7.npy").shape == (64, 16, 16, 1)
    assert np.load(nvae / "interpolation_t0.7.npy").shape == (4, 8, 16, 16, 1)
    mwp = tmp_path / "mwp"
    assert kexue("run", "mwp.synthetic_solver", "--out", str(mwp)).returncode == 0
    problems = tmp_path / "problems.jsonl"
    records = [{"id": str(i), "original_text": f"小明有{i + 2}个苹果，又买了{i + 3}个，共几个？"} for i in range(100)]
    problems.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    predicted = kexue("predict", "mwp.synthetic_solver", "--run", str(mwp), "--input", str(problems))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = [json.loads(line) for line in predicted.stdout.splitlines() if line.startswith("{")]
    assert [p["id"] for p in lines] == [str(i) for i in range(100)]
