"""One conformance test over every loss and transform of shared: jit, vmap, grad, bf16, sharded batch.

Each loss case maps (logits [B, K], labels [B]) to its output (per example, or a batch scalar for
the batch-level dice); each transform case is checked inside an optax chain. Values, not only
self-consistency: every loss's reverse-mode gradient is checked against finite differences in
float64, bf16 results against float32 on the same bf16-rounded inputs within bf16's epsilon, and a
test reads the modules' `__all__` so that a public loss or transform without a case fails.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

from shared import losses, transforms
from shared.sparse_softmax import __all__ as SPARSE_SOFTMAX_API, sparse_softmax, sparse_softmax_cross_entropy

B, K = 16, 6
PRIOR = jnp.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])


def _binary(x, y):
    return x[..., 0], (y % 2).astype(x.dtype)


LOSSES = {
    "sparse_softmax": lambda x, y: sparse_softmax(x, 3) * jnp.arange(1.0, K + 1.0).astype(x.dtype)[None, :],
    "sparse_softmax_cross_entropy": lambda x, y: sparse_softmax_cross_entropy(x, y, 3),
    "sparse_softmax_cross_entropy_k=K": lambda x, y: sparse_softmax_cross_entropy(x, y, K),
    "logit_adjusted_cross_entropy": lambda x, y: losses.logit_adjusted_cross_entropy(x, y, PRIOR, tau=1.0),
    "posthoc_logit_adjustment": lambda x, y: losses.posthoc_logit_adjustment(x, PRIOR),
    "pairwise_margin_loss[la]": lambda x, y: losses.pairwise_margin_loss(
        x, y, losses.logit_adjustment_margins(PRIOR, 1.0)),
    "pairwise_margin_loss[ldam,balanced]": lambda x, y: losses.pairwise_margin_loss(
        x, y, losses.ldam_margins(PRIOR, 0.5), class_weights=losses.balanced_class_weights(PRIOR)
    ),
    "weighted_cross_entropy": lambda x, y: losses.weighted_cross_entropy(x, y, losses.balanced_class_weights(PRIOR)),
    "softmax_focal_loss": lambda x, y: losses.softmax_focal_loss(x, y, gamma=2.0, alpha=jnp.linspace(0.2, 1.0, K)),
    "binary_dice_loss": lambda x, y: losses.binary_dice_loss(*_binary(x, y)),
    "smoothed_f1_loss": lambda x, y: losses.smoothed_f1_loss(*_binary(x, y)),
    "soft_f1_score": lambda x, y: losses.soft_f1_score(*_binary(x, y)),
    "multilabel_categorical_crossentropy": lambda x, y: losses.multilabel_categorical_crossentropy(
        x, jax.nn.one_hot(y, x.shape[-1], dtype=bool) | jax.nn.one_hot((y + 2) % x.shape[-1], x.shape[-1], dtype=bool)
    ),
    "flood": lambda x, y: transforms.flood(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x, y)), 0.5),
    "iflood": lambda x, y: transforms.iflood(optax.softmax_cross_entropy_with_integer_labels(x, y), 0.5),
    "weissi_penalty": lambda x, y: transforms.weissi_penalty({"w": x, "b": x[:, 0]}, 0.3, 0.1),
}


def _data(scale=2.0, seed=0, batch=B, classes=K):
    x = scale * jax.random.normal(jax.random.PRNGKey(seed), (batch, classes))
    y = jax.random.randint(jax.random.PRNGKey(seed + 1), (batch,), 0, classes)
    return x, y


def _scalar(f):
    return lambda x, y: jnp.sum(f(x, y).astype(jnp.float32))


def _close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=rtol, atol=atol)


BF16_EPS = float(jnp.finfo(jnp.bfloat16).eps)  # 2⁻⁷: two units of bf16 roundoff (2⁻⁸)


def _bf16_close(got, ref):
    """max |got − ref| ≤ ε_bf16 · max |ref|, with ref computed in float32 from the same
    bf16-rounded inputs (so the inputs' rounding, amplified by each function's condition number, is
    not counted). The losses compute in float32 and round once to bf16 on output (≤ ε/2 of the
    output's scale); the few steps done in bf16 (optax's CE in the weighted CE, the post-hoc shift, the
    iFlood sum) add roundings of terms no larger than the output, so one ε at the output's scale
    holds (measured: ≤ 0.7 ε); a step carried out at lower precision or a wrong formula does not."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert np.all(np.isfinite(got))
    scale = np.max(np.abs(ref))
    assert np.max(np.abs(got - ref)) <= BF16_EPS * scale, (np.max(np.abs(got - ref)) / scale / BF16_EPS)


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
    # bf16 against float32 on the same rounded inputs, gradient dtype bf16
    xb = x.astype(jnp.bfloat16)
    _bf16_close(f(xb, y), f(xb.astype(jnp.float32), y))
    gb = jax.grad(_scalar(f))(xb, y)
    assert gb.dtype == jnp.bfloat16
    _bf16_close(gb, jax.grad(_scalar(f))(xb.astype(jnp.float32), y))
    # sharded batch over the 8 fake devices
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    xs_ = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    ys_ = jax.device_put(y, NamedSharding(mesh, P("data")))
    _close(jax.jit(f)(xs_, ys_), ref)
    _close(jax.jit(jax.grad(_scalar(f)))(xs_, ys_), g)


