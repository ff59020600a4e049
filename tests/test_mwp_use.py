"""`kexue eval | predict mwp.ape210k` on a run trained on fixture files with the committed tiny HF BERT."""

import json

import pytest

from tests.test_mwp_experiments import HF_TINY, _write_fixture_data
from tests.test_shared_use import _snapshot, kexue

# one xdist worker runs this module, so its costly module-scoped fixtures are built once (`--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_mwp_use")

APE = ["--config.checkpoint_dir", str(HF_TINY), "--config.epochs", "1", "--config.batch_size", "8",
       "--config.max_source", "40", "--config.max_target", "16", "--config.eval_batch_size", "8",
       "--config.beams", "1", "2", "--config.log_every", "1", "--config.checkpoint_every", "0",
       "--config.bf16", "false"]


@pytest.fixture(scope="module")
def ape_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ape210k")
    _write_fixture_data(root / "data")
    out = root / "run"
    result = kexue("run", "mwp.ape210k", "--preset", "full", "--out", str(out), "--config.data_dir",
                   str(root / "data"), *APE)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_run_directory_holds_the_vocabulary_and_the_model_dimensions(ape_run):
    vocab = (ape_run / "vocab" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    dims = json.loads((ape_run / "unilm_config.json").read_text())
    assert len(vocab) == dims["vocab_size"] < 61  # the simplified vocabulary, and the embedding rows it sized


def test_eval_gives_the_runs_numbers_at_every_beam(ape_run):
    result = kexue("eval", "mwp.ape210k", "--run", str(ape_run))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((ape_run / "eval.json").read_text())
    trained = json.loads((ape_run / "metrics.json").read_text())
    for key in ("valid_beam1", "test_beam1", "valid_beam2", "test_beam2"):
        assert evaluated[key] == trained[key]  # the best epoch's checkpoint, deterministic decoding
    assert "71.65" in (ape_run / "eval.md").read_text()  # the post's base beam-1 test accuracy beside ours


def test_predict_two_new_problems_and_a_jsonl_file(tmp_path, ape_run):
    questions = ["小明有12元小红有30元共有多少元", "小明买了7个5元的共是多少元"]
    path = tmp_path / "new.jsonl"
    record = {"id": "n1", "original_text": "小明有3元小红有4元共有多少元"}
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    result = kexue("predict", "mwp.ape210k", "--run", str(ape_run), *questions, "--input", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [p["question"] for p in lines] == [*questions, "小明有3元小红有4元共有多少元"] and lines[-1]["id"] == "n1"
    for p in lines:
        assert p["beam"] == 2 and isinstance(p["expression"], str)
        assert (p["value"] is None) == ("error" in p)  # a failed evaluation is reported, the batch goes on


@pytest.mark.parametrize("args, needle", [
    ([""], "is empty"),
    (["题" * 10_000], "10,000 characters"),
    (["--input", "{bad}"], "line 2: not a JSON object with an 'original_text' field"),
    (["--input", "{missing}"], "cannot read it"),
])
def test_predict_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, ape_run, args, needle):
    """In-process (`shared.cli.main`, as the console command calls it): exit code 2 and one line on stderr."""
    from shared.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"original_text": "小明有3元"}\n{"text": 1}\n', encoding="utf-8")
    args = [{"{bad}": str(bad), "{missing}": str(tmp_path / "no.jsonl")}.get(a, a) for a in args]
    before = _snapshot(ape_run)
    capsys.readouterr()
    assert main(["predict", "mwp.ape210k", "--run", str(ape_run), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert _snapshot(ape_run) == before


def test_a_run_without_the_saved_vocabulary_is_named(tmp_path, capsys, ape_run):
    import shutil

    from shared.cli import main

    copy = tmp_path / "old_run"
    shutil.copytree(ape_run, copy)
    (copy / "unilm_config.json").unlink()
    capsys.readouterr()
    assert main(["eval", "mwp.ape210k", "--run", str(copy)]) == 2
    assert "has no unilm_config.json" in capsys.readouterr().err
