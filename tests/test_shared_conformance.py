"""One conformance test over every loss and transform of shared: jit, vmap, grad, bf16, sharded batch.

Each loss case maps (logits [B, K], labels [B]) to its output (per example, or a batch scalar for
the batch-level dice); each transform case is checked inside an optax chain.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from shared import losses as L
from shared import transforms as T
from shared.sparse_softmax import sparse_softmax, sparse_softmax_cross_entropy

B, K = 16, 6
PRIOR = jnp.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])


def _binary(x, y):
    return x[..., 0], (y % 2).astype(x.dtype)


LOSSES = {
    "sparse_softmax": lambda x, y: sparse_softmax(x, 3) * jnp.arange(1.0, K + 1.0).astype(x.dtype)[None, :],
    "sparse_softmax_cross_entropy": lambda x, y: sparse_softmax_cross_entropy(x, y, 3),
    "sparse_softmax_cross_entropy_k=K": lambda x, y: sparse_softmax_cross_entropy(x, y, K),
    "logit_adjusted_cross_entropy": lambda x, y: L.logit_adjusted_cross_entropy(x, y, PRIOR, tau=1.0),
    "posthoc_logit_adjustment": lambda x, y: L.posthoc_logit_adjustment(x, PRIOR),
    "pairwise_margin_loss[la]": lambda x, y: L.pairwise_margin_loss(x, y, L.logit_adjustment_margins(PRIOR, 1.0)),
    "pairwise_margin_loss[ldam,balanced]": lambda x, y: L.pairwise_margin_loss(
        x, y, L.ldam_margins(PRIOR, 0.5), class_weights=L.balanced_class_weights(PRIOR)
    ),
    "weighted_cross_entropy": lambda x, y: L.weighted_cross_entropy(x, y, L.balanced_class_weights(PRIOR)),
    "softmax_focal_loss": lambda x, y: L.softmax_focal_loss(x, y, gamma=2.0, alpha=jnp.linspace(0.2, 1.0, K)),
    "binary_dice_loss": lambda x, y: L.binary_dice_loss(*_binary(x, y)),
    "smoothed_f1_loss": lambda x, y: L.smoothed_f1_loss(*_binary(x, y)),
    "multilabel_categorical_crossentropy": lambda x, y: L.multilabel_categorical_crossentropy(
        x, jax.nn.one_hot(y, x.shape[-1], dtype=bool) | jax.nn.one_hot((y + 2) % x.shape[-1], x.shape[-1], dtype=bool)
    ),
    "flood": lambda x, y: T.flood(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x, y)), 0.5),
    "iflood": lambda x, y: T.iflood(optax.softmax_cross_entropy_with_integer_labels(x, y), 0.5),
    "weissi_penalty": lambda x, y: T.weissi_penalty({"w": x, "b": x[:, 0]}, 0.3, 0.1),
}


def _data(scale=2.0, seed=0, batch=B, classes=K):
    x = scale * jax.random.normal(jax.random.PRNGKey(seed), (batch, classes))
    y = jax.random.randint(jax.random.PRNGKey(seed + 1), (batch,), 0, classes)
    return x, y


def _scalar(f):
    return lambda x, y: jnp.sum(f(x, y).astype(jnp.float32))


def _close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_conformance(name, devices):
    f = LOSSES[name]
    x, y = _data()
    ref = f(x, y)
    # jit
    _close(jax.jit(f)(x, y), ref)
    # grad (eager and jitted agree, finite)
    g = jax.grad(_scalar(f))(x, y)
    assert bool(jnp.isfinite(g).all())
    _close(jax.jit(jax.grad(_scalar(f)))(x, y), g)
    # vmap over an extra leading axis (e.g. seeds)
    x2, y2 = _data(seed=5)
    xs, ys = jnp.stack([x, x2]), jnp.stack([y, y2])
    _close(jax.vmap(f)(xs, ys), jnp.stack([ref, f(x2, y2)]))
    # bf16: finite, close to float32, gradient dtype bf16
    xb = x.astype(jnp.bfloat16)
    outb = f(xb, y)
    assert bool(jnp.isfinite(outb.astype(jnp.float32)).all())
    _close(outb, ref, rtol=5e-2, atol=5e-2)
    gb = jax.grad(_scalar(f))(xb, y)
    assert gb.dtype == jnp.bfloat16 and bool(jnp.isfinite(gb.astype(jnp.float32)).all())
    # sharded batch over the 8 fake devices
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    xs_ = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    ys_ = jax.device_put(y, NamedSharding(mesh, P("data")))
    _close(jax.jit(f)(xs_, ys_), ref)
    _close(jax.jit(jax.grad(_scalar(f)))(xs_, ys_), g)


def _big_cases(classes):
    prior = jnp.linspace(1.0, 1e-3, classes)
    la = L.logit_adjustment_margins(prior, 1.0) if classes <= 4096 else None
    ldam = L.ldam_margins(prior, 0.5) if classes <= 4096 else None
    big = dict(LOSSES)
    big.update(
        {
            "sparse_softmax": lambda x, y: sparse_softmax(x, 10),
            "sparse_softmax_cross_entropy_k=K": lambda x, y: sparse_softmax_cross_entropy(x, y, classes),
            "logit_adjusted_cross_entropy": lambda x, y: L.logit_adjusted_cross_entropy(x, y, prior),
            "posthoc_logit_adjustment": lambda x, y: L.posthoc_logit_adjustment(x, prior),
            "pairwise_margin_loss[la]": lambda x, y: L.pairwise_margin_loss(x, y, la),
            "pairwise_margin_loss[ldam,balanced]": lambda x, y: L.pairwise_margin_loss(
                x, y, ldam, class_weights=L.balanced_class_weights(prior)
            ),
            "weighted_cross_entropy": lambda x, y: L.weighted_cross_entropy(x, y, L.balanced_class_weights(prior)),
            "softmax_focal_loss": lambda x, y: L.softmax_focal_loss(x, y, gamma=2.0),
            "weissi_penalty": lambda x, y: T.weissi_penalty({"w": x}, 0.3, 0.1),
        }
    )
    return big


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_loss_stability_extreme_logits(name, dtype):
    """Logits up to ±1e4 with K = 50k classes (2k for the [K, K] margin losses): no NaN/inf."""
    classes = 2048 if name.startswith("pairwise") else 50_000
    x = jax.random.uniform(jax.random.PRNGKey(2), (4, classes), minval=-1e4, maxval=1e4)
    x = x.at[0].set(1e4).at[1, :].set(-1e4).at[2, 7].set(1e4).astype(dtype)
    y = jnp.array([0, 1, 2, classes - 1])
    v, g = jax.jit(jax.value_and_grad(_scalar(_big_cases(classes)[name])))(x, y)
    assert bool(jnp.isfinite(v)), name
    assert bool(jnp.isfinite(g.astype(jnp.float32)).all()), name


def _mlp_problem(batch=B):
    k = jax.random.split(jax.random.PRNGKey(3), 3)
    params = {"w1": 0.5 * jax.random.normal(k[0], (4, 8)), "b1": jnp.zeros(8), "w2": 0.5 * jax.random.normal(k[1], (8, 3))}
    x = jax.random.normal(k[2], (batch, 4))
    y = jnp.arange(batch) % 3

    def loss_fn(p, x, y):
        h = jax.nn.relu(x @ p["w1"] + p["b1"][None, :].astype(x.dtype))
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h @ p["w2"], y).astype(jnp.float32))

    return params, x, y, loss_fn


TRANSFORMS = {
    "flooding+sgd": lambda: optax.chain(T.flooding(0.3), optax.sgd(0.1)),
    "add_decoupled_weissi+adam": lambda: optax.chain(
        optax.scale_by_adam(), T.add_decoupled_weissi(1e-2), optax.scale_by_learning_rate(1e-2)
    ),
    "flooding+add_decoupled_weissi+sgd": lambda: optax.chain(T.flooding(0.3), T.add_decoupled_weissi(1e-2), optax.sgd(0.1)),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_conformance(name, devices):
    tx = TRANSFORMS[name]()
    params, x, y, loss_fn = _mlp_problem()

    def step(p, s, x, y):
        value, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, s = tx.update(g, s, p, value=value)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    jstep = jax.jit(step)  # eager-vs-closed-form checks are in test_shared_transforms.py
    ref_p, js = jstep(params, state, x, y)
    assert jax.tree.structure(js) == jax.tree.structure(state)
    assert not all(bool(jnp.allclose(a, b)) for a, b in zip(jax.tree.leaves(ref_p), jax.tree.leaves(params)))
    # vmap over seeds (stacked params and states)
    params2 = jax.tree.map(lambda a: 1.5 * a, params)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, params2)
    vp, _ = jax.vmap(step, in_axes=(0, 0, None, None))(stacked, jax.vmap(tx.init)(stacked), x, y)
    ref2, _ = jstep(params2, tx.init(params2), x, y)
    jax.tree.map(_close, jax.tree.map(lambda a: a[1], vp), ref2)
    # bf16 params: finite, dtype kept
    pb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    bp, _ = jax.jit(step)(pb, tx.init(pb), x.astype(jnp.bfloat16), y)
    for leaf in jax.tree.leaves(bp):
        assert leaf.dtype == jnp.bfloat16 and bool(jnp.isfinite(leaf.astype(jnp.float32)).all())
    # sharded batch, replicated params
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    sp, _ = jstep(params, state, xs, ys)
    jax.tree.map(_close, sp, ref_p)


def test_gradient_norm_penalty_conformance(devices):
    params, x, y, loss_fn = _mlp_problem()
    fn = T.gradient_norm_penalty(loss_fn, 0.1)
    v, g = jax.jit(fn)(params, x, y)  # eager-vs-double-backprop check: test_shared_transforms.py
    # vmap over eps and over stacked params
    vv, _ = jax.vmap(lambda e: T.gradient_norm_penalty(loss_fn, e)(params, x, y))(jnp.array([0.0, 0.1]))
    _close(vv[1], v)
    _close(vv[0], loss_fn(params, x, y))
    # grad of the value agrees with the returned grads
    gv = jax.jit(jax.grad(lambda p: fn(p, x, y)[0]))(params)
    jax.tree.map(lambda a, b: _close(a, b, rtol=1e-4, atol=1e-6), gv, g)
    # bf16 inputs
    pb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    bv, bg = jax.jit(fn)(pb, x.astype(jnp.bfloat16), y)
    assert bool(jnp.isfinite(bv)) and all(bool(jnp.isfinite(a.astype(jnp.float32)).all()) for a in jax.tree.leaves(bg))
    # sharded batch
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    sv, sg = jax.jit(fn)(params, xs, ys)
    _close(sv, v)
    jax.tree.map(_close, sg, g)
