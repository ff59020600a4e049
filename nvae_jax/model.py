"""The NVAE model in Flax NNX, returning per-example reconstruction NLL and per-group KL.

x [B, H, W, C] in [0, 1] → (recon NLL [B], KL per group [B, G]). Reference: Vahdat & Kautz 2020, Fig. 2-3;
the flow cells (`num_nf` > 0) follow Sec. 3.2 / App. A and the official `PairedCellAR`.
With `Config.bf16` the convolutions, BN and activations compute in bfloat16; parameters, the latent
distributions, the KL and the output likelihood stay in float32.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nvae_jax.configs import Config
from nvae_jax.layers import ARConv, SqueezeExcite, WNConv, bernoulli_log_prob, dmol_log_prob, swish
from shared import hvae, workarounds
from shared.layer_scan import scan_stacked, stack_modules, unstack_module


def _bn(c, rngs, dtype=None):
    # NVAE's BN momentum 0.05 (PyTorch convention) = 0.95 decay here; statistics reduced in float32
    return nnx.BatchNorm(c, momentum=0.95, epsilon=1e-5, dtype=dtype, rngs=rngs)


class EncCell(nnx.Module):
    """NVAE's residual cell `res_bnswish` ×2 (encoder and pre-processing).

    normal: x + 0.1·SE(Conv3(Swish(BN(Conv3(Swish(BN(x))))))), [B,H,W,C] → same;
    down:   FactorizedReduce(x) + 0.1·SE(...), the first conv with stride 2 and C → 2C: [B,H,W,C] → [B,H/2,W/2,2C].
    """

    def __init__(self, c, *, down=False, use_se=True, dtype=None, rngs):
        c_out = 2 * c if down else c
        self.bn1, self.c1 = _bn(c, rngs, dtype), WNConv(c, c_out, 3, stride=2 if down else 1, rngs=rngs)
        self.bn2, self.c2 = _bn(c_out, rngs, dtype), WNConv(c_out, c_out, 3, rngs=rngs)
        self.se = SqueezeExcite(c_out, dtype=dtype, rngs=rngs) if use_se else None
        self.skip = FactorizedReduce(c, c_out, rngs=rngs) if down else None

    def __call__(self, x):
        h = self.c1(swish(self.bn1(x)))
        h = self.c2(swish(self.bn2(h)))
        h = self.se(h) if self.se is not None else h
        return (x if self.skip is None else self.skip(x)) + 0.1 * h


class DecCell(nnx.Module):
    """NVAE's inverted-residual cell `mconv_e{expand}k5` (decoder and post-processing).

    normal: x + 0.1·SE(BN(1×1(Swish(BN(dw5×5(Swish(BN(1×1 expand ×e(BN(x)))))))))), [B,H,W,C] → same;
    up:     UpSkip(x) + 0.1·SE(...) with a nearest ×2 upsampling first and the last 1×1 to C/2:
            [B,H,W,C] → [B,2H,2W,C/2]. The hidden width is e·C (C the input width) in both.
    """

    def __init__(self, c, expand=6, *, up=False, use_se=True, dtype=None, rngs):
        e, c_out = c * expand, c // 2 if up else c
        self.bn0 = _bn(c, rngs, dtype)
        plain = dict(use_bias=False, weight_norm=False, rngs=rngs)  # as the official ConvBNSwish / last 1×1
        self.c1 = WNConv(c, e, 1, **plain)
        self.bn1 = _bn(e, rngs, dtype)
        self.dw = WNConv(e, e, 5, groups=e, **plain)
        self.bn2 = _bn(e, rngs, dtype)
        self.c2 = WNConv(e, c_out, 1, **plain)
        self.bn3 = _bn(c_out, rngs, dtype)
        self.se = SqueezeExcite(c_out, dtype=dtype, rngs=rngs) if use_se else None
        self.skip = UpSkip(c, rngs=rngs) if up else None

    def __call__(self, x):
        h = x
        if self.skip is not None:
            b, hh, ww, c = x.shape
            h = jax.image.resize(x, (b, 2 * hh, 2 * ww, c), "nearest")
        h = swish(self.bn1(self.c1(self.bn0(h))))
        h = swish(self.bn2(self.dw(h)))
        h = self.bn3(self.c2(h))
        h = self.se(h) if self.se is not None else h
        return (x if self.skip is None else self.skip(x)) + 0.1 * h


class FactorizedReduce(nnx.Module):
    """Down skip: Swish, four 1×1 stride-2 convs on the four pixel-shifted sub-grids, concatenated.

    [B,H,W,C_in] → [B,H/2,W/2,C_out]; the first three convs give C_out//4 channels, the last the rest.
    """

    def __init__(self, c_in, c_out, *, rngs):
        widths = [c_out // 4] * 3 + [c_out - 3 * (c_out // 4)]
        self.convs = nnx.List([WNConv(c_in, w, 1, rngs=rngs) for w in widths])

    def __call__(self, x):
        x = swish(x)
        subs = [x[:, ::2, ::2], x[:, 1::2, 1::2], x[:, ::2, 1::2], x[:, 1::2, ::2]]
        return jnp.concatenate([c(s) for c, s in zip(self.convs, subs)], axis=-1)


def upsample_bilinear_aligned(x):
    """Bilinear ×2 with aligned corners (PyTorch `align_corners=True`): [B,H,W,C] → [B,2H,2W,C].

    Output pixel i samples input coordinate i·(n−1)/(2n−1), so the corner pixels map onto each other.
    """

    def weights(n):
        pos = jnp.arange(2 * n) * ((n - 1) / max(2 * n - 1, 1))
        return jnp.maximum(0.0, 1.0 - jnp.abs(pos[:, None] - jnp.arange(n)[None, :])).astype(x.dtype)  # [2n, n]

    return jnp.einsum("ih,jw,bhwc->bijc", weights(x.shape[1]), weights(x.shape[2]), x)


class UpSkip(nnx.Module):
    """Up skip: bilinear ×2 (aligned corners) then a 1×1 conv without bias. [B,H,W,C] → [B,2H,2W,C/2]."""

    def __init__(self, c, *, rngs):
        self.conv = WNConv(c, c // 2, 1, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.conv(upsample_bilinear_aligned(x))


class ARShiftCell(nnx.Module):
    """One autoregressive flow cell: z' = z − μ(z), μ from masked convs (NVAE's `CellAR`).

    μ = ARConv1×1(ELU(ELU(ARdw5×5(ELU(ARConv3×3(z)))))), the first conv with a zero diagonal, so μ at
    (pixel p, channel i) sees only earlier pixels and, at p, channels < i: the Jacobian is triangular
    with a unit diagonal, the flow is volume-preserving and log|det| = 0 (returned element-wise).
    z [B, H, W, L] → (z' [B, H, W, L], log_det [B, H, W, L]).
    """

    def __init__(self, latent: int, mirror: bool, expand: int = 6, *, rngs: nnx.Rngs):
        h = latent * expand
        self.c1 = ARConv(latent, h, 3, zero_diag=True, mirror=mirror, use_bias=False, rngs=rngs)
        self.dw = ARConv(h, h, 5, zero_diag=False, mirror=mirror, groups=h, use_bias=False, rngs=rngs)
        self.mu = ARConv(h, latent, 1, zero_diag=False, mirror=mirror, init_scale=0.1, rngs=rngs)

    def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        s = jax.nn.elu(self.dw(jax.nn.elu(self.c1(z))))
        return z - self.mu(jax.nn.elu(s)), jnp.zeros_like(z)


class PairedFlow(nnx.Module):
    """Two `ARShiftCell`s, the second in mirrored (bottom-right first) pixel order; log-dets add."""

    def __init__(self, latent: int, *, rngs: nnx.Rngs):
        self.cell1 = ARShiftCell(latent, mirror=False, rngs=rngs)
        self.cell2 = ARShiftCell(latent, mirror=True, rngs=rngs)

    def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        z, ld1 = self.cell1(z)
        z, ld2 = self.cell2(z)
        return z, ld1 + ld2


class LatentGroup(nnx.Module):
    """One latent group of the top-down pass: decoder cells, prior, posterior, combiners and flows.

    h [B, H, W, C] → DecCells → prior p(z) = N(params of 1×1(ELU(h))) ([B, H, W, 2L] split in μ, log σ; the
    top group's prior is N(0, I) and it has no cells); with an encoder feature e, the residual posterior
    offsets come from 3×3(ELU(e)) at the top group and from 3×3(e + 1×1(h)) below it (NVAE Eq. 2), and
    posterior samples pass the `flows` (paired autoregressive cells); the new state is 1×1([h, z]).
    The distribution and bound maths are `shared.hvae.latent_group_step`'s. Parameters: `cells`,
    `prior`, `comb_enc` (None at the top group), `posterior`, `comb_dec`, `flows`.
    """

    def __init__(self, c: int, latent: int, *, top: bool, num_cells: int, use_se: bool, dtype, rngs: nnx.Rngs):
        self.latent = latent
        self.cells = nnx.List([] if top else [DecCell(c, use_se=use_se, dtype=dtype, rngs=rngs)
                                              for _ in range(num_cells)])
        self.prior = None if top else WNConv(c, 2 * latent, 1, rngs=rngs)
        self.comb_enc = None if top else WNConv(c, c, 1, rngs=rngs)
        self.posterior = WNConv(c, 2 * latent, 3, rngs=rngs)
        self.comb_dec = WNConv(c + latent, c, 1, rngs=rngs)
        # NVAE fills them after every group is built (the official drawing order)
        self.flows: nnx.List[Any] = nnx.List([])

    def prior_params(self, h: jax.Array) -> jax.Array:
        """Raw (μ, log σ) of p(z), [B, H, W, 2L] in float32 (latent distributions stay float32 under bf16)."""
        if self.prior is None:
            return jnp.zeros((*h.shape[:3], 2 * self.latent), jnp.float32)
        return self.prior(jax.nn.elu(h)).astype(jnp.float32)

    def posterior_offsets(self, e: jax.Array, h: jax.Array) -> jax.Array:
        """Residual (Δμ, Δlog σ) of q(z|x) from the encoder feature e and the decoder state h, [B, H, W, 2L]."""
        return self.posterior(jax.nn.elu(e) if self.comb_enc is None else e + self.comb_enc(h)).astype(jnp.float32)

    def combine(self, h: jax.Array, z: jax.Array) -> jax.Array:
        """New decoder state 1×1([h, z]): [B, H, W, C] and [B, H, W, L] → [B, H, W, C]."""
        return self.comb_dec(jnp.concatenate([h, z.astype(h.dtype)], axis=-1))

    def flow(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The flow cells in turn: (z', element-wise log|det| summed over cells)."""
        log_det = jnp.zeros_like(z)
        for cell in self.flows:
            z, ld = cell(z)
            log_det = log_det + ld
        return z, log_det

    def __call__(self, key: jax.Array, h: jax.Array, enc_feature: jax.Array | None = None,
                 temperature: float | jax.Array = 1.0, z_fixed: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """(new decoder state, `latent_group_step`'s aux); generation (z ~ p at `temperature`, or z = `z_fixed`)
        without e."""
        for cell in self.cells:
            h = cell(h)
        inference = enc_feature is not None
        return hvae.latent_group_step(key, h, self.prior_params, self.combine, enc_feature,
                                      self.posterior_offsets if inference else None, temperature=temperature,
                                      z_fixed=z_fixed, flow=self.flow if inference and len(self.flows) else None)


def _group_step(temperature: float | jax.Array):
    """`scan_stacked`' step for latent groups: (group, h, (key, e or None)) → (h', {"kl", "log_pq"} [B] or None)."""

    def step(group: LatentGroup, h: jax.Array, inputs: tuple[jax.Array, jax.Array | None]):
        key, feature = inputs
        h, aux = group(key, h, feature, temperature)
        if aux["kl"] is None:
            return h, None
        return h, {"kl": jnp.sum(aux["kl"], axis=(1, 2, 3)),
                   "log_pq": jnp.sum(aux["log_p"] - aux["log_q"], axis=(1, 2, 3))}

    return step


def _enc_group_step(cells: nnx.List, h: jax.Array, _) -> tuple[jax.Array, jax.Array]:
    """`scan_stacked`' step for encoder groups: the group's cells in turn; the output is also its feature."""
    for cell in cells:
        h = cell(h)
    return h, h


def _split_by_scale(items: list, counts: Sequence[int]) -> list[list]:
    """`items` cut into consecutive runs of `counts[s]` items, one run per scale."""
    starts = [0, *itertools.accumulate(counts)]
    return [list(items[a:b]) for a, b in itertools.pairwise(starts)]


class NVAE(nnx.Module):
    """Hierarchical VAE: stem, pre-processing, bottom-up encoder, top-down decoder, post-processing."""

    def __init__(self, cfg: Config, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dt = self.dtype = jnp.bfloat16 if cfg.bf16 else jnp.float32
        c = cfg.num_channels
        latent = cfg.num_latent_per_group
        se = cfg.use_se
        self.stem = WNConv(cfg.channels_in, c, 3, rngs=rngs)
        # pre-processing: each block is (num_preprocess_cells − 1) normal cells then one down cell (C → 2C)
        pre = []
        for _ in range(cfg.num_preprocess_blocks):
            pre += [EncCell(c, use_se=se, dtype=dt, rngs=rngs) for _ in range(cfg.num_preprocess_cells - 1)]
            pre.append(EncCell(c, down=True, use_se=se, dtype=dt, rngs=rngs))
            c *= 2
        self.pre = nnx.List(pre)
        groups = cfg.groups  # finest first
        # encoder, finest scale first: the groups of a scale (each `num_cell_per_group_enc` cells), stored
        # stacked (`shared.layer_scan.stack_modules`), and a down cell between scales
        enc_groups, enc_down = [], []
        for s, g in enumerate(groups):
            enc_groups.append(stack_modules([nnx.List([EncCell(c, use_se=se, dtype=dt, rngs=rngs)
                                                       for _ in range(cfg.num_cell_per_group_enc)])
                                             for _ in range(g)]))
            if s < len(groups) - 1:
                enc_down.append(EncCell(c, down=True, use_se=se, dtype=dt, rngs=rngs))
                c *= 2
        self.enc_groups, self.enc_down = nnx.List(enc_groups), nnx.List(enc_down)
        self.enc0 = WNConv(c, c, 1, rngs=rngs)
        size = cfg.image_size // cfg.total_downsampling
        # U[0, 1): the official torch.rand
        self.const = nnx.Param(workarounds.init_uniform(rngs.params(), (1, size, size, c), 0.0, 1.0))
        # decoder, coarsest scale first: the latent groups, an up cell between scales. Parameters are drawn
        # in the official order: each group's cells, prior, combiners; the ups; then every group's flows.
        groups_dec, ups = [], []
        for s, g in enumerate(reversed(groups)):
            for i in range(g):
                groups_dec.append(LatentGroup(c, latent, top=s == 0 and i == 0,
                                              num_cells=cfg.num_cell_per_group_dec, use_se=se, dtype=dt, rngs=rngs))
            if s < len(groups) - 1:
                ups.append(DecCell(c, up=True, use_se=se, dtype=dt, rngs=rngs))
                c //= 2
        self.ups = nnx.List(ups)
        # num_nf paired autoregressive flow cells per latent group, on posterior samples only
        for group in groups_dec:
            group.flows = nnx.List([PairedFlow(latent, rngs=rngs) for _ in range(cfg.num_nf)])
        # the top group (prior N(0, I), no cells) alone; the others stored stacked per scale, scales without
        # any (a coarsest scale of one group) left out
        self.top_group = groups_dec[0]
        self.dec_groups = nnx.List(self._stack_decoder(groups_dec))
        # post-processing: each block is one up cell (C → C/2) then (num_postprocess_cells − 1) normal cells
        post = []
        for _ in range(cfg.num_postprocess_blocks):
            post.append(DecCell(c, expand=3, up=True, use_se=se, dtype=dt, rngs=rngs))
            c //= 2
            post += [DecCell(c, expand=3, use_se=se, dtype=dt, rngs=rngs) for _ in range(cfg.num_postprocess_cells - 1)]
        self.post = nnx.List(post)
        out_c = (cfg.num_mixtures * (1 + 3 * cfg.channels_in) if cfg.output == "dmol"
                 else cfg.channels_in * (2 if cfg.output == "normal" else 1))
        self.head = WNConv(c, out_c, 3, rngs=rngs)

    def _stack_decoder(self, groups: list[LatentGroup]) -> list[LatentGroup]:
        """The latent groups below the top one (`groups` in decoder order, top first), stacked per scale."""
        scales = _split_by_scale(groups, self.cfg.groups[::-1])
        scales[0] = scales[0][1:]  # the top group stays alone
        return [stack_modules(members) for members in scales if members]

    def latent_groups(self) -> list[LatentGroup]:
        """Every latent group as its own module, in decoder order (top first): the top group itself and copies
        of the stacked ones, to read (the converter, tests) or to change and store with `set_latent_groups`."""
        stacks: list[LatentGroup] = list(self.dec_groups)
        return [self.top_group] + [group for stack in stacks for group in unstack_module(stack)]

    def set_latent_groups(self, groups: list[LatentGroup]) -> None:
        """Stores the variables of `groups` (as `latent_groups` returns them) into the model."""
        nnx.update(self.top_group, nnx.state(groups[0]))
        for stack, new in zip(self.dec_groups, self._stack_decoder(groups)):
            nnx.update(stack, nnx.state(new))

    def encoder_groups(self) -> list[nnx.List]:
        """Every encoder group's cells as their own modules (copies), finest scale first as the encoder runs."""
        stacks: list[nnx.List] = list(self.enc_groups)
        return [group for stack in stacks for group in unstack_module(stack)]

    def set_encoder_groups(self, groups: list[nnx.List]) -> None:
        """Stores the variables of `groups` (as `encoder_groups` returns them) into the model."""
        for stack, members in zip(self.enc_groups, _split_by_scale(groups, self.cfg.groups)):
            nnx.update(stack, nnx.state(stack_modules(members)))

    @property
    def scans_groups(self) -> bool:
        """Whether the stacked latent groups run under `lax.scan` (`Config.scan_groups`; "auto": not on CPU)."""
        mode = self.cfg.scan_groups
        return mode == "scan" or (mode == "auto" and workarounds.scan_layers_by_default())

    def decoder_input(self, batch: int) -> jax.Array:
        """The top-down pass's learned input, broadcast to [batch, h, w, C]."""
        return jnp.broadcast_to(self.const[...].astype(self.dtype), (batch, *self.const.shape[1:]))

    def _decode(self, key: jax.Array, enc_scales: list[jax.Array] | None, batch: int,
                temperature: float | jax.Array = 1.0, z_top: jax.Array | None = None):
        """Top-down pass: (output params, KL per group [B, G] or None in generation, Σ_g log p(z) − log q(z) [B]).

        enc_scales: `_encode_scales`' features (None: generate from the prior). Group g draws with key g of
        `jax.random.split(key, G)`; `z_top` fixes the top group's z in generation. The latent groups of a
        scale below the top one are identical and run under `scan_stacked` (`Config.scan_groups`).
        """
        cfg = self.cfg
        h = self.decoder_input(batch)
        keys = jax.random.split(key, sum(cfg.groups))
        kls, log_pq = [], jnp.zeros((batch,), jnp.float32)
        step, gi, stacks = _group_step(temperature), 0, iter(self.dec_groups)
        for s, g in enumerate(reversed(cfg.groups)):
            feats = None if enc_scales is None else enc_scales[s]  # [g, B, H, W, C], this scale's groups
            first = 0
            if s == 0:  # the top group (prior N(0, I), no cells) differs from the rest
                if z_top is None:
                    h, out = step(self.top_group, h, (keys[0], None if feats is None else feats[0]))
                else:
                    h, out = self.top_group(keys[0], h, None, temperature, z_fixed=z_top)[0], None
                if out is not None:
                    kls.append(out["kl"][:, None])
                    log_pq = log_pq + out["log_pq"]
                first = 1
            if first < g:
                xs = (keys[gi + first:gi + g], None if feats is None else feats[first:])
                h, out = scan_stacked(next(stacks), step, h, xs, scan=self.scans_groups,
                                      remat=self.cfg.remat_groups)
                if out is not None:
                    kls.append(out["kl"].T)
                    log_pq = log_pq + jnp.sum(out["log_pq"], axis=0)
            gi += g
            if s < len(cfg.groups) - 1:
                h = self.ups[s](h)
        for layer in self.post:
            h = layer(h)
        kl = jnp.concatenate(kls, axis=1) if kls else None
        return self.head(jax.nn.elu(h)).astype(jnp.float32), kl, log_pq

    def _encode_scales(self, x: jax.Array) -> list[jax.Array]:
        """Bottom-up features stacked per scale in decoder order: coarsest scale first, each [g, B, H, W, C]
        with its groups in decoder order. The groups of a scale run under `scan_stacked`."""
        h = self.stem((2.0 * x - 1.0).astype(self.dtype))
        for layer in self.pre:
            h = layer(h)
        scales: list[jax.Array] = []
        for s, stack in enumerate(self.enc_groups):
            h, feats = scan_stacked(stack, _enc_group_step, h, scan=self.scans_groups,
                                    remat=self.cfg.remat_groups)
            scales.append(feats)
            if s < len(self.enc_down):
                h = self.enc_down[s](h)
        scales[-1] = scales[-1].at[-1].set(self.enc0(jax.nn.elu(scales[-1][-1])))
        return [feats[::-1] for feats in scales[::-1]]

    def encode(self, x: jax.Array) -> list[jax.Array]:
        """Bottom-up features, one per group [B, H, W, C], in decoder order (coarsest first)."""
        return [f for feats in self._encode_scales(x) for f in feats]

    def log_px(self, out: jax.Array, x: jax.Array) -> jax.Array:
        """log p(x|z) per example [B]; x in [0, 1] (DMoL and Normal score 2x − 1, as the official code).

        MNIST (28×28 padded to 32×32) is scored on the central 28×28 pixels only, as the official code's
        `crop_output`, so its NLL is in the paper's units.
        """
        cfg = self.cfg
        if cfg.output == "bernoulli":
            lp = bernoulli_log_prob(out, x)
            if cfg.dataset == "mnist":
                lp = lp[:, 2:-2, 2:-2]
            return jnp.sum(lp, axis=(1, 2, 3))
        if cfg.output == "dmol":
            return jnp.sum(dmol_log_prob(out, 2.0 * x - 1.0, cfg.num_mixtures, cfg.num_bits, cfg.dmol_top_edge),
                           axis=(1, 2))
        mu, ls = jnp.split(out, 2, axis=-1)  # the official NormalDecoder: a density of 2x − 1 in [−1, 1]
        return jnp.sum(hvae.normal_from_params(mu, ls).log_prob(2.0 * x - 1.0), axis=(1, 2, 3))

    def __call__(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """ELBO pieces: (recon NLL [B], KL per group [B, G], decoder output)."""
        out, kl, _ = self._decode(key, self._encode_scales(x), x.shape[0])
        return -self.log_px(out, x), kl, out

    def log_weight(self, x: jax.Array, key: jax.Array) -> jax.Array:
        """One importance weight log p(x|z) + log p(z) − log q(z|x), z ~ q; per example [B]."""
        out, _, log_pq = self._decode(key, self._encode_scales(x), x.shape[0])
        return self.log_px(out, x) + log_pq

    def sample(self, key: jax.Array, n: int, temperature: float | jax.Array = 1.0,
               z_top: jax.Array | None = None) -> jax.Array:
        """Decoder output params for n samples from the prior at `temperature`; `z_top` [n, h, w, L] fixes the
        top group's z (the lower groups still draw theirs)."""
        out, _, _ = self._decode(key, None, n, temperature, z_top)
        return out
