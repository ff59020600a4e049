"""Tests for mwp.tokenizer: expression round trips, no [UNK] for numbers, slots, WordPiece from vocab.txt."""

import random
import re

import pytest

from mwp.expressions import ExpressionError, normalize_problem, safe_eval
from mwp.synthetic import generate_split
from mwp.tokenizer import (
    CLS,
    EXPRESSION_PIECES,
    PAD,
    SEP,
    SLOTS,
    SPECIALS,
    UNK,
    CharTokenizer,
    WordPieceTokenizer,
    fill_slots,
    number_slots,
    split_expression,
    wordpiece,
)

EXPRESSIONS = ["6000/(1+3/5)", "3.14*3**2", "2**-1", "(2+1/4)-(1+1/2)", "123456789*987654321", "[N0]**[N1]-2"]


def test_split_expression():
    assert split_expression("12**2-[N0]") == ["1", "2", "**", "2", "-", "[N0]"]
    assert split_expression(" 1 + 2 ") == ["1", "+", "2"]


@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer.build(["鸡兔同笼，共有35个头", "求面积"])


def test_char_roundtrip(char_tok):
    for e in EXPRESSIONS:
        ids = char_tok.encode_expression(e)
        assert char_tok.unk_id not in ids
        assert char_tok.decode_expression(ids + [char_tok.sep_id, 7, 8]) == e
    assert char_tok.decode_expression(char_tok.encode_expression("2 ** 3")) == "2**3"


def test_char_pair_and_unknown(char_tok):
    ids, seg = char_tok.encode_pair("共有35个头", "35/5", max_source=10, max_target=10)
    assert ids[0] == char_tok.cls_id and ids.count(char_tok.sep_id) == 2
    assert seg == [0] * 8 + [1] * 5
    assert char_tok.encode_question("猫")[0] == char_tok.unk_id
    assert char_tok.decode_expression([char_tok.unk_id]) == "?"  # invalid, so safe_eval rejects it
    with pytest.raises(ValueError):
        CharTokenizer(["a", "b"])


def test_number_slots_roundtrip_on_synthetic():
    for r in generate_split("train", 60, seed=3):
        n = normalize_problem(r)
        q, e, numbers = number_slots(n["question"], n["equation"])
        assert not any(c.isdigit() for c in re.sub(r"\[N[0-9]+\]", "", q))
        assert safe_eval(fill_slots(e, numbers)) == n["value"]
    with pytest.raises(ExpressionError):
        fill_slots("[N3]+1", ["1"])


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    tokens = [PAD, "[unused1]", "[unused2]", "[unused3]", UNK, CLS, SEP, "[MASK]", *"0123456789", ".", "+", "-",
              "*", "/", "(", ")", "鸡", "兔", "共", "有", "个", "头", "##5", "35", "##00", "1", "=", "%"]
    seen, unique = set(), []
    for t in tokens:
        if t not in seen:
            seen.add(t), unique.append(t)
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(unique) + "\n", encoding="utf-8")
    return path


def test_wordpiece_roundtrip_and_no_unk_numbers(vocab):
    tok = WordPieceTokenizer(vocab)
    for e in EXPRESSIONS[:5]:
        ids = tok.encode_expression(e)
        assert tok.unk_id not in ids
        assert tok.decode_expression(ids) == e
    assert tok.encode_expression("2**3")[1] == tok.token_to_id["[unused1]"]  # '**' is one token
    assert tok.decode_expression(tok.encode_expression("[N1]+1")) == "[N1]+1"
    q = tok.encode_question("鸡兔共有35个头，987654个脚")
    assert tok.token_to_id["35"] in q  # pretrained number pieces are kept
    digits = [tok.token_to_id[c] for c in "987654"]
    assert all(d in q for d in digits)  # a number with no pieces becomes single digits, not [UNK]
    assert q.count(tok.unk_id) == 2  # only the unknown characters "，" and "脚"


def test_wordpiece_bad_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab_path"):
        WordPieceTokenizer(tmp_path / "nope.txt")
    (tmp_path / "v.txt").write_text("\n".join(SPECIALS) + "\n")
    with pytest.raises(ValueError, match="lacks"):
        WordPieceTokenizer(tmp_path / "v.txt")


def test_random_expressions_roundtrip(char_tok):
    rng = random.Random(0)
    for _ in range(200):
        e = "".join(rng.choice(["1", "23", "4.5", "+", "-", "*", "/", "**", "(", ")"]) for _ in range(12))
        assert char_tok.decode_expression(char_tok.encode_expression(e)) == e