# Cases whose gradient is by design not the derivative of their value.
SURROGATE_GRADIENT = {
    "smoothed_f1_loss": "F1 is held constant (stop_gradient), so that the gradient is the F1's: checked against "
                        "−c·∂F1/∂z in test_longtail_claims.py; soft_f1_score's own gradient is checked here",
}


@pytest.mark.parametrize("name", [n for n in LOSSES if n not in SURROGATE_GRADIENT])
def test_loss_gradient_matches_finite_differences_in_float64(name):
    """The reverse-mode gradient (custom VJPs included) against central differences, in float64
    (forward mode is not defined for every custom-gradient function, hence modes=("rev",))."""
    f = LOSSES[name]
    with jax.enable_x64(True):
        x, y = _data()
        x = x.astype(jnp.float64)
        assert f(x, y).dtype == jnp.float64 or name == "weissi_penalty"  # the penalty sums in float32+
        total = jax.jit(lambda x: jnp.sum(f(x, y)))  # one compilation, not op-by-op dispatch (RESULTS.md)
        check_grads(total, (x,), order=1, modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-6)


# Public names of the loss / transform modules that are not a case of LOSSES or TRANSFORMS, each with
# where its values are checked; `test_every_public_loss_and_transform_has_a_case` keeps this honest.
BUILT_INTO_A_CASE = {"logit_adjustment_margins": "pairwise_margin_loss[la]",
                     "ldam_margins": "pairwise_margin_loss[ldam,balanced]",
                     "balanced_class_weights": "weighted_cross_entropy"}
NOT_A_CASE = {
    "gradient_norm_penalty": "returns (value, grads): test_gradient_norm_penalty_conformance",
    "FloodingState": "the state type of `flooding`: test_transform_conformance checks its structure",
    "default_weissi_mask": "a mask builder: the default `where` of every weissi case",
    "top_k_mask": "boolean output, no gradient: tests/test_shared_sparse_softmax.py",
}


def test_every_public_loss_and_transform_has_a_case():
    """Fails when a name is added to a module's `__all__` without a conformance case (or an entry
    above saying where it is checked), or when an entry above names nothing public."""
    public = set(losses.__all__) | set(SPARSE_SOFTMAX_API) | set(transforms.__all__)
    cases = {name.split("[")[0].split("_k=")[0] for name in LOSSES}
    cases |= {part for name in TRANSFORMS for part in name.split("+")}
    missing = public - cases - set(BUILT_INTO_A_CASE) - set(NOT_A_CASE)
    assert not missing, f"public losses/transforms without a conformance case: {sorted(missing)}"
    assert set(BUILT_INTO_A_CASE) | set(NOT_A_CASE) <= public
    assert set(BUILT_INTO_A_CASE.values()) <= set(LOSSES)


def _big_cases(classes):
    prior = jnp.linspace(1.0, 1e-3, classes)
    la = losses.logit_adjustment_margins(prior, 1.0) if classes <= 4096 else None
    ldam = losses.ldam_margins(prior, 0.5) if classes <= 4096 else None
    big = dict(LOSSES)
    big.update(
        {
            "sparse_softmax": lambda x, y: sparse_softmax(x, 10),
            "sparse_softmax_cross_entropy_k=K": lambda x, y: sparse_softmax_cross_entropy(x, y, classes),
            "logit_adjusted_cross_entropy": lambda x, y: losses.logit_adjusted_cross_entropy(x, y, prior),
            "posthoc_logit_adjustment": lambda x, y: losses.posthoc_logit_adjustment(x, prior),
            "pairwise_margin_loss[la]": lambda x, y: losses.pairwise_margin_loss(x, y, la),
            "pairwise_margin_loss[ldam,balanced]": lambda x, y: losses.pairwise_margin_loss(
                x, y, ldam, class_weights=losses.balanced_class_weights(prior)
            ),
            "weighted_cross_entropy": lambda x, y: losses.weighted_cross_entropy(
                x, y, losses.balanced_class_weights(prior)),
            "softmax_focal_loss": lambda x, y: losses.softmax_focal_loss(x, y, gamma=2.0),
            "weissi_penalty": lambda x, y: transforms.weissi_penalty({"w": x}, 0.3, 0.1),
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
    params = {"w1": 0.5 * jax.random.normal(k[0], (4, 8)), "b1": jnp.zeros(8),
              "w2": 0.5 * jax.random.normal(k[1], (8, 3))}
    x = jax.random.normal(k[2], (batch, 4))
    y = jnp.arange(batch) % 3

    def loss_fn(p, x, y):
        h = jax.nn.relu(x @ p["w1"] + p["b1"][None, :].astype(x.dtype))
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h @ p["w2"], y).astype(jnp.float32))

    return params, x, y, loss_fn


