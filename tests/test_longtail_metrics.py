"""Tests for longtail.metrics and longtail.methods: hand-computed values, τ search, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from longtail import methods, metrics
from longtail.configs import TRAINED_METHODS, CifarLTConfig, DigitsLTConfig, SyntheticConfig
from shared import losses


def test_per_class_and_balanced_error_by_hand():
    labels = jnp.array([0, 0, 0, 0, 1, 1, 2])
    preds = jnp.array([0, 0, 0, 1, 1, 0, 0])
    np.testing.assert_allclose(metrics.per_class_error(preds, labels, 3), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(metrics.balanced_error(preds, labels, 3), (0.25 + 0.5 + 1.0) / 3)
    np.testing.assert_allclose(metrics.accuracy(preds, labels), 4 / 7)
    # weights drop examples (padding); an absent class is NaN and left out of the balanced error
    w = jnp.array([1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_allclose(metrics.per_class_error(preds, labels, 3, w)[:2], [0.25, 0.5])
    assert np.isnan(metrics.per_class_error(preds, labels, 3, w)[2])
    np.testing.assert_allclose(metrics.balanced_error(preds, labels, 3, w), 0.375)


def test_metrics_jit_and_vmap():
    labels = jnp.array([0, 1, 1, 2])
    preds = jnp.array([[0, 1, 0, 2], [1, 1, 1, 1]])
    got = jax.jit(jax.vmap(lambda p: metrics.balanced_error(p, labels, 3)))(preds)
    np.testing.assert_allclose(got, [0.5 / 3, 2 / 3], rtol=1e-6)


def test_balanced_error_differs_from_error_under_imbalance():
    labels = jnp.array([0] * 95 + [1] * 5)
    preds = jnp.zeros(100, jnp.int32)  # always the majority class
    assert float(1 - metrics.accuracy(preds, labels)) == pytest.approx(0.05)
    assert float(metrics.balanced_error(preds, labels, 2)) == pytest.approx(0.5)


def test_class_groups_and_group_errors():
    counts = np.array([500, 300, 200, 100, 50, 30, 20, 10, 5])
    np.testing.assert_array_equal(metrics.class_groups(counts), [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(metrics.class_groups(counts, many=100, few=20), [0, 0, 0, 1, 1, 1, 1, 2, 2])
    errs = np.arange(9) / 10
    g = metrics.group_errors(errs, metrics.class_groups(counts))
    assert g == pytest.approx({"head": 0.1, "middle": 0.4, "tail": 0.7})
    # 10 classes: 4 head / 2 middle / 4 tail
    np.testing.assert_array_equal(np.bincount(metrics.class_groups(np.arange(10, 0, -1))), [4, 2, 4])


def test_tune_posthoc_tau_finds_the_balanced_rule():
    # two 1-D Gaussians at ±1 with prior 0.9 / 0.1; logits = the calibrated posterior log p(y|x),
    # so the balanced-Bayes rule is τ = 1 (argmax of log p(x|y)).
    rng = np.random.default_rng(0)
    n = 40_000
    y = (rng.random(n) < 0.5).astype(np.int32)  # a balanced held-out set
    x = np.where(y == 1, 1.0, -1.0) + rng.normal(size=n)
    prior = jnp.array([0.9, 0.1])
    log_lik = jnp.stack([-(x + 1) ** 2 / 2, -(x - 1) ** 2 / 2], axis=-1)
    logits = jax.nn.log_softmax(log_lik + jnp.log(prior)[None, :], axis=-1)
    tau, errors = metrics.tune_posthoc_tau(logits, y, prior, taus=(0.0, 0.5, 1.0, 1.5, 2.0))
    assert tau == 1.0 and errors.shape == (5,)
    assert errors[0] > errors[2] + 0.05  # τ = 0 (plain argmax) is much worse on the balanced metric
    np.testing.assert_allclose(metrics.posthoc_balanced_error(logits, y, prior, 1.0), errors[2], rtol=1e-6)


def test_holdout_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(5), 20)
    held, rest = metrics.holdout_split(labels, 0.25, seed=0)
    assert len(np.intersect1d(held, rest)) == 0 and len(held) + len(rest) == 100
    np.testing.assert_array_equal(np.bincount(labels[held]), [5] * 5)


def test_class_prior():
    np.testing.assert_allclose(metrics.class_prior(jnp.array([0, 0, 1, 2]), 3), [0.5, 0.25, 0.25])


@pytest.mark.parametrize("call, name", [
    (lambda: metrics.check_class_prior(jnp.array([0.5, 0.5, 0.0])), "class_prior"),
    (lambda: metrics.check_class_prior(jnp.array([0.5, 0.6])), "class_prior"),
    (lambda: metrics.tune_posthoc_tau(jnp.zeros((2, 2)), jnp.array([0, 1]), jnp.array([0.3, 0.3])), "class_prior"),
    (lambda: metrics.posthoc_balanced_error(jnp.zeros((2, 2)), jnp.array([0, 1]), jnp.array([1.0, 0.0]), 1.0),
     "class_prior"),
    (lambda: metrics.balanced_error(jnp.array([0, 1]), jnp.array([0, 3]), 3), "labels"),
    (lambda: metrics.per_class_error(jnp.array([0, 1]), jnp.array([-1, 0]), 3), "labels"),
    (lambda: metrics.class_prior(jnp.array([0, 0, 2]), 3), "labels"),
    (lambda: SyntheticConfig(positive_prior=0.0), "positive_prior"),
    (lambda: DigitsLTConfig(rhos=(10.0, 0.5)), "rhos"),
    (lambda: CifarLTConfig(rho=0.9), "rho"),
    (lambda: CifarLTConfig(methods=("balanced_ce",)), "erm"),
    (lambda: methods.make_loss("nope", [3, 2, 1]), "method"),
    (lambda: methods.make_loss("erm", [3, 0, 1]), "class_counts"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_rho_below_one_rejected_by_the_subsampler():
    from shared.data import long_tail_subsample

    with pytest.raises(ValueError, match="rho"):
        long_tail_subsample(np.repeat(np.arange(3), 5), 0.5, seed=0)


# ------------------------------------------------------------------------------------ methods
COUNTS = np.array([50.0, 20.0, 8.0, 2.0])


@pytest.fixture
def batch():
    logits = 2 * jax.random.normal(jax.random.PRNGKey(0), (16, 4))
    labels = jax.random.randint(jax.random.PRNGKey(1), (16,), 0, 4)
    return logits, labels


def test_methods_reduce_to_known_cases(batch):
    logits, labels = batch
    prior = jnp.asarray(COUNTS / COUNTS.sum(), jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    get = lambda m, **kw: methods.make_loss(m, COUNTS, **kw)(logits, labels)  # noqa: E731
    np.testing.assert_allclose(get("erm"), ce, rtol=1e-6)
    np.testing.assert_allclose(get("logit_adjusted_loss", tau=0.0), ce, rtol=1e-6)
    np.testing.assert_allclose(get("focal", focal_gamma=0.0), ce, rtol=1e-5)
    np.testing.assert_allclose(get("ldam", ldam_scale=0.0), ce, rtol=1e-6)
    np.testing.assert_allclose(get("class_balanced", class_balanced_beta=0.0), ce, rtol=1e-5)  # β=0: all 1
    np.testing.assert_allclose(get("equalised", tau=0.0), get("balanced_ce"), rtol=1e-6)
    np.testing.assert_allclose(get("logit_adjusted_loss"),
                               losses.logit_adjusted_cross_entropy(logits, labels, prior, 1.0), rtol=1e-6)


def test_class_balanced_weights_limits():
    # β → 1: inverse frequency (balanced weights); normalised to sum K
    w = np.asarray(methods.class_balanced_weights(COUNTS, 0.999999))
    np.testing.assert_allclose(w / w.sum(), (1 / COUNTS) / (1 / COUNTS).sum(), rtol=1e-3)
    assert w.sum() == pytest.approx(4.0)


def test_macro_smoothed_f1_is_per_class_f1_weighting(batch):
    logits, labels = batch
    got = methods.macro_smoothed_f1_loss(logits, labels)
    onehot = jax.nn.one_hot(labels, 4)
    expect = sum(losses.smoothed_f1_loss(logits[:, k], onehot[:, k]) for k in range(4))
    np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_switched_loss_matches_each_method_under_vmap(batch):
    logits, labels = batch
    loss = methods.switched_loss(TRAINED_METHODS, COUNTS)
    got = jax.jit(jax.vmap(loss, in_axes=(0, None, None)))(jnp.arange(len(TRAINED_METHODS)), logits, labels)
    for i, m in enumerate(TRAINED_METHODS):
        np.testing.assert_allclose(got[i], methods.make_loss(m, COUNTS)(logits, labels), rtol=1e-5, atol=1e-6)
