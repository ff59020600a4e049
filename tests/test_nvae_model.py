"""Model-level tests: shapes, every full config under eval_shape, one full-width train step (slow)."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from nvae_jax import configs, experiments
from nvae_jax.model import NVAE


FULL = {"mnist": configs.MNIST, "cifar10": configs.CIFAR10, "celeba64": configs.CELEBA64}


def _abstract(cfg):
    abstract = nnx.eval_shape(lambda: NVAE(cfg, rngs=nnx.Rngs(0)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert len(abstract.flows) == sum(cfg.groups) and all(len(f) == cfg.num_nf for f in abstract.flows)
    return abstract, n


@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba64"])
def test_full_configs_at_full_width_build_under_eval_shape(name):
    """Full width, scales, cells, flows and output head; 2 groups per scale to stay fast (see the slow test:
    nnx.eval_shape is quadratic in the number of variables here, ~1 min for MNIST's 15 groups)."""
    import dataclasses

    cfg = dataclasses.replace(FULL[name], num_groups_per_scale=2)
    _, n = _abstract(cfg)
    assert n > 1e5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba64", "tiny_mnist"])
def test_full_configs_build_under_eval_shape(name):
    _, n = _abstract(FULL.get(name, configs.TINY_MNIST))
    assert n > 1e4


@pytest.mark.slow  # compiles each full-width train step (minutes on CPU)
@pytest.mark.parametrize("name", ["mnist", "cifar10", "celeba64"])
def test_full_config_one_train_step_at_reduced_batch(name, devices):
    import dataclasses

    import numpy as np

    from nvae_jax import train
    from shared import train as harness

    cfg = dataclasses.replace({"mnist": configs.MNIST, "cifar10": configs.CIFAR10,
                               "celeba64": configs.CELEBA64}[name], batch_size=8)
    mesh = harness.make_mesh(devices=devices)
    _, state, step = train.build(cfg, 100, mesh)
    x = np.random.default_rng(0).random((8, cfg.image_size, cfg.image_size, cfg.channels_in)).astype(np.float32)
    state, m = step(state, harness.shard_batch({"image": np.round(x * 255) / 255}, mesh))
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
