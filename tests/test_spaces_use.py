"""`kexue eval | predict spaces.synthetic_pipeline` on a reduced run (seconds of training)."""

import json

import pytest

from spaces.data import document_clauses, write_cail2020
from spaces.synthetic import synthetic_documents
from tests.test_shared_use import _snapshot, kexue

# one xdist worker runs this module, so its costly module-scoped fixtures are built once (`--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_spaces_use")

SMALL = ["--config.n_train", "10", "--config.n_test", "4", "--config.folds", "2", "--config.clause_len", "8",
         "--config.extractor_steps", "3", "--config.extractor_batch", "4", "--config.extractor_dim", "16",
         "--config.max_source", "40", "--config.max_target", "30", "--config.generator_steps", "6",
         "--config.generator_batch", "8", "--config.beam_size", "2", "--config.decode_batch", "4",
         "--config.variants", "sparse-copy", "dense-nocopy", "--config.examples", "1"]


@pytest.fixture(scope="module")
def spaces_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("spaces") / "run"
    result = kexue("run", "spaces.synthetic_pipeline", "--out", str(out), *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def new_documents(tmp_path_factory):
    """Two judgments the run never saw (another seed), without their summaries."""
    root = tmp_path_factory.mktemp("docs")
    docs = synthetic_documents(2, seed=99, summary_style="short")
    write_cail2020(root / "two.jsonl", docs)
    records = [{k: v for k, v in json.loads(line).items() if k != "summary"}
               for line in (root / "two.jsonl").read_text(encoding="utf-8").splitlines()]
    (root / "one.json").write_text(json.dumps(records[0], ensure_ascii=False, indent=2), encoding="utf-8")
    return root, docs


def test_eval_gives_the_runs_scores(spaces_run):
    result = kexue("eval", "spaces.synthetic_pipeline", "--run", str(spaces_run))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((spaces_run / "eval.json").read_text())["rows"]
    trained = json.loads((spaces_run / "metrics.json").read_text())["rows"]
    assert [r[0] for r in evaluated] == [r[0] for r in trained] and len(evaluated) == 5
    for ours, theirs in zip(evaluated, trained, strict=True):  # same extraction, deterministic beam search
        assert ours[1:] == pytest.approx(theirs[1:], abs=1e-6), ours[0]
    assert "score (0.2/0.4/0.4)" in (spaces_run / "eval.md").read_text()


def test_predict_one_new_document(spaces_run, new_documents):
    root, docs = new_documents
    before = _snapshot(spaces_run)
    result = kexue("predict", "spaces.synthetic_pipeline", "--run", str(spaces_run), "--input", str(root / "one.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    clauses = document_clauses(docs[0])
    assert line["id"] == docs[0].id and line["fold"] == 0 and line["generator"] == "sparse softmax, copy decoding"
    assert all(0 <= i < len(clauses) for i in line["extracted"])
    assert line["extracted_text"] == "".join(clauses[i] for i in line["extracted"])
    assert isinstance(line["summary"], str)
    assert _snapshot(spaces_run) == before  # predict writes nothing into the run directory


def test_predict_jsonl_with_another_fold_and_generator(spaces_run, new_documents):
    root, docs = new_documents
    result = kexue("predict", "spaces.synthetic_pipeline", "--run", str(spaces_run), "--input",
                   str(root / "two.jsonl"), "--fold", "1", "--model", "dense-nocopy")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert [p["id"] for p in lines] == [d.id for d in docs] and {p["fold"] for p in lines} == {1}
    assert {p["generator"] for p in lines} == {"dense softmax, no copy constraint (no copy loss)"}


BAD_DOCUMENTS = {
    "not_json.jsonl": ('{"id": "a", "text": [{"sentence": "甲。"}]}\n{broken\n', "not_json.jsonl:2: not a JSON object"),
    "no_text.json": ('{"id": "a", "summary": ""}', "no_text.json:1: missing field 'text'"),
    "bad_label.jsonl": ('{"id": "a", "text": [{"sentence": "甲。", "label": 2}]}\n',
                        "bad_label.jsonl:1: text[0].label must be 0 or 1"),
    "empty.json": ('{"id": "a", "text": [{"sentence": " "}]}', "has an empty 'text'"),
    "pretty.json": (json.dumps({"id": "a", "text": "甲。"}, ensure_ascii=False, indent=2),
                    "pretty.json: field 'text' must be a list"),
    "list.json": ('[{"id": "a"}]', "list.json:1: expected a JSON object, got list"),
}


@pytest.mark.parametrize("args, needle", [
    *[(["--input", name], needle) for name, (_, needle) in BAD_DOCUMENTS.items()],
    (["--input", "missing.json"], "cannot read it"),
    (["--input", "one.json", "--fold", "2"], "--fold 2: the run trained folds 0 to 1"),
    (["--input", "one.json", "--model", "dense-copy"], "--model 'dense-copy': the run trained the generators"),
    (["a judgment as text"], "reads documents from --input"),
])
def test_predict_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, spaces_run, new_documents, args, needle):
    """In-process (`shared.cli.main`, as the console command calls it): exit code 2, one line naming the file
    (and line and field), nothing in the run directory changed."""
    from shared.cli import main

    for name, (text, _) in BAD_DOCUMENTS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "one.json").write_text((new_documents[0] / "one.json").read_text(encoding="utf-8"), encoding="utf-8")
    args = [str(tmp_path / a) if a.endswith((".json", ".jsonl")) else a for a in args]
    before = _snapshot(spaces_run)
    capsys.readouterr()
    assert main(["predict", "spaces.synthetic_pipeline", "--run", str(spaces_run), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(spaces_run) == before


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path, new_documents):
    """The quick preset as spaces/README.md shows it: eval gives the run's table, predict one new judgment."""
    out = tmp_path / "run"
    assert kexue("run", "spaces.synthetic_pipeline", "--out", str(out)).returncode == 0
    assert kexue("eval", "spaces.synthetic_pipeline", "--run", str(out)).returncode == 0
    evaluated = json.loads((out / "eval.json").read_text())["rows"]
    trained = json.loads((out / "metrics.json").read_text())["rows"]
    assert [r[0] for r in evaluated] == [r[0] for r in trained]
    for ours, theirs in zip(evaluated, trained, strict=True):
        assert ours[1:] == pytest.approx(theirs[1:], abs=1e-6), ours[0]
    result = kexue("predict", "spaces.synthetic_pipeline", "--run", str(out), "--input",
                   str(new_documents[0] / "one.json"))
    assert result.returncode == 0 and json.loads(result.stdout.strip().splitlines()[-1])["summary"]
