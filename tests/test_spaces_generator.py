"""spaces.generator and spaces.vocab: the LCS alignment, EMA, encoding, the word vocabulary.
(Copy labels, noise and the loss: tests/test_spaces_generator_data.py.)"""

import itertools
import random

import jax.numpy as jnp
import numpy as np
import pytest

from spaces.generator import ema_update, encode_pair, encode_pairs, lcs_alignment
from spaces.metrics import lcs_length
from spaces.vocab import Vocab, init_word_embeddings


def test_lcs_alignment_is_a_longest_common_subsequence():
    r = random.Random(0)
    for _ in range(300):
        a = [r.choice("abcde") for _ in range(r.randint(0, 100))]
        b = [r.choice("abcde") for _ in range(r.randint(0, 70))]
        pairs = lcs_alignment(a, b)
        assert len(pairs) == lcs_length(a, b)
        assert all(a[i] == b[j] for i, j in pairs)
        assert all(i1 < i2 and j1 < j2 for (i1, j1), (i2, j2) in itertools.pairwise(pairs))


def test_ema_update_closed_form():
    ema = {"w": jnp.ones(3)}
    for _ in range(5):
        ema = ema_update(ema, {"w": jnp.zeros(3)}, 0.9)
    np.testing.assert_allclose(ema["w"], 0.9 ** 5 * np.ones(3), rtol=1e-6)


def test_encode_pair_truncates_source_from_the_left():
    vocab = Vocab.build(["原告张三被告李四借款元"])
    ids, n = encode_pair(vocab, "原告张三被告李四", "张三借款", max_source=4, max_target=10)
    assert vocab.decode(ids[1:5]) == "被告李四" and ids[0] == vocab.cls_id and ids[5] == vocab.sep_id and n == 6
    assert vocab.decode(ids[6:]) == "张三借款" and ids[-1] == vocab.sep_id
    arrays = encode_pairs(vocab, ["原告张三", "被告"], ["张三", "李四借款"], 6, 3)
    assert arrays["ids"].shape == (2, 6 + 2 + 3 + 1) and arrays["source_len"].tolist() == [6, 4]
    assert arrays["segments"][1].tolist() == [0] * 4 + [1] * 4 + [0] * 4  # 李四借 [SEP], then padding
    assert encode_pairs(vocab, ["原告"], None, 6, 0)["ids"].shape == (1, 8)


def test_word_vocab_and_embedding_initialisation():
    chars = Vocab.build(["中华人民共和国民事诉讼法"] * 3)
    words = chars.with_words(["中华人民共和国民事诉讼法"] * 6, min_count=5)
    assert words.word_level and len(words) > len(chars)
    pieces = words.pieces("中华人民共和国民事诉讼法")
    assert any(len(p) > 1 for p in pieces) and "".join(pieces) == "中华人民共和国民事诉讼法"
    assert words.decode(words.encode("中华人民共和国")) == "中华人民共和国"
    emb = np.random.default_rng(0).normal(size=(len(chars), 4)).astype(np.float32)
    new = init_word_embeddings(emb, chars, words)
    np.testing.assert_array_equal(new[:len(chars)], emb)
    for i in range(len(chars), len(words)):
        w = words.tokens[i]
        np.testing.assert_allclose(new[i], emb[[chars.index[c] for c in w]].mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        init_word_embeddings(emb[:3], chars, words)


def test_word_vocab_segments_with_the_user_dictionary(tmp_path):
    path = tmp_path / "user_dict.txt"
    path.write_text("借贷纠纷案 2000 n\n", encoding="utf-8")
    texts = ["原告与被告借贷纠纷案"] * 5
    chars = Vocab.build(texts)
    assert "借贷纠纷案" not in chars.with_words(texts).index
    words = chars.with_words(texts, user_dict=str(path))
    assert "借贷纠纷案" in words.index and "借贷纠纷案" in words.pieces("被告借贷纠纷案")
    with pytest.raises(ValueError, match=r"missing_dict\.txt"):
        chars.with_words(texts, user_dict=str(tmp_path / "missing_dict.txt"))
