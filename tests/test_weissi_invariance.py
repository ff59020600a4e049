import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shared.models import MLP
from shared.transforms import weissi_penalty
from weissi.invariance import (
    init_relu_mlp,
    l2_penalty,
    mlp_layer_paths,
    relu_mlp,
    scale_shift,
    shift_factors,
    shift_layer_params,
)


@pytest.fixture
def net():
    weights = init_relu_mlp(jax.random.PRNGKey(0), (10, 32, 32, 2))
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 10))
    return weights, x


def test_shift_keeps_the_function_and_weissi_but_not_l2(net):
    weights, x = net
    shifted = scale_shift(weights, (8.0, 0.5, 0.25))
    np.testing.assert_allclose(relu_mlp(shifted, x), relu_mlp(weights, x), rtol=1e-4, atol=1e-5)
    assert l2_penalty(shifted) / l2_penalty(weights) > 10.0
    np.testing.assert_allclose(weissi_penalty(shifted, 1.0, 0.5), weissi_penalty(weights, 1.0, 0.5), atol=1e-4)


def test_a_non_unit_product_changes_weissi_by_its_log(net):
    weights, _ = net
    scaled = scale_shift(weights[:1], (1.0,)) + [weights[1] * 2.0, weights[2]]
    np.testing.assert_allclose(weissi_penalty(scaled, 1.0, 0.0) - weissi_penalty(weights, 1.0, 0.0), np.log(2.0),
                               rtol=1e-5)


def test_l2_is_minimised_by_balanced_layers(net):
    """AM-GM: Σγ_l²‖W_l‖² over Πγ_l = 1 is smallest when all layer norms are equal."""
    weights, _ = net
    norms = np.array([float(jnp.linalg.norm(w)) for w in weights])
    balance = np.exp(np.log(norms).mean()) / norms  # product 1, equalises the norms
    balanced = scale_shift(weights, balance)
    assert float(l2_penalty(balanced)) <= float(l2_penalty(weights)) + 1e-4
    for s in (-0.5, 0.5):
        assert float(l2_penalty(balanced)) <= float(l2_penalty(scale_shift(balanced, shift_factors(3, s))))


def test_nnx_mlp_with_biases_is_invariant():
    model = MLP((8, 16, 16, 3), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(lambda p: p + 0.3, params)  # non-zero biases
    shifted = shift_layer_params(params, mlp_layer_paths(3), (4.0, 0.5, 0.5))
    x = jax.random.uniform(jax.random.PRNGKey(0), (5, 8))
    np.testing.assert_allclose(nnx.merge(graphdef, shifted)(x), nnx.merge(graphdef, params)(x), rtol=1e-4, atol=1e-4)


def test_bad_factors_are_named(net):
    weights, _ = net
    with pytest.raises(ValueError, match="factors"):
        scale_shift(weights, (2.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="factors"):
        scale_shift(weights, (-1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="factors"):
        scale_shift(weights, (1.0, 1.0))


def test_weissi_needs_matrices():
    with pytest.raises(ValueError):
        weissi_penalty({"bias": jnp.ones(3)}, 1.0, 1.0)


def test_quick_run_gives_the_readme_numbers(tmp_path):
    """`kexue run weissi.invariance` (quick preset, seed 0), whose numbers weissi/README.md quotes: the shifted
    network's outputs move by < 1e-6 relative, L2 spans a factor 158 over s ∈ [−3, 3], WEISSI < 3e-5.
    Fails if the shift stops preserving the function or the penalty stops being invariant."""
    from shared.experiment import RunContext
    from shared.report import Report
    from weissi.configs import InvarianceConfig
    from weissi.invariance import run

    out = run(InvarianceConfig(), RunContext(out_dir=tmp_path, report=Report("weissi.invariance", tmp_path)))
    assert out["max_relative_output_change"] < 1e-6
    assert out["l2_ratio_range"] == pytest.approx(158, rel=0.01)
    assert out["weissi_range"] < 3e-5
