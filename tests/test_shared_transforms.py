"""Tests for shared.transforms: flooding, gradient-norm penalty, WEISSI (closed forms and optax chains)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from shared.transforms import (
    add_decoupled_weissi,
    flatten_small_leaves,
    flood,
    flooding,
    gradient_norm_penalty,
    iflood,
    weissi_penalty,
)


def _problem():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w1": 0.5 * jax.random.normal(k1, (3, 4)), "b1": jnp.zeros(4), "w2": 0.5 * jax.random.normal(k2, (4, 2))}
    x = jax.random.normal(k3, (16, 3))
    y = jnp.arange(16) % 2

    def per_example(p, x, y):
        h = jnp.tanh(x @ p["w1"] + p["b1"][None, :])
        return optax.softmax_cross_entropy_with_integer_labels(h @ p["w2"], y)

    def loss_fn(p, x, y):
        return jnp.mean(per_example(p, x, y))

    return params, x, y, per_example, loss_fn


def test_flood_closed_form_and_gradient():
    np.testing.assert_allclose(flood(jnp.array([0.1, 0.5, 2.0]), 0.3), [0.5, 0.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(flood(jnp.array(0.7), 0.0), 0.7)  # b = 0: plain loss
    params, x, y, _per_example, loss_fn = _problem()
    g = jax.grad(loss_fn)(params, x, y)
    lval = loss_fn(params, x, y)
    for b, sign in ((0.0, 1.0), (float(lval) + 0.1, -1.0)):
        gf = jax.grad(lambda p: flood(loss_fn(p, x, y), b))(params)
        jax.tree.map(lambda a, c: np.testing.assert_allclose(a, sign * c, rtol=1e-6), gf, g)


def test_iflood_per_example():
    params, x, y, per_example, _ = _problem()
    ls = per_example(params, x, y)
    b = float(jnp.median(ls))
    out = iflood(ls, b)
    assert out.shape == ls.shape
    np.testing.assert_allclose(out, jnp.abs(ls - b) + b, rtol=1e-6)
    # each example's gradient is sign(ℓ_i − b)·∇ℓ_i
    gi = jax.grad(lambda p: jnp.mean(iflood(per_example(p, x, y), b)))(params)
    sign = jnp.sign(ls - b)
    ge = jax.grad(lambda p: jnp.mean(jax.lax.stop_gradient(sign) * per_example(p, x, y)))(params)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7), gi, ge)


def test_flooding_chain_with_sgd_under_jit_matches_flood():
    params, x, y, _, loss_fn = _problem()
    b = 0.62  # between the initial loss and the loss reached: both signs occur
    tx = optax.chain(flooding(b), optax.sgd(0.5, momentum=0.9))
    ref_tx = optax.sgd(0.5, momentum=0.9)

    @jax.jit
    def step(p, s):
        value, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, s = tx.update(g, s, p, value=value)
        return optax.apply_updates(p, u), s, value

    @jax.jit
    def ref_step(p, s):
        g = jax.grad(lambda q: flood(loss_fn(q, x, y), b))(p)
        u, s = ref_tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    p, s, rp, rs = params, tx.init(params), params, ref_tx.init(params)
    values = []
    for _ in range(30):
        p, s, v = step(p, s)
        rp, rs = ref_step(rp, rs)
        values.append(float(v))
        jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6), p, rp)
    assert min(values) < b < max(values), values
    assert float(s[0].last_sign) in (-1.0, 1.0)


def test_flooding_needs_value():
    params = {"w": jnp.ones(2)}
    tx = flooding(0.1)
    with pytest.raises(ValueError, match="value="):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="flood level b must be >= 0"):
        flooding(-0.1)


def test_gradient_norm_penalty_matches_double_backprop():
    params, x, y, _, loss_fn = _problem()
    eps = 0.3
    fn = jax.jit(gradient_norm_penalty(loss_fn, eps))
    value, grads = fn(params, x, y)

    def penalised(p):
        g = jax.grad(loss_fn)(p, x, y)
        return loss_fn(p, x, y) + 0.5 * eps * sum(jnp.sum(v**2) for v in jax.tree.leaves(g))

    rv, rg = jax.value_and_grad(penalised)(params)
    np.testing.assert_allclose(value, rv, rtol=1e-6)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7), grads, rg)
    v0, _g0 = gradient_norm_penalty(loss_fn, 0.0)(params, x, y)
    np.testing.assert_allclose(v0, loss_fn(params, x, y), rtol=1e-6)


def test_descent_ascent_pair_is_gradient_norm_descent():
    """θ₂ − θ₀ of a descent step and an ascent step ≈ −(ε²/2)∇‖g‖²; relative error shrinks ∝ ε."""
    with jax.enable_x64(True):
        params, x, y, _, loss_fn = _problem()
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        x = x.astype(jnp.float64)
        g = lambda p: jax.grad(loss_fn)(p, x, y)  # noqa: E731
        flat0 = jax.flatten_util.ravel_pytree(params)[0]
        _, grads = gradient_norm_penalty(loss_fn, 1.0)(params, x, y)
        hg = jax.flatten_util.ravel_pytree(grads)[0] - jax.flatten_util.ravel_pytree(g(params))[0]  # H g
        errs = []
        for eps in (1e-1, 1e-2):
            p1 = jax.tree.map(lambda a, b: a - eps * b, params, g(params))
            p2 = jax.tree.map(lambda a, b: a + eps * b, p1, g(p1))
            moved = jax.flatten_util.ravel_pytree(p2)[0] - flat0
            pred = -(eps**2) * hg  # −(ε²/2)∇‖g‖² = −ε² H g
            errs.append(float(jnp.linalg.norm(moved - pred) / jnp.linalg.norm(pred)))
    assert errs[0] < 0.05 and 0.05 < errs[1] / errs[0] < 0.2, errs  # relative error ∝ ε


def _nn_params():
    k = jax.random.split(jax.random.PRNGKey(4), 3)
    return {
        "dense": {"kernel": jax.random.normal(k[0], (5, 4)), "bias": jnp.ones(4)},
        "conv": {"kernel": jax.random.normal(k[1], (3, 3, 2, 4)), "scale": jnp.ones(4)},
        "out": {"kernel": jax.random.normal(k[2], (4, 3))},
    }


def test_weissi_penalty_closed_form_grad_and_invariance():
    params = _nn_params()
    l1, l2 = 0.7, 0.2
    mats = [params["dense"]["kernel"], params["conv"]["kernel"], params["out"]["kernel"]]
    expect = sum(l1 * np.log(np.linalg.norm(np.ravel(w))) + l2 * np.abs(w).sum() / np.linalg.norm(np.ravel(w))
                 for w in mats)
    np.testing.assert_allclose(weissi_penalty(params, l1, l2), expect, rtol=1e-5)
    g = jax.grad(lambda p: weissi_penalty(p, l1, l2))(params)
    np.testing.assert_array_equal(g["dense"]["bias"], 0.0)  # biases / scales not selected
    np.testing.assert_array_equal(g["conv"]["scale"], 0.0)
    for w, gw in zip(mats, [g["dense"]["kernel"], g["conv"]["kernel"], g["out"]["kernel"]]):
        n2 = jnp.sum(w**2)
        n = jnp.sqrt(n2)
        s = jnp.sign(w)
        analytic = l1 * w / n2 + l2 * (s - (jnp.sum(s * w) / n2) * w) / n
        np.testing.assert_allclose(gw, analytic, rtol=1e-5, atol=1e-6)
    # scale shift with Π c_l = 1 leaves the penalty unchanged
    shifted = jax.tree.map(lambda a: a, params)
    shifted["dense"]["kernel"] = 4.0 * params["dense"]["kernel"]
    shifted["out"]["kernel"] = 0.25 * params["out"]["kernel"]
    np.testing.assert_allclose(weissi_penalty(shifted, l1, l2), weissi_penalty(params, l1, l2), rtol=1e-5)
    # a custom selection
    only_out = jax.tree.map(lambda _: False, params)
    only_out["out"]["kernel"] = True
    w = params["out"]["kernel"]
    np.testing.assert_allclose(weissi_penalty(params, 1.0, 0.0, where=only_out), jnp.log(jnp.linalg.norm(w)), rtol=1e-6)


def test_weissi_bad_input():
    params = _nn_params()
    with pytest.raises(ValueError, match="lambda1 must be >= 0"):
        weissi_penalty(params, -1.0, 0.0)
    with pytest.raises(ValueError, match="lambda2 must be >= 0"):
        weissi_penalty(params, 0.0, -1.0)
    with pytest.raises(ValueError, match="selected no parameter"):
        weissi_penalty({"b": jnp.ones(3)}, 1.0, 1.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        add_decoupled_weissi(-1.0)


def test_add_decoupled_weissi_sgd_and_adam():
    params = _nn_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
    lr, wt = 0.05, 0.3
    # SGD: decoupled = coupled λ₁ log-norm penalty
    tx = optax.chain(add_decoupled_weissi(wt), optax.sgd(lr))
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    g_pen = jax.grad(lambda p: weissi_penalty(p, wt, 0.0))(params)
    expect = jax.tree.map(lambda g, gp: -lr * (g + gp), grads, g_pen)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7), u, expect)
    np.testing.assert_allclose(u["dense"]["bias"], -lr * 0.1, rtol=1e-6)  # not selected
    # Adam: W ← W − η(adam_u + wt·W/‖W‖²), like add_decayed_weights in adamw
    tx = optax.chain(optax.scale_by_adam(), add_decoupled_weissi(wt), optax.scale_by_learning_rate(lr))
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    adam_u, _ = optax.scale_by_adam().update(grads, optax.scale_by_adam().init(params), params)
    w = params["out"]["kernel"]
    np.testing.assert_allclose(u["out"]["kernel"], -lr * (adam_u["out"]["kernel"] + wt * w / jnp.sum(w**2)), rtol=1e-5)
    np.testing.assert_allclose(u["conv"]["scale"], -lr * adam_u["conv"]["scale"], rtol=1e-6)
    # explicit mask
    mask = jax.tree.map(lambda _: False, params)
    tx = optax.chain(add_decoupled_weissi(wt, mask=mask), optax.sgd(lr))
    u, _ = tx.update(grads, tx.init(params), params)
    jax.tree.map(lambda a, g: np.testing.assert_allclose(a, -lr * g, rtol=1e-6), u, grads)


def _mixed_tree(seed):
    """Leaves of 3, 6, 40 and 200 elements, float32, in a nested dict."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"b": jax.random.normal(k[0], (3,)), "enc": {"w": jax.random.normal(k[1], (10, 20)),
                                                        "g": jax.random.normal(k[2], (2, 3))},
            "dec": jax.random.normal(k[3], (5, 8))}


