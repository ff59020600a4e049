"""NVAE layers: weight-normalised conv, spectral power iteration, squeeze-excitation, output likelihoods.

Reference: Vahdat & Kautz 2020 (arXiv 2007.03898), Sec. 3 and App. A; Salimans & Kingma 2016
(weight normalisation); Salimans et al. 2017 (PixelCNN++, discretised logistic mixture).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from shared import workarounds

__all__ = ["SpectralVector", "WNConv", "ARConv", "ar_conv_mask", "warm_start_spectral",
           "SqueezeExcite", "power_iteration", "dmol_log_prob", "bernoulli_log_prob", "swish"]


def swish(x: jax.Array) -> jax.Array:
    """Swish / SiLU: x·σ(x)."""
    return x * jax.nn.sigmoid(x)


def torch_default_init(fan_in: int | None = None):
    """A flax initializer U(±1/√fan_in): PyTorch's default for `nn.Conv2d` / `nn.Linear` weights
    (kaiming-uniform with a = √5) and biases, which the official NVAE keeps. `fan_in` defaults to
    the product of all but the last dimension of the initialised shape (a kernel's inputs)."""
    import math

    def init(key, shape, dtype=jnp.float32):
        bound = 1.0 / math.sqrt(max(1, fan_in if fan_in is not None else math.prod(shape[:-1])))
        return workarounds.init_uniform(key, tuple(shape), -bound, bound).astype(dtype)

    return init


class SpectralVector(nnx.Variable):
    """Persistent power-iteration vector (not a parameter: no gradient, but saved in checkpoints)."""


def _normalised_kernel(conv, v, log_g, xp):
    """W = v·mask (ARConv), then exp(log g)·W / (‖W‖ + 1e-5) per output channel if weight-normalised.

    `xp` is jax.numpy inside the model and NumPy for `warm_start_spectral`'s host-side estimate. v [..., k, k,
    C_in/groups, C_out] and log g [..., C_out]: the leading axes of convs stored stacked (`shared.layer_scan`).
    """
    if conv.mask_spec is not None:
        mask = ar_conv_mask(*conv.mask_spec)
        v = v * xp.asarray(mask.reshape((1,) * (v.ndim - mask.ndim) + mask.shape))
    if log_g is None:
        return v
    norm = xp.sqrt(xp.sum(xp.square(v), axis=(-4, -3, -2)))  # [..., C_out]
    return v * (xp.exp(log_g) / (norm + 1e-5))[..., None, None, None, :]


class WNConv(nnx.Module):
    """NVAE's 2-D conv (NHWC), weight-normalised: W = exp(log g) · v / (‖v‖ + 1e-5), per output channel.

    v and the bias start as PyTorch's `nn.Conv2d` default, U(±1/√fan_in) (`torch_default_init`), and
    log g at log(‖v‖ + 0.01), as in the official code. With `weight_norm=False` W = v (the official code's plain
    convs inside the decoder cells); either way W carries persistent spectral vectors, so every conv
    enters the spectral penalty as in NVAE. Input [B, H, W, C_in] → [B, H', W', C_out].
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, *, use_bias: bool = True,
                 groups: int = 1, weight_norm: bool = True, rngs: nnx.Rngs):
        fan_in = kernel * kernel * c_in // groups
        init = torch_default_init(fan_in)  # PyTorch's Conv2d default, kept by the official code
        self.v = nnx.Param(init(rngs.params(), (kernel, kernel, c_in // groups, c_out)))
        xp = workarounds.init_math(self.v[...])
        norm = xp.sqrt(xp.sum(xp.square(self.v[...]), axis=(0, 1, 2)))
        self.log_g = nnx.Param(jax.device_put(xp.log(norm + 1e-2))) if weight_norm else None
        self.bias = nnx.Param(init(rngs.params(), (c_out,))) if use_bias else None
        # static arguments of `ar_conv_mask` (set by ARConv), else no mask
        self.mask_spec: tuple[int, int, int, int, bool, bool] | None = None
        self.stride, self.groups, self.kernel = stride, groups, kernel
        # persistent power-iteration vectors for the spectral penalty on W reshaped to [C_out, k·k·C_in/g];
        # random unit vectors here (cheap, so full configs build fast under eval_shape); `warm_start_spectral`
        # runs NVAE's longer first estimate once before training, later steps `num_power_iter` each.
        u0 = xp.asarray(workarounds.init_normal(rngs.params(), (c_out,)))
        v0 = xp.asarray(workarounds.init_normal(rngs.params(), (kernel * kernel * (c_in // groups),)))
        self.sn_u = SpectralVector(jax.device_put(u0 / xp.linalg.norm(u0)))
        self.sn_v = SpectralVector(jax.device_put(v0 / xp.linalg.norm(v0)))

    def weight(self) -> jax.Array:
        """The normalised kernel [k, k, C_in/groups, C_out] ([n, k, k, C_in/groups, C_out] for n stacked convs)."""
        return _normalised_kernel(self, self.v[...], None if self.log_g is None else self.log_g[...], jnp)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.weight().astype(x.dtype)
        if self.groups > 1 and self.groups == x.shape[-1] == w.shape[-1] and self.stride == 1:
            y = workarounds.depthwise_conv(x, w)
        else:
            y = workarounds.conv2d(x, w, self.stride, self.groups)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)[None, None, None, :]
        return y


class SqueezeExcite(nnx.Module):
    """SE: x · sigmoid(Linear(ReLU(Linear(avgpool x)))), hidden max(C/16, 4). [B,H,W,C] → same."""

    def __init__(self, c: int, *, dtype: DTypeLike | None = None, rngs: nnx.Rngs):
        h = max(c // 16, 4)  # PyTorch's nn.Linear initialisation, as the official SE
        self.fc1 = nnx.Linear(c, h, dtype=dtype, kernel_init=torch_default_init(), bias_init=torch_default_init(c),
                              rngs=rngs)
        self.fc2 = nnx.Linear(h, c, dtype=dtype, kernel_init=torch_default_init(), bias_init=torch_default_init(h),
                              rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2))
        s = jax.nn.sigmoid(self.fc2(jax.nn.relu(self.fc1(s))))
        return x * s[:, None, None, :]


@functools.partial(jax.jit, static_argnums=3)
def power_iteration(w_mat: jax.Array, u: jax.Array, v: jax.Array, num_iter: int
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Largest singular value of w_mat [M, N] by power iteration from persistent u [M], v [N].

    v ← normalise(Wᵀu), u ← normalise(Wv), num_iter times (vectors stop-gradient); σ = uᵀ W v
    (differentiable in W). Returns (σ, u, v).
    """
    def body(_, uv):
        u_, _v = uv
        v_ = w_mat.T @ u_
        v_ = v_ / (jnp.linalg.norm(v_) + 1e-12)
        u_ = w_mat @ v_
        u_ = u_ / (jnp.linalg.norm(u_) + 1e-12)
        return u_, v_

    uv = (jax.lax.stop_gradient(u), jax.lax.stop_gradient(v))
    if num_iter <= 8:  # unrolled: a few matvecs compile faster than one while loop per conv
        for i in range(num_iter):
            uv = body(i, uv)
        u, v = uv
    else:
        u, v = jax.lax.fori_loop(0, num_iter, body, uv)
    u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
    return u @ (w_mat @ v), u, v


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
    """log Bernoulli(x; σ(logits)) = x·logσ(l) + (1−x)·logσ(−l), element-wise."""
    return x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)


