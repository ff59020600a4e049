"""Forward-mode autodiff through `shared.sparse_softmax` (issue 24): its custom JVPs against the masked
dense softmax / cross-entropy (the same function with Ω_k held fixed), their transposes against the
reference VJPs, float64 Hessians, and `shared.transforms.gradient_norm_penalty` on the sparse CE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.sparse_softmax import sparse_softmax, sparse_softmax_cross_entropy, top_k_mask
from shared.transforms import gradient_norm_penalty


def _normal(seed, shape, dtype=jnp.float32, scale=1.0):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), shape, dtype)


def _masked(x, k, axis=-1):
    """The top-k set of the primal x, held fixed: a constant mask, so its derivatives are the sparse ones."""
    return jnp.where(top_k_mask(jax.lax.stop_gradient(x), k, axis), x, -jnp.inf)


def softmax_ref(x, k, axis=-1):
    return jax.nn.softmax(_masked(x, k, axis), axis=axis)


def ce_ref(x, labels, k):
    return jax.nn.logsumexp(_masked(x, k), axis=-1) - jnp.take_along_axis(x, labels[:, None], axis=-1)[:, 0]


@pytest.mark.parametrize("k, axis", [(1, -1), (4, -1), (4, 0), (9, -1)])
def test_sparse_softmax_jvp_linearize_and_transpose_match_masked_softmax(k, axis):
    x, dx, ct = _normal(0, (5, 9), scale=3.0), _normal(1, (5, 9)), _normal(2, (5, 9))

    @jax.jit
    def pairs(x, dx, ct):
        ours, ref = (lambda x: sparse_softmax(x, k, axis)), (lambda x: softmax_ref(x, k, axis))
        _, lin = jax.linearize(ours, x)
        return [(jax.jvp(ours, (x,), (dx,)), jax.jvp(ref, (x,), (dx,))),
                (lin(dx), jax.jvp(ref, (x,), (dx,))[1]),
                (jax.linear_transpose(lin, x)(ct), jax.vjp(ref, x)[1](ct))]

    for ours, ref in pairs(x, dx, ct):
        for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    y_dot = jax.jvp(lambda x: sparse_softmax(x, k, axis), (x,), (dx,))[1]
    np.testing.assert_allclose(jnp.sum(y_dot, axis=axis), 0.0, atol=1e-6)  # Σ p stays 1
    assert (jnp.where(top_k_mask(x, k, axis), 0.0, y_dot) == 0.0).all()  # exact zeros outside Ω_k


@pytest.mark.parametrize("k", [1, 5, 12])
def test_sparse_ce_jvp_and_float64_hessian_match_masked_cross_entropy(k):
    """k = 12 = K is the dense CE, whose Hessian is diag(p) − p pᵀ per example."""
    with jax.enable_x64(True):
        x, dx = _normal(0, (4, 12), jnp.float64, scale=3.0), _normal(1, (4, 12), jnp.float64)
        labels = jnp.array([0, 3, 11, 7])
        ours = jax.jit(lambda x: jax.jvp(lambda x: sparse_softmax_cross_entropy(x, labels, k), (x,), (dx,)))(x)
        ref = jax.jit(lambda x: jax.jvp(lambda x: ce_ref(x, labels, k), (x,), (dx,)))(x)
        for got, want in zip(ours, ref):
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

        def mean_ce(f):
            return lambda x: jnp.mean(f(x, labels, k))

        hess = jax.jit(jax.hessian(mean_ce(sparse_softmax_cross_entropy)))(x)  # forward-over-reverse
        np.testing.assert_allclose(hess, jax.jit(jax.hessian(mean_ce(ce_ref)))(x), rtol=1e-10, atol=1e-12)
        if k == 12:
            p = jax.nn.softmax(x)
            closed = jnp.stack([jnp.diag(r) - jnp.outer(r, r) for r in p]) / 4  # [B, K, K] blocks of the mean
            np.testing.assert_allclose(hess[jnp.arange(4), :, jnp.arange(4), :], closed, atol=1e-12)


def test_sparse_ce_jvp_keeps_bfloat16():
    x, dx = _normal(0, (3, 10), jnp.bfloat16), _normal(1, (3, 10), jnp.bfloat16)
    y, y_dot = jax.jvp(lambda x: sparse_softmax_cross_entropy(x, jnp.array([1, 2, 3]), 4), (x,), (dx,))
    assert y.dtype == y_dot.dtype == jnp.bfloat16


def test_gradient_norm_penalty_on_sparse_ce_matches_reverse_over_reverse():
    """∇(L + (ε/2)‖∇L‖²) by the penalty's forward-over-reverse vs reverse-over-reverse of the masked reference."""
    feats, labels = _normal(0, (16, 6)), jax.random.randint(jax.random.PRNGKey(1), (16,), 0, 20)
    w = _normal(2, (6, 20))

    def loss(ce):
        return lambda w: jnp.mean(ce(feats @ w, labels, 5))

    eps = 0.5
    value, grads = jax.jit(gradient_norm_penalty(loss(sparse_softmax_cross_entropy), eps))(w)

    def penalised_ref(w):
        g = jax.grad(loss(ce_ref))(w)
        return loss(ce_ref)(w) + 0.5 * eps * jnp.sum(g * g)

    ref_value, ref_grads = jax.jit(jax.value_and_grad(penalised_ref))(w)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grads, ref_grads, rtol=1e-4, atol=1e-6)
    assert jnp.linalg.norm(grads - jax.jit(jax.grad(loss(ce_ref)))(w)) > 1e-3  # the penalty term is not negligible
