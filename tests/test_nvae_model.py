"""Model-level tests: shapes, every full config under eval_shape, one full-width train step (slow)."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from nvae_jax import configs, experiments
from nvae_jax.model import NVAE
from shared.layer_scan import num_layers
from shared.train import eval_shape_model

FULL = {"mnist": configs.MNIST, "cifar10": configs.CIFAR10, "celeba64": configs.CELEBA64}
PUBLISHED_PARAMS_M = {"mnist": 33.4, "cifar10": 130.9}  # nvae_jax/README.md, official configs


def _abstract(cfg):
    abstract = eval_shape_model(lambda rngs: NVAE(cfg, rngs=rngs))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    stacks = list(abstract.dec_groups)  # the latent groups below the top one, stacked per scale
    assert 1 + sum(num_layers(s) for s in stacks) == sum(cfg.groups)
    assert all(len(g.flows) == cfg.num_nf for g in [abstract.top_group, *stacks])
    return abstract, n


@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba64"])
def test_full_configs_build_under_eval_shape(name):
    """Every full config at its full width, scales, group counts, cells, flows and output head (3-10 s each
    with `eval_shape_model`; plain `nnx.eval_shape` took minutes, quadratic in the number of layers)."""
    cfg = FULL[name]
    abstract, n = _abstract(cfg)
    assert n > 1e6
    if name in PUBLISHED_PARAMS_M:
        assert round(n / 1e6, 1) == PUBLISHED_PARAMS_M[name]
    assert abstract.top_group.prior is None and all(s.prior is not None for s in abstract.dec_groups)  # N(0, I) top


def test_official_initialisation_starts_near_the_uninformed_model():
    """PyTorch's default init (U(±1/√fan_in) weights and biases, U[0,1) top constant), as the official code:
    on random bits the logits start near 0 (recon ≈ 784·ln 2 on the 28×28 crop) and the KL is modest.
    With N(0, 1/fan_in) weights, zero biases and an N(0, 1) constant the decoder state grew group by
    group and the KL at initialisation was 2.6e8 nats (official: a few hundred)."""
    import dataclasses
    import math

    import numpy as np

    cfg = dataclasses.replace(configs.TINY_MNIST, batch_size=4)
    model = NVAE(cfg, rngs=nnx.Rngs(0))
    x = (np.random.default_rng(0).random((4, 32, 32, 1)) > 0.5).astype(np.float32)
    recon, kl, _ = nnx.jit(lambda m, x: m(x, jax.random.PRNGKey(0)))(model, x)
    assert abs(float(recon.mean()) - 784 * math.log(2)) < 0.02 * 784 * math.log(2)
    assert 0 < float(kl.sum(axis=1).mean()) < 5e3


@pytest.mark.slow  # compiles each full-width train step (minutes on CPU)
@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba64"])
def test_full_config_one_train_step_at_reduced_batch(name, devices):
    import dataclasses

    import numpy as np

    from nvae_jax import train
    from shared.train import make_mesh, shard_batch

    cfg = dataclasses.replace({"mnist": configs.MNIST, "cifar10": configs.CIFAR10,
                               "celeba64": configs.CELEBA64}[name], batch_size=8)
    mesh = make_mesh(devices=devices)
    _, state, step = train.build_step(cfg, 100, mesh)
    x = np.random.default_rng(0).random((8, cfg.image_size, cfg.image_size, cfg.channels_in)).astype(np.float32)
    state, m = step(state, shard_batch({"image": np.round(x * 255) / 255}, mesh))
    assert int(state.skipped) == 0 and np.isfinite(float(m["loss"])) and float(m["nelbo"]) > 0


def test_digits_forward_shapes_under_eval_shape():
    cfg = configs.DIGITS
    graphdef, state = nnx.split(nnx.eval_shape(lambda: NVAE(cfg, rngs=nnx.Rngs(0))))

    def f(state, x):
        m = nnx.merge(graphdef, state)
        return m(x, jax.random.PRNGKey(0))

    x = jax.ShapeDtypeStruct((3, 16, 16, 1), jnp.float32)
    recon, kl, out = jax.eval_shape(f, state, x)
    assert recon.shape == (3,) and kl.shape == (3, sum(cfg.groups)) and out.shape == (3, 16, 16, 1)


def test_experiment_registered():
    assert "digits" in experiments.EXPERIMENTS


def test_tiny_mnist_has_the_official_parameter_count():
    """Same cells, skips, combiners and samplers as NVlabs/NVAE's `AutoEncoder` built with the tiny_mnist
    arguments (res_mbconv, SE, 2 scales × 2 groups, 1 pre/post block of 2 cells): 529,750 parameters, counted
    from the official model (BN affine and weight-norm gains included)."""
    _, n = _abstract(configs.TINY_MNIST)
    assert n == 529_750


def test_residual_down_and_up_cells_change_resolution_and_width():
    from nvae_jax.model import DecCell, EncCell

    x = jnp.ones((2, 8, 8, 16))
    down = nnx.eval_shape(lambda: EncCell(16, down=True, rngs=nnx.Rngs(0)))
    up = nnx.eval_shape(lambda: DecCell(16, up=True, rngs=nnx.Rngs(0)))
    assert nnx.eval_shape(lambda m: m(x), down).shape == (2, 4, 4, 32)
    assert nnx.eval_shape(lambda m: m(x), up).shape == (2, 16, 16, 8)


def test_aligned_bilinear_upsampling_keeps_corners_and_linear_ramps():
    from nvae_jax.model import upsample_bilinear_aligned

    n = 5
    ramp = jnp.arange(n, dtype=jnp.float32)
    x = (ramp[:, None] + 10 * ramp[None, :])[None, :, :, None]  # [1, n, n, 1], affine in (row, col)
    y = upsample_bilinear_aligned(x)[0, :, :, 0]
    grid = jnp.arange(2 * n) * (n - 1) / (2 * n - 1)  # PyTorch align_corners=True sampling positions
    assert jnp.allclose(y, grid[:, None] + 10 * grid[None, :], atol=1e-5)
    assert y[0, 0] == x[0, 0, 0, 0] and y[-1, -1] == x[0, -1, -1, 0]


def test_mnist_likelihood_scores_only_the_original_28x28_pixels():
    """The 2-pixel padding of MNIST's 32×32 canvas is cropped from log p(x|z), as the official code does."""
    model = nnx.eval_shape(lambda: NVAE(configs.TINY_MNIST, rngs=nnx.Rngs(0)))
    out = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 1))
    x = jnp.zeros((2, 32, 32, 1)).at[:, 2:30, 2:30].set(1.0)
    border = jnp.ones((32, 32), bool).at[2:30, 2:30].set(False)[None, :, :, None]
    noisy_out = jnp.where(border, 50.0 * out, out)  # changing the border logits must not matter
    assert jnp.allclose(model.log_px(out, x), model.log_px(noisy_out, x))
    from nvae_jax.layers import bernoulli_log_prob

    inner = jnp.sum(bernoulli_log_prob(out, x)[:, 2:30, 2:30], axis=(1, 2, 3))
    assert jnp.allclose(model.log_px(out, x), inner)
