"""Shared models and augmentation: parameter counts, shapes, full-size configs via eval_shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shared import augment
from shared.models import MLP, ResNet18, SmallCNN, cifar_resnet, count_params


def test_cifar_resnet_sizes_match_he_et_al():
    assert count_params(cifar_resnet(20, 10, rngs=nnx.Rngs(0))) == pytest.approx(0.27e6, rel=0.02)
    assert count_params(cifar_resnet(32, 10, rngs=nnx.Rngs(0))) == pytest.approx(0.46e6, rel=0.02)


def test_resnet18_builds_under_eval_shape():
    model = nnx.eval_shape(lambda: ResNet18(10, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == pytest.approx(11.17e6, rel=0.01)


def test_output_shapes_and_modes():
    x = jnp.ones((2, 32, 32, 3))
    model = cifar_resnet(20, 100, rngs=nnx.Rngs(0))
    assert model(x).shape == (2, 100)
    model.eval()
    a, b = model(x), model(x)
    np.testing.assert_array_equal(a, b)
    assert SmallCNN(10, rngs=nnx.Rngs(0))(jnp.ones((3, 8, 8, 1))).shape == (3, 10)
    assert MLP((64, 5, 10), rngs=nnx.Rngs(0), batch_norm=True)(jnp.ones((4, 8, 8, 1))).shape == (4, 10)
    with pytest.raises(ValueError, match="depth"):
        cifar_resnet(21, 10, rngs=nnx.Rngs(0))


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    images = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1) + 1
    out = augment.random_crop(jax.random.PRNGKey(0), images, pad=2)
    assert out.shape == images.shape
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(2):
        windows = [padded[i, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(np.array_equal(np.asarray(out[i]), w) for w in windows)


def test_random_flip_flips_about_half():
    images = jnp.broadcast_to(jnp.arange(4.0)[None, None, :, None], (1000, 1, 4, 1))
    out = augment.random_flip(jax.random.PRNGKey(1), images)
    flipped = np.asarray(out[:, 0, 0, 0] == 3.0)
    assert 0.4 < flipped.mean() < 0.6
    assert augment.random_crop_flip(jax.random.PRNGKey(2), jnp.ones((4, 32, 32, 3))).shape == (4, 32, 32, 3)
