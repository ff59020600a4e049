"""HF BERT loading: our encoder reproduces transformers' hidden states / MLM logits (fixture, no torch)."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from shared import hf_bert, unilm

FIX = pathlib.Path(__file__).parent / "fixtures" / "hf_tiny_bert"


def _expected():
    return dict(np.load(FIX / "expected.npz"))


def test_matches_transformers_hidden_and_logits():
    e = _expected()
    model, info = hf_bert.load_hf_bert(FIX)
    assert info["missing"] == []
    valid = jnp.asarray(e["attention_mask"] == 1)
    logits, aux = model(jnp.asarray(e["input_ids"]), jnp.asarray(e["token_type_ids"]),
                        mask=unilm.padding_mask(valid), valid=valid)
    m = e["attention_mask"][..., None] == 1  # HF computes padded positions too; compare the valid ones
    np.testing.assert_allclose(np.where(m, aux["hidden"], 0), np.where(m, e["last_hidden"], 0), atol=1e-4)
    np.testing.assert_allclose(np.where(m, logits, 0), np.where(m, e["mlm_logits"], 0), atol=1e-4)


def test_simplified_vocab_slices_embeddings_and_bias():
    e = _expected()
    full, vocab = hf_bert.load_hf_bert_with_vocab(FIX)
    allowed = set("0123456789+-*/().")
    small, new_vocab = hf_bert.load_hf_bert_with_vocab(FIX, simplify=True, allowed_chars=allowed)
    assert new_vocab[:5] == list(hf_bert.SPECIAL_TOKENS)
    assert "[unused1]" not in new_vocab and "鸡" not in new_vocab and "##5" in new_vocab and "**" in new_vocab
    keep = [vocab.index(t) for t in new_vocab]
    np.testing.assert_array_equal(small.word.embedding[...], full.word.embedding[...][np.asarray(keep)])
    # logits of the small model = the kept columns of the full model's logits
    ids = np.array([[2, vocab.index("1"), vocab.index("+"), vocab.index("2"), 3]])
    small_ids = np.array([[new_vocab.index(vocab[i]) for i in ids[0]]])
    seg = np.zeros_like(ids)
    lf, _ = full(jnp.asarray(ids), jnp.asarray(seg))
    ls, _ = small(jnp.asarray(small_ids), jnp.asarray(seg))
    np.testing.assert_allclose(ls, np.asarray(lf)[..., np.asarray(keep)], atol=1e-5)
    del e


def test_bad_directory_errors(tmp_path):
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        hf_bert.load_hf_bert(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="convert_pytorch_bin_to_safetensors"):
        hf_bert.load_hf_bert(tmp_path)


def test_fixture_is_small():
    assert sum(p.stat().st_size for p in FIX.iterdir()) < 1_000_000
