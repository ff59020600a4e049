"""Latent groups stored stacked and run under `lax.scan` (`Config.scan_groups`): the unrolled loop's maths, a
program and a parameter tree whose size do not grow with depth, one layout for both, so checkpoints move
between them, and the official per-group weights in and out."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nvae_jax import train
from nvae_jax.configs import DIGITS
from nvae_jax.model import NVAE
from shared.layer_scan import num_layers, scan_stacked, stack_modules, unstack_module

SMALL = dataclasses.replace(DIGITS, image_size=8, num_channels=4, num_latent_per_group=2, batch_size=4,
                            num_postprocess_cells=1, num_preprocess_cells=1, scan_groups="scan")
O0 = {"xla_backend_optimization_level": 0}
# each case compiles four programs (durations: benchmarks/RESULTS.md, nvae_jax), so the default suite runs one
# case with equal groups, flows and 2 cells per group; adaptive counts over 3 scales run with `-m slow`
CASES = [
    pytest.param(dict(num_groups_per_scale=3, num_nf=1, num_cell_per_group_enc=2, num_cell_per_group_dec=2,
                      remat_groups=True), id="equal groups, flows, 2 cells per group, rematerialised"),
    # adaptive: (4, 2, 1) groups finest first, so the coarsest scale is the top group alone
    pytest.param(dict(image_size=16, num_latent_scales=3, num_groups_per_scale=4, adaptive_groups=True),
                 id="adaptive groups, 3 scales", marks=pytest.mark.slow),
]


def _images(cfg, n=4):
    return jnp.asarray(np.random.default_rng(0).random((n, cfg.image_size, cfg.image_size, 1)) > 0.5, jnp.float32)


def _outputs(cfg):
    """Train-mode forward (recon, KL per group), its parameter gradient and the BN statistics it leaves; an IW
    log-weight and a sample at T = 0.7 in eval mode."""
    model = NVAE(cfg, rngs=nnx.Rngs(0))
    x, key = _images(cfg), jax.random.PRNGKey(1)

    def loss(m):
        recon, kl, _ = m(x, key)
        return jnp.mean(recon + jnp.sum(kl, axis=1)), (recon, kl)

    # jitted: eagerly, the unrolled loop dispatches (and compiles) every op of every group; at XLA's lowest
    # optimisation level, which compiles faster and changes no value these comparisons look at
    def train_pass(graphdef, state):
        m = nnx.merge(graphdef, state)
        (_, (recon, kl)), grads = nnx.value_and_grad(loss, has_aux=True)(m)
        return recon, kl, grads, nnx.state(m)

    def eval_pass(graphdef, state):
        m = nnx.merge(graphdef, state)
        return m.log_weight(x, key), m.sample(jax.random.PRNGKey(2), 3, 0.7)

    graphdef, state = nnx.split(model)
    recon, kl, grads, state = jax.jit(train_pass, static_argnums=0, compiler_options=O0)(graphdef, state)
    nnx.update(model, state)
    stats = nnx.state(model, nnx.BatchStat)
    model.eval()
    log_w, sample = jax.jit(eval_pass, static_argnums=0, compiler_options=O0)(*nnx.split(model))
    return {"recon": recon, "kl": kl, "grads": grads, "stats": stats, "log_w": log_w, "sample": sample}


@pytest.mark.parametrize("case", CASES)
def test_scanned_groups_equal_the_unrolled_loop(case):
    cfg = dataclasses.replace(SMALL, **case)
    scanned, unrolled = _outputs(cfg), _outputs(dataclasses.replace(cfg, scan_groups="unroll", remat_groups=False))
    assert scanned["kl"].shape == (4, sum(cfg.groups))
    for name in scanned:
        a, b = jax.tree.leaves(scanned[name]), jax.tree.leaves(unrolled[name])
        assert len(a) == len(b) > 0, name
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, rtol=2e-5, atol=2e-5, err_msg=name)
    # the train-mode forward moved every BN's running statistics, the scanned groups' included
    fresh = jax.tree.leaves(nnx.state(NVAE(cfg, rngs=nnx.Rngs(0)), nnx.BatchStat))
    moved = [np.abs(np.asarray(u) - np.asarray(v)).max() for u, v in zip(jax.tree.leaves(scanned["stats"]), fresh)]
    assert min(moved) > 0


def _convolutions(cfg) -> int:
    """Convolutions in the lowered program of one loss-and-gradient evaluation."""
    graphdef, state = nnx.split(NVAE(cfg, rngs=nnx.Rngs(0)))

    def loss(state, x, key):
        recon, kl, _ = nnx.merge(graphdef, state)(x, key)
        return jnp.mean(recon + jnp.sum(kl, axis=1))

    text = jax.jit(jax.grad(loss)).lower(state, _images(cfg), jax.random.PRNGKey(0)).as_text()
    return text.count("stablehlo.convolution")


def test_program_size_does_not_grow_with_the_number_of_groups():
    counts = {(scan, g): _convolutions(dataclasses.replace(SMALL, num_groups_per_scale=g,
                                                              scan_groups="scan" if scan else "unroll"))
              for scan in (True, False) for g in (2, 4)}
    assert counts[True, 2] == counts[True, 4]
    assert counts[False, 4] > counts[False, 2] + 20  # unrolled: every group's convs again, forward and backward
    assert counts[True, 4] < counts[False, 4]


def test_scanned_and_unrolled_models_share_one_parameter_layout():
    """A checkpoint holds the same stacked variables either way."""
    cfg = dataclasses.replace(SMALL, num_groups_per_scale=3)
    a = nnx.state(NVAE(cfg, rngs=nnx.Rngs(0)))
    b = nnx.state(NVAE(dataclasses.replace(cfg, scan_groups="unroll"), rngs=nnx.Rngs(0)))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)


def test_the_parameter_tree_does_not_grow_with_the_number_of_groups():
    """One leaf per variable of a scale's groups: the gradient, the optimiser and checkpoints see as many
    arrays for 6 groups per scale as for 2 (each then [5, ...] instead of [1, ...] at the top scale)."""
    leaves = {g: jax.tree.leaves(nnx.state(NVAE(dataclasses.replace(SMALL, num_groups_per_scale=g),
                                                    rngs=nnx.Rngs(0))))
              for g in (2, 6)}
    assert len(leaves[2]) == len(leaves[6])
    assert sum(x.size for x in leaves[6]) > 2 * sum(x.size for x in leaves[2])


def test_latent_groups_round_trip_through_the_stacked_storage():
    """The per-group view the converter writes official weights through: every group's variables in decoder
    order, the stacked ones their own slices, and a change to one group stored back to that group alone."""
    cfg = dataclasses.replace(SMALL, num_groups_per_scale=3, num_nf=1)
    model = NVAE(cfg, rngs=nnx.Rngs(0))
    groups = model.latent_groups()
    assert len(groups) == 6 and groups[0] is model.top_group and groups[0].prior is None
    np.testing.assert_array_equal(groups[4].posterior.v[...], model.dec_groups[1].posterior.v[...][1])
    before = np.asarray(model.dec_groups[1].posterior.v[...])
    groups[4].posterior.v[...] = jnp.zeros_like(groups[4].posterior.v[...])
    model.set_latent_groups(groups)
    after = np.asarray(model.dec_groups[1].posterior.v[...])
    assert not after[1].any()
    np.testing.assert_array_equal(np.delete(after, 1, axis=0), np.delete(before, 1, axis=0))
    enc = model.encoder_groups()
    assert len(enc) == 6 and len(enc[0]) == cfg.num_cell_per_group_enc
    enc[5][0].c1.bias[...] = jnp.ones_like(enc[5][0].c1.bias[...])
    model.set_encoder_groups(enc)
    np.testing.assert_array_equal(model.enc_groups[1][0].c1.bias[...][2], 1.0)


class _Affine(nnx.Module):
    def __init__(self, n, *, rngs):
        self.linear, self.bn = nnx.Linear(n, n, rngs=rngs), nnx.BatchNorm(n, momentum=0.5, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.linear(x))


@pytest.mark.parametrize("scan", [True, False])
def test_scan_stacked_applies_each_layer_once_and_writes_back_batch_statistics(scan):
    layers = [_Affine(3, rngs=nnx.Rngs(i)) for i in range(4)]
    stacked = stack_modules(layers)
    assert num_layers(stacked) == 4 and stacked.linear.kernel.shape == (4, 3, 3)
    x = jnp.arange(6.0).reshape(2, 3)
    expected, h = [], x
    for layer in layers:
        h = layer(h)
        expected.append(nnx.state(layer, nnx.BatchStat))
    out, ys = scan_stacked(stacked, lambda m, c, scale: (m(c) * scale, jnp.sum(c)), x, jnp.ones(4), scan=scan)
    np.testing.assert_allclose(out, h, rtol=1e-6)
    assert ys.shape == (4,)
    for layer, want in zip(unstack_module(stacked), expected):
        for u, v in zip(jax.tree.leaves(nnx.state(layer, nnx.BatchStat)), jax.tree.leaves(want)):
            np.testing.assert_allclose(u, v, rtol=1e-6)


def test_stack_modules_refuses_modules_of_different_structure():
    with pytest.raises(ValueError, match=r"module 1 .*differs in structure"):
        stack_modules([_Affine(3, rngs=nnx.Rngs(0)), _Affine(4, rngs=nnx.Rngs(1))])
    with pytest.raises(ValueError, match="at least one module"):
        stack_modules([])


@pytest.mark.slow  # two fits, each compiling the train step (duration: benchmarks/RESULTS.md, nvae_jax)
def test_a_checkpoint_of_the_unrolled_model_resumes_scanned(tmp_path):
    """A checkpoint written by the unrolled program (`scan_groups="unroll"`) resumes under the scan: one layout,
    the same trajectory."""
    import shutil

    cfg = dataclasses.replace(SMALL, num_groups_per_scale=2, batch_size=8)
    x = (np.random.default_rng(0).random((32, 8, 8, 1)) > 0.5).astype(np.float32)
    _, full, _ = train.fit(dataclasses.replace(cfg, scan_groups="unroll"), x, 3, checkpoint_dir=tmp_path / "a",
                           checkpoint_every=2, log_every=1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "3")
    _, resumed, hist = train.fit(cfg, x, 3, checkpoint_dir=tmp_path / "b", resume=True, log_every=1)
    assert [h["step"] for h in hist] == [1, 2, 3]
    for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(full))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_checkpoint_of_the_fully_flattened_optimiser_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    """Before `flatten_small_leaves`, the Adamax state was one raveled vector per moment (`optax.flatten`): such a
    checkpoint cannot resume the current layout and is refused by name, not skipped as damaged."""
    import optax

    from shared.checkpoint import Checkpointer, CheckpointMismatch

    cfg = dataclasses.replace(SMALL, batch_size=8)
    x = (np.random.default_rng(0).random((16, 8, 8, 1)) > 0.5).astype(np.float32)
    with monkeypatch.context() as patch:  # the state an earlier run saved (no step needs compiling for it)
        patch.setattr(train, "flatten_small_leaves", optax.flatten)
        old = train.make_trainer(cfg, 2).state
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(1, old, config=cfg)
    checkpointer.close()
    with pytest.raises(CheckpointMismatch, match="earlier layout of this code"):
        train.fit(cfg, x, 2, checkpoint_dir=tmp_path, resume=True, log_every=1)

def test_eval_mode_groups_run_inside_an_inner_transform():
    """Eval-mode BN assigns nothing, so nothing is written back: the IW bound maps log-weights over samples
    with `lax.map` around a model merged outside it."""
    cfg = dataclasses.replace(SMALL, num_groups_per_scale=3)
    model = NVAE(cfg, rngs=nnx.Rngs(0))
    model.eval()
    x, keys = _images(cfg), jax.random.split(jax.random.PRNGKey(0), 3)
    mapped = jax.lax.map(lambda k: model.log_weight(x, k), keys)
    one = nnx.jit(lambda m, k: m.log_weight(x, k))
    np.testing.assert_allclose(mapped, jnp.stack([one(model, k) for k in keys]), rtol=1e-5)


def test_auto_scans_off_cpu_only_and_bad_modes_are_refused():
    """"auto" unrolls on CPU (XLA:CPU leaves a loop body's convolutions uncanonicalised: a slow gradient)."""
    model = NVAE(dataclasses.replace(SMALL, scan_groups="auto"), rngs=nnx.Rngs(0))
    assert model.scans_groups == (jax.default_backend() != "cpu")
    with pytest.raises(ValueError, match="scan_groups must be 'auto', 'scan' or 'unroll'"):
        dataclasses.replace(SMALL, scan_groups="yes")


def test_rematerialised_groups_put_each_stack_under_jax_checkpoint():
    """`remat_groups` adds one rematerialised call per scanned stack (encoder and decoder, each scale); that it
    changes no value is the first case of `test_scanned_groups_equal_the_unrolled_loop` (scanned and
    rematerialised against unrolled and not)."""
    cfg = dataclasses.replace(SMALL, num_groups_per_scale=3)
    x, key = _images(cfg), jax.random.PRNGKey(1)
    calls = {}
    for remat in (False, True):
        graphdef, state = nnx.split(NVAE(dataclasses.replace(cfg, remat_groups=remat), rngs=nnx.Rngs(0)))

        def loss(state):
            return jnp.mean(nnx.merge(graphdef, state)(x, key)[0])

        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(state))
        calls[remat] = len(re.findall(r"\b(?:remat\w*|checkpoint)\[", jaxpr))  # the name by JAX version
    assert calls[True] == calls[False] + 2 * len(cfg.groups)
