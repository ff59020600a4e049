import dataclasses

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from shared.experiment import RunContext
from shared.report import Report
from weissi import configs, digits
from weissi.invariance import shift_factors, shift_layer_params

TINY = dataclasses.replace(configs.DIGITS_QUICK, hidden=(16,), num_steps=100, num_seeds=1, eps=(0.1,), pgd_steps=3)


def test_run_writes_the_issue_metrics_format(tmp_path):
    config = dataclasses.replace(TINY, methods=("weissi",))
    metrics = digits.run(config, RunContext(out_dir=tmp_path, report=Report("t", tmp_path)))
    assert set(metrics) == {"weissi"}
    assert (tmp_path / "robust_accuracy.png").exists()
    for m in metrics.values():
        assert set(m) == {"clean_accuracy", "fgsm_accuracy", "pgd_accuracy"}
        assert m["clean_accuracy"] > 0.4 and m["pgd_accuracy"] <= m["clean_accuracy"]


def test_l2_shrinks_the_shifted_layer_weissi_does_not_care():
    """From the shifted init (W₁ × e^s), a strong L2 pulls ‖W₁‖ down; training without it does not."""
    config = dataclasses.replace(TINY, l2=0.05, num_steps=150)
    none = digits.train_method(config, "none", [0])["layer_norms"]  # [S, 2 inits, layers]
    l2 = digits.train_method(config, "l2", [0])["layer_norms"]
    assert l2[0, 1, 0] < 0.85 * none[0, 1, 0]  # Adam moves each weight by ~lr per step: bounded shrink


@pytest.mark.parametrize("method", ["weight_decay", "adamw", "decoupled_weissi"])
def test_every_method_trains(method):
    res = digits.train_method(TINY, method, [0])
    assert res["clean_accuracy"].shape == (1, 2) and res["fgsm_accuracy"].shape == (1, 2, 1)
    assert np.all(res["clean_accuracy"] > 0.5)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="weissi_lambda1"):
        dataclasses.replace(configs.DIGITS_QUICK, weissi_lambda1=-1.0)
    with pytest.raises(ValueError, match="main_eps"):
        dataclasses.replace(configs.DIGITS_QUICK, main_eps=0.3)
    with pytest.raises(ValueError, match="methods"):
        dataclasses.replace(configs.DIGITS_QUICK, methods=("dropout",))


@pytest.mark.slow  # ~40 s: SmallCNN compile + attacks
def test_small_cnn_variant_trains_from_both_inits():
    config = dataclasses.replace(TINY, model="cnn", num_steps=60)
    res = digits.train_method(config, "weissi", [0])
    assert res["layer_norms"].shape == (1, 2, 3)  # conv1, conv2, head kernels
    assert res["layer_norms"][0, 1, 0] > 2 * res["layer_norms"][0, 0, 0]  # the shift survives short training
    assert np.all(res["clean_accuracy"] > 0.3)


STRONG = dataclasses.replace(TINY, sgd_lr=0.1, weight_decay=0.2, adam_lr=0.01, adamw=0.5, l2=0.1,
                             weissi_lambda1=0.1, weissi_lambda2=0.01, decoupled_weissi=3.0)


