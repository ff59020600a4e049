"""Tests for shared.sparse_softmax: closed forms, k = K reduces to dense, ties, gradients, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from shared.sparse_softmax import sparse_softmax, sparse_softmax_cross_entropy, top_k_mask


def _np_topk_set(row, k):
    # stable sort by (-value, index): the lower index wins ties
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))
    return set(order[:k])


def _logits(shape, seed=0, scale=3.0):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), shape)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_sparse_softmax_closed_form(k):
    x = _logits((5, 7))
    p = np.asarray(sparse_softmax(x, k))
    xn = np.asarray(x, np.float64)
    for b in range(5):
        sel = _np_topk_set(xn[b], k)
        expect = np.zeros(7)
        idx = sorted(sel)
        e = np.exp(xn[b, idx] - xn[b, idx].max())
        expect[idx] = e / e.sum()
        np.testing.assert_allclose(p[b], expect, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    assert ((p > 0).sum(-1) == k).all()


def test_sparse_softmax_k_equals_K_is_softmax():
    x = _logits((4, 11), seed=1)
    np.testing.assert_allclose(sparse_softmax(x, 11), jax.nn.softmax(x), rtol=1e-6, atol=1e-7)


def test_ties_give_exactly_k_entries_lowest_index_first():
    # many ties: integer logits
    x = jnp.array([[1.0, 3.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    p = np.asarray(sparse_softmax(x, 3))
    np.testing.assert_array_equal(p > 0, [[0, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    np.testing.assert_allclose(p[p > 0], 1.0 / 3.0, rtol=1e-6)
    m = np.asarray(top_k_mask(x, 2))
    np.testing.assert_array_equal(m, [[0, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    # the loss on tied logits: log(3 e^3) - s_t
    loss = sparse_softmax_cross_entropy(x, jnp.array([4, 5]), 3)
    np.testing.assert_allclose(loss, [np.log(3.0) + 3.0 - 0.0, np.log(3.0)], rtol=1e-6)
    g = jax.grad(lambda z: sparse_softmax_cross_entropy(z, jnp.array([4, 5]), 3).sum())(x)
    np.testing.assert_allclose(g, [[0, 1 / 3, 1 / 3, 1 / 3, -1, 0], [1 / 3, 1 / 3, 1 / 3, 0, 0, -1]], atol=1e-6)


def test_random_ties_exactly_k():
    x = jax.random.randint(jax.random.PRNGKey(3), (64, 20), 0, 4).astype(jnp.float32)
    for k in (1, 5, 13):
        p = np.asarray(sparse_softmax(x, k))
        assert ((p > 0).sum(-1) == k).all()
        for b in range(0, 64, 9):
            assert set(np.nonzero(p[b])[0]) == _np_topk_set(np.asarray(x[b]), k)


def test_axis_argument():
    x = _logits((3, 8, 2), seed=4)
    p0 = sparse_softmax(x, 3, axis=1)
    p1 = jnp.moveaxis(sparse_softmax(jnp.moveaxis(x, 1, -1), 3), -1, 1)
    np.testing.assert_allclose(p0, p1)
    np.testing.assert_allclose(p0.sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_sparse_ce_closed_form_and_nonnegative(k):
    x = _logits((16, 9), seed=5)
    y = jax.random.randint(jax.random.PRNGKey(6), (16,), 0, 9)
    loss = np.asarray(sparse_softmax_cross_entropy(x, y, k))
    xn = np.asarray(x, np.float64)
    for b in range(16):
        idx = sorted(_np_topk_set(xn[b], k))
        m = xn[b, idx].max()
        expect = m + np.log(np.exp(xn[b, idx] - m).sum()) - xn[b, int(y[b])]
        np.testing.assert_allclose(loss[b], expect, rtol=1e-5, atol=1e-5)
    assert (loss >= -1e-6).all()


def test_sparse_ce_k_equals_K_is_dense_ce_with_grad():
    x = _logits((8, 13), seed=7)
    y = jnp.arange(8) % 13
    dense = lambda z: optax.softmax_cross_entropy_with_integer_labels(z, y)  # noqa: E731
    sparse = lambda z: sparse_softmax_cross_entropy(z, y, 13)  # noqa: E731
    np.testing.assert_allclose(sparse(x), dense(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda z: sparse(z).sum())(x), jax.grad(lambda z: dense(z).sum())(x), atol=1e-6)


def test_sparse_ce_gradient_is_sparse_softmax_minus_onehot():
    x = _logits((10, 12), seed=8)
    y = jax.random.randint(jax.random.PRNGKey(9), (10,), 0, 12)
    w = jnp.linspace(0.5, 2.0, 10)
    g = jax.grad(lambda z: (w * sparse_softmax_cross_entropy(z, y, 4)).sum())(x)
    expect = w[:, None] * (sparse_softmax(x, 4) - jax.nn.one_hot(y, 12))
    np.testing.assert_allclose(g, expect, atol=1e-6)
    # gradient reaches only the top-k logits and the label's
    support = np.asarray(top_k_mask(x, 4)) | np.asarray(jax.nn.one_hot(y, 12) > 0)
    assert (np.asarray(g)[~support] == 0).all()

    # custom VJP agrees with autodiff through lax.top_k (no ties in random data)
    def ref(z):
        vals, _ = jax.lax.top_k(z, 4)
        return (w * (jax.nn.logsumexp(vals, -1) - jnp.take_along_axis(z, y[:, None], -1)[:, 0])).sum()

    np.testing.assert_allclose(g, jax.grad(ref)(x), atol=1e-6)


def test_sparse_softmax_jacobian_matches_autodiff_reference():
    x = _logits((3, 6), seed=10)
    v = jax.random.normal(jax.random.PRNGKey(11), (3, 6))

    def ref(z):
        mask = jax.lax.stop_gradient(top_k_mask(z, 3))
        return jax.nn.softmax(jnp.where(mask, z, -jnp.inf), axis=-1)

    np.testing.assert_allclose(sparse_softmax(x, 3), ref(x), rtol=1e-6, atol=1e-7)
    g = jax.grad(lambda z: jnp.sum(v * sparse_softmax(z, 3)))(x)
    np.testing.assert_allclose(g, jax.grad(lambda z: jnp.sum(v * ref(z)))(x), atol=1e-6)


# Stability (±1e4 logits, K = 50k, float32 and bfloat16): tests/test_shared_conformance.py.


def test_bad_input():
    x = _logits((4, 6))
    y = jnp.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match="k must satisfy"):
        sparse_softmax(x, 0)
    with pytest.raises(ValueError, match="k must satisfy"):
        sparse_softmax_cross_entropy(x, y, 7)
    with pytest.raises(ValueError, match="labels must lie in"):
        sparse_softmax_cross_entropy(x, jnp.array([0, 1, 6, 3]), 2)
    with pytest.raises(ValueError, match="labels must lie in"):
        sparse_softmax_cross_entropy(x, jnp.array([0, -1, 2, 3]), 2)
    with pytest.raises(ValueError, match="labels must have shape"):
        sparse_softmax_cross_entropy(x, jnp.array([0, 1]), 2)
    with pytest.raises(ValueError, match="static Python int"):
        jax.jit(lambda z, k: sparse_softmax(z, k))(x, 2)
    # under jit: shapes are checked, values are not (no error for traced labels)
    out = jax.jit(lambda z, t: sparse_softmax_cross_entropy(z, t, 2))(x, y)
    assert out.shape == (4,)


@pytest.mark.parametrize("num_classes", [2048, 5001])
def test_two_stage_top_k_equals_lax_top_k(num_classes):
    from shared.sparse_softmax import _top_k

    key = jax.random.PRNGKey(num_classes)
    cases = {
        "normal": jax.random.normal(key, (8, num_classes)),
        "ties": jnp.zeros((8, num_classes)).at[:, 3::977].set(1.0),
        "int": jax.random.randint(key, (8, num_classes), 0, 5).astype(jnp.float32),
    }
    for name, x in cases.items():
        x = x.at[0, -1].set(100.0).at[1, num_classes - 130].set(100.0)
        for k in (1, 10, 16):
            a_vals, a_idx = jax.lax.top_k(x, k)
            b_vals, b_idx = jax.jit(_top_k, static_argnums=1)(x, k)
            np.testing.assert_array_equal(a_vals, b_vals, err_msg=f"{name} k={k}")
            np.testing.assert_array_equal(a_idx, b_idx, err_msg=f"{name} k={k}")
