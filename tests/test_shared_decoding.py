"""Beam / greedy search: a hand-computable Markov-chain stub, processor hook, and cache == recompute."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shared import decoding, unilm

# tokens: 0 pad, 1 eos, 2 a, 3 b.  P(next | last token) rows; greedy picks a (0.5) then eos-free loop.
P = np.array([[0.25, 0.25, 0.25, 0.25],   # after pad (unused)
              [1.00, 0.00, 0.00, 0.00],   # after eos (unused)
              [0.01, 0.40, 0.19, 0.40],   # after a
              [0.01, 0.90, 0.05, 0.04]])  # after b
FIRST = np.array([0.01, 0.04, 0.50, 0.45])  # after the prefix


def markov_step(token, cache, step):
    del step
    return jnp.log(jnp.asarray(P, jnp.float32))[token], {"token": token}, cache


def run(beam, first=FIRST, **kw):
    first = jnp.log(jnp.asarray(first, jnp.float32))[None]
    fn = jax.jit(functools.partial(decoding.beam_search, markov_step, beam_size=beam, max_new=4, eos_id=1, **kw))
    return fn(first, {"dummy": jnp.zeros((1, 1))})


def test_greedy_hand_computed():
    r = run(1)
    # a (0.5) -> eos and b tie at 0.40: top_k takes the lower index, eos -> stop.
    np.testing.assert_array_equal(np.asarray(r.tokens[0, 0]), [2, 1, 0, 0])
    np.testing.assert_allclose(float(r.scores[0, 0]), np.log(0.5 * 0.4), rtol=1e-6)
    assert int(r.lengths[0, 0]) == 2 and bool(r.finished[0, 0])


def test_beam_finds_better_sequence_than_greedy():
    r = run(2)
    # b,eos: 0.45*0.9 = 0.405 > a,eos: 0.2 -> beam 2 finds it; search stops when best beam ended.
    np.testing.assert_array_equal(np.asarray(r.tokens[0, 0]), [3, 1, 0, 0])
    np.testing.assert_allclose(float(r.scores[0, 0]), np.log(0.45 * 0.9), rtol=1e-6)
    # second beam after step 2: candidates a->eos .2, a->b .2, b->eos .405; keeps a->eos (lower index)
    np.testing.assert_allclose(float(r.scores[0, 1]), np.log(0.2), rtol=1e-6)


def test_processor_forbids_token_and_carry_reordered():
    def forbid_eos_twice(logits, aux, carry):
        # carry counts the steps taken by this beam's history; forbid eos during the first 2 tokens
        logits = jnp.where((carry < 2)[:, None] & (jnp.arange(4) == 1)[None], -jnp.inf, logits)
        return logits, carry + 1

    r = run(1, processor=forbid_eos_twice, processor_carry=jnp.zeros((1,), jnp.int32))
    # a, then (a .19 | b .40) -> b, then eos .9
    np.testing.assert_array_equal(np.asarray(r.tokens[0, 0]), [2, 3, 1, 0])


def test_length_penalty_prefers_longer():
    first = [0.01, 0.30, 0.50, 0.19]  # eos right away: log .3 = -1.20; a, eos: log .2 = -1.61
    short = run(2, first=first)
    np.testing.assert_array_equal(np.asarray(short.tokens[0, 0]), [1, 0, 0, 0])
    # GNMT penalty ((5 + len) / 6)^5: -1.20 / 1 < -1.61 / 2.16 = -0.745, so a, eos wins
    long = run(2, first=first, length_penalty=5.0)
    np.testing.assert_array_equal(np.asarray(long.tokens[0, 0]), [2, 1, 0, 0])
    np.testing.assert_allclose(float(long.scores[0, 0]), np.log(0.2), rtol=1e-6)


def _tiny_model(rel=False):
    c = unilm.UniLMConfig(vocab_size=40, hidden=32, layers=2, heads=4, intermediate=64, max_position=64,
                          dropout=0.0, relative_position=rel, max_relative=8)
    return unilm.UniLM(c, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("rel,beam", [(False, 3), (True, 2)])
def test_cached_equals_recompute(rel, beam):
    model = _tiny_model(rel)
    src = jnp.array([[2, 5, 6, 7, 3, 0], [2, 9, 3, 0, 0, 0]], jnp.int32)
    src_len = jnp.array([5, 3])
    graphdef, state = nnx.split(model)

    @functools.partial(jax.jit, static_argnums=2)
    def gen(state, src, use_cache):
        m = nnx.merge(graphdef, state)
        return decoding.unilm_generate(m, src, src_len, beam_size=beam, max_new=6, eos_id=3, use_cache=use_cache)

    a, b = gen(state, src, True), gen(state, src, False)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_allclose(np.asarray(a.scores), np.asarray(b.scores), rtol=1e-4, atol=1e-4)


def test_drop_finished_hand_computed():
    # step 1 (beam 3): a .45, eos .30, b .24.  Kept, the finished "eos" (.30) stays best once a's and b's
    # extensions fall below it (b,eos .216; a,eos .18).  Dropped (the baseline), the beam shrinks to the
    # two open beams a, b and the best of their extensions is b,eos = .24 * .9 = .216.
    first = [0.01, 0.30, 0.45, 0.24]
    keep = run(3, first=first)
    np.testing.assert_array_equal(np.asarray(keep.tokens[0, 0]), [1, 0, 0, 0])
    np.testing.assert_allclose(float(keep.scores[0, 0]), np.log(0.30), rtol=1e-6)
    drop = run(3, first=first, drop_finished=True)
    np.testing.assert_array_equal(np.asarray(drop.tokens[0, 0]), [3, 1, 0, 0])
    np.testing.assert_allclose(float(drop.scores[0, 0]), np.log(0.24 * 0.9), rtol=1e-6)
    assert int(drop.lengths[0, 0]) == 2 and bool(drop.finished[0, 0])
    # width after step 1 was 2 (eos dropped), so only two of the three slots were ever refilled
    assert np.isneginf(np.asarray(drop.scores[0, 2]))


def _baseline_beam(first_logp, logp, k, max_new, eos):
    """bert4keras AutoRegressiveDecoder.beam_search (min_ends 1, minlen 1), restated in NumPy."""
    seqs, scores, width = [[]], np.zeros(1), k
    for _ in range(max_new):
        step = np.stack([first_logp if not s else logp[s[-1]] for s in seqs])  # [w, V]
        cand = (scores[:, None] + step).ravel()
        idx = np.argsort(-cand, kind="stable")[:width]
        seqs = [seqs[i // step.shape[1]] + [int(i % step.shape[1])] for i in idx]
        scores = cand[idx]
        best = int(np.argmax(scores))
        if seqs[best][-1] == eos:
            return seqs[best], scores[best]
        open_ = np.array([s[-1] != eos for s in seqs])
        seqs, scores, width = [s for s, o in zip(seqs, open_) if o], scores[open_], int(open_.sum())
    best = int(np.argmax(scores))
    return seqs[best], scores[best]


@pytest.mark.parametrize("beam", [1, 2, 3])
def test_drop_finished_matches_baseline_reference(beam):
    # 12 random Markov chains over 6 tokens (eos = 1) decoded as one batch: rows end at different
    # steps (frozen rows must stay put) and some run out of max_new (the best open beam is returned)
    rng = np.random.default_rng(beam)
    b, v, max_new = 12, 6, 5
    first = np.log(rng.dirichlet(np.ones(v), size=b)).astype(np.float32)
    chains = np.log(rng.dirichlet(np.full(v, 0.7), size=(b, v))).astype(np.float32)

    def step(token, cache, step):
        del step
        return jnp.asarray(chains)[cache["row"], token], None, cache

    out = jax.jit(functools.partial(decoding.beam_search, step, beam_size=beam, max_new=max_new, eos_id=1,
                                    drop_finished=True))(jnp.asarray(first), {"row": jnp.arange(b)})
    ended = 0
    for r in range(b):
        seq, score = _baseline_beam(first[r], chains[r], beam, max_new, 1)
        np.testing.assert_array_equal(np.asarray(out.tokens[r, 0, :len(seq)]), seq)
        np.testing.assert_allclose(float(out.scores[r, 0]), score, rtol=1e-5)
        assert int(out.lengths[r, 0]) == len(seq)
        ended += seq[-1] == 1
    assert 0 < ended < b  # both stopping paths were exercised
    if beam == 1:  # greedy: nothing to drop, both behaviours agree
        kept = jax.jit(functools.partial(decoding.beam_search, step, beam_size=1, max_new=max_new,
                                         eos_id=1))(jnp.asarray(first), {"row": jnp.arange(b)})
        np.testing.assert_array_equal(np.asarray(kept.tokens), np.asarray(out.tokens))
