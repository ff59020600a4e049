"""NVAE interpolation between two images at the top latent group (`kexue sample --interpolate`).

For images a and b the top group's posterior means μ_a, μ_b ([P, h, w, L], after the group's flows
when `num_nf` > 0) are joined spherically (`slerp`: the direction turns by α·θ in the plane of μ_a and
μ_b, θ the angle between them, while the norm goes linearly from ‖μ_a‖ to ‖μ_b‖), and every lower
group is drawn from its prior at temperature t given z₀(α), with the same noise at every α of a row,
so a row changes only through z₀. The lower groups come from the prior, not from an image's
posterior: in NVAE the posterior offsets of the lower groups carry most of the image (NVlabs/NVAE
issue #10: interpolating every group's z moves from a to b only near α ≈ 0.8).

Spherical, not linear: the posterior means of the test images lie near one norm and two of them are
nearly orthogonal, so the linear path's midpoint has about 0.7 of their norm, where few images' means
lie (measured on the quick run: nvae_jax/README.md).
Reference: Vahdat & Kautz 2020 (arXiv 2007.03898), Sec. 3 (top-down hierarchy; the top group's prior
is N(0, I)), Sec. 5 (temperature).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nvae_jax.evaluate import mean_image
from nvae_jax.model import NVAE

__all__ = ["top_posterior_mean", "decode_from_top", "slerp", "interpolate"]


def top_posterior_mean(model: NVAE, x: jax.Array) -> jax.Array:
    """The top group's posterior mean for images x [B, H, W, C] in [0, 1]: [B, h, w, L].

    μ_q = 5 tanh((μ_p + Δμ)/5) with the top prior's μ_p = 0 (NVAE Eq. 2); with flows, the flows' image of μ_q.
    """
    group = model.top_group
    _, aux = group(jax.random.PRNGKey(0), model.decoder_input(x.shape[0]), model.encode(x)[0])
    z = aux["q"].mu
    return group.flow(z)[0] if len(group.flows) else z


def decode_from_top(model: NVAE, z_top: jax.Array, key: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Decoder output params for a given top-group z [B, h, w, L]; every lower group ~ prior at `temperature`.

    The keys are the model's own (`jax.random.split(key, G)`, group g drawing with key g), so with z_top
    the prior draw of group 0 this is `model.sample(key, B, temperature)`.
    """
    return model.sample(key, z_top.shape[0], temperature, z_top=z_top)


def slerp(a: jax.Array, b: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """Spherical interpolation of each row's direction, with the norm linear: a, b [P, ...] → [P, ...].

    z = ((1 − α)‖a‖ + α‖b‖)·(sin((1 − α)θ)·â + sin(αθ)·b̂)/sin θ, θ = ∠(a, b) per row (norms over all but
    the first axis); rows with sin θ < 1e-6 (parallel or opposite) are interpolated linearly.
    """
    shape = a.shape
    a2, b2 = a.reshape(shape[0], -1), b.reshape(shape[0], -1)
    na, nb = jnp.linalg.norm(a2, axis=1, keepdims=True), jnp.linalg.norm(b2, axis=1, keepdims=True)
    ua, ub = a2 / jnp.maximum(na, 1e-12), b2 / jnp.maximum(nb, 1e-12)
    theta = jnp.arccos(jnp.clip(jnp.sum(ua * ub, axis=1, keepdims=True), -1.0, 1.0))
    sin = jnp.sin(theta)
    safe = jnp.where(sin < 1e-6, 1.0, sin)
    direction = (jnp.sin((1.0 - alpha) * theta) * ua + jnp.sin(alpha * theta) * ub) / safe
    spherical = ((1.0 - alpha) * na + alpha * nb) * direction
    return jnp.where(sin < 1e-6, (1.0 - alpha) * a2 + alpha * b2, spherical).reshape(shape)


@nnx.jit
def _means(model: NVAE, x: jax.Array) -> jax.Array:
    return top_posterior_mean(model, x)


@nnx.jit
def _decode_images(model: NVAE, z_top: jax.Array, key: jax.Array, t: jax.Array) -> jax.Array:
    return mean_image(model, decode_from_top(model, z_top, key, t))


def interpolate(model: NVAE, x_a: jax.Array, x_b: jax.Array, key: jax.Array, steps: int = 8,
                temperature: float = 1.0) -> np.ndarray:
    """Rows of images from a to b: x_a, x_b [P, H, W, C] → [P, steps, H, W, C] output means in [0, 1].

    Column s decodes z₀ = slerp(μ_a, μ_b, α_s), α_s = s/(steps − 1), with one key for every column
    (the lower groups' noise is shared along a row); eval-mode BN (run `readjust_bn` first to sample
    with statistics re-estimated at `temperature`).
    """
    if steps < 2:
        raise ValueError(f"interpolate: steps must be >= 2 (the two ends), got {steps}")
    model.eval()
    mu_a, mu_b = _means(model, x_a), _means(model, x_b)
    t = jnp.float32(temperature)
    columns = [_decode_images(model, slerp(mu_a, mu_b, a), key, t)  # one compiled program for every α
               for a in np.linspace(0.0, 1.0, steps, dtype=np.float32)]
    return np.stack([np.asarray(c) for c in columns], axis=1)
