import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weissi.attacks import classifier_accuracy, fgsm, pgd


def linear(w):
    return lambda x: jnp.stack([jnp.zeros(x.shape[0]), x @ w], axis=1)  # logit margin x·w for class 1


def test_fgsm_closed_form_on_a_linear_model():
    w = jnp.array([1.0, -2.0, 0.5, 0.0])
    x = jnp.full((3, 4), 0.5)
    y = jnp.array([1, 0, 1])
    adv = fgsm(linear(w), x, y, 0.1)
    # class 1 pushes against w, class 0 along it; zero-gradient coordinates stay
    expected = x - 0.1 * jnp.sign(w)[None, :] * (2 * y[:, None] - 1)
    np.testing.assert_allclose(adv, expected, atol=1e-6)


def test_pgd_stays_in_the_ball_and_the_box_and_beats_fgsm():
    key = jax.random.PRNGKey(0)
    w = jax.random.normal(key, (20, 5))
    f = lambda x: jnp.tanh(x @ w) @ jnp.ones((5, 3)) * jnp.arange(3.0)[None, :] + x @ w[:, :3]  # noqa: E731
    x = jax.random.uniform(jax.random.PRNGKey(1), (64, 20))
    y = f(x).argmax(-1)
    eps = 0.1
    adv = pgd(f, x, y, eps, steps=10, key=jax.random.PRNGKey(2))
    assert float(jnp.max(jnp.abs(adv - x))) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float(classifier_accuracy(f, adv, y)) <= float(classifier_accuracy(f, fgsm(f, x, y, eps), y)) + 1e-6
    assert float(classifier_accuracy(f, x, y)) == 1.0


def test_zero_radius_is_the_identity_and_negative_is_refused():
    f = linear(jnp.ones(4))
    x = jnp.full((2, 4), 0.3)
    np.testing.assert_array_equal(pgd(f, x, jnp.array([0, 1]), 0.0), x)
    with pytest.raises(ValueError, match="eps"):
        fgsm(f, x, jnp.array([0, 1]), -0.1)
