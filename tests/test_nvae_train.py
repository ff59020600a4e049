"""NVAE training on the harness: 8-device vs 1-device equality, persistent power-iteration state, eval."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from nvae_jax import train
from nvae_jax.configs import DIGITS
from nvae_jax.layers import SpectralVector, WNConv
from nvae_jax.model import NVAE
from shared.train import make_mesh, shard_batch

# the smallest model with a real hierarchy: 8×8 input, 1 pre block, 2 latent scales × 1 group
TINY = dataclasses.replace(DIGITS, image_size=8, num_channels=4, num_latent_per_group=2, batch_size=8,
                           num_postprocess_cells=1, num_preprocess_cells=1)


def _batches(n=2):
    rng = np.random.default_rng(0)
    x = (rng.random((n, 8, 8, 8, 1)) > 0.5).astype(np.float32)
    return [{"image": x[i]} for i in range(n)]


def _two_steps(mesh):
    _, state, step = train.build_step(TINY, 10, mesh=mesh)
    losses = []
    for b in _batches():
        state, m = step(state, shard_batch(b, mesh))
        losses.append(float(m["loss"]))
    return losses, jax.device_get(state)


@pytest.mark.slow  # two compilations of the train step (duration: benchmarks/RESULTS.md, nvae_jax)
def test_eight_devices_match_one_device(devices):
    losses8, s8 = _two_steps(make_mesh(devices=devices))
    losses1, s1 = _two_steps(make_mesh(devices=devices[:1]))
    np.testing.assert_allclose(losses8, losses1, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # BN statistics and power-iteration vectors (model_state) move and agree too
    for a, b in zip(jax.tree.leaves(s8.model_state), jax.tree.leaves(s1.model_state)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert int(s8.skipped) == 0 and np.isfinite(losses8).all()


def _spectral(graphdef, state):
    model = nnx.merge(graphdef, state.params, state.model_state)
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, SpectralVector))]


@pytest.mark.slow  # two fits, each compiling the step (duration: benchmarks/RESULTS.md, nvae_jax)
def test_checkpoint_resume_is_exact_and_keeps_power_iteration_vectors(tmp_path):
    x = (np.random.default_rng(0).random((32, 8, 8, 1)) > 0.5).astype(np.float32)
    graphdef, init, _ = train.build_step(TINY, 3)
    full_dir = tmp_path / "full"
    _, full, hist = train.fit(TINY, x, 3, checkpoint_dir=full_dir, checkpoint_every=2, log_every=1)
    assert [h["step"] for h in hist] == [1, 2, 3] and int(full.skipped) == 0
    # β comes from the step counter: 1e-4 at step 0, then step / (0.3 · 3)
    np.testing.assert_allclose([h["beta"] for h in hist], [1e-4, 1 / 0.9, 1.0][:1] + [min(1, 1 / 0.9), 1.0],
                               rtol=1e-5)
    # the persistent u, v moved during training
    assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(_spectral(graphdef, init), _spectral(graphdef, full)))
    # resume from the step-2 checkpoint (drop the final one): ends bit-for-bit where the full run did
    import shutil

    shutil.copytree(full_dir, tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "3")
    _, resumed, hist_r = train.fit(TINY, x, 3, checkpoint_dir=tmp_path / "resumed", resume=True, log_every=1)
    assert [h["step"] for h in hist_r] == [1, 2, 3]
    for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(full))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_spectral(graphdef, resumed), _spectral(graphdef, full), strict=True):  # stacked ones [n, d]
        np.testing.assert_array_equal(a, b)


def _matrix(conv: WNConv) -> jax.Array:
    """The conv's normalised kernel as the [C_out, k·k·C_in/groups] matrix its spectral vectors (u, v) belong to."""
    w = conv.weight()
    return w.reshape(-1, w.shape[-1]).T


def test_spectral_norm_persistent_vectors_track_largest_singular_value():
    conv = WNConv(3, 5, 3, rngs=nnx.Rngs(0))
    s_true = np.linalg.svd(np.asarray(_matrix(conv)), compute_uv=False)[0]
    u0 = np.asarray(conv.sn_u[...])
    s = float(train.spectral_penalty(conv, 200))  # a lone conv: the penalty is its σ_max
    assert abs(s - s_true) < 1e-3 * s_true
    # the vectors are model state (not params) and are updated in place
    assert not isinstance(conv.sn_u, nnx.Param)
    assert np.asarray(conv.sn_u[...]).shape == u0.shape == (5,)
    assert np.abs(np.asarray(conv.sn_u[...]) - u0).max() > 1e-3  # random at init, moved by the iteration
    assert len(jax.tree.leaves(nnx.state(conv, SpectralVector))) == 2  # travels with the model state


