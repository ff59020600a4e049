"""spaces.generator and spaces.vocab: BIO labels, noise, the loss against hand computation, EMA, encoding."""

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shared import unilm
from shared.sparse_softmax import sparse_softmax_cross_entropy
from spaces.generator import (B, I, O, CopyGenerator, add_noise, bio_labels, ema_update, encode_pair, encode_pairs,
                              generator_loss, lcs_alignment)
from spaces.metrics import lcs_length
from spaces.vocab import Vocab, init_word_embeddings


def test_bio_labels_hand_example():
    # target x b c d z f g f against source a b c d e f g: runs "bcd" and "fg"; the last f restarts
    assert bio_labels("abcdefg", "xbcdzfgf") == [O, B, I, I, O, B, I, O]
    assert bio_labels("abc", "") == [] and bio_labels("", "ab") == [O, O]
    assert bio_labels("abab", "abab") == [B, I, I, I]


def test_lcs_alignment_is_a_longest_common_subsequence():
    r = random.Random(0)
    for _ in range(300):
        a = [r.choice("abcde") for _ in range(r.randint(0, 100))]
        b = [r.choice("abcde") for _ in range(r.randint(0, 70))]
        pairs = lcs_alignment(a, b)
        assert len(pairs) == lcs_length(a, b)
        assert all(a[i] == b[j] for i, j in pairs)
        assert all(i1 < i2 and j1 < j2 for (i1, j1), (i2, j2) in zip(pairs, pairs[1:]))


def test_add_noise():
    ids = jnp.asarray(np.random.default_rng(0).integers(5, 50, (64, 40)), jnp.int32).at[:, 0].set(2).at[:, 30:].set(0)
    key = jax.random.PRNGKey(0)
    assert (add_noise(ids, key, 0.0, (0, 2, 3)) == ids).all()
    noisy = np.asarray(add_noise(ids, key, 0.15, (0, 1, 2, 3, 4)))
    changed = noisy != np.asarray(ids)
    assert (noisy[:, 0] == 2).all() and (noisy[:, 30:] == 0).all()  # specials and padding untouched
    for row, new in zip(np.asarray(ids), noisy):  # replacements come from the same sequence
        assert set(new.tolist()) <= set(row.tolist())
    assert 0.08 < changed[:, 1:30].mean() < 0.16  # 15% replaced, some by an equal token


def _tiny(vocab_size=30):
    lm = unilm.create(unilm.TINY, vocab_size=vocab_size, max_position=32, seed=0)
    return CopyGenerator(lm, rngs=nnx.Rngs(1))


def _batch():
    ids = jnp.asarray([[2, 7, 8, 9, 3, 8, 9, 11, 3, 0], [2, 12, 13, 3, 13, 14, 3, 0, 0, 0]], jnp.int32)
    seg = jnp.asarray([[0] * 5 + [1] * 5, [0] * 4 + [1] * 6], jnp.int32)
    copy = jnp.asarray([[0] * 5 + [B, I, O, O, O], [0] * 4 + [B, O, O, O, O, O]], jnp.int32)
    return {"ids": ids, "segments": seg, "copy": copy}


def test_generator_loss_matches_hand_computation():
    model, batch = _tiny(), _batch()
    loss, metrics = generator_loss(sparse_k=5, copy_weight=2.0, noise=0.0)(model, batch, jax.random.PRNGKey(0))
    logits, copy = model(batch["ids"], batch["segments"])
    lm_terms, cp_terms = [], []
    for b in range(2):
        for t in range(9):
            if batch["segments"][b, t + 1] == 1 and batch["ids"][b, t + 1] != 0:
                lm_terms.append(sparse_softmax_cross_entropy(logits[b, t], batch["ids"][b, t + 1], 5))
                cp_terms.append(-jax.nn.log_softmax(copy[b, t])[batch["copy"][b, t + 1]])
    assert len(lm_terms) == 7
    np.testing.assert_allclose(loss, np.mean(lm_terms) + 2 * np.mean(cp_terms), rtol=1e-5)
    np.testing.assert_allclose(metrics["copy_loss"], np.mean(cp_terms), rtol=1e-5)
    # sparse with k = V is the dense loss; copy_weight 0 drops the copy term
    dense, _ = generator_loss(sparse_k=0, copy_weight=0.0, noise=0.0)(model, batch, jax.random.PRNGKey(0))
    full, _ = generator_loss(sparse_k=30, copy_weight=0.0, noise=0.0)(model, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(dense, full, rtol=1e-5)
    grads = nnx.grad(lambda m: generator_loss(noise=0.15)(m, batch, jax.random.PRNGKey(1))[0])(model)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_ema_update_closed_form():
    ema = {"w": jnp.ones(3)}
    for _ in range(5):
        ema = ema_update(ema, {"w": jnp.zeros(3)}, 0.9)
    np.testing.assert_allclose(ema["w"], 0.9 ** 5 * np.ones(3), rtol=1e-6)


def test_encode_pair_truncates_source_from_the_left():
    vocab = Vocab.build(["原告张三被告李四借款元"])
    ids, seg, cp = encode_pair(vocab, "原告张三被告李四", "张三借款", max_source=4, max_target=10)
    assert vocab.decode(ids[1:5]) == "被告李四" and ids[0] == vocab.cls_id and ids[5] == vocab.sep_id
    assert seg == [0] * 6 + [1] * 5 and len(cp) == len(ids)
    assert cp[6:] == [O, O, O, O, O]  # 张三 was cut from the source, so nothing is copied
    ids, seg, cp = encode_pair(vocab, "原告张三被告李四", "张三借款", max_source=10, max_target=10)
    assert cp[10:] == [B, I, O, O, O]
    arrays = encode_pairs(vocab, ["原告张三", "被告"], ["张三", "李四借款"], 6, 3)
    assert arrays["ids"].shape == (2, 6 + 2 + 3 + 1) and arrays["source_len"].tolist() == [6, 4]


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
    with pytest.raises(ValueError, match="missing_dict.txt"):
        chars.with_words(texts, user_dict=str(tmp_path / "missing_dict.txt"))
