"""NVAE evaluation: temperature sampling with BN re-estimation ("readjust BN"), reconstructions, PNG grids.

Test NLL by importance sampling is `nvae_jax.train.iw_nll` (nats; bits/dim via `nats_to_bpd`).
Reference: Vahdat & Kautz 2020 (arXiv 2007.03898), Sec. 5 (sampling at temperature t with the BN
statistics re-estimated from samples at that temperature).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nvae_jax.model import NVAE

__all__ = ["readjust_bn", "sample_images", "reconstruct", "mean_image", "save_grid"]


def readjust_bn(model: NVAE, key: jax.Array, temperature: float, batch: int = 64, iters: int = 50) -> NVAE:
    """Re-estimate every BatchNorm's running statistics from `iters` prior samples at `temperature`.

    The model runs in train mode (BN uses batch statistics and updates its running averages) for
    `iters` sampling passes, then returns to eval mode. Mutates and returns `model`.
    """
    model.train()
    t = jnp.float32(temperature)
    for i in range(iters):
        _bn_pass(model, jax.random.fold_in(key, i), t, batch)  # type: ignore[call-arg]  # nnx.jit's union return type
    model.eval()
    return model


# module-level jitted programs with the temperature traced: one compilation serves every t
@functools.partial(nnx.jit, static_argnums=3)
def _bn_pass(m, k, t, n):
    m.sample(k, n, t)


@functools.partial(nnx.jit, static_argnums=3)
def _sample_out(m, k, t, n):
    return m.sample(k, n, t)


def mean_image(model: NVAE, out: jax.Array) -> jax.Array:
    """The output distribution's mean image in [0, 1], [B, H, W, C] (Bernoulli σ(logits); Normal μ)."""
    cfg = model.cfg
    if cfg.output == "bernoulli":
        return jax.nn.sigmoid(out)
    if cfg.output == "normal":
        return jnp.clip(out[..., : cfg.channels_in], 0.0, 1.0)
    m = cfg.num_mixtures  # dmol: mean of the most likely component (coupling ignored for display)
    b, h, w, _ = out.shape
    pi = jnp.argmax(out[..., :m], axis=-1)
    means = out[..., m:].reshape(b, h, w, 3, cfg.channels_in, m)[..., 0, :, :]
    sel = jnp.take_along_axis(means, pi[..., None, None], axis=-1)[..., 0]
    return jnp.clip((sel + 1.0) / 2.0, 0.0, 1.0)


def sample_images(model: NVAE, key: jax.Array, n: int, temperature: float = 1.0) -> np.ndarray:
    """n images (distribution means) from the prior at `temperature`, eval-mode BN; [n, H, W, C]."""
    model.eval()
    out: jax.Array = _sample_out(model, key, jnp.float32(temperature), n)  # type: ignore[call-arg, assignment]  # nnx.jit
    return np.asarray(mean_image(model, out))


def reconstruct(model: NVAE, x: jax.Array, key: jax.Array) -> np.ndarray:
    """Posterior reconstructions (output means) of x [B,H,W,C], eval-mode BN; [B, H, W, C]."""
    model.eval()
    out = nnx.jit(lambda m, xx, k: m(xx, k)[2])(model, x, key)
    return np.asarray(mean_image(model, out))


def save_grid(images: np.ndarray, path: str, ncol: int = 8) -> str:
    """Tile images [N, H, W, C] in [0, 1] into one PNG (grey for C = 1); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    n, h, w, c = images.shape
    nrow = -(-n // ncol)
    grid = np.ones((nrow * (h + 1) + 1, ncol * (w + 1) + 1, c), np.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = images[i]
    plt.imsave(path, grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    return path