@pytest.mark.parametrize("max_leaf_size", [0, 10, 50, 1_000])
def test_flatten_small_leaves_steps_like_the_unwrapped_optimiser(max_leaf_size):
    """Adamax with weight decay, three steps under jit: the wrapped optimiser's updates equal the plain
    one's leaf for leaf whichever leaves are raveled (none, the two smallest, three, all). Its state
    holds one vector of the small leaves' total size and the large leaves as they are."""
    tx = optax.chain(optax.add_decayed_weights(3e-4), optax.scale_by_adamax(0.9, 0.999, 1e-3),
                     optax.scale_by_learning_rate(1e-2))
    wrapped = flatten_small_leaves(tx, max_leaf_size)
    params = _mixed_tree(0)
    state, wstate = tx.init(params), wrapped.init(params)
    mu_view = wstate[1].mu
    sizes = [x.size for x in jax.tree.leaves(params)]
    assert mu_view[0].shape == (sum(s for s in sizes if s <= max_leaf_size),)
    assert [x.size for x in mu_view[1]] == [s for s in sizes if s > max_leaf_size]
    step = jax.jit(lambda tx_, g, s, p: tx_.update(g, s, p), static_argnums=0)
    for i in range(3):
        grads = _mixed_tree(i + 1)
        updates, state = step(tx, grads, state, params)
        wupdates, wstate = step(wrapped, grads, wstate, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), wupdates, updates)
        assert jax.tree.structure(wupdates) == jax.tree.structure(params)
        params = optax.apply_updates(params, updates)


def test_flatten_small_leaves_passes_extra_args_to_the_inner_transform():
    """Flooding inside the wrapper reads `value=`: below the flood level the SGD step ascends, above it
    descends, on both the raveled and the large leaves."""
    wrapped = flatten_small_leaves(optax.chain(flooding(0.5), optax.sgd(0.1)), max_leaf_size=10)
    params = _mixed_tree(0)
    grads = jax.tree.map(jnp.ones_like, params)
    state = wrapped.init(params)
    below, _ = wrapped.update(grads, state, params, value=jnp.float32(0.2))
    above, _ = wrapped.update(grads, state, params, value=jnp.float32(0.9))
    for b, a in zip(jax.tree.leaves(below), jax.tree.leaves(above)):
        np.testing.assert_allclose(b, 0.1)
        np.testing.assert_allclose(a, -0.1)