TRANSFORMS = {
    "flooding+sgd": lambda: optax.chain(transforms.flooding(0.3), optax.sgd(0.1)),
    "add_decoupled_weissi+adam": lambda: optax.chain(
        optax.scale_by_adam(), transforms.add_decoupled_weissi(1e-2), optax.scale_by_learning_rate(1e-2)
    ),
    "flooding+add_decoupled_weissi+sgd": lambda: optax.chain(transforms.flooding(0.3),
                                                             transforms.add_decoupled_weissi(1e-2), optax.sgd(0.1)),
    # b1 (8) and w2 (24) raveled together, w1 (32) updated as it is
    "flatten_small_leaves+flooding+adam": lambda: transforms.flatten_small_leaves(
        optax.chain(transforms.flooding(0.3), optax.adam(1e-2)), max_leaf_size=24),
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
    # bf16 params: dtype kept; against float32 from the same rounded inputs, the new params are off by
    # at most their own bf16 rounding (≤ ε/2 of their scale) plus the update's error, ≤ 2ε of the update's
    # scale (each update entry is a product / ratio of a few bf16-rounded factors, Adam's g/√v among them)
    pb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    xb = x.astype(jnp.bfloat16)
    bp, _ = jax.jit(step)(pb, tx.init(pb), xb, y)
    pr = jax.tree.map(lambda a: a.astype(jnp.float32), pb)
    rp, _ = jax.jit(step)(pr, tx.init(pr), xb.astype(jnp.float32), y)
    for leaf, ref, start in zip(jax.tree.leaves(bp), jax.tree.leaves(rp), jax.tree.leaves(pr)):
        assert leaf.dtype == jnp.bfloat16
        leaf, ref, start = (np.asarray(a, np.float64) for a in (leaf.astype(jnp.float32), ref, start))
        tol = BF16_EPS * (np.max(np.abs(ref)) + 2 * np.max(np.abs(ref - start)))
        assert np.max(np.abs(leaf - ref)) <= tol
    # sharded batch, replicated params
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    sp, _ = jstep(params, state, xs, ys)
    jax.tree.map(_close, sp, ref_p)


def test_gradient_norm_penalty_conformance(devices):
    params, x, y, loss_fn = _mlp_problem()
    fn = transforms.gradient_norm_penalty(loss_fn, 0.1)
    v, g = jax.jit(fn)(params, x, y)  # eager-vs-double-backprop check: test_shared_transforms.py
    # vmap over eps and over stacked params
    vv, _ = jax.vmap(lambda e: transforms.gradient_norm_penalty(loss_fn, e)(params, x, y))(jnp.array([0.0, 0.1]))
    _close(vv[1], v)
    _close(vv[0], loss_fn(params, x, y))
    # grad of the value agrees with the returned grads
    gv = jax.jit(jax.grad(lambda p: fn(p, x, y)[0]))(params)
    jax.tree.map(lambda a, b: _close(a, b, rtol=1e-4, atol=1e-6), gv, g)
    # bf16 inputs
    pb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    bv, bg = jax.jit(fn)(pb, x.astype(jnp.bfloat16), y)
    pr = jax.tree.map(lambda a: a.astype(jnp.float32), pb)
    rv, rg = jax.jit(fn)(pr, x.astype(jnp.bfloat16).astype(jnp.float32), y)
    _bf16_close(bv, rv)  # against float32 on the same rounded inputs (measured ≤ 0.6 ε)
    jax.tree.map(_bf16_close, bg, rg)
    # sharded batch
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,), devices=devices)
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    sv, sg = jax.jit(fn)(params, xs, ys)
    _close(sv, v)
    jax.tree.map(_close, sg, g)
