"""Hierarchical-VAE building blocks (NVAE-style), as pure functions on pytrees.

Pieces: the soft-clamped diagonal Normal (`Normal`, `normal_from_params`), the residual-Normal
posterior (`residual_normal`, `residual_kl`), one latent-group step (`latent_group_step`), the KL
warm-up and KL balancing coefficients (`kl_warmup_coeff`, `kl_balancer_coeffs`, `kl_balance`) and
the importance-weighted log-likelihood estimator (`iw_log_likelihood`, `elbo_from_log_weights`).

Reference: Vahdat & Kautz, "NVAE: A Deep Hierarchical Variational Autoencoder", NeurIPS 2020,
arXiv 2007.03898 (Sec. 3.2 residual Normal, Sec. 3.1/App. A KL balancing and warm-up);
Burda et al., "Importance Weighted Autoencoders", ICLR 2016 (IW bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

__all__ = [
    "soft_clamp",
    "Normal",
    "normal_from_params",
    "residual_normal",
    "residual_kl",
    "latent_group_step",
    "kl_warmup_coeff",
    "groups_per_scale",
    "kl_balancer_coeffs",
    "kl_balance",
    "iw_log_likelihood",
    "elbo_from_log_weights",
]

_LOG_2PI = math.log(2.0 * math.pi)


def soft_clamp(x: jax.Array, c: float = 5.0) -> jax.Array:
    """Smooth clamp to (-c, c): c·tanh(x / c). Any shape in, same shape out."""
    return c * jnp.tanh(x / c)


@flax.struct.dataclass
class Normal:
    """Diagonal Normal with clamped parameters: μ = 5 tanh(μ_raw/5), σ = (exp(5 tanh(ℓ_raw/5)) + 0.01)·t.

    Attributes (all the same shape, e.g. [B, H, W, C]):
      mu: the clamped mean.
      sigma: the standard deviation (already includes the temperature t).
    """

    mu: jax.Array
    sigma: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        """Reparameterised sample z = μ + σ·ε, ε ~ N(0, I); same shape as `mu`."""
        eps = jax.random.normal(key, self.mu.shape, self.mu.dtype)
        return self.mu + self.sigma * eps

    def log_prob(self, z: jax.Array) -> jax.Array:
        """Element-wise log N(z; μ, σ²) = −½((z−μ)/σ)² − log σ − ½ log 2π; same shape as z."""
        u = (z - self.mu) / self.sigma
        return -0.5 * u * u - jnp.log(self.sigma) - 0.5 * _LOG_2PI

    def kl(self, other: Normal) -> jax.Array:
        """Element-wise analytic KL(self ‖ other) = ½[((μ_q−μ_p)/σ_p)² + r² − 1] − log r, r = σ_q/σ_p."""
        t1 = (self.mu - other.mu) / other.sigma
        r = self.sigma / other.sigma
        return 0.5 * (t1 * t1 + r * r) - 0.5 - jnp.log(r)


def normal_from_params(
    mu_raw: jax.Array, log_sigma_raw: jax.Array, temperature: float | jax.Array = 1.0
) -> Normal:
    """NVAE's Normal: μ = soft_clamp(μ_raw), σ = (exp(soft_clamp(log σ_raw)) + 0.01)·temperature.

    Args: mu_raw, log_sigma_raw: same shape [...]; temperature: scalar multiplying σ (sampling at t).
    """
    mu = soft_clamp(mu_raw)
    sigma = (jnp.exp(soft_clamp(log_sigma_raw)) + 1e-2) * temperature
    return Normal(mu, sigma)


def residual_normal(
    prior_mu_raw: jax.Array,
    prior_log_sigma_raw: jax.Array,
    delta_mu: jax.Array,
    delta_log_sigma: jax.Array,
) -> tuple[Normal, Normal]:
    """Residual-Normal posterior (NVAE Eq. 2): q = N(μ_p + Δμ, log σ_p + Δlog σ) with raw values summed.

    The sums are formed before the soft clamp, as in the official code. Returns (q, p); all inputs
    share one shape [...].
    """
    p = normal_from_params(prior_mu_raw, prior_log_sigma_raw)
    q = normal_from_params(prior_mu_raw + delta_mu, prior_log_sigma_raw + delta_log_sigma)
    return q, p


def residual_kl(q: Normal, p: Normal) -> jax.Array:
    """KL of the residual posterior to its prior (NVAE Eq. 3), element-wise.

    KL = ½ [Δμ²/σ_p² + r² − 1 − log r²], with Δμ = μ_q − μ_p and r = σ_q/σ_p (clamped values).
    """
    dmu = q.mu - p.mu
    r2 = jnp.square(q.sigma / p.sigma)
    return 0.5 * (dmu * dmu / jnp.square(p.sigma) + r2 - 1.0 - jnp.log(r2))


def latent_group_step(
    key: jax.Array,
    dec_state: jax.Array,
    prior_head: Callable[[jax.Array], jax.Array],
    combine_out: Callable[[jax.Array, jax.Array], jax.Array],
    enc_feature: jax.Array | None = None,
    posterior_head: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    temperature: float | jax.Array = 1.0,
    z_fixed: jax.Array | None = None,
    flow: Callable[[jax.Array], tuple[jax.Array, jax.Array]] | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """One latent group of the top-down pass: prior, (residual) posterior, sample, combine back.

    prior params = prior_head(dec_state) → [B, H, W, 2L] split into (μ_raw, log σ_raw).
    With `enc_feature` (inference): offsets = posterior_head(enc_feature, dec_state) → [B, H, W, 2L],
    q = residual Normal, z ~ q, kl = residual_kl(q, p) (element-wise, [B, H, W, L]).
    With `flow` (inference only; NVAE's normalising-flow cells on posterior samples): z₀ ~ q,
    (z, log_det) = flow(z₀) element-wise, log q(z) = log q(z₀) − log_det, and the KL becomes the
    one-sample Monte-Carlo estimate log q(z) − log p(z) (no closed form after a flow).
    Without (generation): z ~ p at `temperature` (or z = z_fixed), kl = None.
    Returns (new decoder state combine_out(dec_state, z), aux dict with z, q, p, kl, log_q, log_p).
    """
    params = prior_head(dec_state)
    mu_p, ls_p = jnp.split(params, 2, axis=-1)
    if enc_feature is None:
        p = normal_from_params(mu_p, ls_p, temperature)
        z = p.sample(key) if z_fixed is None else z_fixed
        aux = {"z": z, "p": p, "q": None, "kl": None, "log_p": p.log_prob(z), "log_q": None}
    else:
        if posterior_head is None:
            raise ValueError("latent_group_step: posterior_head is required when enc_feature is given")
        dmu, dls = jnp.split(posterior_head(enc_feature, dec_state), 2, axis=-1)
        q, p = residual_normal(mu_p, ls_p, dmu, dls)
        z = q.sample(key) if z_fixed is None else z_fixed
        if flow is None:
            aux = {"z": z, "p": p, "q": q, "kl": residual_kl(q, p), "log_p": p.log_prob(z),
                   "log_q": q.log_prob(z)}
        else:
            z0 = z
            z, log_det = flow(z0)
            log_q, log_p = q.log_prob(z0) - log_det, p.log_prob(z)
            aux = {"z": z, "p": p, "q": q, "kl": log_q - log_p, "log_p": log_p, "log_q": log_q}
    return combine_out(dec_state, z), aux


def kl_warmup_coeff(step: jax.Array | int, total_steps: int, warmup_frac: float = 0.3,
                    min_coeff: float = 1e-4, const_frac: float = 0.0) -> jax.Array:
    """KL warm-up β(step) = clip((step − c·T) / (warmup_frac · T), min_coeff, 1), T = total_steps (NVAE App. A).

    c = `const_frac` holds β at min_coeff for the first c·T steps (the official `--kl_const_portion`,
    whose `utils.kl_coeff` this is).
    """
    if total_steps <= 0 or not 0.0 < warmup_frac <= 1.0:
        raise ValueError(f"kl_warmup_coeff: need total_steps > 0 and 0 < warmup_frac <= 1, got "
                         f"{total_steps}, {warmup_frac}")
    beta = (jnp.asarray(step, jnp.float32) - const_frac * total_steps) / (warmup_frac * total_steps)
    return jnp.clip(beta, min_coeff, 1.0)


def groups_per_scale(num_scales: int, num_groups: int, adaptive: bool, minimum: int = 1) -> tuple[int, ...]:
    """Groups per latent scale, finest scale first; adaptive halves the count at each coarser scale."""
    if num_scales < 1 or num_groups < 1:
        raise ValueError(f"groups_per_scale: num_scales and num_groups must be >= 1, got "
                         f"{num_scales}, {num_groups}")
    out, n = [], num_groups
    for _ in range(num_scales):
        out.append(n)
        if adaptive:
            n = max(minimum, n // 2)
    return tuple(out)


def kl_balancer_coeffs(groups: Sequence[int]) -> jax.Array:
    """α_i for KL balancing, in decoder order (coarsest scale first): α = 4^s / groups(s), / min.

    `groups` lists groups per scale finest first (as `groups_per_scale`); s = 0 is the coarsest scale.
    Returns [sum(groups)].
    """
    num_scales = len(groups)
    parts = []
    for s in range(num_scales):
        g = groups[num_scales - 1 - s]
        parts.append(jnp.full((g,), 4.0**s / g, jnp.float32))
    a = jnp.concatenate(parts)
    return a / jnp.min(a)


def kl_balance(kl_groups: jax.Array, beta: jax.Array, alpha: jax.Array, balance: bool = True
               ) -> tuple[jax.Array, jax.Array]:
    """KL with warm-up and balancing. kl_groups: [B, G] per-example KL per group; alpha: [G].

    While β < 1 (and `balance`): w_i = (mean_b |KL_bi| + 0.01)/α_i, normalised to mean 1 over groups,
    gradient stopped; KL_b = β Σ_i w_i KL_bi. Afterwards KL_b = β Σ_i KL_bi.
    Returns (per-example weighted KL [B], weights [G]).
    """
    m = jnp.mean(jnp.abs(kl_groups), axis=0) + 0.01  # [G]
    w = m / alpha
    w = jax.lax.stop_gradient(w / jnp.mean(w))
    w = jnp.where(beta < 1.0, w, jnp.ones_like(w)) if balance else jnp.ones_like(w)
    return beta * jnp.sum(kl_groups * w[None, :], axis=1), w


def iw_log_likelihood(log_weights: jax.Array) -> jax.Array:
    """Importance-weighted estimate log p(x) ≈ logsumexp_k log w_k − log K (Burda et al. Eq. 8).

    log_weights: [K, B] with log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x), z_k ~ q.
    Returns [B]. Its expectation is non-decreasing in K and bounded by log p(x).
    """
    k = log_weights.shape[0]
    return jax.nn.logsumexp(log_weights, axis=0) - math.log(k)


def elbo_from_log_weights(log_weights: jax.Array) -> jax.Array:
    """ELBO estimate = mean_k log w_k; [K, B] → [B]. Never exceeds `iw_log_likelihood` (Jensen)."""
    return jnp.mean(log_weights, axis=0)
