"""UniLM encoder: mask, seq2seq information flow, relative positions, KV cache, bf16, sizes, training."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from shared import decoding, train, unilm

SMALL = unilm.UniLMConfig(vocab_size=30, hidden=32, layers=2, heads=4, intermediate=64, max_position=64, dropout=0.0)


def test_unilm_mask_hand_computed():
    seg = jnp.array([[0, 0, 1, 1, 0]])
    valid = jnp.array([[True, True, True, True, False]])
    m = np.asarray(unilm.unilm_mask(seg, valid)[0]).astype(int)
    want = np.array([[1, 1, 0, 0, 0],
                     [1, 1, 0, 0, 0],
                     [1, 1, 1, 0, 0],
                     [1, 1, 1, 1, 0],
                     [1, 1, 1, 1, 0]])  # padding query row: never read
    np.testing.assert_array_equal(m, want)


def test_seq2seq_information_flow():
    model = unilm.UniLM(SMALL, rngs=nnx.Rngs(0))
    enc = nnx.jit(lambda m, i, s: m.encode(i, s))
    ids = jnp.array([[2, 5, 6, 3, 7, 8, 9, 3]])
    seg = jnp.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    h = enc(model, ids, seg)
    # changing a later target token leaves the source and earlier targets unchanged
    h2 = enc(model, ids.at[0, 6].set(11), seg)
    np.testing.assert_allclose(h2[:, :6], h[:, :6], atol=1e-6)
    assert not np.allclose(h2[:, 6:], h[:, 6:], atol=1e-3)
    # changing a source token changes everything (source is bidirectional)
    h3 = enc(model, ids.at[0, 2].set(12), seg)
    assert not np.allclose(h3[:, 0], h[:, 0], atol=1e-3)
    # appended padding changes nothing
    hp = enc(model, jnp.pad(ids, ((0, 0), (0, 3))), jnp.pad(seg, ((0, 0), (0, 3))))
    np.testing.assert_allclose(hp[:, :8], h, atol=1e-5)


def test_relative_positions_are_shift_invariant():
    c = dataclasses.replace(SMALL, relative_position=True, max_relative=4)
    model = unilm.UniLM(c, rngs=nnx.Rngs(1))
    assert model.position is None
    ids = jnp.array([[2, 5, 6, 7, 8, 9, 10, 3]])
    seg = jnp.zeros_like(ids)
    pos = jnp.arange(8)[None]
    a = model.encode(ids, seg, positions=pos)
    b = model.encode(ids, seg, positions=pos + 1000)  # beyond max_position: fine without absolute embeddings
    np.testing.assert_allclose(a, b, atol=1e-5)
    t = unilm.relative_table(4, 6)
    np.testing.assert_allclose(t[4], np.tile([0.0, 1.0], 3), atol=1e-7)  # distance 0: sin 0, cos 0


def test_prefill_and_steps_equal_full_forward():
    model = unilm.UniLM(SMALL, rngs=nnx.Rngs(2))
    src = jnp.array([[2, 5, 6, 3], [2, 7, 3, 0]])
    src_len = jnp.array([4, 3])
    tgt = jnp.array([[8, 9, 10], [11, 12, 13]])

    @nnx.jit
    def run(model):
        cache = model.init_cache(2, 7)
        logits0, _, cache = model.prefill(src, jnp.zeros_like(src), cache)
        step_logits = []
        for t in range(3):
            lg, _, cache = model.decode_step(tgt[:, t], cache, position=src_len + t)
            step_logits.append(lg)
        return logits0, step_logits, cache

    logits0, step_logits, cache = run(model)
    fwd = nnx.jit(lambda m, i, s: m(i, s)[0])
    chex_shape = [x.shape for x in jax.tree.leaves(cache["layers"])]
    assert chex_shape == [(2, 7, 4, 8)] * 4
    for b in range(2):  # full forward of the packed sequence [source, target]
        n = int(src_len[b])
        ids = jnp.concatenate([src[b, :n], tgt[b]])[None]
        seg = jnp.concatenate([jnp.zeros(n, jnp.int32), jnp.ones(3, jnp.int32)])[None]
        full = fwd(model, ids, seg)
        np.testing.assert_allclose(logits0[b, :n], full[0, :n], atol=1e-4)
        for t in range(3):
            np.testing.assert_allclose(step_logits[t][b], full[0, n + t], atol=1e-4)


def test_bf16_compute_close_to_f32():
    model = unilm.UniLM(SMALL, rngs=nnx.Rngs(3))
    bf = unilm.UniLM(dataclasses.replace(SMALL, dtype="bfloat16"), rngs=nnx.Rngs(3))
    assert bf.word.embedding[...].dtype == jnp.float32
    ids = jnp.array([[2, 5, 6, 3, 7, 8]])
    seg = jnp.array([[0, 0, 0, 0, 1, 1]])
    a, _ = model(ids, seg)
    b, aux = bf(ids, seg)
    assert aux["hidden"].dtype == jnp.bfloat16 and b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, atol=0.15)


@pytest.mark.parametrize("name,params_m", [("base", 102.3), ("large", 325.5)])
def test_full_size_shapes(name, params_m):
    model = train.eval_shape_model(lambda rngs: unilm.UniLM(unilm.CONFIGS[name], rngs=rngs))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert abs(n / 1e6 - params_m) < 0.5, n  # BERT-base / large Chinese (vocab 21128) + MLM head, no pooler
    out = jax.eval_shape(lambda m: m(jnp.zeros((2, 192), jnp.int32), jnp.zeros((2, 192), jnp.int32))[0], model)
    assert out.shape == (2, 192, 21128)


def test_bad_config_and_length():
    with pytest.raises(ValueError, match="heads"):
        unilm.UniLMConfig(hidden=30, heads=4)
    model = unilm.UniLM(SMALL, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="max_position"):
        model.encode(jnp.ones((1, 65), jnp.int32), jnp.zeros((1, 65), jnp.int32))


def test_seq2seq_nll_hand_computed():
    logits = jnp.log(jnp.array([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [1 / 3] * 3]]))
    ids = jnp.array([[1, 2, 2, 0]])  # last is padding
    seg = jnp.array([[0, 0, 1, 1]])
    nll, n = unilm.seq2seq_nll(logits, ids, seg)
    # only position 1 -> token 2 (target, p=0.5) counts; token 3 is padding
    np.testing.assert_allclose(nll, [-np.log(0.5)], rtol=1e-5)
    np.testing.assert_array_equal(n, [1.0])


def _copy_batch(rng, b=32, n=4):
    x = rng.integers(5, 15, size=(b, n))
    ids = np.concatenate([np.full((b, 1), 2), x, np.full((b, 1), 3), x, np.full((b, 1), 3)], axis=1)
    seg = np.concatenate([np.zeros((b, n + 2)), np.ones((b, n + 1))], axis=1)
    return {"ids": jnp.asarray(ids, jnp.int32), "segments": jnp.asarray(seg, jnp.int32)}


def test_trains_on_copy_task_and_decodes():
    c = dataclasses.replace(SMALL, vocab_size=16, layers=2, max_position=16)
    model = unilm.UniLM(c, rngs=nnx.Rngs(0))
    tx = optax.adam(3e-3)
    graphdef, state = train.create_train_state(model, tx, jax.random.PRNGKey(0))
    step = jax.jit(train.make_step(train.nnx_loss(graphdef, unilm.seq2seq_loss), tx))
    rng = np.random.default_rng(0)
    for _ in range(300):
        state, metrics = step(state, _copy_batch(rng))
    assert float(metrics["loss"]) < 0.05, float(metrics["loss"])
    m = nnx.merge(graphdef, state.params, state.model_state)
    batch = _copy_batch(np.random.default_rng(1), b=8)
    src = batch["ids"][:, :6]
    out = decoding.unilm_generate(m, src, jnp.full((8,), 6), beam_size=2, max_new=6, eos_id=3)
    np.testing.assert_array_equal(np.asarray(out.tokens[:, 0, :5]), np.asarray(batch["ids"][:, 6:]))


def test_data_parallel_step_matches_single_device():
    model = unilm.UniLM(dataclasses.replace(SMALL, vocab_size=16, layers=1, max_position=16), rngs=nnx.Rngs(0))
    tx = optax.sgd(0.1)
    graphdef, state = train.create_train_state(model, tx, jax.random.PRNGKey(0))
    loss_fn = train.nnx_loss(graphdef, unilm.seq2seq_loss)
    batch = _copy_batch(np.random.default_rng(0), b=16)
    single, m1 = jax.jit(train.make_step(loss_fn, tx))(state, batch)
    mesh = train.make_mesh()
    assert mesh.devices.size == 8
    state8 = jax.device_put(state, train.state_sharding(state, mesh))
    multi, m8 = train.build_train_step(loss_fn, tx, mesh, state8)(state8, train.shard_batch(batch, mesh))
    np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), multi.params, single.params)
