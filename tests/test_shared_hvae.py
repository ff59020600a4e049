"""Tests for shared/hvae.py: closed forms against Monte Carlo, IW bound properties, coefficients."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import hvae


def _rand_normal(key, shape, scale=1.0):
    k1, k2 = jax.random.split(key)
    return hvae.normal_from_params(scale * jax.random.normal(k1, shape), 0.5 * jax.random.normal(k2, shape))


def test_soft_clamp_bounds_and_identity_near_zero():
    x = jnp.array([-100.0, -1e-3, 0.0, 1e-3, 100.0])
    y = hvae.soft_clamp(x)
    assert float(jnp.max(jnp.abs(y))) <= 5.0
    np.testing.assert_allclose(y[1:4], x[1:4], rtol=1e-5)


def test_normal_params_and_temperature():
    n = hvae.normal_from_params(jnp.array([0.0]), jnp.array([0.0]), temperature=0.5)
    np.testing.assert_allclose(n.sigma, (1.0 + 0.01) * 0.5, rtol=1e-6)


def test_log_prob_matches_scipy_formula():
    n = _rand_normal(jax.random.PRNGKey(0), (7,))
    z = jnp.linspace(-2, 2, 7)
    ref = -0.5 * ((z - n.mu) / n.sigma) ** 2 - jnp.log(n.sigma * jnp.sqrt(2 * jnp.pi))
    np.testing.assert_allclose(n.log_prob(z), ref, rtol=1e-5, atol=1e-6)


def test_kl_closed_form_vs_monte_carlo():
    q = _rand_normal(jax.random.PRNGKey(1), (4,))
    p = _rand_normal(jax.random.PRNGKey(2), (4,))
    n = 200_000
    z = q.mu[None, :] + q.sigma[None, :] * jax.random.normal(jax.random.PRNGKey(3), (n, 4))
    qb, pb = (hvae.Normal(d.mu[None, :], d.sigma[None, :]) for d in (q, p))
    mc = jnp.mean(qb.log_prob(z) - pb.log_prob(z), axis=0)
    kl = q.kl(p)
    assert bool(jnp.all(kl >= 0))
    np.testing.assert_allclose(mc, kl, rtol=0.03, atol=0.01)
    np.testing.assert_allclose(q.kl(q), 0.0, atol=1e-6)


def test_residual_normal_kl_equals_general_kl_and_monte_carlo():
    ks = jax.random.split(jax.random.PRNGKey(4), 4)
    shape = (2, 3)
    mu_p, ls_p, dmu, dls = (0.7 * jax.random.normal(k, shape) for k in ks)
    q, p = hvae.residual_normal(mu_p, ls_p, dmu, dls)
    # raw sums are clamped, not the clamped values summed
    np.testing.assert_allclose(q.mu, hvae.soft_clamp(mu_p + dmu), rtol=1e-6)
    rkl = hvae.residual_kl(q, p)
    np.testing.assert_allclose(rkl, q.kl(p), rtol=1e-5, atol=1e-6)
    z = q.mu[None] + q.sigma[None] * jax.random.normal(jax.random.PRNGKey(5), (200_000, *shape))
    qb, pb = (hvae.Normal(d.mu[None], d.sigma[None]) for d in (q, p))
    mc = jnp.mean(qb.log_prob(z) - pb.log_prob(z), axis=0)
    np.testing.assert_allclose(mc, rkl, rtol=0.05, atol=0.01)
    # zero offsets give zero KL
    q0, p0 = hvae.residual_normal(mu_p, ls_p, jnp.zeros(shape), jnp.zeros(shape))
    np.testing.assert_allclose(hvae.residual_kl(q0, p0), 0.0, atol=1e-6)


def test_kl_gradient_matches_analytic():
    # d KL / d mu_q = (mu_q - mu_p) / sigma_p^2
    p = hvae.Normal(jnp.array([0.3]), jnp.array([1.7]))
    g = jax.grad(lambda m: jnp.sum(hvae.Normal(m, jnp.array([0.9])).kl(p)))(jnp.array([1.1]))
    np.testing.assert_allclose(g, (1.1 - 0.3) / 1.7**2, rtol=1e-5)


def test_latent_group_step_shapes_and_generation():
    b, h, w, c, latent = 2, 4, 4, 8, 3
    wp = 0.1 * jax.random.normal(jax.random.PRNGKey(6), (c, 2 * latent))
    wq = 0.1 * jax.random.normal(jax.random.PRNGKey(7), (c, 2 * latent))
    prior_head = lambda s: s @ wp  # noqa: E731
    post_head = lambda e, s: (e + s) @ wq  # noqa: E731
    combine = lambda s, z: s + jnp.pad(z, ((0, 0), (0, 0), (0, 0), (0, c - latent)))  # noqa: E731
    s = jax.random.normal(jax.random.PRNGKey(8), (b, h, w, c))
    e = jax.random.normal(jax.random.PRNGKey(9), (b, h, w, c))
    out, aux = hvae.latent_group_step(jax.random.PRNGKey(10), s, prior_head, combine, e, post_head)
    assert out.shape == s.shape and aux["kl"].shape == (b, h, w, latent)
    assert bool(jnp.all(aux["kl"] >= -1e-6))
    _out0, aux0 = hvae.latent_group_step(jax.random.PRNGKey(10), s, prior_head, combine, temperature=0.0)
    np.testing.assert_allclose(aux0["z"], aux0["p"].mu, atol=1e-6)  # t = 0 gives the prior mean
    with pytest.raises(ValueError, match="posterior_head"):
        hvae.latent_group_step(jax.random.PRNGKey(10), s, prior_head, combine, e, None)


def test_kl_warmup_coeff():
    assert float(hvae.kl_warmup_coeff(0, 1000)) == pytest.approx(1e-4)
    assert float(hvae.kl_warmup_coeff(150, 1000)) == pytest.approx(0.5)
    assert float(hvae.kl_warmup_coeff(300, 1000)) == pytest.approx(1.0)
    assert float(hvae.kl_warmup_coeff(900, 1000)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="total_steps"):
        hvae.kl_warmup_coeff(0, 0)


def test_groups_and_balancer_coeffs():
    g = hvae.groups_per_scale(2, 10, adaptive=True)
    assert g == (10, 5)
    a = hvae.kl_balancer_coeffs(g)
    # coarsest scale (5 groups, s=0): 1/5; finest (10 groups, s=1): 4/10 -> ratio 2
    np.testing.assert_allclose(a, [1.0] * 5 + [2.0] * 10, rtol=1e-6)
    with pytest.raises(ValueError, match="num_groups"):
        hvae.groups_per_scale(2, 0, adaptive=False)


def test_kl_balance_weights_mean_one_and_off_after_warmup():
    kl = (1.0 + 0.1 * jax.random.uniform(jax.random.PRNGKey(11), (5, 4))) * jnp.array([1.0, 2.0, 3.0, 4.0])[None, :]
    alpha = jnp.array([1.0, 1.0, 2.0, 1.0])
    tot, w = hvae.kl_balance(kl, jnp.float32(0.5), alpha)
    np.testing.assert_allclose(jnp.mean(w), 1.0, rtol=1e-6)
    ref = (jnp.mean(kl, axis=0) + 0.01) / alpha
    np.testing.assert_allclose(w, ref / jnp.mean(ref), rtol=1e-5)
    assert float(w[1]) > float(w[0]) and float(w[2]) < float(w[1])  # more KL -> more weight; alpha divides
    np.testing.assert_allclose(tot, 0.5 * jnp.sum(kl * w[None, :], axis=1), rtol=1e-6)
    tot1, w1 = hvae.kl_balance(kl, jnp.float32(1.0), alpha)
    np.testing.assert_allclose(w1, 1.0)
    np.testing.assert_allclose(tot1, jnp.sum(kl, axis=1), rtol=1e-6)
    # weights are constants for the gradient
    g = jax.grad(lambda k: jnp.sum(hvae.kl_balance(k, jnp.float32(0.5), alpha)[0]))(kl)
    np.testing.assert_allclose(g, 0.5 * jnp.broadcast_to(w[None, :], kl.shape), rtol=1e-5)


def _toy_log_weights(key, k, n):
    """z ~ N(0,1), x|z ~ N(z, 0.5²); q(z|x) = N(0.3x, 0.8²) (mis-specified). Returns [k, n], log p(x)."""
    x = 1.5
    z = 0.3 * x + 0.8 * jax.random.normal(key, (k, n))
    log_pz = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    log_px_z = -0.5 * ((x - z) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)
    log_q = -0.5 * ((z - 0.3 * x) / 0.8) ** 2 - math.log(0.8) - 0.5 * math.log(2 * math.pi)
    var = 1.0 + 0.25
    log_px = -0.5 * x**2 / var - 0.5 * math.log(2 * math.pi * var)
    return log_px_z + log_pz - log_q, log_px


def test_iw_bound_above_elbo_and_non_decreasing_in_k():
    lw, log_px = _toy_log_weights(jax.random.PRNGKey(12), 64, 20_000)
    # per sample set: IW >= ELBO (Jensen), deterministically
    assert bool(jnp.all(hvae.iw_log_likelihood(lw) >= hvae.elbo_from_log_weights(lw) - 1e-6))
    bounds = []
    for k in (1, 2, 4, 8, 16, 64):
        sub = lw[:k]
        bounds.append(float(jnp.mean(hvae.iw_log_likelihood(sub))))
    assert bounds[0] == pytest.approx(float(jnp.mean(lw[0])), rel=1e-6)
    assert all(b2 > b1 for b1, b2 in itertools.pairwise(bounds)), bounds
    assert bounds[-1] <= log_px + 1e-3 and bounds[-1] > log_px - 0.02, (bounds, log_px)


def _flow_group(flow, n, key, z_fixed=None):
    """One latent group over n independent scalar latents ([n, 1, 1, 1]) with fixed q, p and `flow`."""
    prior = jnp.broadcast_to(jnp.array([0.3, -0.2]), (n, 1, 1, 2))  # raw (μ, log σ) of p
    delta = jnp.broadcast_to(jnp.array([-0.8, 0.4]), (n, 1, 1, 2))  # raw residual offsets of q
    state = jnp.zeros((n, 1, 1, 1))
    return hvae.latent_group_step(key, state, lambda s: prior, lambda s, z: z, state, lambda e, s: delta,
                                  z_fixed=z_fixed, flow=flow)


def _log_normal(z, mu, sigma):
    z, mu, sigma = (np.asarray(a, np.float64) for a in (z, mu, sigma))
    return -0.5 * ((z - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def test_flow_kl_is_the_monte_carlo_kl_of_the_pushed_forward_posterior():
    """An affine flow z = a·z₀ + b pushes q = N(μ, σ²) to N(aμ + b, a²σ²): the mean of the per-sample
    KL over many draws must equal that closed-form KL to p (within 4 standard errors).

    Fails if log q is evaluated at the post-flow z instead of z₀, or if the log-determinant enters
    with the wrong sign (it is log|a| = log 2 per element here, not 0)."""
    a, b, n = 2.0, 0.5, 20_000
    affine = lambda z0: (a * z0 + b, jnp.full_like(z0, math.log(a)))  # noqa: E731
    _, aux = _flow_group(affine, n, jax.random.PRNGKey(0))
    q, p = aux["q"], aux["p"]
    mu, sigma = a * float(q.mu[0, 0, 0, 0]) + b, a * float(q.sigma[0, 0, 0, 0])
    mu_p, sigma_p = float(p.mu[0, 0, 0, 0]), float(p.sigma[0, 0, 0, 0])
    closed = math.log(sigma_p / sigma) + (sigma ** 2 + (mu - mu_p) ** 2) / (2 * sigma_p ** 2) - 0.5
    kl = np.asarray(aux["kl"], np.float64).ravel()
    assert abs(kl.mean() - closed) < 4 * kl.std() / math.sqrt(n), (kl.mean(), closed)
    assert abs(closed - float(hvae.residual_kl(q, p)[0, 0, 0, 0])) > 0.1  # the flow changes the KL


def test_flow_kl_per_sample_from_the_flows_own_z_and_log_det():
    """With a non-volume-preserving element-wise flow z = z₀ + tanh(z₀), each sample's KL must be
    log N(z₀; q) − log|dz/dz₀| − log N(z; p), computed here in float64 from z₀, the flow's z and its
    log-det. Fails if log q is taken at the post-flow z, or if the log-det's sign is flipped."""
    def flow(z0):
        return z0 + jnp.tanh(z0), jnp.log1p(1.0 - jnp.tanh(z0) ** 2)

    z0 = jnp.linspace(-2.5, 2.5, 11).reshape(11, 1, 1, 1)
    _, aux = _flow_group(flow, 11, jax.random.PRNGKey(1), z_fixed=z0)
    z, log_det = flow(z0)
    q, p = aux["q"], aux["p"]
    expected = _log_normal(z0, q.mu, q.sigma) - np.asarray(log_det, np.float64) - _log_normal(z, p.mu, p.sigma)
    np.testing.assert_allclose(aux["z"], z, rtol=1e-6)
    np.testing.assert_allclose(aux["kl"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aux["log_q"] - aux["log_p"], aux["kl"], rtol=1e-6, atol=1e-6)
