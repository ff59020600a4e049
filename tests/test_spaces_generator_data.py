"""spaces.generator_data and the copy labels: SPACES' per-draw noise, LCS copy labels on the noised
source, the oracle/extracted draw, and the loss that reads them."""

import random

import grain
import jax
import numpy as np
import pytest
from flax import nnx

from shared import unilm
from spaces.generator import B, CopyGenerator, I, O, copy_labels, generator_loss, lcs_alignment
from spaces.generator_data import EXTRACTED, ORACLE, encode_generator_examples, make_train_transform, noise_tokens
from spaces.vocab import Vocab


def _bert4keras_lcs(source, target):
    """bert4keras.snippets.longest_common_subsequence, written out with a full DP table."""
    c = np.zeros((len(source) + 1, len(target) + 1), int)
    for i in range(1, len(source) + 1):
        for j in range(1, len(target) + 1):
            c[i, j] = c[i - 1, j - 1] + 1 if source[i - 1] == target[j - 1] else max(c[i, j - 1], c[i - 1, j])
    pairs, i, j = [], len(source), len(target)
    while len(pairs) < c[-1, -1]:
        if source[i - 1] == target[j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif c[i, j - 1] > c[i - 1, j]:
            j -= 1
        else:
            i -= 1
    return pairs[::-1]


def test_lcs_alignment_traces_back_as_bert4keras():
    assert lcs_alignment("ab", "ba") == [(0, 1)]  # a tie: bert4keras steps back in the source
    r = random.Random(0)
    for _ in range(200):
        a = [r.choice("abcd") for _ in range(r.randint(0, 80))]
        b = [r.choice("abcd") for _ in range(r.randint(0, 60))]
        assert lcs_alignment(a, b) == _bert4keras_lcs(a, b)


def test_copy_labels_on_both_sides():
    # source a b c d e f g, target x b c d z f g f: runs "bcd" and "fg" on both sides; the last f is O
    src, tgt = copy_labels("abcdefg", "xbcdzfgf")
    assert src == [O, B, I, I, O, B, I] and tgt == [O, B, I, I, O, B, I, O]
    assert copy_labels("", "ab") == ([], [O, O]) and copy_labels("abab", "abab") == ([B, I, I, I], [B, I, I, I])


def _vocab():
    return Vocab.build(["甲乙丙丁戊己庚辛"])


def _example(vocab):
    # extracted: 甲乙丙, oracle: 丁戊; target 乙丙己
    return {k: v[0] for k, v in encode_generator_examples(vocab, ["甲乙丙"], ["丁戊"], ["乙丙己"], 6, 4).items()}


def test_encode_generator_examples_layout_and_errors():
    vocab = _vocab()
    ex = encode_generator_examples(vocab, ["甲乙丙", "甲"], ["丁戊", "乙"], ["乙丙己", "庚辛"], 6, 4)
    assert ex["ids"].shape == (2, 2, 6 + 4 + 3) and ex["source_len"].tolist() == [[5, 4], [3, 3]]
    row = ex["ids"][0, EXTRACTED]
    assert row[0] == vocab.cls_id and vocab.decode(row[1:4]) == "甲乙丙" and row[4] == vocab.sep_id
    assert vocab.decode(row[5:]) == "乙丙己" and row[8] == vocab.sep_id and (row[9:] == vocab.pad_id).all()
    assert vocab.decode(ex["ids"][0, ORACLE][1:3]) == "丁戊"
    with pytest.raises(ValueError, match="one entry per document"):
        encode_generator_examples(vocab, ["甲"], [], ["乙"], 6, 4)


def test_transform_without_noise_is_the_hand_computed_layout():
    vocab = _vocab()
    ex = _example(vocab)
    fn = make_train_transform(pad_id=vocab.pad_id, noise=0.0, oracle_fraction=0.0)
    out = fn(ex, np.random.default_rng(0))
    assert (out["inputs"] == out["ids"]).all() and (out["ids"] == ex["ids"][EXTRACTED]).all()
    # source [CLS] 甲 乙 丙 [SEP], target 乙 丙 己 [SEP]: LCS 乙丙 + [SEP]
    # source labels O O B I B, target labels B I O B; output t < 5 reads source t, t >= 5 target t + 1 - 5
    assert out["copy"].tolist() == [O, O, B, I, B] + [I, O, B] + [0] * 5
    assert out["segments"].tolist() == [0] * 5 + [1] * 4 + [0] * 4
    out = make_train_transform(pad_id=vocab.pad_id, noise=0.0, oracle_fraction=1.0)(ex, np.random.default_rng(0))
    assert (out["ids"] == ex["ids"][ORACLE]).all()


def test_transform_noises_specials_and_labels_the_noised_source():
    vocab = _vocab()
    ex = _example(vocab)
    fn = make_train_transform(pad_id=vocab.pad_id, noise=0.5, oracle_fraction=0.0)
    clean = ex["ids"][EXTRACTED][:9]
    changed = np.zeros(9)
    for seed in range(300):
        out = fn(ex, np.random.default_rng(seed))
        noised = out["inputs"][:9]
        assert set(noised.tolist()) <= set(clean.tolist()) and (out["inputs"][9:] == vocab.pad_id).all()
        assert (out["ids"][:9] == clean).all()  # the LM targets stay clean
        src, tgt = copy_labels(noised[:5].tolist(), clean[5:].tolist())
        assert out["copy"][:8].tolist() == src + tgt[1:]
        changed += noised != clean
    # every position is replaced, [CLS] and [SEP] included, at 0.5 * (1 - P(drawing the same token))
    assert 0.35 < changed[0] / 300 < 0.6 and 0.35 < changed[4] / 300 < 0.6 and 0.35 < changed[8] / 300 < 0.6
    assert (noise_tokens(clean, np.random.default_rng(0), 0.0) == clean).all()


def test_transform_redraws_every_epoch_and_is_deterministic():
    vocab = _vocab()
    docs = encode_generator_examples(vocab, ["甲乙丙"] * 64, ["丁戊"] * 64, ["乙丙己"] * 64, 6, 4)
    source = [{k: v[d] for k, v in docs.items()} for d in range(64)]
    fn = make_train_transform(pad_id=vocab.pad_id, noise=0.15, oracle_fraction=0.5)

    def epochs(seed):
        ds = grain.MapDataset.source(source).repeat(2).random_map(fn, seed=seed)
        return [ds[k] for k in range(128)]

    a, b = epochs(3), epochs(3)
    assert all((x["inputs"] == y["inputs"]).all() for x, y in zip(a, b))  # same seed and position: same draw
    oracle = np.asarray([x["ids"][1] == docs["ids"][0, ORACLE, 1] for x in a]).reshape(2, 64)
    assert 0.3 < oracle.mean() < 0.7  # the oracle input half of the time
    assert (oracle[0] != oracle[1]).any()  # and drawn again in the second epoch


def test_transform_bad_input():
    with pytest.raises(ValueError, match="noise"):
        make_train_transform(pad_id=0, noise=1.0)
    with pytest.raises(ValueError, match="oracle_fraction"):
        make_train_transform(pad_id=0, oracle_fraction=1.5)
    fn = make_train_transform(pad_id=0)
    with pytest.raises(ValueError, match="source length"):
        fn({"ids": np.zeros((2, 6), np.int32), "source_len": np.zeros(2, np.int32)}, np.random.default_rng(0))


def test_generator_loss_matches_hand_computation():
    vocab = _vocab()
    ex = encode_generator_examples(vocab, ["甲乙丙", "丁"], ["丁戊", "戊己"], ["乙丙己", "庚"], 6, 4)
    fn = make_train_transform(pad_id=vocab.pad_id, noise=0.3, oracle_fraction=0.5)
    rows = [fn({k: v[d] for k, v in ex.items()}, np.random.default_rng(d)) for d in range(2)]
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    lm = unilm.create(unilm.TINY, vocab_size=len(vocab), max_position=16, seed=0)
    model = CopyGenerator(lm, rngs=nnx.Rngs(1))
    loss, metrics = generator_loss(sparse_k=5, copy_weight=2.0)(model, batch, jax.random.PRNGKey(0))
    logits, copy = (np.asarray(x, np.float64) for x in model(batch["inputs"], batch["segments"]))
    lm_terms, cp_terms = [], []
    for b in range(2):
        length = int((batch["ids"][b] != vocab.pad_id).sum())
        for t in range(length - 1):
            if batch["segments"][b, t + 1] == 1:  # sparse CE: log Σ_{top 5} e^s − s_y
                z = logits[b, t]
                lm_terms.append(np.log(np.exp(np.sort(z)[-5:]).sum()) - z[batch["ids"][b, t + 1]])
            c = copy[b, t]
            cp_terms.append(np.log(np.exp(c).sum()) - c[batch["copy"][b, t]])
    assert len(cp_terms) == int((batch["ids"] != vocab.pad_id).sum()) - 2  # every non-padding output position
    assert len(lm_terms) == int(batch["segments"].sum())  # the target tokens only
    np.testing.assert_allclose(metrics["copy_loss"], np.mean(cp_terms), rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean(lm_terms) + 2 * np.mean(cp_terms), rtol=1e-5)
    # sparse with k = V is the dense loss; copy_weight 0 drops the copy term
    dense, _ = generator_loss(sparse_k=0, copy_weight=0.0)(model, batch, jax.random.PRNGKey(0))
    full, _ = generator_loss(sparse_k=len(vocab), copy_weight=0.0)(model, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(dense, full, rtol=1e-5)
