"""Tests for nvae_jax layers and configs: DMoL normalisation, weight-norm invariance, power iteration."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nvae_jax import configs, layers


@pytest.mark.parametrize("channels", [1, 3])
def test_dmol_sums_to_one_over_all_pixel_values(channels):
    bits, m = 3, 10
    levels = 2**bits
    vals = jnp.linspace(-1.0, 1.0, levels)
    grid = jnp.array(list(itertools.product(range(levels), repeat=channels)))  # [L^C, C]
    x = vals[grid].reshape(1, 1, -1, channels)
    params = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 1, m * (1 + 3 * channels)))
    params = jnp.broadcast_to(params, (1, 1, x.shape[2], params.shape[-1]))
    lp = layers.dmol_log_prob(params, x, m, bits)
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(lp))), 1.0, rtol=1e-4)


def test_weight_norm_output_invariant_to_scale_of_v():
    conv = layers.WNConv(3, 5, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 3))
    y1 = conv(x)
    conv.v[...] = conv.v[...] * 37.0
    y2 = conv(x)
    np.testing.assert_allclose(y1, y2, rtol=1e-4, atol=1e-5)
    # log g initialised at log(||v|| + 0.01): initial per-channel norm of W is ||v|| + 0.01 up to 1e-5
    conv2 = layers.WNConv(3, 5, 3, rngs=nnx.Rngs(2))
    wn = jnp.sqrt(jnp.sum(conv2.weight() ** 2, axis=(0, 1, 2)))
    vn = jnp.sqrt(jnp.sum(conv2.v[...] ** 2, axis=(0, 1, 2)))
    np.testing.assert_allclose(wn, (vn + 0.01) * vn / (vn + 1e-5), rtol=1e-5)


def test_power_iteration_matches_largest_singular_value():
    conv = layers.WNConv(8, 16, 3, rngs=nnx.Rngs(3))
    w = conv.weight()  # [k,k,Cin,Cout]
    mat = jnp.transpose(w, (3, 0, 1, 2)).reshape(16, -1)  # [Cout, Cin*k*k]
    u = jax.random.normal(jax.random.PRNGKey(4), (16,))
    v = jax.random.normal(jax.random.PRNGKey(5), (mat.shape[1],))
    sigma, u, v = layers.power_iteration(mat, u, v, 500)
    ref = jnp.linalg.svd(mat, compute_uv=False)[0]
    np.testing.assert_allclose(sigma, ref, rtol=1e-3)
    # persistent vectors: 4 more iterations keep it
    sigma2, _, _ = layers.power_iteration(mat, u, v, 4)
    np.testing.assert_allclose(sigma2, ref, rtol=1e-3)
    # gradient of sigma w.r.t. W is u v^T at convergence
    g = jax.grad(lambda m_: layers.power_iteration(m_, u, v, 1)[0])(mat)
    np.testing.assert_allclose(g, jnp.outer(u, v), atol=1e-3)


def test_bernoulli_log_prob():
    lp = layers.bernoulli_log_prob(jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(lp, [np.log(0.5), np.log(1 - 1 / (1 + np.exp(-2.0)))], rtol=1e-5)


def test_squeeze_excite_shape():
    se = layers.SqueezeExcite(8, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 4, 4, 8))
    assert se(x).shape == x.shape


def test_config_validation():
    with pytest.raises(ValueError, match="image_size"):
        dataclasses.replace(configs.MNIST, image_size=28)
    with pytest.raises(ValueError, match="num_groups_per_scale"):
        dataclasses.replace(configs.DIGITS, num_groups_per_scale=0)
    with pytest.raises(ValueError, match="dataset"):
        dataclasses.replace(configs.DIGITS, dataset="imagenet1k")
    assert configs.MNIST.groups == (10, 5)
    assert configs.CELEBA64.groups == (20, 10, 5)
    assert configs.CIFAR10.total_downsampling == 2
