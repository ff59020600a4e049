"""NVAE flow cells and bf16: autoregressive structure, log-det vs the autodiff Jacobian, bf16 ≈ fp32."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nvae_jax.configs import DIGITS
from nvae_jax.layers import ARConv, ar_conv_mask
from nvae_jax.model import NVAE, ARShiftCell, PairedFlow
from shared import hvae

SHAPE = (1, 3, 3, 2)  # one image, 3×3 pixels, 2 latent channels: an 18×18 Jacobian


def _jacobian(f, z):
    flat = lambda v: f(v.reshape(SHAPE))[0].reshape(-1)  # noqa: E731
    # reverse mode: the CPU depthwise conv has a hand-written VJP (no forward mode); jit: one compilation
    return np.asarray(jax.jit(jax.jacrev(flat))(z.reshape(-1)))


def _perturb(module, key):
    """Random (non-init) weights so every unmasked connection is active."""
    state = nnx.state(module, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    nnx.update(module, jax.tree.unflatten(tree, [x + 0.5 * jax.random.normal(k, x.shape)
                                                 for x, k in zip(leaves, keys)]))


def test_shift_cell_is_autoregressive_with_unit_diagonal():
    cell = ARShiftCell(2, mirror=False, rngs=nnx.Rngs(0))
    _perturb(cell, jax.random.PRNGKey(1))
    z = jax.random.normal(jax.random.PRNGKey(2), SHAPE)
    jac = _jacobian(cell, z)  # [out, in], flat index = pixel·2 + channel (raster order, then channel)
    np.testing.assert_allclose(np.triu(jac, 1), 0.0, atol=1e-6)  # out depends only on earlier inputs
    np.testing.assert_allclose(np.diag(jac), 1.0, atol=1e-6)
    assert np.abs(np.tril(jac, -1)).max() > 1e-3  # and does depend on them
    # the mirrored cell is autoregressive in the reversed pixel order
    cell_m = ARShiftCell(2, mirror=True, rngs=nnx.Rngs(3))
    _perturb(cell_m, jax.random.PRNGKey(4))
    jm = _jacobian(cell_m, z)
    order = (np.arange(9)[::-1][:, None] * 2 + np.arange(2)[None, :]).reshape(-1)  # reversed pixels
    np.testing.assert_allclose(np.triu(jm[np.ix_(order, order)], 1), 0.0, atol=1e-6)


def test_paired_flow_log_det_matches_autodiff_jacobian():
    flow = PairedFlow(2, rngs=nnx.Rngs(5))
    _perturb(flow, jax.random.PRNGKey(6))
    z = jax.random.normal(jax.random.PRNGKey(7), SHAPE)
    _, log_det = flow(z)
    jac = _jacobian(flow, z)
    sign, logabs = np.linalg.slogdet(jac.astype(np.float64))
    assert sign > 0
    np.testing.assert_allclose(logabs, float(jnp.sum(log_det)), atol=1e-4)
    # not the identity: a real transformation (small: the official init scales μ's conv by 0.1)
    assert np.abs(jac - np.eye(18)).max() > 1e-3


def test_ar_conv_mask_blocks():
    m = ar_conv_mask(3, 2, 4, 1, zero_diag=True, mirror=False)  # [k, k, in, out]
    assert m[2].sum() == 0 and m[1, 2].sum() == 0 and m[0].all() and m[1, 0].all()
    np.testing.assert_array_equal(m[1, 1], [[0, 0, 1, 1], [0, 0, 0, 0]])  # out block 1 sees in-channel 0
    np.testing.assert_array_equal(ar_conv_mask(1, 4, 2, 1, zero_diag=False, mirror=False)[0, 0],
                                  [[1, 1], [1, 1], [0, 1], [0, 1]])
    np.testing.assert_array_equal(ar_conv_mask(3, 2, 4, 1, True, True), m[::-1, ::-1])
    conv = ARConv(2, 4, 3, zero_diag=True, mirror=False, rngs=nnx.Rngs(0))
    assert float(jnp.abs(conv.weight() * (1 - m)).max()) == 0.0


# smallest model with a hierarchy: 4×4 input, 1 pre block, 1 latent scale × 2 groups
SMALL = dataclasses.replace(DIGITS, image_size=4, num_channels=4, num_latent_per_group=2, num_latent_scales=1,
                            num_groups_per_scale=2)


def test_model_with_flows_kl_is_log_q_minus_log_p():
    cfg = dataclasses.replace(SMALL, num_nf=1)
    model = NVAE(cfg, rngs=nnx.Rngs(0))
    groups = model.latent_groups()
    assert len(groups) == sum(cfg.groups) and all(len(g.flows) == 1 for g in groups)
    x = (jax.random.uniform(jax.random.PRNGKey(1), (3, 4, 4, 1)) > 0.5).astype(jnp.float32)

    @nnx.jit
    def both(m, x, key):
        recon, kl, _ = m(x, key)
        return recon, kl, m.log_weight(x, key)  # same key, same z

    recon, kl, lw = both(model, x, jax.random.PRNGKey(2))
    # log w = log p(x|z) + log p(z) − log q(z|x) = −recon − Σ_groups (log q − log p), the MC KL with flows
    np.testing.assert_allclose(lw, -recon - jnp.sum(kl, axis=1), rtol=1e-4, atol=1e-3)
    # the flows act: without them the same posterior draws give another KL
    for group in [model.top_group, *model.dec_groups]:  # the top group and the stacked rest
        group.flows = nnx.List([])
    _, kl0, _ = both(model, x, jax.random.PRNGKey(2))
    assert float(jnp.abs(kl0 - kl).max()) > 1e-4


def test_bf16_forward_close_to_fp32():
    """The 2-group model at 4 channels (two compilations of its forward). Fails if `Config.bf16` leaves the
    convolutions in float32, computes the likelihood or the KL in bf16, or drifts by more than a few %
    (bf16 keeps 8 significant bits, ε = 2⁻⁷, rounded at every layer)."""
    cfg = SMALL
    m32 = NVAE(cfg, rngs=nnx.Rngs(0))
    m16 = NVAE(dataclasses.replace(cfg, bf16=True), rngs=nnx.Rngs(0))
    x = (jax.random.uniform(jax.random.PRNGKey(1), (4, 4, 4, 1)) > 0.5).astype(jnp.float32)
    fwd = nnx.jit(lambda m, x, k: m(x, k))
    r32, kl32, _o32 = fwd(m32, x, jax.random.PRNGKey(3))
    r16, kl16, o16 = fwd(m16, x, jax.random.PRNGKey(3))
    assert r16.dtype == kl16.dtype == o16.dtype == jnp.float32  # likelihoods in float32
    assert m16.stem(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16  # convs compute in bf16
    np.testing.assert_allclose(r16, r32, rtol=3e-2)
    np.testing.assert_allclose(jnp.sum(kl16, 1), jnp.sum(kl32, 1), rtol=5e-2, atol=0.2)


def test_paired_flow_kl_per_sample_is_log_q_of_the_pre_flow_z_minus_log_p_of_the_flowed_z():
    """A posterior group with NVAE's `PairedFlow` (random weights): each element's KL must be
    log N(z₀; q) − log-det − log N(flow(z₀); p), computed here in float64 from z₀, the flow's own
    output and its log-det (0: the cells are volume-preserving). Fails if log q is evaluated at the
    post-flow z (the flow moves z by > 0.1 here)."""
    flow = PairedFlow(2, rngs=nnx.Rngs(8))
    _perturb(flow, jax.random.PRNGKey(9))
    keys = jax.random.split(jax.random.PRNGKey(10), 3)
    prior, delta, z0 = (jax.random.normal(k, SHAPE[:-1] + (n,)) for k, n in zip(keys, (4, 4, 2)))
    state = jnp.zeros(SHAPE)

    @nnx.jit  # one compilation: the masked convolutions are slow op by op
    def group_and_flow(flow):
        _, aux = hvae.latent_group_step(keys[0], state, lambda s: prior, lambda s, z: z, state,
                                        lambda e, s: delta, z_fixed=z0, flow=flow)
        return aux, flow(z0)

    aux, (z, log_det) = group_and_flow(flow)
    assert float(jnp.abs(z - z0).max()) > 0.1
    q, p = aux["q"], aux["p"]

    def log_normal(v, n):
        v, mu, sigma = (np.asarray(a, np.float64) for a in (v, n.mu, n.sigma))
        return -0.5 * ((v - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)

    expected = log_normal(z0, q) - np.asarray(log_det, np.float64) - log_normal(z, p)
    np.testing.assert_allclose(aux["z"], z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(aux["kl"], expected, rtol=1e-4, atol=1e-4)
