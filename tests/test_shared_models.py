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


def _marker_positions(images):
    """(row, col) of the single non-zero pixel of each [H, W, 1] image; asserts there is exactly one."""
    flat = np.asarray(images)[..., 0].reshape(len(images), -1)
    assert np.all((flat != 0).sum(1) == 1) and np.all(flat.max(1) == 1.0)
    return np.stack(np.unravel_index(flat.argmax(1), images.shape[1:3]), axis=1)


def test_random_crop_shifts_content_uniformly_by_up_to_pad():
    """A one-pixel marker at (r, c), away from the border, lands at (r, c) + (pad − offset) with each
    offset in {0..2·pad}² equally likely: every one of the 25 shifts for pad = 2 occurs, each with
    frequency 1/25 within 4.5 binomial standard deviations. Fails if the crop is the identity (the centre
    window: shift always 0) or the offsets are drawn from a narrower range."""
    n, pad, h, w = 5000, 2, 8, 9
    images = np.zeros((n, h, w, 1), np.float32)
    images[:, 4, 3, 0] = 1.0
    out = augment.random_crop(jax.random.PRNGKey(3), jnp.asarray(images), pad=pad)
    shift = _marker_positions(out) - np.array([4, 3])
    assert shift.min() == -pad and shift.max() == pad
    counts = np.zeros((2 * pad + 1, 2 * pad + 1))
    np.add.at(counts, (shift[:, 0] + pad, shift[:, 1] + pad), 1)
    p = 1 / counts.size
    np.testing.assert_array_less(np.abs(counts / n - p), 4.5 * np.sqrt(p * (1 - p) / n))
    # rows and columns move independently: the marker's row shift says nothing about its column shift
    assert abs(np.corrcoef(shift[:, 0], shift[:, 1])[0, 1]) < 0.06


def test_random_crop_flip_is_a_crop_shift_then_a_mirror_half_the_time():
    """The marker first moves by a crop shift in [−pad, pad]², then the whole image is mirrored
    left-right with probability ½ (column c ↦ W − 1 − c). Fails if the crop or the flip is dropped."""
    n, pad, h, w = 4000, 2, 6, 16
    images = np.zeros((n, h, w, 1), np.float32)
    images[:, 2, 3, 0] = 1.0
    pos = _marker_positions(augment.random_crop_flip(jax.random.PRNGKey(5), jnp.asarray(images), pad=pad))
    flipped = pos[:, 1] >= w // 2  # unflipped columns are 1..5, mirrored ones 10..14
    col = np.where(flipped, w - 1 - pos[:, 1], pos[:, 1])
    assert set(np.unique(pos[:, 0] - 2)) == set(range(-pad, pad + 1))
    assert set(np.unique(col - 3)) == set(range(-pad, pad + 1))
    assert abs(flipped.mean() - 0.5) < 4.5 * np.sqrt(0.25 / n)
