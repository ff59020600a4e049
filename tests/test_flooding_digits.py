import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from flooding import configs, digits

TINY = dataclasses.replace(configs.DIGITS_QUICK, hidden=(16,), num_steps=40, num_seeds=1, batch_size=32)


def test_symmetric_noise_changes_exactly_the_fraction_to_other_classes():
    labels = np.arange(1000) % 10
    noisy = digits.symmetric_noise(labels, 0.2, 10, seed=0)
    assert (noisy != labels).sum() == 200
    assert set(np.unique(noisy)) == set(range(10))


def test_zero_strength_methods_reduce_to_plain_training():
    """flooding(b=0), iFlood(b=0) and the penalty with ε=0 give the same updates as plain SGD."""
    data = [digits.split_data(TINY, 0.2, 0)]
    results = [digits.train_family(TINY, family, (0.0,), data, [0]) for family in ("flood", "iflood", "gnp")]
    for res in results[1:]:
        np.testing.assert_allclose(res["test_loss"], results[0]["test_loss"], rtol=1e-4)


def test_high_flood_level_stops_the_fit():
    data = [digits.split_data(TINY, 0.0, 0)]
    res = digits.train_family(dataclasses.replace(TINY, num_steps=150), "flood", (0.0, 1.5), data, [0])
    assert res["train_accuracy"][0, 0] > 0.85
    assert res["train_loss"][0, 1] > 1.0  # the loss is held around b = 1.5


def test_sam_trains():
    data = [digits.split_data(TINY, 0.0, 0)]
    res = digits.train_family(dataclasses.replace(TINY, num_steps=150), "sam", (0.05,), data, [0])
    assert res["test_accuracy"][0, 0] > 0.8


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="flood_levels"):
        dataclasses.replace(configs.DIGITS_QUICK, flood_levels=(-0.1,))
    with pytest.raises(ValueError, match="gnp_eps"):
        dataclasses.replace(configs.DIGITS_QUICK, gnp_eps=(-1.0,))


def test_sam_update_is_the_gradient_at_the_ascended_point_on_a_quadratic():
    """On L(θ) = ½(θ − c)ᵀA(θ − c), SAM's first call moves θ₀ to θ₀ + ρ g₀/‖g₀‖ (g = A(θ − c)), its
    second replaces that by the SGD-momentum step from θ₀ with the gradient taken at the ascended point,
    θ₂ = θ₀ − η g(θ₁); the next pair steps from θ₂ with momentum trace g(θ₃) + μ g(θ₁). Computed by hand in
    float64. Fails if SAM is wired as plain SGD (or the ascent goes downhill, or ρ is not used)."""
    rho = 0.05
    make_tx, _ = digits._family_fns("sam", None, TINY)
    tx = make_tx(rho)
    a = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    c = np.array([0.5, -1.0, 2.0])
    grad = lambda th: a @ (th - c)  # noqa: E731
    lr, mu = TINY.learning_rate, TINY.momentum
    theta = np.array([1.0, 1.0, -1.0])
    state = tx.init(jnp.asarray(theta, jnp.float32))
    params, anchor, trace = theta, theta, np.zeros(3)
    for _ in range(2):  # two SAM updates = four calls
        g = grad(params)
        ascended = anchor + rho * g / np.linalg.norm(g)
        u, state = tx.update(jnp.asarray(g, jnp.float32), state, jnp.asarray(params, jnp.float32))
        params = params + np.asarray(u, np.float64)
        np.testing.assert_allclose(params, ascended, rtol=1e-5, atol=1e-6)
        trace = grad(ascended) + mu * trace
        u, state = tx.update(jnp.asarray(grad(params), jnp.float32), state, jnp.asarray(params, jnp.float32))
        params = params + np.asarray(u, np.float64)
        anchor = anchor - lr * trace
        np.testing.assert_allclose(params, anchor, rtol=1e-5, atol=1e-6)
