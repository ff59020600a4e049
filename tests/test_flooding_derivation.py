import jax
import jax.numpy as jnp
import numpy as np

from flooding.derivation import check_derivation, predicted_displacement, tanh_mlp_problem
from shared.transforms import gradient_norm_penalty


def test_descent_then_ascent_is_a_gradient_norm_step_to_third_order():
    _eps, errors, rel, slope = check_derivation(tuple(np.geomspace(0.2, 0.005, 7)))
    assert 2.85 < slope < 3.15, slope
    assert np.all(np.diff(errors) < 0)
    assert rel[-1] < 0.01 and rel[-1] < rel[0] / 10  # relative error ∝ ε


def test_prediction_matches_the_penalty_gradient():
    """−ε² H g equals −ε (∇[L + (ε/2)‖∇L‖²] − ∇L), the shared gradient-norm penalty's extra gradient."""
    with jax.enable_x64(True):
        loss_fn, params = tanh_mlp_problem(1)
        eps = 0.1
        _, penalised = gradient_norm_penalty(loss_fn, eps)(params)
        g = jax.grad(loss_fn)(params)
        expected = jax.tree.map(lambda a, b: -eps * (a - b), penalised, g)
        got = predicted_displacement(loss_fn, params, eps)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
            assert a.dtype == jnp.float64
