"""spaces.data: clause splitting, CAIL2020 loading and its error messages; spaces.synthetic."""

import json

import pytest

from spaces.data import Document, document_clauses, load_cail2020, split_clauses, truncated_clauses, write_cail2020
from spaces.synthetic import synthetic_documents


def test_split_clauses_keeps_delimiters_and_round_trips():
    assert split_clauses("甲，乙。丙") == ["甲，", "乙。", "丙"]
    assert split_clauses("原告：张三；被告\n李四") == ["原告：", "张三；", "被告\n", "李四"]
    assert split_clauses("判决如下：\n一、") == ["判决如下：\n", "一、"]  # a run of delimiters ends one clause
    text = "本院认为，借款事实清楚。\n判决如下：一、被告偿还借款；二、驳回其他请求。"
    assert "".join(split_clauses(text, None)) == text
    assert all(split_clauses(text, None))


def test_split_clauses_keeps_the_last_256():
    text = "".join(f"第{i}句，" for i in range(300))
    clauses = split_clauses(text)
    assert len(clauses) == 256 and clauses[0] == "第44句，" and clauses[-1] == "第299句，"
    assert truncated_clauses(text) == 44 and truncated_clauses("甲，乙") == 0
    with pytest.raises(ValueError, match="max_clauses"):
        split_clauses(text, 0)
    with pytest.raises(ValueError, match="text must be a str"):
        split_clauses(b"abc")


def _line(**overrides):
    record = {"id": "a1", "summary": "原告诉称，被告借款。",
              "text": [{"sentence": "原告张三，", "label": 1}, {"sentence": "被告李四。", "label": 0}]}
    record.update(overrides)
    return json.dumps(record, ensure_ascii=False)


def test_load_cail2020_round_trip(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(_line() + "\n\n" + _line(id="a2") + "\n", encoding="utf-8")
    docs = load_cail2020(path)
    assert [d.id for d in docs] == ["a1", "a2"]
    assert docs[0].sentences == ("原告张三，", "被告李四。") and docs[0].labels == (1, 0)
    assert docs[0].text == "原告张三，\n被告李四。"
    out = tmp_path / "copy.jsonl"
    write_cail2020(out, docs)
    assert load_cail2020(out) == docs


@pytest.mark.parametrize("line, message", [
    ("{not json", r"train.jsonl:2: invalid JSON"),
    (_line(summary=""), r"train.jsonl:2: document 'a1' has an empty 'summary'"),
    (_line(text=[]), r"train.jsonl:2: document 'a1' has an empty 'text'"),
    (_line(text=[{"sentence": "甲", "label": 2}]), r"train.jsonl:2: text\[0\].label must be 0 or 1"),
    (json.dumps({"id": "x", "text": []}), r"train.jsonl:2: missing field 'summary'"),
    (_line(text="原告"), r"train.jsonl:2: field 'text' must be a list"),
    ("[1, 2]", r"train.jsonl:2: expected a JSON object"),
])
def test_load_cail2020_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "train.jsonl"
    path.write_text(_line() + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_cail2020(path)


def test_load_cail2020_rejects_non_utf8_with_the_byte_offset(tmp_path):
    path = tmp_path / "gbk.jsonl"
    good = _line().encode("utf-8")
    bad = _line().replace("原告诉称", "GBK").encode("utf-8").replace(b"GBK", "原告".encode("gbk"))
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + bad + b"\n")  # a BOM on line 1 is fine
    with pytest.raises(ValueError, match=r"gbk.jsonl:2: not valid UTF-8 at byte \d+"):
        load_cail2020(path)
    assert len(load_cail2020(path, limit=1)) == 1


def test_load_cail2020_empty_summary_allowed_for_test_sets(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(_line(summary="") + "\n", encoding="utf-8")
    assert load_cail2020(path, allow_empty_summary=True)[0].summary == ""
    with pytest.raises(ValueError, match="does not exist"):
        load_cail2020(tmp_path / "missing.jsonl")


def test_synthetic_documents_are_deterministic_and_judgment_like():
    docs = synthetic_documents(30, seed=3)
    assert docs == synthetic_documents(30, seed=3) and docs != synthetic_documents(30, seed=4)
    n = [len(document_clauses(d, None)) for d in docs]
    assert min(n) >= 40 and max(n) <= 150
    for d in docs:
        assert isinstance(d, Document) and d.summary and len(d.sentences) == len(d.labels)
        assert "判决" in d.summary and "本院认为" not in d.summary  # reworded, not copied
        assert "本院认为，" in d.text and "判决如下：" in d.text
