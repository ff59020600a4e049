"""Tests for mwp.data: the real JSON-lines format, tricky forms, dropped counts, malformed lines."""

import json
from fractions import Fraction

import pytest

from mwp.data import load_ape210k, write_ape210k


def _line(i, text, ans, equation):
    return json.dumps({"id": str(i), "segmented_text": " ".join(text), "original_text": text, "ans": ans,
                       "equation": equation}, ensure_ascii=False)


GOOD = [
    _line(1, "用白纸做本子，用去(3/5)后还剩6000张，原有多少张？", "3750", "x=6000/(1+(3/5))"),  # value 3750
    _line(2, "一根绳子长2(1/4)米，剪去1(1/2)米，还剩多少米？", "(3/4)", "x=2(1/4)-1(1/2)"),
    _line(3, "商品打八折后卖200元，原价多少元？", "250", "x=200/80%"),
    _line(4, "甲乙两数的比是3:4，甲是乙的几分之几？", "(3/4)", "x=3:4"),
    _line(5, "圆的半径是3厘米，面积是多少平方厘米？", "28.26", "x=3.14*3**2"),
    _line(6, "一个数的25%是5，这个数的一半是多少？", "10", "x=(5/25%)/2"),
    _line(7, "求百分数", "25%", "x=1/4"),
    _line(8, "正方形周长", "12", "x=((3)*(4))"),
]
DROPPED = [
    _line(20, "答案不符", "5", "x=2+2"),  # answer_mismatch
    _line(21, "方程坏了", "1", "x=1+*2"),  # equation_invalid
    _line(22, "恶意方程", "1", "x=__import__('os').system('echo hi')"),  # equation_invalid
    _line(23, "答案非数", "约3个", "x=3"),  # answer_invalid
    _line(24, "巨大的幂", "1", "x=9**9**9"),  # equation_invalid (fails fast)
]


def test_load_real_format(tmp_path):
    path = tmp_path / "train.ape.json"
    path.write_text("\n".join(GOOD + DROPPED) + "\n\n", encoding="utf-8")
    records, summary = load_ape210k(path)
    assert summary["lines"] == len(GOOD) + len(DROPPED)
    assert summary["kept"] == len(GOOD) == len(records)
    assert summary["dropped"] == {"answer_invalid": 1, "answer_mismatch": 1, "equation_invalid": 3}
    by_id = {r["id"]: r for r in records}
    assert by_id["1"]["equation"] == "6000/(1+3/5)" and by_id["1"]["question"].startswith("用白纸做本子，用去3/5后")
    assert by_id["2"]["equation"] == "2+1/4-(1+1/2)"
    assert by_id["2"]["question"] == "一根绳子长(2+1/4)米，剪去(1+1/2)米，还剩多少米？"
    assert by_id["3"]["equation"] == "200/(80/100)" and by_id["3"]["value"] == 250
    assert by_id["4"]["equation"] == "3/4"
    assert by_id["5"]["value"] == Fraction("28.26")
    assert by_id["6"]["equation"] == "5/(25/100)/2"
    assert by_id["7"]["answer"] == "(25/100)"
    assert by_id["8"]["equation"] == "3*4"


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", json.dumps({"id": "9", "original_text": "q"}),
                                 json.dumps({"id": "9", "segmented_text": "q", "original_text": "q", "ans": 3,
                                             "equation": "x=3"})])
def test_malformed_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "valid.ape.json"
    path.write_text("\n".join([GOOD[0], GOOD[1], bad, GOOD[2]]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"valid\.ape\.json:3: malformed"):
        load_ape210k(path)
    records, summary = load_ape210k(path, on_error="skip")
    assert len(records) == 3 and summary["dropped"] == {"malformed": 1}


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        load_ape210k(tmp_path / "x", on_error="ignore")
    with pytest.raises(ValueError, match="path"):
        load_ape210k(tmp_path / "missing.json")


def test_write_then_load_roundtrip_and_limit(tmp_path):
    problems = [json.loads(line) for line in GOOD]
    write_ape210k(tmp_path / "t.json", problems)
    records, summary = load_ape210k(tmp_path / "t.json", limit=3)
    assert summary["lines"] == 3 and [r["id"] for r in records] == ["1", "2", "3"]


def test_loader_applies_the_remaining_baseline_rules(tmp_path):
    path = tmp_path / "valid.ape.json"
    path.write_text("\n".join([
        _line(30, "甲是乙的百分之几？", "33(1/3)%", "x=1/3"),  # leftover "%" -> "/100": kept
        _line(31, "精确到百万分之一", "3", "x=5-(2-0.0000001)"),  # a pair dropped by the 6-decimal rule
        _line(32, "整数", "6", "x=2.*3"),  # "2." is a Python literal: kept
        _line(33, "前导零", "10", "x=05*2"),  # "05" is not (Python's eval rejects it): dropped
    ]) + "\n", encoding="utf-8")
    records, summary = load_ape210k(path)
    assert [r["id"] for r in records] == ["30", "31", "32"]
    assert records[0]["answer"] == "(33+1/3)/100" and records[0]["value"] == Fraction(1, 3)
    assert records[1]["equation"] == "5-2-0.0000001"
    assert summary["dropped"] == {"equation_invalid": 1}
