"""Tests for the solver's use of the shared model: the noisy-source loss wrapper and `make_decoder`
(KV-cached `shared.decoding.unilm_generate`) against naive greedy re-decoding with `shared.unilm.UniLM`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shared import train, unilm
from mwp.solver import make_decoder, noisy_source_loss

SEP = 3


@pytest.fixture(scope="module")
def model():
    return unilm.create("tiny", seed=0, vocab_size=20, hidden=32, layers=2, heads=2, intermediate=64, max_position=16)


def test_noisy_source_loss_reduces_to_known_cases(model):
    ids = jnp.array([[2, 12, 5, 13, 3, 12, 8, 3]])
    seg = jnp.array([[0, 0, 0, 0, 0, 1, 1, 1]])
    batch = {"ids": ids, "segments": seg}
    rng = jax.random.PRNGKey(0)
    clean, _ = unilm.seq2seq_loss(model, batch, rng)
    np.testing.assert_allclose(noisy_source_loss(0.0, 10, 20)(model, batch, rng)[0], clean, rtol=1e-6)
    # a one-id range makes every replacement the identity (the target's 12 is never touched either way)
    np.testing.assert_allclose(noisy_source_loss(1.0, 12, 13)(model, batch, rng)[0], clean, rtol=1e-6)
    noisy = noisy_source_loss(1.0, 10, 20)(model, batch, rng)[0]
    assert np.isfinite(float(noisy)) and not np.allclose(noisy, clean)
    # the noise only touches the source: the loss equals the clean loss of the corrupted batch
    flip_all = noisy_source_loss(1.0, 10, 20)
    k1, k2 = jax.random.split(jax.random.fold_in(rng, 1))
    rand = jax.random.randint(k2, ids.shape, 10, 20, dtype=ids.dtype)
    corrupted = jnp.where((seg == 0) & (ids >= 10), rand, ids)
    np.testing.assert_allclose(flip_all(model, batch, rng)[0],
                               unilm.seq2seq_loss(model, {"ids": corrupted, "segments": seg}, rng)[0], rtol=1e-6)


def _naive_greedy(forward, source, max_new, t=16):
    """Greedy decoding by re-running the whole (padded) sequence each step."""
    seq, out = list(source), []
    for _ in range(max_new):
        ids = jnp.array([seq + [0] * (t - len(seq))])
        seg = jnp.array([[0] * len(source) + [1] * (t - len(source))])
        token = int(forward(ids, seg)[0, len(seq) - 1].argmax())
        out.append(token)
        if token == SEP:
            break
        seq.append(token)
    return out


def test_make_decoder_matches_naive_greedy(model):
    sources = [[2, 5, 6, 7, 3], [2, 9, 3]]
    src = jnp.array([s + [0] * (5 - len(s)) for s in sources])
    lens = jnp.array([len(s) for s in sources])
    graphdef, params, rest = train.split_model(model)
    out = make_decoder(graphdef, 1, 6, SEP)(params, rest, src, lens)
    assert out.shape == (2, 6)
    forward = nnx.jit(lambda m, i, s: m(i, s)[0])
    for i, s in enumerate(sources):
        expect = _naive_greedy(lambda a, b: forward(model, a, b), s, 6)
        assert list(np.asarray(out[i, :len(expect)])) == expect
    out3 = make_decoder(graphdef, 3, 6, SEP)(params, rest, src, lens)
    assert out3.shape == (2, 6) and int(out3.max()) < 20
