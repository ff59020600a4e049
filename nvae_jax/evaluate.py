"""NVAE evaluation: the bounds, temperature sampling with BN re-estimation ("readjust BN"), reconstructions.

- `negative_elbo`: −ELBO = recon + Σ KL per image, nats (the official `test`'s nelbo);
- `iw_nll`: −log p(x) by the importance-weighted bound with K samples, nats (`nats_to_bpd` for bits/dim);
- `readjust_bn`, `sample_images` (Bernoulli: the mean; DMoL and Normal: a sample at temperature t, as the
  official display), `dmol_sample`, `reconstruct`, `mean_image`, `save_grid`.
Reference: Vahdat & Kautz 2020 (arXiv 2007.03898), Sec. 5 (sampling at temperature t with the BN
statistics re-estimated from samples at that temperature) and Eq. 1 (the ELBO).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nvae_jax.model import NVAE
from shared import hvae, workarounds
from shared.train import TrainState

__all__ = ["negative_elbo", "iw_nll", "nats_to_bpd", "readjust_bn", "sample_images", "dmol_sample", "reconstruct",
           "mean_image", "save_grid"]


def negative_elbo(model: NVAE, images: jax.Array | np.ndarray, key: jax.Array, num_samples: int = 1) -> jax.Array:
    """−ELBO per image [B], nats: the mean over `num_samples` posterior draws of recon + Σ_groups KL (eval-mode BN).

    −ELBO = −log p(x|z) + Σ_l KL(q(z_l|x, z_<l) ‖ p(z_l|z_<l)), z ~ q (NVAE Eq. 1; with flows the KL is the
    one-sample log q − log p). Not the IW bound (`iw_nll`). `images` [B, H, W, C] in [0, 1] as the dataset's
    preprocessing gives them (MNIST: 32×32, padded and binarised).
    """
    if num_samples < 1:
        raise ValueError(f"negative_elbo: num_samples must be >= 1, got {num_samples}")
    model.eval()
    x = jnp.asarray(images, jnp.float32)
    graphdef, state = nnx.split(model)

    @jax.jit
    def one(state, k):
        recon, kl, _ = nnx.merge(graphdef, state)(x, k)
        return recon + jnp.sum(kl, axis=1)

    return jnp.mean(jnp.stack([one(state, k) for k in jax.random.split(key, num_samples)]), axis=0)


def iw_nll(graphdef: nnx.GraphDef, state: TrainState, x: jax.Array, key: jax.Array, k: int,
           chunk: int = 10) -> jax.Array:
    """−log p(x) by the importance-weighted bound with k samples (eval-mode BN); per example [B], nats.

    log p(x) ≈ logsumexp_k(log p(x|z_k) + log p(z_k) − log q(z_k|x)) − log K (shared.hvae.iw_log_likelihood).
    `graphdef` and `state` (a `shared.train.TrainState`) as the trainer holds them.
    """
    @functools.partial(jax.jit, compiler_options=workarounds.cpu_compiler_options())
    def weights(params, model_state, keys):
        model = nnx.merge(graphdef, params, model_state)
        model.eval()
        return jax.lax.map(lambda kk: model.log_weight(x, kk), keys)  # [k, B]

    keys = jax.random.split(key, k)
    lw = jnp.concatenate([weights(state.params, state.model_state, keys[i:i + chunk])
                          for i in range(0, k, chunk)], axis=0)
    return -hvae.iw_log_likelihood(lw)


def nats_to_bpd(nll: float, dims: int) -> float:
    """bits/dim = NLL / (ln 2 · dims)."""
    return nll / (math.log(2.0) * dims)


def readjust_bn(model: NVAE, key: jax.Array, temperature: float, batch: int = 64, iters: int | None = None) -> NVAE:
    """Re-estimate every BatchNorm's running statistics from `iters` prior samples at `temperature`.

    The model runs in train mode (BN uses batch statistics and updates its running averages) for
    `iters` sampling passes (default `cfg.bn_readjust_iters`, the official 500), then returns to eval
    mode. Mutates and returns `model`.
    """
    iters = model.cfg.bn_readjust_iters if iters is None else iters
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


def _dmol_parts(out: jax.Array, num_mix: int, channels: int):
    """DMoL decoder output [B, H, W, M(1 + 3C)] → (logits [B,H,W,M], means, log scales, coeffs [B,H,W,C,M])."""
    b, h, w, _ = out.shape
    rest = out[..., num_mix:].reshape(b, h, w, 3, channels, num_mix)
    return out[..., :num_mix], rest[..., 0, :, :], jnp.maximum(rest[..., 1, :, :], -7.0), jnp.tanh(rest[..., 2, :, :])


def _couple(x: jax.Array, coeffs: jax.Array) -> jax.Array:
    """RGB coupling of per-channel values x [B,H,W,3] (coeffs [B,H,W,3]), clipped to [−1, 1] channel by channel,
    as the official `DiscMixLogistic.sample` / `mean`; returns [B, H, W, 3] in [0, 1]."""
    r = jnp.clip(x[..., 0], -1.0, 1.0)
    g = jnp.clip(x[..., 1] + coeffs[..., 0] * r, -1.0, 1.0)
    b = jnp.clip(x[..., 2] + coeffs[..., 1] * r + coeffs[..., 2] * g, -1.0, 1.0)
    return (jnp.stack([r, g, b], axis=-1) + 1.0) / 2.0


def dmol_sample(out: jax.Array, key: jax.Array, num_mix: int, temperature: float = 1.0) -> jax.Array:
    """One image per pixel distribution of a DMoL output [B, H, W, M(1 + 3·3)] → [B, H, W, 3] in [0, 1].

    A component by Gumbel-max on logits / t, then x_c = μ_c + (s_c / t)·logistic noise, coupled
    G += c₀ R, B += c₁ R + c₂ G with each channel clipped to [−1, 1] (the official sampler; not rounded).
    """
    logits, means, log_s, coeffs = _dmol_parts(out, num_mix, 3)
    k_pi, k_u = jax.random.split(key)
    u = jax.random.uniform(k_pi, logits.shape, minval=1e-5, maxval=1.0 - 1e-5)
    pick = jax.nn.one_hot(jnp.argmax(logits / temperature - jnp.log(-jnp.log(u)), axis=-1), num_mix)[..., None, :]
    mu, s, c = (jnp.sum(a * pick, axis=-1) for a in (means, log_s, coeffs))
    u = jax.random.uniform(k_u, mu.shape, minval=1e-5, maxval=1.0 - 1e-5)
    return _couple(mu + jnp.exp(s) / temperature * (jnp.log(u) - jnp.log1p(-u)), c)


def mean_image(model: NVAE, out: jax.Array) -> jax.Array:
    """The output distribution's mean image in [0, 1], [B, H, W, C]: Bernoulli σ(logits); Normal (μ + 1)/2 of
    the clipped μ; DMoL the mixture-weighted means and coupling coefficients, coupled (official `mean()`)."""
    cfg = model.cfg
    if cfg.output == "bernoulli":
        return jax.nn.sigmoid(out)
    if cfg.output == "normal":
        return (jnp.clip(hvae.soft_clamp(out[..., : cfg.channels_in]), -1.0, 1.0) + 1.0) / 2.0
    logits, means, _, coeffs = _dmol_parts(out, cfg.num_mixtures, cfg.channels_in)
    pi = jax.nn.softmax(logits, axis=-1)[..., None, :]
    mu, c = jnp.sum(means * pi, axis=-1), jnp.sum(coeffs * pi, axis=-1)
    if cfg.channels_in == 1:
        return (jnp.clip(mu, -1.0, 1.0) + 1.0) / 2.0
    return _couple(mu, c)


def sample_images(model: NVAE, key: jax.Array, n: int, temperature: float = 1.0) -> np.ndarray:
    """n images from the prior at `temperature`, eval-mode BN; [n, H, W, C] in [0, 1].

    As the official display: Bernoulli shows the mean; DMoL (`dmol_sample`) and Normal (clipped
    μ + σ·ε, ε ~ N(0, I)) draw a sample from the decoder's output distribution.
    """
    model.eval()
    out: jax.Array = _sample_out(model, key, jnp.float32(temperature), n)  # type: ignore[call-arg, assignment]  # nnx.jit
    cfg = model.cfg
    k_out = jax.random.fold_in(key, 1)
    if cfg.output == "dmol" and cfg.channels_in == 3:
        return np.asarray(dmol_sample(out, k_out, cfg.num_mixtures, temperature))
    if cfg.output == "normal":
        mu, ls = jnp.split(out, 2, axis=-1)
        x = hvae.normal_from_params(mu, ls).sample(k_out)
        return np.asarray((jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0)
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
