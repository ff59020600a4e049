"""The gated cells' mean-field decay rate (forget gate + candidate path) against the autodiff-measured rate,
and the per-term coefficients against `jax.jacfwd` of one step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_grad import cells, jacobians

KEY = jax.random.PRNGKey(0)
D, T = 32, 80


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_coefficients_rebuild_the_autodiff_jacobian(cell):
    p = cells.init(cell, KEY, 5, 6, gain=1.2, forget_bias=0.5)
    xs = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    t = 3

    @jax.jit
    def both(p, xs):
        co = jacobians.gated_path_coefficients(cell, p, xs)
        _, states = cells.run(cell, p, xs)
        if cell == "lstm":
            c_prev = states[1][t - 1]
            o_prev = cells.lstm_gates(p, jax.tree.map(lambda a: a[t - 2], states), xs[t - 1])[3]
            # h_{t−1} = o_{t−1} tanh c_{t−1}: the post's ∂c_t/∂c_{t−1} with o_{t−1} held fixed
            ref = jax.jacfwd(lambda c_: cells.step("lstm", p, (o_prev * jnp.tanh(c_), c_), xs[t])[1])(c_prev)
        else:
            ref = jax.jacfwd(lambda h_: cells.step("gru", p, h_, xs[t]))(states[t - 1])
        return jacobians.gated_jacobians_from_coefficients(cell, p, co)[t], ref

    got, ref = both(p, xs)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def _rates(cell, p, xs):
    """(measured, mean-field, forget-gate-only, rebuilt chain, without the odd terms, without the candidate).

    measured: the rate of the product of autodiff one-step Jacobians of the whole state (LSTM: its c block).
    """
    d = xs.shape[1]
    _, states = cells.run(cell, p, xs)
    shifted = jax.tree.map(lambda a: jnp.concatenate([jnp.zeros_like(a[:1]), a[:-1]]), states)
    s_prev = jacobians.flatten_state(cell, shifted)
    autodiff = jax.vmap(lambda s, x: jax.jacfwd(lambda s_: jacobians.flat_step(cell, p, s_, x))(s))(s_prev[1:], xs[1:])
    co = jacobians.gated_path_coefficients(cell, p, xs)
    view = (slice(d, 2 * d), slice(d, 2 * d)) if cell == "lstm" else (slice(None), slice(None))
    chain = lambda drop: jacobians.product_log_rate(  # noqa: E731
        jacobians.gated_jacobians_from_coefficients(cell, p, co, drop)[1:], 10)
    return (jacobians.product_log_rate(autodiff, 10, view), jacobians.predicted_log_rate_gated(co, 1.0),
            jacobians.predicted_log_rate_diag(co["keep"]), chain(()), chain(jacobians.ODD_TERMS[cell]),
            chain(("candidate",)))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_mean_field_rate_within_15_percent_and_the_terms_it_drops_do_not_matter(cell):
    xs = jax.random.normal(jax.random.PRNGKey(3), (T, D))
    params = [cells.init(cell, jax.random.fold_in(KEY, 7), D, D, gain=1.0, forget_bias=fb) for fb in (0.0, 1.0)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    out = jax.jit(jax.vmap(lambda p: _rates(cell, p, xs)))(stacked)
    measured, full, forget_only, chain, no_odd, no_candidate = map(np.asarray, out)
    assert np.all(measured < -0.1)  # vanishing settings (forget bias 0 and 1)
    np.testing.assert_array_less(np.abs(full - measured), 0.15 * np.abs(measured))  # the goal
    np.testing.assert_array_less(0.25 * np.abs(measured), np.abs(forget_only - measured))  # gate alone misses
    # the rebuilt chain (LSTM: the post's ∂c_t/∂c_{t−1}, without the output-gate path) has the measured rate;
    # the odd terms the mean field drops change it by little, the candidate path by a lot
    np.testing.assert_allclose(chain, measured, atol=0.02)
    np.testing.assert_array_less(no_candidate, measured - 0.05)
    np.testing.assert_array_less(np.abs(no_odd - measured), 0.25 * (measured - no_candidate))


def test_gated_path_coefficients_rejects_the_simple_rnn_and_unknown_terms():
    with pytest.raises(ValueError, match="cell"):
        jacobians.gated_path_coefficients("simple", {}, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="cell"):
        jacobians.gated_path_coefficients("rnn", {}, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="drop"):
        jacobians.gated_jacobians_from_coefficients("gru", {}, {}, drop=("forget_input",))
