"""Interpolation at the top latent group: the decoding walk is the model's own, and the rows behave."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nvae_jax import configs, evaluate
from nvae_jax.interpolate import decode_from_top, interpolate, slerp, top_posterior_mean
from nvae_jax.model import NVAE
from shared import hvae

CFG = configs.DIGITS  # 2 scales, 1 group each: the top group, one up cell, one lower group


def _model(cfg=CFG, seed=0):
    model = NVAE(cfg, rngs=nnx.Rngs(seed))
    model.eval()
    return model


def _images(n, seed=0):
    return jnp.asarray((np.random.default_rng(seed).random((n, 16, 16, 1)) > 0.5).astype(np.float32))


def test_decoding_from_the_prior_draw_of_the_top_group_is_model_sample():
    """With z₀ drawn as `model.sample` draws it (key 0 of the split, σ = 1.01·t), the walk gives its output:
    same groups, order, up cells, keys and temperature (2 scales × 2 groups: a group below the top at
    the top scale, the up cell, two groups below it)."""
    cfg = dataclasses.replace(CFG, num_groups_per_scale=2)
    model, key, t = _model(cfg), jax.random.PRNGKey(3), 0.7
    shape = model.top_group.prior_params(jnp.zeros((5, *model.const.shape[1:]))).shape
    zeros = jnp.zeros(shape[:-1] + (shape[-1] // 2,))
    z0 = hvae.normal_from_params(zeros, zeros, t).sample(jax.random.split(key, sum(cfg.groups))[0])
    walk = nnx.jit(lambda m, z: decode_from_top(m, z, key, t))  # one compile for both walks
    ours = walk(model, z0)
    theirs = nnx.jit(lambda m: m.sample(key, 5, t))(model)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-5)
    other = walk(model, z0 + 1.0)
    assert float(jnp.max(jnp.abs(other - theirs))) > 1e-3  # and the given z₀ is used


def test_top_posterior_mean_is_the_mean_of_the_models_posterior_samples():
    """The mean of many z₀ ~ q(z₀|x) drawn through the model's own top group converges to our μ."""
    model, x = _model(), _images(2)
    mu = nnx.jit(top_posterior_mean)(model, x)
    group = model.top_group
    h = jnp.broadcast_to(model.const[...], (2, *model.const.shape[1:]))

    @nnx.jit
    def draws(m, keys):
        feat = m.encode(x)[0]
        return jax.vmap(lambda k: m.top_group(k, h, feat)[1]["z"])(keys)

    z = draws(model, jax.random.split(jax.random.PRNGKey(1), 4000))  # [4000, 2, h, w, L]
    sigma = jnp.std(z, axis=0)
    assert float(jnp.max(jnp.abs(z.mean(0) - mu) / sigma)) < 5 / np.sqrt(4000) * 1.5  # within ~5 standard errors
    assert mu.shape == (2, *group.prior_params(h).shape[1:-1], CFG.num_latent_per_group)


def test_rows_run_from_a_to_b_and_change_only_through_the_top_group():
    model, key = _model(), jax.random.PRNGKey(0)
    x = _images(4)
    rows = interpolate(model, x[:2], x[2:], key, steps=5, temperature=1.0)
    assert rows.shape == (2, 5, 16, 16, 1) and rows.min() >= 0 and rows.max() <= 1
    # the ends are z₀ = μ_a and μ_b, decoded with the row's noise
    decode = nnx.jit(lambda m, z: evaluate.mean_image(m, decode_from_top(m, z, key, 1.0)))
    mean = nnx.jit(top_posterior_mean)  # eagerly: one dispatch per op of the encoder
    np.testing.assert_allclose(rows[:, 0], decode(model, mean(model, x[:2])), atol=1e-6)
    np.testing.assert_allclose(rows[:, -1], decode(model, mean(model, x[2:])), atol=1e-6)
    assert np.abs(rows[:, 0] - rows[:, -1]).max() > 1e-5  # the untrained model barely depends on z₀, but does
    # a to a: every column is the same image (the lower groups' noise is shared along a row)
    same = interpolate(model, x[:2], x[:2], key, steps=4, temperature=1.0)
    np.testing.assert_allclose(same, np.repeat(same[:, :1], 4, axis=1), atol=1e-6)


def test_temperature_reaches_the_lower_groups():
    """At t → 0 the lower groups sit at their prior means: the rows no longer depend on the key; at t = 1 they do."""
    model, x = _model(), _images(4)
    cold = [interpolate(model, x[:2], x[2:], jax.random.PRNGKey(k), steps=3, temperature=1e-5) for k in (0, 1)]
    warm = [interpolate(model, x[:2], x[2:], jax.random.PRNGKey(k), steps=3, temperature=1.0) for k in (0, 1)]
    np.testing.assert_allclose(cold[0], cold[1], atol=1e-4)
    assert np.abs(warm[0] - warm[1]).max() > 1e-3


def test_flows_apply_to_the_posterior_mean():
    cfg = dataclasses.replace(CFG, num_nf=1)
    model, x = _model(cfg), _images(2)
    group = model.top_group
    h = jnp.broadcast_to(model.const[...], (2, *model.const.shape[1:]))
    base = group(jax.random.PRNGKey(0), h, model.encode(x)[0])[1]["q"].mu
    np.testing.assert_allclose(top_posterior_mean(model, x), group.flow(base)[0], atol=1e-6)
    assert float(jnp.max(jnp.abs(group.flow(base)[0] - base))) > 1e-4  # the flow moves it


def test_steps_below_two_are_refused():
    with pytest.raises(ValueError, match="steps must be >= 2"):
        interpolate(_model(), _images(1), _images(1, 1), jax.random.PRNGKey(0), steps=1)


def test_slerp_turns_the_direction_uniformly_and_the_norm_linearly():
    rng = np.random.default_rng(0)
    a, b = jnp.asarray(rng.normal(size=(3, 4, 4, 2))), jnp.asarray(2.0 * rng.normal(size=(3, 4, 4, 2)))
    flat = lambda z: np.asarray(z).reshape(3, -1)  # noqa: E731
    theta = np.arccos(np.sum(flat(a) * flat(b), 1) / np.linalg.norm(flat(a), axis=1) / np.linalg.norm(flat(b), axis=1))
    for alpha in (0.0, 0.3, 0.5, 1.0):
        z = flat(slerp(a, b, alpha))
        norm = np.linalg.norm(z, axis=1)
        np.testing.assert_allclose(norm, (1 - alpha) * np.linalg.norm(flat(a), axis=1)
                                   + alpha * np.linalg.norm(flat(b), axis=1), rtol=1e-5)
        to_a = np.arccos(np.clip(np.sum(z * flat(a), 1) / norm / np.linalg.norm(flat(a), axis=1), -1, 1))
        np.testing.assert_allclose(to_a, alpha * theta, atol=2e-3)
    np.testing.assert_allclose(slerp(a, b, 0.0), a, atol=1e-6)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-5)
    # orthogonal unit vectors: the midpoint is (a + b)/√2; parallel ones fall back to the line
    e1, e2 = jnp.eye(2)[None, 0], jnp.eye(2)[None, 1]
    np.testing.assert_allclose(slerp(e1, e2, 0.5), (e1 + e2) / np.sqrt(2.0), atol=1e-6)
    np.testing.assert_allclose(slerp(e1, 3.0 * e1, 0.5), 2.0 * e1, atol=1e-6)