def _regulariser_steps(method, steps=3):
    """`steps` real updates of `method` with the data loss switched off, so only its regulariser acts:
    grads = ∇penalty, then the method's optax transform, as in `digits.train_method`.
    Returns (params before, params after) as flat lists of float64 arrays."""
    model, _ = digits.make_model_and_layers(STRONG, 0)
    params = nnx.split(model, nnx.Param)[1]
    tx, penalty = digits.method_parts(method, STRONG)
    state = tx.init(params)
    before = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(penalty)(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return before, [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]


def _kernels_scaled(before, after, factors):
    """Each matrix W must become factor·W; biases must not move."""
    for w0, w1 in zip(before, after):
        if w0.ndim >= 2:
            f = factors(w0) if callable(factors) else factors
            np.testing.assert_allclose(w1, f * w0, rtol=2e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(w1, w0)


def test_weight_decay_and_adamw_shrink_the_matrices_by_the_hand_computed_factor():
    """Without a data loss, SGD-momentum weight decay scales W by a_t with m_t = wd·a_t + μ m_{t−1},
    a_{t+1} = a_t − η m_t, and AdamW by (1 − η·wd)^t (Adam's own step is 0 at zero gradient); biases
    are not decayed. Fails if either method is replaced by plain Adam (W would not move)."""
    a, m = 1.0, 0.0
    for _ in range(3):
        m = STRONG.weight_decay * a + 0.9 * m
        a -= STRONG.sgd_lr * m
    _kernels_scaled(*_regulariser_steps("weight_decay"), a)
    assert a < 0.9
    _kernels_scaled(*_regulariser_steps("adamw"), (1 - STRONG.adam_lr * STRONG.adamw) ** 3)


def test_decoupled_weissi_shrinks_each_norm_by_weight_over_norm():
    """Decoupled WEISSI adds w·W/‖W‖² before the learning rate: W keeps its direction and
    ‖W‖ ← ‖W‖ − η·w/‖W‖ per step, so small matrices shrink faster than large ones (the shift-invariant
    pull of λ₁ log‖W‖). Fails if decoupled WEISSI is replaced by plain Adam."""
    def factor(w0):
        n0 = n = np.linalg.norm(w0)
        for _ in range(3):
            n -= STRONG.adam_lr * STRONG.decoupled_weissi / n
        return n / n0

    before, after = _regulariser_steps("decoupled_weissi")
    _kernels_scaled(before, after, factor)
    assert min(1 - factor(w) for w in before if w.ndim >= 2) > 1e-3


def test_weissi_penalty_steps_follow_its_analytic_gradient_and_are_shift_invariant():
    """WEISSI in the loss, trained with Adam: Adam's first step is −η·g/(|g| + 1e-8) per entry with
    g = λ₁ W/‖W‖² + λ₂ (sign W/‖W‖ − ‖W‖₁ W/‖W‖³) (by hand), biases untouched; ⟨g, W⟩ = λ₁ for
    every matrix (Euler: the L1/L2 term has degree 0); and the penalty of the scale-shifted init equals that of
    the standard init (the same function), while L2's does not. Fails if WEISSI is replaced by plain Adam."""
    before, after = _regulariser_steps("weissi", steps=1)
    l1, l2 = STRONG.weissi_lambda1, STRONG.weissi_lambda2
    for w0, w1 in zip(before, after):
        if w0.ndim < 2:
            np.testing.assert_array_equal(w1, w0)
            continue
        n = np.linalg.norm(w0)
        g = l1 * w0 / n ** 2 + l2 * (np.sign(w0) / n - np.abs(w0).sum() * w0 / n ** 3)
        assert np.sum(g * w0) == pytest.approx(l1, rel=1e-6)
        np.testing.assert_allclose(w1, w0 - STRONG.adam_lr * g / (np.abs(g) + 1e-8), rtol=1e-5, atol=1e-6)
    model, paths = digits.make_model_and_layers(STRONG, 0)
    params = nnx.split(model, nnx.Param)[1]
    shifted = shift_layer_params(params, paths, shift_factors(len(paths), 1.5))
    _, penalty = digits.method_parts("weissi", STRONG)
    assert float(penalty(shifted)) == pytest.approx(float(penalty(params)), abs=1e-5)
    _, l2_penalty = digits.method_parts("l2", STRONG)
    assert float(l2_penalty(shifted)) > 2 * float(l2_penalty(params))


def test_l2_first_adam_step_moves_every_matrix_entry_towards_zero_by_lr():
    """L2 (λ/2)‖W‖² trained with Adam: g = λW, so the first step is −η·g/(|g| + 1e-8), i.e. −η·sign(W)
    except on entries within ~1e-8/λ of 0. Fails if the L2 penalty is dropped."""
    before, after = _regulariser_steps("l2", steps=1)
    for w0, w1 in zip(before, after):
        g = STRONG.l2 * w0
        expected = w0 - STRONG.adam_lr * g / (np.abs(g) + 1e-8) if w0.ndim >= 2 else w0
        np.testing.assert_allclose(w1, expected, rtol=1e-5, atol=1e-6)
