"""Tests for shared.losses: closed forms, analytic gradients, reduces-to-known-case, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from shared import losses

B, K = 12, 5


@pytest.fixture
def data():
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (B, K))
    y = jax.random.randint(jax.random.PRNGKey(1), (B,), 0, K)
    prior = jnp.array([0.5, 0.25, 0.15, 0.07, 0.03])
    return x, y, prior


def _ce(x, y):
    return optax.softmax_cross_entropy_with_integer_labels(x, y)


def _np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.mark.parametrize("tau", [0.0, 1.0, 1.7])
def test_logit_adjusted_ce(data, tau):
    x, y, prior = data
    got = losses.logit_adjusted_cross_entropy(x, y, prior, tau=tau)
    np.testing.assert_allclose(got, _ce(x + tau * jnp.log(prior)[None, :], y), rtol=1e-6, atol=1e-6)
    expect = -_np_log_softmax(np.asarray(x) + tau * np.log(np.asarray(prior))[None])[np.arange(B), np.asarray(y)]
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    # gradient: softmax(f + τ log π) − onehot
    g = jax.grad(lambda z: losses.logit_adjusted_cross_entropy(z, y, prior, tau=tau).sum())(x)
    np.testing.assert_allclose(g, jax.nn.softmax(x + tau * jnp.log(prior)[None, :]) - jax.nn.one_hot(y, K), atol=1e-6)
    # unnormalised prior gives the same loss
    np.testing.assert_allclose(losses.logit_adjusted_cross_entropy(x, y, 10 * prior, tau=tau), got,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("log_range,tau", [(4.0, 1.0), (59.0, 1.0), (61.0, 1.0), (50.0, 6.0)])
def test_bound_stabilised_and_exact_logsumexp_paths_agree(log_range, tau):
    """Concrete shifts spanning ≤ 60 nats use the max f + max c bound, wider or traced ones the exact
    logsumexp; both give the float64 closed form and its gradient, with a rare class holding a huge logit."""
    k = 7
    log_prior = -jnp.linspace(0.0, log_range, k)
    prior = jnp.exp(log_prior)
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(3), (B, k))
    x = x.at[0, k - 1].set(tau * log_range + 20.0)  # the rarest class dominates a row: no underflow
    y = jax.random.randint(jax.random.PRNGKey(4), (B,), 0, k)
    z = np.asarray(x, np.float64) + tau * np.asarray(log_prior, np.float64)[None]
    expect = -_np_log_softmax(z)[np.arange(B), np.asarray(y)]
    grad_expect = np.exp(_np_log_softmax(z)) - np.eye(k)[np.asarray(y)]
    assert losses._spread(losses.logit_adjustment_margins(prior, tau)) == pytest.approx(tau * log_range, rel=1e-4)
    assert losses._spread(log_prior, tau) == pytest.approx(tau * log_range, rel=1e-4)

    def la(f, p):
        return losses.logit_adjusted_cross_entropy(f, y, p, tau)

    def pairwise(f, p):
        return losses.pairwise_margin_loss(f, y, losses.logit_adjustment_margins(p, tau))

    for loss in (la, pairwise):
        for got in (loss(x, prior), jax.jit(lambda f: loss(f, prior))(x), jax.jit(loss)(x, prior)):  # last: traced
            np.testing.assert_allclose(got, expect, rtol=2e-5, atol=2e-5)
        g = jax.grad(lambda f: loss(f, prior).sum())(x)
        np.testing.assert_allclose(g, grad_expect, atol=2e-5)


def test_posthoc_is_pmi_argmax(data):
    x, _, prior = data
    adj = losses.posthoc_logit_adjustment(x, prior)  # tau = 1
    pmi = jax.nn.log_softmax(x) - jnp.log(prior)[None, :]
    np.testing.assert_array_equal(jnp.argmax(adj, -1), jnp.argmax(pmi, -1))
    np.testing.assert_allclose(adj - pmi, jnp.broadcast_to((adj - pmi)[:, :1], (B, K)), atol=1e-5)
    np.testing.assert_allclose(losses.posthoc_logit_adjustment(x, prior, tau=0.0), x)


def test_pairwise_margin_closed_form_and_grad(data):
    x, y, _prior = data
    delta = jax.random.normal(jax.random.PRNGKey(2), (K, K))
    alpha = jnp.linspace(0.5, 2.0, K)
    got = losses.pairwise_margin_loss(x, y, delta, class_weights=alpha)
    xn, dn, an = np.asarray(x, np.float64), np.asarray(delta, np.float64), np.asarray(alpha)
    for b in range(B):
        t = int(y[b])
        s = sum(np.exp(dn[t, j] + xn[b, j] - xn[b, t]) for j in range(K) if j != t)
        np.testing.assert_allclose(got[b], an[t] * np.log1p(s), rtol=1e-5, atol=1e-6)
    # analytic gradient: α_y (softmax(f + Δ[y] with Δ_yy = 0) − onehot)
    rows = jnp.where(jax.nn.one_hot(y, K) > 0, 0.0, delta[y])
    expect = alpha[y][:, None] * (jax.nn.softmax(x + rows) - jax.nn.one_hot(y, K))
    g = jax.grad(lambda z: losses.pairwise_margin_loss(z, y, delta, class_weights=alpha).sum())(x)
    np.testing.assert_allclose(g, expect, atol=1e-6)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_la_margins_reproduce_la_ce(data, tau):
    x, y, prior = data
    m = losses.logit_adjustment_margins(prior, tau)
    np.testing.assert_allclose(jnp.diag(m), 0.0, atol=1e-7)
    np.testing.assert_allclose(losses.pairwise_margin_loss(x, y, m),
                               losses.logit_adjusted_cross_entropy(x, y, prior, tau=tau), rtol=1e-5, atol=1e-6)


def test_difference_form_margins_take_the_cross_entropy_path(data):
    """LA margins (Δ_yy' = c_y' − c_y) are recognised and give the same loss and gradient as the gathered-rows
    path; LDAM and perturbed LA margins are not of that form."""
    x, y, prior = data
    la = np.asarray(losses.logit_adjustment_margins(prior, 1.5), np.float64)
    c = losses._difference_form(la)
    assert c is not None and np.allclose(c[None, :] - c[:, None], la, atol=1e-6)
    assert losses._difference_form(la + 1e-3 * np.random.default_rng(0).standard_normal(la.shape)) is None
    assert losses._difference_form(np.asarray(losses.ldam_margins(prior, 0.5), np.float64)) is None
    alpha = jnp.linspace(0.5, 2.0, K)
    fast = losses.pairwise_margin_loss(x, y, la, class_weights=alpha)
    # traced margins cannot be inspected: the general path over the gathered rows Δ[y]
    general = jax.jit(lambda m: losses.pairwise_margin_loss(x, y, m, class_weights=alpha))(jnp.asarray(la, jnp.float32))
    np.testing.assert_allclose(fast, general, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast, alpha[y] * losses.logit_adjusted_cross_entropy(x, y, prior, 1.5),
                               rtol=1e-5, atol=1e-6)
    g_fast = jax.grad(lambda z: losses.pairwise_margin_loss(z, y, la).sum())(x)
    g_general = jax.grad(lambda z, m: losses.pairwise_margin_loss(z, y, m).sum())(x, jnp.asarray(la, jnp.float32))
    np.testing.assert_allclose(g_fast, g_general, atol=1e-6)


def test_ldam_margins_and_balanced_weights(data):
    x, y, prior = data
    m = losses.ldam_margins(prior, 0.5)
    np.testing.assert_allclose(jnp.diag(m), 0.0)
    off = np.asarray(m[np.arange(K), (np.arange(K) + 1) % K])  # Δ_y for y' ≠ y
    np.testing.assert_allclose(off, 0.5 * np.asarray(prior) ** -0.25 / np.max(np.asarray(prior) ** -0.25),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(off.max(), 0.5, rtol=1e-6, atol=1e-6)
    # LDAM loss = CE with the true logit lowered by Δ_y
    ldam = losses.pairwise_margin_loss(x, y, m)
    np.testing.assert_allclose(ldam, _ce(x - jnp.asarray(off)[y][:, None] * jax.nn.one_hot(y, K), y),
                               rtol=1e-5, atol=1e-6)
    w = losses.balanced_class_weights(prior)
    np.testing.assert_allclose(jnp.sum(prior * w), 1.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(w * prior, jnp.full((K,), 1.0 / K), rtol=1e-6, atol=1e-6)
    # zero margins + balanced weights = weighted CE
    np.testing.assert_allclose(
        losses.pairwise_margin_loss(x, y, jnp.zeros((K, K)), class_weights=w), losses.weighted_cross_entropy(x, y, w),
        rtol=1e-5)


def test_weighted_ce(data):
    x, y, _prior = data
    w = jnp.arange(1.0, K + 1.0)
    got = losses.weighted_cross_entropy(x, y, w)
    np.testing.assert_allclose(got, w[y] * _ce(x, y), rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda z: losses.weighted_cross_entropy(z, y, w).sum())(x)
    np.testing.assert_allclose(g, w[y][:, None] * (jax.nn.softmax(x) - jax.nn.one_hot(y, K)), atol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_softmax_focal(data, gamma):
    x, y, _ = data
    got = losses.softmax_focal_loss(x, y, gamma=gamma)
    logp = _np_log_softmax(x)[np.arange(B), np.asarray(y)]
    np.testing.assert_allclose(got, -((1 - np.exp(logp)) ** gamma) * logp, rtol=1e-5, atol=1e-6)
    if gamma == 0.0:
        np.testing.assert_allclose(got, _ce(x, y), rtol=1e-6, atol=1e-6)
    # analytic gradient: dℓ/dp · p (δ_yj − p_j)
    p = jax.nn.softmax(x)
    py = p[jnp.arange(B), y]
    dldp = gamma * (1 - py) ** (gamma - 1) * jnp.log(py) - (1 - py) ** gamma / py if gamma > 0 else -1 / py
    expect = (dldp * py)[:, None] * (jax.nn.one_hot(y, K) - p)
    g = jax.grad(lambda z: losses.softmax_focal_loss(z, y, gamma=gamma).sum())(x)
    np.testing.assert_allclose(g, expect, atol=1e-5)
    alpha = jnp.linspace(0.1, 1.0, K)
    np.testing.assert_allclose(losses.softmax_focal_loss(x, y, gamma=gamma, alpha=alpha), alpha[y] * got,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(losses.softmax_focal_loss(x, y, gamma=gamma, alpha=0.25), 0.25 * got,
                               rtol=1e-6, atol=1e-6)


def test_binary_dice(data):
    x, y, _ = data
    z, t = x[:, 0], (y % 2).astype(jnp.float32)
    for smooth in (0.0, 1.0):
        p = jax.nn.sigmoid(z)
        S = t.sum() + p.sum()
        dice = (2 * (t * p).sum() + smooth) / (S + smooth)
        np.testing.assert_allclose(losses.binary_dice_loss(z, t, smooth=smooth), 1 - dice, rtol=1e-5, atol=1e-6)
        g = jax.grad(lambda u: losses.binary_dice_loss(u, t, smooth=smooth))(z)
        ddice_dp = (2 * t * (S + smooth) - (2 * (t * p).sum() + smooth)) / (S + smooth) ** 2
        np.testing.assert_allclose(g, -ddice_dp * p * (1 - p), atol=1e-6)


def test_smoothed_f1_gradient_relation(data):
    x, y, _ = data
    z, t = x[:, 0], (y % 2).astype(jnp.float32)
    p = jax.nn.sigmoid(z)
    f1 = 2 * (t * p).sum() / (t + p).sum()
    np.testing.assert_allclose(losses.soft_f1_score(z, t), f1, rtol=1e-6, atol=1e-6)
    loss = losses.smoothed_f1_loss(z, t)
    expect = -(1 - f1 / 2) * t * jnp.log(p) - (f1 / 2) * (1 - t) * jnp.log(1 - p)
    np.testing.assert_allclose(loss, expect, rtol=1e-5, atol=1e-6)
    # −∂F1/∂z_i = (2/S)·(p_i if y_i = 1 else 1 − p_i) × ∂ℓ_i/∂z_i  (a positive factor)
    dF1 = jax.grad(lambda u: losses.soft_f1_score(u, t))(z)
    dl = jax.grad(lambda u: losses.smoothed_f1_loss(u, t).sum())(z)
    S = (t + p).sum()
    factor = (2 / S) * jnp.where(t > 0, p, 1 - p)
    np.testing.assert_allclose(-dF1, factor * dl, rtol=1e-4, atol=1e-7)
    assert bool((factor > 0).all())


def test_multilabel_cce(data):
    x, _, _ = data
    tgt = jax.random.bernoulli(jax.random.PRNGKey(3), 0.4, (B, K))
    got = losses.multilabel_categorical_crossentropy(x, tgt)
    xn, tn = np.asarray(x, np.float64), np.asarray(tgt)
    expect = np.log1p((np.exp(xn) * ~tn).sum(-1)) + np.log1p((np.exp(-xn) * tn).sum(-1))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda z: losses.multilabel_categorical_crossentropy(z, tgt).sum())(x)
    en, ep = jnp.where(tgt, 0.0, jnp.exp(x)), jnp.where(tgt, jnp.exp(-x), 0.0)
    expect_g = en / (1 + en.sum(-1, keepdims=True)) - ep / (1 + ep.sum(-1, keepdims=True))
    np.testing.assert_allclose(g, expect_g, atol=1e-6)
    # all-negative and all-positive rows are finite
    v, gg = jax.value_and_grad(
        lambda z: losses.multilabel_categorical_crossentropy(z, jnp.zeros((B, K), bool)).sum())(x)
    assert jnp.isfinite(v) and bool(jnp.isfinite(gg).all())


def test_bad_input(data):
    x, y, prior = data
    with pytest.raises(ValueError, match="class_prior must be strictly positive"):
        losses.logit_adjusted_cross_entropy(x, y, prior.at[2].set(0.0))
    with pytest.raises(ValueError, match="class_prior must be strictly positive"):
        losses.logit_adjustment_margins(prior.at[0].set(-0.1), 1.0)
    with pytest.raises(ValueError, match="class_prior must have K=5"):
        losses.logit_adjusted_cross_entropy(x, y, prior[:4])
    with pytest.raises(ValueError, match="labels must lie in"):
        losses.weighted_cross_entropy(x, y.at[0].set(K), jnp.ones(K))
    with pytest.raises(ValueError, match="labels must lie in"):
        losses.softmax_focal_loss(x, y.at[0].set(-1))
    with pytest.raises(ValueError, match="margins must have shape"):
        losses.pairwise_margin_loss(x, y, jnp.zeros((K, K + 1)))
    with pytest.raises(ValueError, match="tau must be >= 0"):
        losses.logit_adjusted_cross_entropy(x, y, prior, tau=-1.0)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        losses.softmax_focal_loss(x, y, gamma=-1.0)
    with pytest.raises(ValueError, match="labels must have shape"):
        losses.logit_adjusted_cross_entropy(x, y[:3], prior)
    with pytest.raises(ValueError, match="labels must be integer"):
        losses.weighted_cross_entropy(x, y.astype(jnp.float32), jnp.ones(K))
