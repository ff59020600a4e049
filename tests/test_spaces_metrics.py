"""spaces.metrics: the SPACES scorer against rouge 1.0.0 itself and by hand, the rouge-score backend,
jieba as SPACES cut words, the bit-parallel LCS, bad input."""

import random

import pytest

from spaces.data import document_clauses, split_clauses
from spaces.labelling import extract_matching, oracle_text
from spaces.metrics import (
    PreparedText,
    corpus_rouge,
    lcs_length,
    lcs_rows,
    prepare,
    rouge_scores,
    segment,
    tokenize,
    weighted_rouge,
)
from spaces.synthetic import synthetic_documents


def _lcs_dp(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table


def _f(p, r):
    return 2.0 * ((p * r) / (p + r + 1e-8))


@pytest.fixture(scope="module")
def user_dict(tmp_path_factory):
    path = tmp_path_factory.mktemp("jieba") / "user_dict.txt"
    path.write_text("民间借贷纠纷 2000 n\n诉讼费用交纳办法 2000 n\n杭研大厦 2000 n\n", encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------------------ SPACES, by hand
def test_spaces_scorer_hand_computed():
    # hyp 原告张三诉称 (6 chars), ref 原告李四称 (5): unigram overlap 3, bigram overlap 原告 = 1 of 5 / 4,
    # LCS words {原, 告, 称} over 6 / 5 distinct characters.
    s = rouge_scores("原告张三诉称", "原告李四称", "char")
    assert s["rouge-1"] == _f(3 / 6, 3 / 5) and s["rouge-2"] == _f(1 / 5, 1 / 4) and s["rouge-l"] == _f(3 / 6, 3 / 5)
    # repeated characters: R1 counts multisets (overlap 2 of 3), RL counts distinct words: the LCS 甲乙
    # covers both distinct characters of each side, so RL = F(1, 1) where rouge-score has 2/3
    s = rouge_scores("甲甲乙", "甲乙乙", "char")
    assert s["rouge-1"] == _f(2 / 3, 2 / 3) and s["rouge-l"] == _f(1.0, 1.0)
    assert rouge_scores("甲甲乙", "甲乙乙", "char", backend="rouge-score")["rouge-l"] == pytest.approx(2 / 3)
    # "." splits sentences (and disappears); n-grams still run across the split: 甲乙 is a shared bigram
    s = rouge_scores("甲.乙", "甲乙", "char")
    assert s == {"rouge-1": _f(1.0, 1.0), "rouge-2": _f(1.0, 1.0), "rouge-l": _f(1.0, 1.0)}
    assert weighted_rouge("甲.乙", "甲乙") == pytest.approx(1.0, abs=1e-8) and weighted_rouge("甲.乙", "甲乙") < 1.0


def test_spaces_lcs_traceback_breaks_ties_as_rouge_1_0_0():
    # ref 甲甲乙丙, hyp 乙丙甲甲: two LCSs of length 2, 甲甲 (1 distinct word) and 乙丙 (2). rouge 1.0.0
    # goes left on ties and finds 乙丙, so |U| = 2 of 3 distinct words on each side; going up finds 甲甲.
    assert rouge_scores("乙丙甲甲", "甲甲乙丙", "char")["rouge-l"] == _f(2 / 3, 2 / 3)


def test_matches_rouge_1_0_0_on_random_text():
    rouge = pytest.importorskip("rouge", reason="rouge==1.0.0 is in the test extra")
    scorer = rouge.Rouge()
    r = random.Random(0)
    alphabet = "原告被告借款元判决，。.. 1a"
    for _ in range(400):
        h = "".join(r.choice(alphabet) for _ in range(r.randint(0, 30)))
        ref = "".join(r.choice(alphabet) for _ in range(r.randint(0, 30)))
        try:
            want = scorer.get_scores(hyps=" ".join(h), refs=" ".join(ref))[0]  # snippets.compute_rouge, char
            want = [want[k]["f"] for k in ("rouge-1", "rouge-2", "rouge-l")]
        except ValueError:  # empty hypothesis or reference: SPACES scores 0
            want = [0.0, 0.0, 0.0]
        got = rouge_scores(h, ref, "char")
        assert [got[k] for k in ("rouge-1", "rouge-2", "rouge-l")] == pytest.approx(want, abs=1e-12), (h, ref)


def test_matches_rouge_1_0_0_on_legal_text(user_dict):
    """Judgment-format text (dates, amounts, "1." lists, statute names): oracle extractions and single
    clauses against their summaries, on characters and on jieba words with a user dictionary."""
    rouge = pytest.importorskip("rouge", reason="rouge==1.0.0 is in the test extra")
    import jieba

    cutter = jieba.Tokenizer()
    cutter.load_userdict(user_dict)
    scorer = rouge.Rouge()

    def spaces(h, ref, unit):  # bojone/SPACES snippets.compute_metrics
        if unit == "word":
            h, ref = cutter.cut(h, HMM=False), cutter.cut(ref, HMM=False)
        s = scorer.get_scores(hyps=" ".join(h), refs=" ".join(ref))[0]
        return s["rouge-1"]["f"] * 0.2 + s["rouge-2"]["f"] * 0.4 + s["rouge-l"]["f"] * 0.4

    pairs = []
    for doc in synthetic_documents(4, seed=7, summary_style="full"):
        clauses = document_clauses(doc)
        summary_clauses = split_clauses(doc.summary, None)
        pairs.append((oracle_text(clauses, extract_matching(clauses, summary_clauses)), doc.summary))
        pairs.append((clauses[len(clauses) // 2] + "诉讼费用交纳办法 1.5万元", summary_clauses[0]))
    pairs.append(("原告张三与被告李四民间借贷纠纷一案，本院于2019年3月1日立案。",
                  "原告张三诉称，民间借贷纠纷，借款1.5万元。"))
    for h, ref in pairs:
        for unit in ("char", "word"):
            assert abs(weighted_rouge(h, ref, unit, user_dict=user_dict) - spaces(h, ref, unit)) < 1e-9, (unit, h)


def test_prepared_text_bound_is_an_upper_bound():
    r = random.Random(2)
    for backend in ("spaces", "rouge-score"):
        for _ in range(300):
            a, b = ("".join(r.choice("甲乙丙丁.，") for _ in range(r.randint(1, 25))) for _ in range(2))
            pa, pb = prepare(a, backend=backend), prepare(b, backend=backend)
            assert pa.bound(pb) >= pa.weighted(pb)
            assert pa.weighted(pb) == pytest.approx(weighted_rouge(a, b, backend=backend), abs=1e-12)


# ------------------------------------------------------------------------------------ jieba
def test_segment_as_spaces_snippets(user_dict):
    # HMM=False: jieba's HMM would join the unknown 杭研 into a word; the user dictionary keeps its words whole
    assert "杭研" not in segment("他来到了网易杭研大厦")
    assert "杭研大厦" in segment("他来到了网易杭研大厦", user_dict)
    assert "民间借贷纠纷" in segment("原告与被告民间借贷纠纷一案", user_dict)
    assert "民间借贷纠纷" not in segment("原告与被告民间借贷纠纷一案")
    with pytest.raises(ValueError, match=r"no_such_dict\.txt"):
        segment("原告", "/nonexistent/no_such_dict.txt")
    with pytest.raises(ValueError, match=r"no_such_dict\.txt"):
        weighted_rouge("原告", "原告", "word", user_dict="no_such_dict.txt")


# ----------------------------------------------------------------------------- rouge-score backend
def test_rouge_score_backend_hand_computed():
    s = rouge_scores("原告张三诉称", "原告李四称", "char", backend="rouge-score")
    assert s["rouge-1"] == pytest.approx(6 / 11) and s["rouge-2"] == pytest.approx(2 / 9)
    assert s["rouge-l"] == pytest.approx(6 / 11)
    assert tokenize("我们 今天", "word") == ["我们", "今天"]
    # words [我们, 今天] vs [今天, 我们]: R1 = 1, R2 = 0, RL = 1/2
    assert weighted_rouge("我们今天", "今天我们", "word", backend="rouge-score") == pytest.approx(0.2 + 0.4 * 0.5)


def test_default_rouge_score_tokenizer_would_score_chinese_zero():
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rouge1"]).score("原告张三", "原告张三")["rouge1"].fmeasure
    assert plain == 0.0
    assert weighted_rouge("原告张三", "原告张三", backend="rouge-score") == pytest.approx(1.0)


def test_prepared_rouge_score_backend_matches_the_package():
    r = random.Random(0)
    alphabet = "原告被告借款元判决本院认为，。"
    for _ in range(200):
        h = "".join(r.choice(alphabet) for _ in range(r.randint(0, 30)))
        ref = "".join(r.choice(alphabet) for _ in range(r.randint(1, 30)))
        s = rouge_scores(h, ref, "char", backend="rouge-score")
        got = prepare(h, backend="rouge-score").scores(prepare(ref, backend="rouge-score"))
        assert got == pytest.approx((s["rouge-1"], s["rouge-2"], s["rouge-l"]), abs=1e-12)


# ------------------------------------------------------------------------------------------ LCS
def test_bit_parallel_lcs_matches_dynamic_programming():
    r = random.Random(1)
    for _ in range(300):
        a = [r.choice("abcd") for _ in range(r.randint(0, 90))]  # > 64 bits exercises big ints
        b = [r.choice("abcd") for _ in range(r.randint(0, 90))]
        table = _lcs_dp(a, b)
        assert lcs_length(a, b) == table[-1][-1]
        if a and b:
            rows = lcs_rows(a, b)
            j = r.randint(0, len(b))
            for i in range(len(a) + 1):  # every DP value is readable from the rows
                assert i - (rows[j] & ((1 << i) - 1)).bit_count() == table[i][j]


# ------------------------------------------------------------------------------------ bad input
def test_bad_input_and_corpus():
    for backend in ("spaces", "rouge-score"):
        assert weighted_rouge("", "被告", "word", backend=backend) == 0.0
        assert weighted_rouge("被告", "", "char", backend=backend) == 0.0
        assert weighted_rouge("   ", "被告", "char", backend=backend) == 0.0
    assert weighted_rouge(".", "被告", "char") == 0.0 and prepare(".").sentences == []  # "." only: no sentence
    assert prepare("..").sentences == [[""]]  # rouge 1.0.0 keeps a whitespace-only piece as the word ""
    assert weighted_rouge("，。", "，。") == pytest.approx(1.0, abs=1e-8)  # punctuation is text, scored as such
    assert isinstance(prepare("甲"), PreparedText)
    out = corpus_rouge(["原告张三诉称", "我们今天"], ["原告李四称", "今天我们"], unit="char")
    assert out["weighted"] == pytest.approx((weighted_rouge("原告张三诉称", "原告李四称")
                                             + weighted_rouge("我们今天", "今天我们")) / 2)
    with pytest.raises(ValueError, match="unit"):
        weighted_rouge("a", "b", unit="byte")
    with pytest.raises(ValueError, match="backend"):
        weighted_rouge("a", "b", backend="rouge2")
    with pytest.raises(ValueError, match="hypotheses"):
        corpus_rouge(["a"], [])
    with pytest.raises(ValueError, match="text must be a str"):
        prepare(None)


def test_config_names_a_bad_scorer_or_missing_user_dict(user_dict):
    import dataclasses

    from spaces.configs import QUICK

    assert QUICK.scorer == "spaces" and dataclasses.replace(QUICK, user_dict=user_dict).user_dict == user_dict
    with pytest.raises(ValueError, match=r"config\.scorer"):
        dataclasses.replace(QUICK, scorer="rouge")
    with pytest.raises(ValueError, match=r"config.user_dict.*missing_dict.txt"):
        dataclasses.replace(QUICK, user_dict="/nonexistent/missing_dict.txt")


def test_describe_names_the_scorer_and_its_dictionary(user_dict):
    from spaces.metrics import describe

    assert "rouge 1.0.0" in describe("spaces") and "HMM=False" in describe("spaces")
    assert user_dict in describe("spaces", user_dict) and describe("rouge-score").startswith("rouge-score")
    with pytest.raises(ValueError, match="backend"):
        describe("rouge")
