"""Closed-form one-step Jacobians vs jax.jacfwd, the O(T) long-range scan vs naive jacrev, and the
post's conclusions (vanishing at the mean-field rate, explosion, LSTM/GRU keep the gradient)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_grad import cells, jacobians

KEY = jax.random.PRNGKey(0)
LR = jax.jit(jacobians.long_range_norms, static_argnums=0)


def _state(cell, p, x, n=3):
    st = cells.initial_state(cell, cells.hidden_size(p))
    for _ in range(n):
        st = cells.step(cell, p, st, x)
    return st


@pytest.mark.parametrize("cell", cells.CELLS)
def test_closed_form_matches_jacfwd(cell):
    p = cells.init(cell, KEY, 5, 7, gain=1.3, forget_bias=0.5)
    x = jax.random.normal(jax.random.PRNGKey(1), (5,))
    st = _state(cell, p, x)
    s = jacobians.flatten_state(cell, st)
    ref = jax.jacfwd(lambda s_: jacobians.flat_step(cell, p, s_, x))(s)
    closed = {"simple": lambda: jacobians.simple_rnn_jacobian(p, s, x),
              "lstm": lambda: jacobians.lstm_state_jacobian(p, st, x),
              "gru": lambda: jacobians.gru_jacobian(p, s, x)}[cell]()
    np.testing.assert_allclose(closed, ref, atol=1e-5)


def test_lstm_cell_path_jacobian_matches_jacfwd():
    p = cells.init("lstm", KEY, 5, 7, gain=1.3)
    x = jax.random.normal(jax.random.PRNGKey(1), (5,))
    _h, c = _state("lstm", p, x)
    o_prev = jax.random.uniform(jax.random.PRNGKey(2), (7,))
    ref = jax.jacfwd(lambda c_: cells.step("lstm", p, (o_prev * jnp.tanh(c_), c_), x)[1])(c)
    got = jacobians.lstm_cell_jacobian(p, (o_prev * jnp.tanh(c), c), x, o_prev)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # the post's bound: the off-diagonal part is small compared with diag(f) when f ≈ 1
    f = cells.lstm_gates(p, (o_prev * jnp.tanh(c), c), x)[1]
    assert float(jnp.abs(got - jnp.diag(f)).max()) < 0.5


@pytest.mark.parametrize("cell", cells.CELLS)
def test_long_range_scan_matches_naive_jacrev(cell):
    p = cells.init(cell, KEY, 4, 6, gain=0.9)
    xs = jax.random.normal(jax.random.PRNGKey(1), (15, 4))
    out = LR(cell, p, xs)
    view = "state" if cell == "lstm" else "h"
    for t in (0, 7, 12):
        spec, frob = jacobians.naive_jacobian_norm(cell, p, xs, t)
        lag = 15 - t
        np.testing.assert_allclose(out[f"log_frob_{view}"][lag - 1], jnp.log(frob), atol=1e-4)
        np.testing.assert_allclose(out[f"log_spec_{view}"][lag - 1], jnp.log(spec), atol=2e-2)
        assert out[f"log_spec_{view}"][lag - 1] <= jnp.log(spec) + 1e-4  # power iteration: lower bound
    g = jacobians.input_grad_norms(cell, p, xs)
    np.testing.assert_allclose(out["log_grad_x"], jnp.log(g[::-1]), atol=1e-4)


def test_no_underflow_at_long_lags():
    p = cells.init("simple", KEY, 16, 16, gain=0.5)
    xs = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (1000, 16))
    out = LR("simple", p, xs)
    assert bool(jnp.all(jnp.isfinite(out["log_spec_h"])))
    assert float(out["log_spec_h"][-1]) < -500  # e^-500 is far below float32's range


@pytest.mark.parametrize("gain,scale", [(0.8, 0.1), (0.9, 0.1), (1.2, 1.0)])
def test_simple_rnn_vanishes_at_mean_field_rate(gain, scale):
    p = cells.init("simple", KEY, 128, 128, gain=gain)
    xs = scale * jax.random.normal(jax.random.PRNGKey(1), (200, 128))
    out = LR("simple", p, xs)
    pred = jacobians.predicted_log_rate_simple(gain, out["hs"])
    fit = jacobians.fitted_log_rate(out["log_spec_h"], min_lag=10)
    assert float(fit) < -0.05
    np.testing.assert_allclose(fit, pred, rtol=0.04)
    np.testing.assert_allclose(jacobians.fitted_log_rate(out["log_frob_h"], 10), pred, rtol=0.02)


def test_simple_rnn_large_gain_explodes():
    p = cells.init("simple", KEY, 64, 64, gain=1.5)
    xs = 0.01 * jax.random.normal(jax.random.PRNGKey(1), (100, 64))
    out = LR("simple", p, xs)
    assert float(out["log_spec_h"][99]) > jnp.log(1e3)
    # tanh saturation holds the growth far below g^t
    assert float(out["log_spec_h"][99]) < 100 * np.log(1.5) - 10


def test_lstm_and_gru_keep_gradient_and_forget_bias_lengthens_memory():
    xs = jax.random.normal(jax.random.PRNGKey(1), (100, 32))
    simple = LR("simple", cells.init("simple", KEY, 32, 32, gain=1.0), xs)
    rate_simple = jacobians.fitted_log_rate(simple["log_spec_h"], 5)
    rates = {}
    for cell, view in (("lstm", "cell"), ("gru", "h")):
        for fb in (0.0, 1.0, 3.0):
            out = LR(cell, cells.init(cell, KEY, 32, 32, gain=1.0, forget_bias=fb), xs)
            rates[cell, fb] = float(jacobians.fitted_log_rate(out[f"log_spec_{view}"], 5))
        assert rates[cell, 0.0] < rates[cell, 1.0] < rates[cell, 3.0]  # larger bias, longer memory
        assert abs(rates[cell, 3.0]) < 0.05  # forget gate near 1: the gradient is kept
        assert rates[cell, 1.0] > float(rate_simple)


def test_bad_input():
    with pytest.raises(ValueError, match="cell"):
        cells.init("rnn", KEY, 3, 4)
    with pytest.raises(ValueError, match="hidden_size"):
        cells.init("lstm", KEY, 3, 0)
    with pytest.raises(ValueError, match="input_size"):
        cells.init("gru", KEY, -1, 4)
    p = cells.init("simple", KEY, 3, 4)
    with pytest.raises(ValueError, match="xs"):
        cells.run("simple", p, jnp.zeros((0, 3)))


def test_sweep_experiment_writes_rates(tmp_path):
    import dataclasses

    from rnn_grad import configs, sweep
    from shared.experiment import RunContext
    from shared.report import Report

    cfg = dataclasses.replace(configs.JACOBIANS_QUICK, hidden=8, length=40, batch=1, simple_gains=(0.9, 1.5),
                              input_scales=(0.1,), forget_biases=(1.0,))
    m = sweep.run(cfg, RunContext(out_dir=tmp_path, report=Report("x", tmp_path)))
    assert set(m["simple_rnn"]) == {"g=0.9", "g=1.5"}
    assert m["simple_rnn"]["g=0.9"]["fitted_log_rate"] < 0 < m["simple_rnn"]["g=1.5"]["fitted_log_rate"]
    for k in ("lstm", "gru"):
        entry = m[k]["forget_bias=1.0"]
        assert np.isfinite(entry["predicted_log_rate"])
        # the full prediction adds the candidate path to the forget gate: the decay is slower
        assert entry["predicted_log_rate"] > entry["predicted_log_rate_forget_gate"]
    assert (tmp_path / "jacobian_norms.png").exists() or any(tmp_path.rglob("*.png"))