def dmol_log_prob(params: jax.Array, x: jax.Array, num_mix: int, num_bits: int = 8,
                  top_edge: float = 0.999) -> jax.Array:
    """Discretised mixture of logistics with RGB coupling (PixelCNN++ Eq. 2), per pixel.

    params: [B, H, W, M·(1 + 3C)] = (mixture logits [M], means [C·M], log scales [C·M],
    coupling coefficients [C·M] (only used for C = 3)); x: [B, H, W, C] in [−1, 1] on the grid of
    2^num_bits levels. Coupling: μ_G += c₀ x_R, μ_B += c₁ x_R + c₂ x_G. Returns [B, H, W].
    x > `top_edge` scores as the top bin, 1 − CDF(x − half a bin): 0.999 makes only the top level the
    edge (a proper distribution); the official code's 0.99 also treats the level below it (254 of 255)
    as an edge, so its probabilities over the levels do not sum to 1.
    """
    b, h, w, c = x.shape
    m = num_mix
    logit_pi = params[..., :m]  # [B,H,W,M]
    rest = params[..., m:].reshape(b, h, w, 3, c, m)
    means, log_s, coeffs = rest[..., 0, :, :], jnp.maximum(rest[..., 1, :, :], -7.0), jnp.tanh(rest[..., 2, :, :])
    xe = x[..., None]  # [B,H,W,C,1]
    if c == 3:
        mg = means[..., 1, :] + coeffs[..., 0, :] * xe[..., 0, :]
        mb = means[..., 2, :] + coeffs[..., 1, :] * xe[..., 0, :] + coeffs[..., 2, :] * xe[..., 1, :]
        means = jnp.stack([means[..., 0, :], mg, mb], axis=-2)
    half = 1.0 / (2.0**num_bits - 1.0)
    inv_s = jnp.exp(-log_s)
    centered = xe - means
    plus, minus = inv_s * (centered + half), inv_s * (centered - half)
    log_cdf_plus = jax.nn.log_sigmoid(plus)  # for x = -1 edge
    log_one_minus_cdf_min = -jax.nn.softplus(minus)  # for x = +1 edge
    cdf_delta = jax.nn.sigmoid(plus) - jax.nn.sigmoid(minus)
    mid = inv_s * centered
    log_pdf_mid = mid - log_s - 2.0 * jax.nn.softplus(mid) + jnp.log(2.0 * half)
    log_mid = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)), log_pdf_mid)
    lp = jnp.where(xe < -0.999, log_cdf_plus, jnp.where(xe > top_edge, log_one_minus_cdf_min, log_mid))
    lp = jnp.sum(lp, axis=3) + jax.nn.log_softmax(logit_pi, axis=-1)  # [B,H,W,M]
    return jax.nn.logsumexp(lp, axis=-1)