def test_spectral_penalty_is_the_sum_of_top_singular_values_of_all_convs():
    """The shape-batched power iteration gives Σ σ_max over every conv (weight-normalised or plain)."""
    model = NVAE(dataclasses.replace(DIGITS, num_channels=4), rngs=nnx.Rngs(0))
    convs = [m for _, m in nnx.iter_graph(model) if isinstance(m, WNConv)]
    assert any(c.log_g is None for c in convs)  # the decoder cells' plain convs are included
    expected = sum(float(np.linalg.svd(np.asarray(_matrix(c)), compute_uv=False)[0]) for c in convs)
    penalty = nnx.jit(train.spectral_penalty, static_argnums=1)(model, 300)  # eagerly: one dispatch per op
    assert float(penalty) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("shapes", [
    [(1, 144), (8, 16), (8, 16), (16, 9), (384, 25), (384, 64), (64, 576), (64, 576), (32, 288)],
    [(5, 5)] * 4,
    [(3, 7)],
])
def test_padded_buckets_cover_every_matrix_once_within_the_padding_budget(shapes):
    buckets = train.padded_buckets(shapes)
    assert sorted(i for b in buckets for i in b) == list(range(len(shapes)))
    padded = sum(len(b) * max(shapes[i][0] for i in b) * max(shapes[i][1] for i in b) for b in buckets)
    assert padded <= 1.5 * sum(m * n for m, n in shapes)
    for s in set(shapes):  # equal shapes always share a bucket
        assert len({k for k, b in enumerate(buckets) for i in b if shapes[i] == s}) == 1
    assert train.padded_buckets(shapes) == buckets  # deterministic
    assert len(train.padded_buckets(shapes, max_padding=100.0)) == 1
    with pytest.raises(ValueError, match="max_padding"):
        train.padded_buckets(shapes, max_padding=0.5)


@pytest.mark.parametrize("alone_min_size", [None, 300])
def test_bucketed_power_iteration_equals_each_convs_own(alone_min_size, monkeypatch):
    """Zero padding in a bucket changes nothing: σ, u and v per conv equal its unpadded power iteration,
    for the convs stored stacked (the latent groups of a scale, sn_u [n, C_out]) layer by layer too; also
    when the larger convs (here ≥ 300 weights) run their own iteration outside the buckets."""
    from nvae_jax.layers import power_iteration

    model = NVAE(dataclasses.replace(DIGITS, num_channels=4, num_groups_per_scale=3), rngs=nnx.Rngs(0))
    convs = [m for _, m in nnx.iter_graph(model) if isinstance(m, WNConv)]
    assert any(c.sn_u.ndim == 2 and c.sn_u.shape[0] == 3 for c in convs)  # stacked convs are among them
    shapes = [(c.sn_u.shape[-1], c.sn_v.shape[-1]) for c in convs]
    assert len(train.padded_buckets(shapes)) < len(set(shapes))  # some buckets really mix shapes
    if alone_min_size is not None:
        monkeypatch.setattr(train, "SPECTRAL_ALONE_MIN_SIZE", alone_min_size)
        sizes = [c.v.size for c in convs]
        assert 0 < sum(n >= alone_min_size for n in sizes) < len(sizes) - 1  # some alone, some bucketed

    @jax.jit  # one program: eagerly, every conv's iteration dispatched (and compiled) its own ops
    def expected_and_penalised(state):
        m = nnx.merge(graphdef, state)
        expected = []
        for c in [c for _, c in nnx.iter_graph(m) if isinstance(c, WNConv)]:  # [n, C_out, k·k·C_in/g] if stacked
            w = c.weight()
            rows, cols = c.sn_u.shape[-1], c.sn_v.shape[-1]
            mats = jnp.swapaxes(w.reshape(*c.sn_u.shape[:-1], -1, rows), -1, -2).reshape(-1, rows, cols)
            expected.append(jax.vmap(power_iteration, in_axes=(0, 0, 0, None))(
                mats, c.sn_u[...].reshape(-1, rows), c.sn_v[...].reshape(-1, cols), 4))
        total = train.spectral_penalty(m, 4)
        return expected, total, nnx.state(m)

    graphdef, state = nnx.split(model)
    expected, total, state = expected_and_penalised(state)
    nnx.update(model, state)
    np.testing.assert_allclose(float(total), sum(float(jnp.sum(e[0])) for e in expected), rtol=1e-5)
    for c, (_, u, v) in zip(convs, expected):
        np.testing.assert_allclose(np.asarray(c.sn_u[...]).reshape(u.shape), np.asarray(u), atol=1e-5)
        np.testing.assert_allclose(np.asarray(c.sn_v[...]).reshape(v.shape), np.asarray(v), atol=1e-5)


def test_optimizer_is_adamax_with_l2_on_the_flattened_parameters():
    """make_optimizer == Adamax (β 0.9/0.999, eps 1e-3, optax's form) on g + 3e-4·p, lr warm-up; state flat."""
    cfg = dataclasses.replace(DIGITS, learning_rate=1e-2)
    tx = train.make_optimizer(cfg, total_steps=100, warmup_steps=10)
    params = {"a": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([[1.0, -2.0], [0.25, 3.0]])}
    state = tx.init(params)
    assert len(jax.tree.leaves(state)) <= 4  # count, μ and ν as flat vectors (plus the schedule count)
    rng = np.random.default_rng(0)
    flat_p = np.concatenate([np.ravel(params["a"]), np.ravel(params["b"])]).astype(np.float64)
    mu, nu = np.zeros_like(flat_p), np.zeros_like(flat_p)
    for t in range(3):
        grads = {"a": jnp.asarray(rng.normal(size=3), jnp.float32), "b": jnp.asarray(rng.normal(size=(2, 2)),
                                                                                  jnp.float32)}
        updates, state = tx.update(grads, state, params)
        g = np.concatenate([np.ravel(grads["a"]), np.ravel(grads["b"])]) + cfg.weight_decay * flat_p
        mu = 0.9 * mu + 0.1 * g
        nu = np.maximum(0.999 * nu, np.abs(g) + 1e-3)
        lr = 1e-2 * 1e-3 + (1e-2 - 1e-2 * 1e-3) * t / 10  # linear warm-up from lr·1e-3
        expected = -lr * (mu / (1 - 0.9 ** (t + 1))) / nu
        got = np.concatenate([np.ravel(updates["a"]), np.ravel(updates["b"])])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
        params = optax.apply_updates(params, updates)
        flat_p = flat_p + got
