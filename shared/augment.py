"""On-device CIFAR augmentation: random crop after zero padding, and horizontal flip.

Both are pure functions of a key, jit- and vmap-friendly, applied inside the train step so the host
only ships raw uint8/float batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_crop(rng: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Pads [B, H, W, C] by `pad` zeros on each side and crops a random HxW window per image."""
    batch, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(rng, (batch, 2), 0, 2 * pad + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def random_flip(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Flips each image of [B, H, W, C] left-right with probability 1/2."""
    flip = jax.random.bernoulli(rng, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def random_crop_flip(rng: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """The standard CIFAR augmentation (He et al. 2016): pad-4 random crop, then random flip."""
    crop_key, flip_key = jax.random.split(rng)
    return random_flip(flip_key, random_crop(crop_key, images, pad))
