"""The posts' claims as tests (issue item 5): PMI = post-hoc adjustment, Fisher consistency of the
logit-adjusted loss, and the gradient relations of the 2020-08-31 post, all checked with `jax.grad`."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from longtail import metrics, synthetic
from shared import losses

PRIOR = jnp.array([0.7, 0.2, 0.1])
MEANS = jnp.array([[-2.0, 0.0], [1.0, 1.5], [1.0, -1.5]])  # three 2-D Gaussians, unit covariance


def gaussian_model(n=256, seed=0):
    """x [n, 2] from the mixture, log p(x|y) [n, 3], log p(y|x) [n, 3]."""
    key_y, key_x = jax.random.split(jax.random.PRNGKey(seed))
    y = jax.random.choice(key_y, 3, (n,), p=PRIOR)
    x = MEANS[y] + jax.random.normal(key_x, (n, 2))
    log_lik = -0.5 * jnp.sum((x[:, None, :] - MEANS[None, :, :]) ** 2, axis=-1)  # [n, 3] up to a constant
    log_post = jax.nn.log_softmax(log_lik + jnp.log(PRIOR)[None, :], axis=-1)
    return x, y, log_lik, log_post


# ------------------------------------------------------------------ (a) post-hoc τ = 1 is the PMI argmax
def test_posthoc_tau1_is_argmax_of_pointwise_mutual_information():
    _, _y, log_lik, log_post = gaussian_model()
    pmi = log_post - jnp.log(PRIOR)[None, :]  # log p(y|x) − log p(y) = log p(x|y) − log p(x)
    adjusted = losses.posthoc_logit_adjustment(log_post, PRIOR, tau=1.0)
    np.testing.assert_allclose(adjusted, pmi, atol=1e-5)
    np.testing.assert_array_equal(jnp.argmax(adjusted, -1), jnp.argmax(log_lik, -1))  # the balanced Bayes rule
    # and it differs from the plain argmax of the posterior on some points (the rare classes gain)
    assert int(jnp.sum(jnp.argmax(log_post, -1) != jnp.argmax(adjusted, -1))) > 0


def test_pmi_is_the_stationary_point_of_the_expected_logit_adjusted_loss():
    """Fitting the PMI: E_{y~p(y|x)} ∇_f ℓ_LA(y, f) = softmax(f + log π) − p(·|x) = 0 at f = PMI,
    while plain CE is stationary at f = log p(y|x) instead."""
    _, _, _, log_post = gaussian_model(64)
    post = jnp.exp(log_post)
    pmi = log_post - jnp.log(PRIOR)[None, :]

    def expected(loss_fn, f):  # Σ_x Σ_y p(y|x) ℓ(y, f(x))
        per_label = jnp.stack([loss_fn(f, jnp.full(f.shape[0], k)) for k in range(3)], axis=-1)  # [n, 3]
        return jnp.sum(post * per_label)

    la = lambda f, y: losses.logit_adjusted_cross_entropy(f, y, PRIOR, 1.0)  # noqa: E731
    ce = optax.softmax_cross_entropy_with_integer_labels
    np.testing.assert_allclose(jax.grad(lambda f: expected(la, f))(pmi), 0.0, atol=1e-5)
    np.testing.assert_allclose(jax.grad(lambda f: expected(ce, f))(log_post), 0.0, atol=1e-5)
    assert float(jnp.abs(jax.grad(lambda f: expected(la, f))(log_post)).max()) > 0.05


# ---------------------------------------------------- (b) logit-adjusted loss = CE on f + τ log π; consistency
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_logit_adjusted_loss_is_ce_on_shifted_logits_with_its_gradient(tau):
    f = 3 * jax.random.normal(jax.random.PRNGKey(2), (32, 3))
    y = jax.random.randint(jax.random.PRNGKey(3), (32,), 0, 3)
    shift = tau * jnp.log(PRIOR)[None, :]
    la = lambda f: losses.logit_adjusted_cross_entropy(f, y, PRIOR, tau).sum()  # noqa: E731
    ce_shifted = lambda f: optax.softmax_cross_entropy_with_integer_labels(f + shift, y).sum()  # noqa: E731
    np.testing.assert_allclose(la(f), ce_shifted(f), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(la)(f), jax.grad(ce_shifted)(f), atol=1e-6)
    # the gradient is CE's with a class-dependent margin: softmax(f + τ log π) − onehot
    np.testing.assert_allclose(jax.grad(la)(f), jax.nn.softmax(f + shift) - jax.nn.one_hot(y, 3), atol=1e-6)


@jax.jit
def fit_all(key):
    """Every trained method of the synthetic study on one large sample: θ [M, 3], grad norms [M], π [2]."""
    x, y = synthetic.sample(key, 200_000, 0.05)
    prior = jnp.bincount(y, length=2) / y.shape[0]
    margins, weights = synthetic.method_losses(prior, 1.0, 0.5)
    thetas, grad_norms = jax.vmap(synthetic.fit_newton, in_axes=(None, None, 0, 0, None))(x, y, margins, weights, 12)
    return thetas, grad_norms, prior


def test_logit_adjusted_minimiser_is_the_bayes_boundary_and_erm_is_shifted():
    """On the synthetic model (well specified), the LA loss's minimiser is the log-likelihood ratio
    2μ·x, i.e. θ = (2, 2, 0): the balanced Bayes boundary x₁ + x₂ = 0. ERM's is shifted by
    log(π₊/π₋); the "equalised" loss over-corrects by the same amount the other way."""
    thetas, grad_norms, prior = (np.asarray(a) for a in fit_all(jax.random.PRNGKey(0)))
    assert grad_norms.max() < 1e-3
    theta = thetas[synthetic.TRAINED.index("logit_adjusted_loss")]
    np.testing.assert_allclose(theta, [2.0, 2.0, 0.0], atol=0.12)
    log_ratio = math.log(prior[1] / prior[0])
    np.testing.assert_allclose(thetas[synthetic.TRAINED.index("erm")], [2.0, 2.0, log_ratio], atol=0.12)
    np.testing.assert_allclose(thetas[synthetic.TRAINED.index("equalised")], [2.0, 2.0, -log_ratio], atol=0.25)
    # balanced CE (α = 1/π, no margin) is consistent too on this well-specified model
    np.testing.assert_allclose(thetas[synthetic.TRAINED.index("balanced_ce")], [2.0, 2.0, 0.0], atol=0.2)
    # its balanced test error is the Bayes rate Φ(−√2) to within sampling noise
    x, y = synthetic.sample(jax.random.PRNGKey(99), 200_000, 0.05)
    pred = (x @ theta[:2] + theta[2] > 0).astype(jnp.int32)
    assert float(metrics.balanced_error(pred, y, 2)) == pytest.approx(synthetic.BAYES_BALANCED_ERROR, abs=0.005)


# ------------------------------------------------------------------- (c) the 2020-08-31 gradient relations
@pytest.fixture
def binary():
    z = 2 * jax.random.normal(jax.random.PRNGKey(4), (64,))
    y = (jax.random.uniform(jax.random.PRNGKey(5), (64,)) < 0.3).astype(jnp.float32)
    return z, y, jax.nn.sigmoid(z)


def test_smoothed_f1_gradient_is_the_weighted_ce_gradient(binary):
    z, y, p = binary
    f1 = lambda z: losses.soft_f1_score(z, y)  # noqa: E731
    weighted_ce = lambda z: jnp.sum(losses.smoothed_f1_loss(z, y))  # noqa: E731
    s = jnp.sum(y + p)
    F1 = f1(z)
    # ∂F1/∂p_i = (2/S)(y_i − F1/2)
    np.testing.assert_allclose(jax.grad(lambda p: 2 * jnp.sum(y * p) / jnp.sum(y + p))(p), 2 / s * (y - F1 / 2),
                               rtol=1e-5)
    factor = 2 / s * jnp.where(y == 1, p, 1 - p)  # > 0: ascending F1 = descending the weighted CE
    np.testing.assert_allclose(-jax.grad(f1)(z), factor * jax.grad(weighted_ce)(z), rtol=1e-4, atol=1e-7)
    # the weights: 1 − F1/2 on positives, F1/2 on negatives
    ce_terms = jnp.where(y == 1, -jax.nn.log_sigmoid(z), -jax.nn.log_sigmoid(-z))
    np.testing.assert_allclose(losses.smoothed_f1_loss(z, y), jnp.where(y == 1, 1 - F1 / 2, F1 / 2) * ce_terms,
                               rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradient_is_a_per_sample_reweighted_ce_gradient(gamma):
    f = 2 * jax.random.normal(jax.random.PRNGKey(6), (32, 4))
    y = jax.random.randint(jax.random.PRNGKey(7), (32,), 0, 4)
    g_focal = jax.grad(lambda f: losses.softmax_focal_loss(f, y, gamma=gamma).sum())(f)
    g_ce = jax.grad(lambda f: optax.softmax_cross_entropy_with_integer_labels(f, y).sum())(f)
    p = jnp.take_along_axis(jax.nn.softmax(f), y[:, None], axis=1)[:, 0]
    weight = (1 - p) ** gamma - gamma * (1 - p) ** (gamma - 1) * p * jnp.log(p)  # > 0, small for easy samples
    assert bool(jnp.all(weight > 0))
    np.testing.assert_allclose(g_focal, weight[:, None] * g_ce, rtol=1e-4, atol=1e-6)


def test_dice_gradient_is_a_per_sample_reweighted_ce_gradient(binary):
    z, y, p = binary
    smooth = 1.0
    dice = lambda z: losses.binary_dice_loss(z, y, smooth=smooth)  # noqa: E731
    s = jnp.sum(y) + jnp.sum(p) + smooth
    d = (2 * jnp.sum(y * p) + smooth) / s
    np.testing.assert_allclose(dice(z), 1 - d, rtol=1e-5)
    g_ce = jax.grad(lambda z: optax.sigmoid_binary_cross_entropy(z, y).sum())(z)
    weight = jnp.where(y == 1, (2 - d) * p, d * (1 - p)) / s  # > 0
    np.testing.assert_allclose(jax.grad(dice)(z), weight * g_ce, rtol=1e-4, atol=1e-7)
