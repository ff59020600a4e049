"""spaces.extractor: DGCNN properties (identity at init, receptive field, padding), loss, folds, BERT vectors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from shared import unilm
from spaces.extractor import (
    DGCNN,
    Extractor,
    GatedConv,
    extraction_loss,
    kfold_masks,
    masked_mean,
    select_clauses,
    unilm_clause_vectors,
)


def test_gated_conv_is_identity_at_init_and_zeroes_padding():
    block = GatedConv(8, 2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 8))
    mask = jnp.arange(10)[None, :] < jnp.asarray([[10], [6]])
    y = block(x, mask)
    np.testing.assert_allclose(y[0], x[0])
    np.testing.assert_allclose(y[1, :6], x[1, :6])
    assert (y[1, 6:] == 0).all()


def test_gated_conv_is_layer_normed_gated_residual():
    # SPACES: x + α·LayerNorm(h ⊙ σ(g)), [h; g] = Conv1D(x); LayerNorm starts at scale 1, offset 0
    block = GatedConv(8, 1, rngs=nnx.Rngs(0))
    block.alpha.value = jnp.asarray(0.7)
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 5, 8))
    mask = jnp.ones((1, 5), bool)
    h, g = jnp.split(block.conv(x), 2, axis=-1)
    z = h * jax.nn.sigmoid(g)
    want = x + 0.7 * (z - z.mean(-1, keepdims=True)) / jnp.sqrt(z.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(block(x, mask), want, rtol=1e-5, atol=1e-5)


def test_first_dense_layer_has_no_bias():
    model = DGCNN(4, 8, dropout=0.0, rngs=nnx.Rngs(0))
    assert model.dense.bias is None
    assert (model.dense(jnp.zeros((3, 4))) == 0).all()


def _dgcnn_with_alpha(alpha=0.5):
    model = DGCNN(4, 8, dropout=0.0, rngs=nnx.Rngs(0))
    for block in model.blocks:
        block.alpha.value = jnp.asarray(alpha)
    return model


def test_receptive_field_is_17_clauses_each_side():
    # kernel 3 with dilations 1, 2, 4, 8, 1, 1: radius 1 + 2 + 4 + 8 + 1 + 1 = 17
    model = _dgcnn_with_alpha()
    v = jax.random.normal(jax.random.PRNGKey(1), (1, 60, 4))
    mask = jnp.ones((1, 60), bool)
    base = model(v, mask)
    for dist, changes in ((17, True), (18, False), (30, False)):
        out = model(v.at[0, 10 + dist].add(1.0), mask)
        assert bool(jnp.abs(out[0, 10] - base[0, 10]) > 1e-6) == changes, dist


def test_padded_clauses_do_not_change_real_ones():
    model = _dgcnn_with_alpha()
    v = jax.random.normal(jax.random.PRNGKey(2), (1, 20, 4))
    mask = (jnp.arange(20) < 12)[None]
    a = model(v, mask)
    b = model(v.at[0, 12:].set(100.0), mask)
    np.testing.assert_allclose(a[0, :12], b[0, :12], rtol=1e-5, atol=1e-6)


def test_extraction_loss_is_masked_mean_bce_and_trains():
    model = Extractor(vocab_size=20, encoder_dim=8, dim=16, dropout=0.0, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 20, (6, 9, 5)).astype(np.int32)
    mask = np.arange(9)[None, :] < rng.integers(3, 10, (6, 1))
    labels = (ids[..., 0] < 8).astype(np.float32)  # learnable from the clause's first token
    batch = {"clause_ids": ids, "clause_mask": mask, "labels": labels, "weight": np.asarray([1, 1, 1, 1, 0, 1.0])}
    loss, _ = extraction_loss(model, batch, None)
    logits = model(batch)
    w = mask * batch["weight"][:, None]
    expected = (optax.sigmoid_binary_cross_entropy(logits, labels) * w).sum() / w.sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        opt.update(model, nnx.grad(lambda m: extraction_loss(m, batch, None)[0])(model))

    for _ in range(150):
        step(model, opt)
    _, metrics = extraction_loss(model, batch, None)
    assert metrics["accuracy"] > 0.95


def test_kfold_masks_partition_and_selection():
    masks = kfold_masks(23, 4, seed=0)
    assert masks.shape == (4, 23) and (masks.sum(0) == 1).all() and set(masks.sum(1)) <= {5, 6}
    with pytest.raises(ValueError, match="k must"):
        kfold_masks(3, 4)
    assert select_clauses(np.asarray([0.1, 0.3, 0.25, 0.9]), 3) == [1, 2]
    assert select_clauses(np.asarray([0.1, 0.15, 0.05, 0.9]), 3) == []  # none above 0.2: nothing (SPACES)
    with pytest.raises(ValueError, match="n_clauses"):
        select_clauses(np.asarray([0.5]), -1)


def test_unilm_clause_vectors_are_per_clause_masked_means():
    model = unilm.create(unilm.TINY, vocab_size=50, seed=0)
    ids = np.asarray([[2, 7, 8, 3, 0, 0], [2, 9, 10, 11, 12, 3], [2, 7, 8, 3, 0, 0]], np.int32)
    vec = unilm_clause_vectors(model, ids, batch_size=2)
    assert vec.shape == (3, 64)
    np.testing.assert_allclose(vec[0], vec[2], rtol=1e-5, atol=1e-6)  # independent of batch neighbours
    valid = jnp.asarray(ids[1:2] != 0)
    h = model.encode(jnp.asarray(ids[1:2]), jnp.zeros((1, 6), jnp.int32), mask=valid[:, None, :], valid=valid)
    np.testing.assert_allclose(vec[1], masked_mean(h, valid)[0], rtol=1e-5, atol=1e-6)


def test_full_size_extractor_shapes():
    def build():
        return Extractor(vector_dim=768, dim=384, rngs=nnx.Rngs(0))

    model = nnx.eval_shape(build)
    out = jax.eval_shape(lambda m: m({"vectors": jnp.zeros((2, 256, 768)), "clause_mask": jnp.ones((2, 256), bool)}),
                         model)
    assert out.shape == (2, 256)