def test_wordpiece_greedy_longest_match():
    vocab = {"1", "2", "5", "0", "12", "125", "##0", "##5", "##50", "##2"}
    assert wordpiece("125", vocab) == ["125"]
    assert wordpiece("1250", vocab) == ["125", "##0"]
    assert wordpiece("1255", vocab) == ["125", "##5"]
    assert wordpiece("12550", vocab) == ["125", "##50"]  # the longest continuation, not ##5 ##0
    assert wordpiece("5", vocab) == ["5"]
    assert wordpiece("13", vocab) is None  # "##3" missing: BERT's [UNK]


def test_wordpiece_matches_bert_tokenizers_on_numbers():
    from tokenizers import BertWordPieceTokenizer

    path = "tests/fixtures/hf_tiny_bert/vocab.txt"
    bert = BertWordPieceTokenizer(path, lowercase=True)
    with open(path, encoding="utf-8") as f:
        vocab = set(f.read().splitlines())
    rng = random.Random(0)
    for n in [0, 5, 12, 100, 120, 1000, 1200, 1250, 12005, 125, 3, 1211, 100100] + [rng.randint(0, 10**6)
                                                                                     for _ in range(200)]:
        ours = wordpiece(str(n), vocab)
        theirs = bert.encode(str(n), add_special_tokens=False).tokens
        assert (ours if ours is not None else ["[UNK]"]) == theirs, n


def test_wordpiece_equations_as_the_baseline_tokenizes_them():
    """The baseline runs BERT's tokenizer over the equation string; ours gives the same ids (`**` aside)."""
    from tokenizers import BertWordPieceTokenizer

    path = "tests/fixtures/hf_tiny_bert/vocab.txt"
    bert = BertWordPieceTokenizer(path, lowercase=True)
    tok = WordPieceTokenizer(path)
    rng = random.Random(1)
    for _ in range(200):
        nums = [str(rng.choice([12, 100, 1250, 120, 7, 1200, 3])) + rng.choice(["", ".5", ".25", ".125"])
                for _ in range(3)]
        ops = [rng.choice("+-*/") for _ in range(2)]
        e = f"({nums[0]}{ops[0]}{nums[1]}){ops[1]}{nums[2]}"
        ids = tok.encode_expression(e)
        assert ids == bert.encode(e, add_special_tokens=False).ids, e
        assert tok.unk_id not in ids and tok.decode_expression(ids) == e
    assert tok.expression_pieces("1250*100**2") == ["12", "##5", "##0", "*", "100", "**", "2"]
    assert tok.encode_expression("2**3")[1] == tok.token_to_id["**"]  # one token, not "*", "*"
    digits = WordPieceTokenizer(path, expression_tokens="digits")
    assert digits.expression_pieces("1250*100") == ["1", "2", "5", "0", "*", "1", "0", "0"]
    with pytest.raises(ValueError, match="expression_tokens"):
        WordPieceTokenizer(path, expression_tokens="bpe")


def test_char_wordpiece_vocabulary_from_the_data():
    tok = CharTokenizer.build(["共有35个头，35只脚", "卖了350元", "共有7个"], expression_tokens="wordpiece",
                              equations=["35*4", "700/2"], min_count=2)
    # "35" seen three times is a word; "350" once is not; single digits are expression pieces
    assert "35" in tok.token_to_id and "350" not in tok.token_to_id and "##0" in tok.token_to_id
    assert tok.expression_pieces("350/35+7") == ["35", "##0", "/", "35", "+", "7"]
    # a number tokenises the same in question and equation, so the decoder can copy it
    assert tok.encode_question("有350个")[1:3] == tok.encode_expression("350")
    assert tok.id_to_token[tok.char_start] == "个" and all(
        not t.startswith("##") and t not in ("35",) for t in tok.id_to_token[tok.char_start:])
    plain = CharTokenizer.build(["共有35个头"])
    assert plain.char_start == len(SPECIALS) + len(EXPRESSION_PIECES) + len(SLOTS)
    assert plain.expression_pieces("350") == ["3", "5", "0"]
    with pytest.raises(ValueError, match="expression_tokens"):
        CharTokenizer.build(["q"], expression_tokens="chars")


@pytest.mark.parametrize("mode", ["digits", "wordpiece"])
def test_random_expressions_roundtrip_both_modes(mode):
    rng = random.Random(0)
    tok = CharTokenizer.build(["有35个和120个"], expression_tokens=mode, equations=["1000-35"])
    for _ in range(200):
        e = "".join(rng.choice(["1", "23", "4.5", "35", "1200", "+", "-", "*", "/", "**", "(", ")", "[N1]"])
                    for _ in range(12))
        ids = tok.encode_expression(e)
        assert tok.unk_id not in ids and tok.decode_expression(ids) == e
