"""spaces.copy_decoding: the B/I/O constraint against a direct n-gram-set transcription, and in beam search."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared import unilm
from spaces.copy_decoding import copy_processor, generate, initial_carry, top_k_logits
from spaces.generator import B, CopyGenerator, O


def _reference_allowed(content, outputs, n):
    """SPACES' rule with n-gram sets: the tokens following the last n-1 outputs somewhere in the source;
    fall back to every source token (n = 1) if there is none. Returns (allowed set, n)."""
    if n > 1:
        prefix = tuple(outputs[len(outputs) - (n - 1):])
        nxt = {content[p + n - 1] for p in range(len(content) - n + 1) if tuple(content[p:p + n - 1]) == prefix}
        if nxt:
            return nxt, n
    return set(content), 1


@jax.jit
def _jitted_processor(source, copyable, logits, aux, carry):
    return copy_processor(lambda h: h, source, copyable, use_copy=True, top_k=0)(logits, aux, carry)


def test_processor_matches_ngram_sets():
    rng = np.random.default_rng(0)
    v, s, steps = 12, 14, 40
    for trial in range(12):
        content = rng.integers(5, 9, size=s - 2).tolist()  # few distinct tokens: many repeated n-grams
        source = jnp.asarray([[2] + content + [3]])
        copyable = jnp.asarray([[False] + [True] * (s - 2) + [False]])
        label_logits = rng.normal(size=(steps, 3)).astype(np.float32)
        proc = functools.partial(_jitted_processor, source, copyable)
        carry, token, outputs, n = initial_carry(1, s), 3, [], 0
        for t in range(steps):
            lab = jnp.asarray(label_logits[t:t + 1])
            logits, carry = proc(jnp.zeros((1, v)), {"hidden": lab, "token": jnp.asarray([token])}, carry)
            allowed = set(np.flatnonzero(np.isfinite(np.asarray(logits[0]))).tolist())
            label = int(np.argmax(label_logits[t] - np.asarray([0, 0, np.inf if n == 0 else 0])))  # no I after O
            if label == O:
                expect, n = set(range(v)), 0
            else:
                expect, n = _reference_allowed(content, outputs, 1 if label == B else n + 1)
            assert allowed == expect, (trial, t, label)
            token = int(rng.choice(sorted(allowed)))
            outputs.append(token)


def test_top_k_logits_keeps_exactly_k():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 50))
    y = top_k_logits(x, 10)
    assert (np.isfinite(np.asarray(y)).sum(-1) == 10).all()
    np.testing.assert_array_equal(np.asarray(jnp.argmax(y, -1)), np.asarray(jnp.argmax(x, -1)))


def _model(bias):
    lm = unilm.create(unilm.TINY, vocab_size=40, max_position=64, seed=1)
    model = CopyGenerator(lm, rngs=nnx.Rngs(2))
    model.copy.kernel.value = jnp.zeros_like(model.copy.kernel.value)
    model.copy.bias.value = jnp.asarray(bias, jnp.float32)
    return model


def test_beam_search_with_copy_constraint():
    source = jnp.asarray([[2, 10, 11, 12, 13, 14, 15, 3, 0, 0], [2, 20, 21, 22, 23, 3, 0, 0, 0, 0]])
    lens = jnp.asarray([8, 6])
    # label always B: every token comes from the row's own source content (never [SEP])
    res = generate(_model([0.0, 5.0, 0.0]), source, lens, beam_size=3, max_new=12, eos_id=3, top_k=10)
    for b, content in enumerate(({10, 11, 12, 13, 14, 15}, {20, 21, 22, 23})):
        assert set(np.asarray(res.tokens[b]).ravel().tolist()) <= content
    # label I whenever allowed (B first): tokens continue the source run, restarting only after its end
    res = generate(_model([0.0, 5.0, 10.0]), source, lens, beam_size=2, max_new=15, eos_id=3, top_k=0)
    for b, content in enumerate(([10, 11, 12, 13, 14, 15], [20, 21, 22, 23])):
        for seq in np.asarray(res.tokens[b]).tolist():
            for x, y in itertools.pairwise(seq):
                i = content.index(x)
                assert i == len(content) - 1 or y == content[i + 1]


def test_no_processor_settings_equal_the_baseline_beam_search():
    # spaces decodes as bert4keras does: finished non-best beams dropped (drop_finished=True); on this
    # model and input the default search (finished beams kept) returns a different best sequence
    from shared.decoding import unilm_generate

    model = CopyGenerator(unilm.create(unilm.TINY, vocab_size=8, max_position=64, seed=1), rngs=nnx.Rngs(2))
    source = jnp.asarray([[2, 5, 6, 7, 3, 0], [2, 6, 5, 3, 0, 0]])
    lens = jnp.asarray([5, 4])
    ours = generate(model, source, lens, beam_size=3, max_new=8, eos_id=3, use_copy=False, top_k=0)
    dropped = unilm_generate(model.lm, source, lens, beam_size=3, max_new=8, eos_id=3, drop_finished=True)
    kept = unilm_generate(model.lm, source, lens, beam_size=3, max_new=8, eos_id=3)
    np.testing.assert_array_equal(np.asarray(ours.tokens), np.asarray(dropped.tokens))
    assert (np.asarray(ours.tokens[:, 0]) != np.asarray(kept.tokens[:, 0])).any()
