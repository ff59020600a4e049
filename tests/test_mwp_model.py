"""Tests for the solver's use of the shared model: the noisy-source loss wrapper and `make_decoder`
(KV-cached `shared.decoding.unilm_generate`) against naive greedy re-decoding with `shared.unilm.UniLM`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mwp.solver import make_decoder, noisy_source_loss
from shared import train, unilm

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


def _corrupted_ids(monkeypatch, noise, low, high, ids, seg, rng):
    """The ids that `noisy_source_loss` hands to `seq2seq_loss` (which is replaced by a recorder)."""
    seen = []
    monkeypatch.setattr(unilm, "seq2seq_loss", lambda model, batch, rng: seen.append(batch["ids"]) or (0.0, {}))
    noisy_source_loss(noise, low, high)(None, {"ids": ids, "segments": seg}, rng)
    return np.asarray(seen[0])


def test_noisy_source_replaces_only_source_characters_at_the_configured_rate(monkeypatch):
    """Properties of the corruption, not its key derivation: target tokens and ids outside [low, high)
    never change; an eligible source id is redrawn with probability `noise`, uniformly over [low, high)
    (so it changes with probability noise·(1 − 1/(high − low))), within 4.5 binomial standard deviations;
    the same rng gives the same corruption, another rng another one."""
    rng_np = np.random.default_rng(0)
    ids = jnp.asarray(rng_np.integers(0, 30, size=(64, 96)), jnp.int32)  # ids < 10 are special, ≥ 20 other
    seg = jnp.asarray(np.arange(96)[None, :] >= 64, jnp.int32).repeat(64, axis=0)  # last third: target
    noise, low, high = 0.3, 10, 20
    out = _corrupted_ids(monkeypatch, noise, low, high, ids, seg, jax.random.PRNGKey(1))
    ids, seg = np.asarray(ids), np.asarray(seg)
    eligible = (seg == 0) & (ids >= low) & (ids < high)
    np.testing.assert_array_equal(out[~eligible], ids[~eligible])
    assert out[eligible].min() >= low and out[eligible].max() < high
    changed = out[eligible] != ids[eligible]
    p, n = noise * (1 - 1 / (high - low)), eligible.sum()
    assert abs(changed.mean() - p) < 4.5 * np.sqrt(p * (1 - p) / n), changed.mean()
    counts = np.bincount(out[eligible][changed] - low, minlength=high - low) / changed.sum()
    assert np.abs(counts - 0.1).max() < 4.5 * np.sqrt(0.1 * 0.9 / changed.sum())  # uniform replacements
    again = _corrupted_ids(monkeypatch, noise, low, high, jnp.asarray(ids), jnp.asarray(seg), jax.random.PRNGKey(1))
    np.testing.assert_array_equal(again, out)
    other = _corrupted_ids(monkeypatch, noise, low, high, jnp.asarray(ids), jnp.asarray(seg), jax.random.PRNGKey(2))
    assert (other != out).sum() > 0.1 * changed.sum()


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


@pytest.mark.parametrize("kwargs, expected", [({}, True), ({"drop_finished": False}, False)])
def test_make_decoder_uses_the_baselines_beam_search(model, monkeypatch, kwargs, expected):
    """mwp decodes with drop_finished=True (finished non-best beams dropped, as the baseline) unless told."""
    from shared import decoding

    seen = []

    def recording(model, source, lens, *, max_new, **kw):  # records the option; no model run
        seen.append(kw.get("drop_finished", False))
        zeros = jnp.zeros((source.shape[0], 2))
        return decoding.DecodeResult(jnp.zeros((source.shape[0], 2, max_new), jnp.int32), zeros, zeros, zeros > 0)

    monkeypatch.setattr(decoding, "unilm_generate", recording)
    graphdef, params, rest = train.split_model(model)
    make_decoder(graphdef, 2, 3, SEP, **kwargs)(params, rest, jnp.array([[2, 5, 3]]), jnp.array([3]))
    assert seen == [expected]
