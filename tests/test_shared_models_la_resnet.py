"""shared.models.la_resnet32: the ResNet-32 of the official logit-adjustment code, checked against its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shared.models import LogitAdjustmentResNet, ThreeConvBlock, count_params, la_resnet32


def _official_count(num_classes: int) -> int:
    """Trainable parameters of google-research logit_adjustment/models.py `cifar_resnet32`, by hand.

    stem conv 3·3·3·16 + BN 2·16; per stage of width f after c_in channels: first block 1x1 c_in·f +
    3x3 9f² + 1x1 f² + shortcut 1x1 c_in·f + 4 BN (8f), then 4 identity blocks of 11f² + 3 BN (6f);
    final BN 2·64; dense 64·K + K.
    """
    total = 3 * 3 * 3 * 16 + 2 * 16
    for c_in, f in ((16, 16), (16, 32), (32, 64)):
        total += (2 * c_in * f + 10 * f * f + 8 * f) + 4 * (11 * f * f + 6 * f)
    return total + 2 * 64 + 64 * num_classes + num_classes


def test_parameter_count_matches_the_official_model():
    assert _official_count(10) == 300_762  # = Keras's trainable count (304,506 with the 3,744 BN moving stats)
    assert _official_count(100) == 306_612
    for k in (10, 100):
        model = nnx.eval_shape(lambda k=k: la_resnet32(k, rngs=nnx.Rngs(0)))
        assert count_params(model) == _official_count(k)
        assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))) == 2 * 1872


@pytest.fixture(scope="module")
def model():
    return nnx.eval_shape(lambda: la_resnet32(10, rngs=nnx.Rngs(0)))  # shapes only: eager init takes ~20 s


def test_structure_feature_maps_and_batchnorm_settings(model):
    assert len(model.blocks) == 15
    assert [i for i, b in enumerate(model.blocks) if b.proj is not None] == [0, 5, 10]  # conv shortcuts
    norms = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
    assert len(norms) == 1 + 3 * 4 + 12 * 3 + 1  # stem, 3 conv blocks, 12 identity blocks, final
    assert all(n.momentum == 0.9 and n.epsilon == 1e-5 for n in norms)
    # pad 3 + valid 3x3 stem: 32 -> 38 -> 36, then stride-2 "SAME" 3x3 convs: 36 -> 18 -> 9; the final BN sees 9x9x64
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, x))
    for shape in ("f32[2,38,38,3]", "f32[2,36,36,16]", "f32[2,18,18,32]", "f32[2,9,9,64]"):
        assert shape in jaxpr, shape
    assert "f32[2,32,32,16]" not in jaxpr and "f32[2,8,8,64]" not in jaxpr


def test_initialisation_he_normal_convs_and_small_dense_head():
    small = LogitAdjustmentResNet((1,), (64,), 10, rngs=nnx.Rngs(0))  # one block; eager init costs ~0.5 s a layer
    kernel = np.asarray(small.blocks[0].conv2.kernel[...])  # [3, 3, 64, 64]
    sigma = np.sqrt(2 / (9 * 64))  # He normal, fan-in 9·64
    assert kernel.std() == pytest.approx(sigma, rel=0.03)
    # truncated at ±2σ' of the underlying normal, σ' = σ / 0.8796 so that the truncated one has std σ (as Keras)
    assert 1.9 * sigma / 0.87962566 < np.abs(kernel).max() <= 2 * sigma / 0.87962566 + 1e-6
    assert small.stem.bias is None and small.blocks[0].conv1.bias is None and small.blocks[0].proj.bias is None
    head = np.asarray(small.head.kernel[...])  # [64, 10], as in the full model
    assert head.std() == pytest.approx(0.01, rel=0.15) and not np.asarray(small.head.bias[...]).any()


def test_identity_shortcut_needs_matching_shapes():
    with pytest.raises(ValueError, match="identity shortcut"):
        ThreeConvBlock(16, 32, 1, project=False, rngs=nnx.Rngs(0))