def warm_start_spectral(model: nnx.Module, num_iter: int = 40) -> None:
    """Runs `num_iter` power iterations (host NumPy, no compilation) for every WNConv's persistent u, v.

    NVAE's first spectral estimate uses many more iterations than the per-step `num_power_iter`.
    W is the normalised kernel as a [C_out, k·k·C_in/groups] matrix, computed in NumPy on the host
    (eagerly in jnp it compiled ~3 programs per shape: `benchmarks/bench_nvae.py`, build time).
    """
    for _, m in nnx.iter_graph(model):
        if isinstance(m, WNConv):
            log_g = None if m.log_g is None else np.asarray(m.log_g[...], np.float64)
            w = _normalised_kernel(m, np.asarray(m.v[...], np.float64), log_g, np)
            lead = w.shape[:-4]  # () for one conv, (n,) for n stacked ones
            w = np.moveaxis(w.reshape(-1, *w.shape[-4:]), -1, 1).reshape(int(np.prod(lead)), w.shape[-1], -1)
            u = np.asarray(m.sn_u[...], np.float64).reshape(len(w), -1)
            v = np.asarray(m.sn_v[...], np.float64).reshape(len(w), -1)
            for _ in range(num_iter):  # batched over the stacked convs: u, v [n, C_out], [n, k·k·C_in/g]
                v = np.einsum("nij,ni->nj", w, u)
                v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-12
                u = np.einsum("nij,nj->ni", w, v)
                u /= np.linalg.norm(u, axis=1, keepdims=True) + 1e-12
            m.sn_u[...] = jax.device_put(u.reshape(m.sn_u.shape).astype(np.float32))
            m.sn_v[...] = jax.device_put(v.reshape(m.sn_v.shape).astype(np.float32))


def ar_conv_mask(kernel: int, c_in: int, c_out: int, groups: int, zero_diag: bool, mirror: bool) -> np.ndarray:
    """Autoregressive kernel mask [k, k, C_in/groups, C_out] (HWIO) for raster order, then channel order.

    Pixels above, and left on the same row, are visible; at the centre tap, output channel block i
    sees input channel blocks < i (≤ i unless `zero_diag`), blocks sized by the C_in:C_out ratio.
    Depthwise (groups = C_in): the centre tap is visible unless `zero_diag`. `mirror` flips the
    spatial order (bottom-right first), keeping the channel order (NVAE's paired cells).
    """
    m = (kernel - 1) // 2
    mask = np.ones((kernel, kernel, c_in // groups, c_out), np.float32)
    mask[m:, :] = 0.0
    mask[m, :m] = 1.0
    if groups == 1:
        ch = np.ones((c_in, c_out), np.float32)
        if c_out >= c_in:
            if c_out % c_in:
                raise ValueError(f"ar_conv_mask: c_out={c_out} must be a multiple of c_in={c_in}")
            r = c_out // c_in
            for i in range(c_in):  # output block i ↔ input channel i
                ch[i + 1:, i * r:(i + 1) * r] = 0.0
                if zero_diag:
                    ch[i, i * r:(i + 1) * r] = 0.0
        else:
            if c_in % c_out:
                raise ValueError(f"ar_conv_mask: c_in={c_in} must be a multiple of c_out={c_out}")
            r = c_in // c_out
            for i in range(c_out):  # output channel i ↔ input block i
                ch[(i + 1) * r:, i] = 0.0
                if zero_diag:
                    ch[i * r:(i + 1) * r, i] = 0.0
    elif groups == c_in:
        ch = np.full((1, c_out), 0.0 if zero_diag else 1.0, np.float32)
    else:
        raise ValueError(f"ar_conv_mask: groups must be 1 or c_in, got {groups}")
    mask[m, m] = ch
    if mirror:
        mask = mask[::-1, ::-1].copy()
    return mask


class ARConv(WNConv):
    """Masked (autoregressive) weight-normalised conv: W = wn(v ⊙ mask), mask from `ar_conv_mask`.

    [B, H, W, C_in] → [B, H, W, C_out]; output (pixel p, channel block i) depends only on earlier
    pixels in raster order (reversed if `mirror`) and, at p, on earlier channels.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, *, zero_diag: bool, mirror: bool,
                 groups: int = 1, use_bias: bool = True, init_scale: float = 1.0, rngs: nnx.Rngs):
        super().__init__(c_in, c_out, kernel, groups=groups, use_bias=use_bias, rngs=rngs)
        self.mask_spec = (kernel, c_in, c_out, groups, zero_diag, mirror)
        v = self.v[...] * ar_conv_mask(kernel, c_in, c_out, groups, zero_diag, mirror)
        norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 1, 2)))
        # official ELUConv: log g = log(‖v ⊙ mask‖ + 0.01) + log(weight_init_coeff)
        assert self.log_g is not None  # WNConv is weight-normalised by default
        self.log_g.set_value(jnp.log(norm + 1e-2) + jnp.log(init_scale))  # not `[...] =`: see `spectral_penalty`
