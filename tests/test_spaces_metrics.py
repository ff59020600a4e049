"""spaces.metrics: hand-computed ROUGE values, rouge-score agreement, the bit-parallel LCS."""

import random

import pytest

from spaces.metrics import (corpus_rouge, fast_char_rouge, fast_weighted_rouge, lcs_length, rouge_scores,
                            tokenize, weighted_rouge)


def _lcs_dp(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_hand_computed_char_rouge():
    # hyp 原告张三诉称 (6 chars), ref 原告李四称 (5): unigram overlap 原告称 = 3, bigram overlap 原告 = 1 of
    # 5 / 4 bigrams, LCS 原告称 = 3.  F = 2·o / (n_hyp + n_ref).
    s = rouge_scores("原告张三诉称", "原告李四称", "char")
    assert s["rouge-1"] == pytest.approx(6 / 11) and s["rouge-2"] == pytest.approx(2 / 9)
    assert s["rouge-l"] == pytest.approx(6 / 11)
    assert weighted_rouge("原告张三诉称", "原告李四称") == pytest.approx(0.6 * 6 / 11 + 0.4 * 2 / 9)
    # 我们今天 vs 今天我们: R1 = 1, R2 = 2/3 (我们, 今天 shared of 3 bigrams), RL = 2/4
    assert weighted_rouge("我们今天", "今天我们", "char") == pytest.approx(0.2 + 0.4 * 2 / 3 + 0.4 * 0.5)


def test_hand_computed_word_rouge():
    assert tokenize("我们 今天", "word") == ["我们", "今天"]
    # words [我们, 今天] vs [今天, 我们]: R1 = 1, R2 = 0, RL = 1/2
    assert weighted_rouge("我们今天", "今天我们", "word") == pytest.approx(0.2 + 0.0 + 0.4 * 0.5)
    assert weighted_rouge("被告偿还借款", "被告偿还借款", "word") == pytest.approx(1.0)
    assert weighted_rouge("", "被告", "word") == 0.0


def test_default_rouge_score_tokenizer_would_score_chinese_zero():
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rouge1"]).score("原告张三", "原告张三")["rouge1"].fmeasure
    assert plain == 0.0 and weighted_rouge("原告张三", "原告张三") == pytest.approx(1.0)


def test_fast_char_rouge_matches_rouge_score():
    r = random.Random(0)
    alphabet = "原告被告借款元判决本院认为，。"
    for _ in range(200):
        h = "".join(r.choice(alphabet) for _ in range(r.randint(0, 30)))
        ref = "".join(r.choice(alphabet) for _ in range(r.randint(1, 30)))
        s = rouge_scores(h, ref, "char")
        assert fast_char_rouge(h, ref) == pytest.approx((s["rouge-1"], s["rouge-2"], s["rouge-l"]), abs=1e-12)
        assert fast_weighted_rouge(h, ref) == pytest.approx(weighted_rouge(h, ref), abs=1e-12)


def test_bit_parallel_lcs_matches_dynamic_programming():
    r = random.Random(1)
    for _ in range(500):
        a = [r.choice("abcd") for _ in range(r.randint(0, 90))]  # > 64 bits exercises big ints
        b = [r.choice("abcd") for _ in range(r.randint(0, 90))]
        assert lcs_length(a, b) == _lcs_dp(a, b)


def test_corpus_rouge_and_bad_units():
    out = corpus_rouge(["原告张三诉称", "我们今天"], ["原告李四称", "今天我们"], unit="char")
    assert out["weighted"] == pytest.approx((weighted_rouge("原告张三诉称", "原告李四称")
                                             + weighted_rouge("我们今天", "今天我们")) / 2)
    with pytest.raises(ValueError, match="unit"):
        weighted_rouge("a", "b", unit="byte")
    with pytest.raises(ValueError, match="hypotheses"):
        corpus_rouge(["a"], [])
