"""spaces.labelling: the greedy monotone alignment against a direct transcription of SPACES' recursion."""

import numpy as np
import pytest

from spaces.data import document_clauses, split_clauses
from spaces.labelling import clause_labels, extract_matching, extract_pairs, oracle_score, oracle_text
from spaces.metrics import weighted_rouge
from spaces.synthetic import synthetic_documents


def _reference(texts, summaries, a=0, c=0):
    """The recursion written directly, scoring every pair with `weighted_rouge` (the SPACES scorer);
    zero-overlap clauses skipped."""
    if not texts or not summaries:
        return []
    i = int(np.argmax([len(s) for s in summaries]))
    scores = [weighted_rouge(t, summaries[i], "char") for t in texts]
    if max(scores) == 0:
        return _reference(texts, summaries[:i], a, c) + _reference(texts, summaries[i + 1:], a, c + i + 1)
    j = int(np.argmax(scores))
    return (_reference(texts[:j + 1], summaries[:i], a, c) + [(c + i, a + j)]
            + _reference(texts[j:], summaries[i + 1:], a + j, c + i + 1))


def test_hand_example():
    source = ["原告张三，", "向本院提出诉讼请求：", "无关内容一，", "被告借款一万元，", "判决如下："]
    summary = ["原告张三诉称，", "被告借款一万元。"]
    assert extract_pairs(source, summary) == [(0, 0), (1, 3)]
    assert extract_matching(source, summary) == [0, 3]
    assert clause_labels(source, summary) == [1, 0, 0, 1, 0]
    assert oracle_text(source, [3, 0]) == "原告张三，被告借款一万元，"


def test_matches_direct_transcription_and_is_monotone():
    for doc in synthetic_documents(6, seed=11):
        src, summ = document_clauses(doc), split_clauses(doc.summary, None)
        pairs = extract_pairs(src, summ)
        assert pairs == sorted(_reference(src, summ))
        sources = [j for _, j in pairs]
        assert sources == sorted(sources)  # monotone: later summary clauses never map earlier


def test_unmatched_clause_gets_no_label():
    # the middle summary clause shares no character with the source: no label for it (the original's
    # argmax over all-zero scores would label the first candidate)
    source = ["甲乙丙，", "丁戊己。"]
    assert extract_pairs(source, ["甲乙，", "子丑寅卯辰巳", "戊己。"]) == [(0, 0), (2, 1)]
    assert extract_matching(["甲乙丙"], ["子丑"]) == []


def test_scorers_pick_different_clauses():
    # summary 乙丙丙: SPACES' RL counts the distinct words on the traced LCS over distinct words: 乙丙甲甲
    # gets {乙, 丙} (P 2/3, R 1, F 0.8), 丙乙丙乙's traced LCS is 丙丙, {丙} (F 0.5): scores 0.594 vs 0.531.
    # rouge-score's RL is the LCS length 2 for both (F 4/7), and 丙乙丙乙's better R1 wins: 0.503 vs 0.560.
    src, summ = ["乙丙甲甲", "丙乙丙乙"], ["乙丙丙"]
    assert extract_matching(src, summ) == [0] and extract_matching(src, summ, "rouge-score") == [1]


def test_oracle_score_and_bad_input():
    doc = synthetic_documents(1, seed=5)[0]
    src = document_clauses(doc)
    score = oracle_score(src, doc.summary)
    assert 0.5 < score < 1.0  # extraction alone cannot reach the reworded summary
    with pytest.raises(ValueError, match="source_clauses is empty"):
        extract_matching(split_clauses("", None), ["甲"])  # a document with no clauses
    assert extract_matching(["甲，", "乙。"], ["。"]) == [1]  # a punctuation-only summary clause is text too
    assert extract_matching(["甲，", "乙。"], ["！"]) == []  # nothing shared: no label
    with pytest.raises(ValueError, match="summary_clauses must be a list"):
        extract_matching(["甲"], "甲乙")
    with pytest.raises(ValueError, match=r"summary_clauses\[1\] must be a non-empty"):
        extract_matching(["甲"], ["甲", ""])
    with pytest.raises(ValueError, match="out of range"):
        oracle_text(["甲"], [1])
