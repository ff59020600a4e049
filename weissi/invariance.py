"""The weight-scale-shift invariance: a ReLU network is unchanged by W_l → c_l W_l with Π c_l = 1.

ReLU is positively homogeneous, σ(c z) = c σ(z) for c > 0, so scaling layer l by c_l (and its bias
by Π_{k≤l} c_k) multiplies the output by Π c_l = 1. Σ‖W_l‖² (L2, weight decay) changes under such a
shift; the WEISSI penalty λ₁ Σ log‖W_l‖ + λ₂ Σ ‖W_l/‖W_l‖‖₁ does not (Liu et al. 2020).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from shared.experiment import RunContext
from weissi.configs import InvarianceConfig


def init_relu_mlp(key: jax.Array, widths: Sequence[int]) -> list[jax.Array]:
    """Bias-free ReLU MLP weights: a list of [in, out] matrices (He-normal)."""
    keys = jax.random.split(key, len(widths) - 1)
    return [jax.random.normal(k, (i, o)) * np.sqrt(2.0 / i) for k, i, o in zip(keys, widths[:-1], widths[1:])]


def relu_mlp(weights: Sequence[jax.Array], x: jax.Array) -> jax.Array:
    """f(x) = W_L σ(… σ(x W_1)): x [B, in] -> [B, out]."""
    for w in weights[:-1]:
        x = jax.nn.relu(x @ w)
    return x @ weights[-1]


def scale_shift(weights: Sequence[jax.Array], factors: Sequence[float] | np.ndarray) -> list[jax.Array]:
    """W_l → c_l W_l. Raises ValueError unless every c_l > 0 and Π c_l = 1 (the function is then unchanged)."""
    c = np.asarray(factors, np.float64)
    if len(c) != len(weights):
        raise ValueError(f"factors: need one per layer ({len(weights)}), got {len(c)}")
    if np.any(c <= 0) or not np.isclose(np.prod(c), 1.0, rtol=1e-6):
        raise ValueError(f"factors must be positive with product 1, got {c.tolist()}")
    return [w * c_l for w, c_l in zip(weights, c)]


def shift_layer_params(params: Any, layer_paths: Sequence[tuple], factors: Sequence[float] | np.ndarray) -> Any:
    """The same shift on an NNX param state with biases: kernel_l *= c_l, bias_l *= Π_{k≤l} c_k.

    Args:
      params: e.g. `nnx.split(model, nnx.Param)[1]`.
      layer_paths: the layers in forward order, e.g. [("layers", 0), ("layers", 1)] for `shared.models.MLP`
        or [("conv1",), ("conv2",), ("head",)] for `SmallCNN` (ReLU and max-pool commute with c > 0).
      factors: c_l > 0 with Π c_l = 1.
    """
    if len(layer_paths) != len(factors):
        raise ValueError(f"factors: need one per layer ({len(layer_paths)}), got {len(factors)}")
    if np.any(np.asarray(factors) <= 0) or not np.isclose(np.prod(factors), 1.0, rtol=1e-6):
        raise ValueError(f"factors must be positive with product 1, got {list(factors)}")
    scale = {}
    for path, c, cum in zip(layer_paths, factors, np.cumprod(factors)):
        scale[tuple(path) + ("kernel",)] = float(c)
        scale[tuple(path) + ("bias",)] = float(cum)

    def apply(key_path, leaf):
        names = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in key_path)
        for path, c in scale.items():
            if names[: len(path)] == path:
                return leaf * c
        return leaf

    return jax.tree_util.tree_map_with_path(apply, params)


def mlp_layer_paths(num_layers: int) -> list[tuple]:
    """Layer paths of `shared.models.MLP` (without BatchNorm) for `shift_layer_params`."""
    return [("layers", i) for i in range(num_layers)]


def l2_penalty(weights: Any) -> jax.Array:
    """Σ_l ‖W_l‖² over the leaves with ndim ≥ 2 (scalar)."""
    return cast(jax.Array, sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(weights) if w.ndim >= 2))


def shift_factors(num_layers: int, shift: float) -> np.ndarray:
    """c = (e^{s}, 1, …, 1, e^{−s}) for s = `shift`: first layer ×e^s, last ×e^{−s}; Π c_l = 1."""
    factors = np.ones(num_layers)
    factors[0], factors[-1] = np.exp(shift), np.exp(-shift)
    return factors


def run(config: InvarianceConfig, ctx: RunContext) -> dict:
    """The invariance demo: output change, L2 and WEISSI penalties of a shifted ReLU MLP against the shift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.transforms import weissi_penalty

    key = jax.random.PRNGKey(config.seed)
    weights = init_relu_mlp(key, config.widths)
    x = jax.random.normal(jax.random.fold_in(key, 1), (64, config.widths[0]))
    shifts = np.linspace(-config.max_shift, config.max_shift, 21)
    y0 = relu_mlp(weights, x)
    l2s, ws, diffs = [], [], []
    for s in shifts:
        shifted = scale_shift(weights, shift_factors(len(weights), s))
        diffs.append(float(jnp.max(jnp.abs(relu_mlp(shifted, x) - y0)) / jnp.max(jnp.abs(y0))))
        l2s.append(float(l2_penalty(shifted)))
        ws.append(float(weissi_penalty(shifted, 1.0, 1.0)))
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.semilogy(shifts, np.asarray(l2s) / l2s[len(shifts) // 2], label="L2 Σ‖W‖² (relative)")
    ax.semilogy(shifts, np.exp(np.asarray(ws) - ws[len(shifts) // 2]), "--", label="exp(WEISSI − WEISSI₀)")
    ax.set_xlabel("shift s: W₁ × eˢ, W_L × e⁻ˢ"), ax.legend()
    ctx.report.text(f"Bias-free ReLU MLP {tuple(config.widths)}; first layer scaled by eˢ, last by e⁻ˢ.")
    ctx.report.figure(fig, "invariance", "L2 changes by orders of magnitude; WEISSI stays flat; outputs identical")
    ctx.report.table(["shift s", "relative output change", "L2", "WEISSI (λ₁=λ₂=1)"],
                     [[s, d, a, b] for s, d, a, b in zip(shifts[::5], diffs[::5], l2s[::5], ws[::5])])
    return {"max_relative_output_change": max(diffs), "l2_ratio_range": max(l2s) / min(l2s),
            "weissi_range": max(ws) - min(ws)}
