"""The harness's train step: device-count invariance, FSDP, the non-finite guard, single compilation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from shared import data, train
from shared.classification import classification_sums
from shared.configs import DigitsMLPConfig
from shared.digits_mlp import build, cross_entropy
from shared.models import MLP


def _batch(n=64, seed=0):
    images, labels = data.digits("train")
    idx = np.random.default_rng(seed).choice(len(labels), n, replace=False)
    return {"image": images[idx], "label": labels[idx]}


def _two_steps(mesh, fsdp=1):
    trainer = build(DigitsMLPConfig(fsdp=fsdp, hidden=(64, 64)), mesh)
    state, train_step = trainer.state, trainer.train_step
    losses = []
    for seed in (0, 1):
        state, metrics = train_step(state, train.shard_batch(_batch(seed=seed), mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


def test_eight_devices_match_one_device(devices):
    mesh8 = train.make_mesh(devices=devices)
    mesh1 = train.make_mesh(devices=devices[:1])
    assert mesh8.size == 8 and mesh1.size == 1
    losses8, params8 = _two_steps(mesh8)
    losses1, params1 = _two_steps(mesh1)
    np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
    chex.assert_trees_all_close(params8, params1, atol=1e-5, rtol=1e-5)


def test_fsdp_mesh_matches_data_parallel(devices):
    losses_dp, params_dp = _two_steps(train.make_mesh(devices=devices))
    losses_fsdp, params_fsdp = _two_steps(train.make_mesh(fsdp=2, devices=devices), fsdp=2)
    np.testing.assert_allclose(losses_dp, losses_fsdp, rtol=1e-5)
    chex.assert_trees_all_close(params_dp, params_fsdp, atol=1e-5, rtol=1e-5)


def test_fsdp_shards_large_leaves(devices):
    mesh = train.make_mesh(fsdp=4, devices=devices)
    state = {"big": jnp.zeros((128, 256)), "small": jnp.zeros((3,))}
    shardings = train.state_sharding(state, mesh, fsdp=True)
    assert shardings["big"].spec == jax.sharding.PartitionSpec(None, "fsdp")
    assert shardings["small"].spec == jax.sharding.PartitionSpec()


def test_nan_batch_skips_update_and_counts(devices):
    mesh = train.make_mesh(devices=devices)
    trainer = build(DigitsMLPConfig(hidden=(32,)), mesh)
    state, train_step = trainer.state, trainer.train_step
    before = jax.device_get(state.params)
    bad = _batch()
    bad["image"][3, 2, 2, 0] = np.nan
    state, metrics = train_step(state, train.shard_batch(bad, mesh))
    assert int(state.skipped) == 1 and int(metrics["skipped"]) == 1
    assert int(state.step) == 1
    chex.assert_trees_all_equal(jax.device_get(state.params), before)
    state, _ = train_step(state, train.shard_batch(_batch(), mesh))  # a good batch updates again
    assert int(state.skipped) == 1
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(state.params), before)
    assert all(jax.tree.leaves(changed))


def test_step_compiles_once(devices):
    mesh = train.make_mesh(devices=devices)
    model = MLP((64, 16, 10), rngs=nnx.Rngs(0))
    tx = optax.sgd(0.1)
    graphdef, state = train.create_train_state(model, tx, jax.random.PRNGKey(0))
    state = jax.device_put(state, train.state_sharding(state, mesh))
    step = chex.assert_max_traces(train.make_step(train.nnx_loss(graphdef, cross_entropy), tx), n=1)
    jitted = jax.jit(step, donate_argnums=0)
    for seed in range(3):
        state, _ = jitted(state, train.shard_batch(_batch(seed=seed), mesh))
    assert int(state.step) == 3


def test_step_metrics_report_norms(devices):
    mesh = train.make_mesh(devices=devices)
    trainer = build(DigitsMLPConfig(hidden=(32,)), mesh)
    state, train_step = trainer.state, trainer.train_step
    params = jax.device_get(state.params)
    _, metrics = train_step(state, train.shard_batch(_batch(), mesh))
    assert float(metrics["param_norm"]) == pytest.approx(float(optax.global_norm(params)), rel=1e-5)
    assert float(metrics["grad_norm"]) > 0 and float(metrics["update_norm"]) > 0


def test_evaluate_pads_and_weights(devices):
    mesh = train.make_mesh(devices=devices)
    trainer = build(DigitsMLPConfig(hidden=(32,)), mesh)
    state, eval_step = trainer.state, trainer.eval_step
    images, labels = data.digits("test")
    result = train.evaluate(eval_step, state, data.batches_of({"image": images, "label": labels}, 64), mesh, 64)
    graphdef = nnx.graphdef(MLP((64, 32, 10), rngs=nnx.Rngs(0)))
    model = nnx.merge(graphdef, state.params, state.model_state)
    logits = model(jnp.asarray(images))
    expected = float((logits.argmax(-1) == labels).mean())
    assert result["accuracy"] == pytest.approx(expected, abs=1e-6)
    sums = classification_sums(model, data.pad_batch({"image": images[:5], "label": labels[:5]}, 8))
    assert float(sums["accuracy"]) <= 5


def test_map_fixed_batches_compiles_once_and_drops_padding():
    traces = []

    @jax.jit
    def fn(x, y):
        traces.append(x.shape)
        return {"sum": x.sum(-1) + y, "first": x[:, 0]}

    x = np.arange(23 * 3, dtype=np.float32).reshape(23, 3)
    y = np.arange(23, dtype=np.float32)
    out = data.map_fixed_batches(fn, (x, y), batch_size=8)  # chunks of 8, 8, 7 (+1 padded row)
    assert traces == [(8, 3)]
    np.testing.assert_allclose(out["sum"], x.sum(-1) + y)
    np.testing.assert_allclose(out["first"], x[:, 0])
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        data.map_fixed_batches(fn, (x, y[:5]), batch_size=8)


def test_make_step_vmaps_over_seeds():
    tx = optax.sgd(0.1)

    def init(seed):
        return train.create_train_state(MLP((64, 8, 10), rngs=nnx.Rngs(0)), tx, jax.random.PRNGKey(seed))[1]

    graphdef = nnx.graphdef(MLP((64, 8, 10), rngs=nnx.Rngs(0)))
    states = jax.tree.map(lambda *x: jnp.stack(x), *[init(s) for s in range(3)])
    step = jax.jit(jax.vmap(train.make_step(train.nnx_loss(graphdef, cross_entropy), tx), in_axes=(0, None)))
    states, metrics = step(states, _batch())
    chex.assert_shape(metrics["loss"], (3,))
    np.testing.assert_array_equal(np.asarray(states.step), [1, 1, 1])


def test_mesh_rejects_bad_fsdp(devices):
    with pytest.raises(ValueError, match="fsdp=3"):
        train.make_mesh(fsdp=3, devices=devices)


def test_batchnorm_statistics_update_through_the_step(devices):
    mesh = train.make_mesh(devices=devices)
    model = MLP((64, 32, 10), rngs=nnx.Rngs(0), batch_norm=True)
    tx = optax.sgd(0.1)
    graphdef, state = train.create_train_state(model, tx, jax.random.PRNGKey(0))
    step = train.build_train_step(train.nnx_loss(graphdef, cross_entropy), tx, mesh, state)
    state = jax.device_put(state, train.state_sharding(state, mesh))
    before = jax.device_get(state.model_state)
    state, metrics = step(state, train.shard_batch(_batch(), mesh))
    after = jax.device_get(state.model_state)
    assert np.isfinite(float(metrics["loss"]))
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), after, before)
    assert any(jax.tree.leaves(moved)), "BatchNorm running statistics did not update"


@pytest.mark.parametrize("concatenate", [True, False])
def test_global_norm_matches_optax_in_both_modes(concatenate):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    tree = {"w": jax.random.normal(keys[0], (7, 5)), "b": jax.random.normal(keys[1], (5,)),
            "h": [jax.random.normal(keys[2], (2, 3, 4)).astype(jnp.bfloat16)]}
    expected = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)))
    got = jax.jit(lambda t: train.global_norm(t, concatenate))(tree)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    np.testing.assert_allclose(float(got), float(optax.global_norm(tree)), rtol=1e-2)  # optax: bf16 sums


def test_concatenated_norms_reduce_each_tree_once():
    """On CPU the step's three norms are one reduction each, not one per leaf (XLA:CPU launches each)."""
    tree = {f"w{i}": jnp.ones((i + 2, 3)) for i in range(40)}

    def count_reduces(concatenate):
        hlo = jax.jit(lambda t: train.global_norm(t, concatenate)).lower(tree).compile().as_text()
        return hlo.count(" reduce(")

    assert count_reduces(True) == 1 and count_reduces(False) >= 40


def test_eval_shape_model_gives_the_concrete_models_shapes():
    def build(rngs):
        return MLP((64, 32, 10), rngs=rngs)

    abstract = jax.tree.map(lambda x: (x.shape, x.dtype), nnx.state(train.eval_shape_model(build, seed=3)))
    concrete = jax.tree.map(lambda x: (x.shape, x.dtype), nnx.state(build(nnx.Rngs(3))))
    assert abstract == concrete
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(train.eval_shape_model(build))))


def test_create_train_state_initialises_the_optimiser_in_one_program():
    model = MLP((4, 8, 3), rngs=nnx.Rngs(0))
    tx = optax.adam(1e-3)
    _, state = train.create_train_state(model, tx, jax.random.PRNGKey(3))
    chex.assert_trees_all_equal(state.opt_state, tx.init(state.params))
    assert int(state.step) == int(state.skipped) == 0 and state.rng.dtype == jnp.uint32


def _least_squares(params, model_state, batch, rng):
    """L = ½ mean_i (x_i·w + b − y_i)², a `LossFn` whose gradient is known in closed form."""
    r = batch["x"] @ params["w"] + params["b"] - batch["y"]
    return 0.5 * jnp.mean(r * r), (model_state, {})


def _plain_state(params, tx, seed=0):
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), model_state={},
                            rng=jax.random.PRNGKey(seed), skipped=jnp.zeros((), jnp.int32))


def test_step_norms_and_update_match_the_hand_computed_least_squares_step():
    """Linear least squares with SGD + momentum μ = 0.9, η = 0.1, two steps: ∇w = Xᵀr/B, ∇b = mean r;
    updates −η g₁ then −η (g₂ + μ g₁). loss, grad_norm, param_norm (before the step), update_norm and
    the new params must equal these float64 hand computations. Fails if a reported norm is computed from
    the wrong tree (e.g. update_norm from the gradients) or the update is applied wrongly."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), rng.normal(size=16)
    w, b = np.array([0.5, -1.0, 2.0]), 0.3
    lr, mu = 0.1, 0.9
    tx = optax.sgd(lr, momentum=mu)
    state = _plain_state({"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}, tx)
    step = jax.jit(train.make_step(_least_squares, tx))
    batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.float32)}
    trace = np.zeros(4)
    for _ in range(2):
        r = x @ w + b - y
        g = np.append(x.T @ r / len(y), r.mean())
        trace = g + mu * trace
        update = -lr * trace
        state, m = step(state, batch)
        np.testing.assert_allclose(float(m["loss"]), 0.5 * np.mean(r * r), rtol=1e-6)
        np.testing.assert_allclose(float(m["grad_norm"]), np.linalg.norm(g), rtol=1e-5)
        np.testing.assert_allclose(float(m["param_norm"]), np.linalg.norm(np.append(w, b)), rtol=1e-6)
        np.testing.assert_allclose(float(m["update_norm"]), np.linalg.norm(update), rtol=1e-5)
        w, b = w + update[:3], b + update[3]
        np.testing.assert_allclose(state.params["w"], w, rtol=1e-5)
        np.testing.assert_allclose(state.params["b"], b, rtol=1e-5)
    assert int(state.step) == 2 and int(state.skipped) == 0


def test_step_key_is_the_base_key_folded_with_the_step():
    """The loss sees fold_in(state.rng, state.step): a new key every step, reproducible from the base key.
    Fails if the step reuses the base key (dropout and noise would repeat every step)."""
    def loss_fn(params, model_state, batch, rng):
        return jnp.sum(params["w"] ** 2), (model_state, {"key": rng})

    tx = optax.sgd(0.1)
    state = _plain_state({"w": jnp.ones(2)}, tx, seed=7)
    step = jax.jit(train.make_step(loss_fn, tx))
    keys = []
    for t in range(3):
        state, m = step(state, None)
        np.testing.assert_array_equal(m["key"], jax.random.fold_in(jax.random.PRNGKey(7), t))
        keys.append(tuple(np.asarray(m["key"])))
    assert len(set(keys)) == 3


def test_step_skips_a_non_finite_gradient_even_when_the_loss_is_finite():
    """L = √w₀ at w₀ = 0 is finite (0) with an infinite gradient: params and optimiser state must keep
    their values and `skipped` count it. Fails if the guard looks at the loss only."""
    def loss_fn(params, model_state, batch, rng):
        return jnp.sqrt(params["w"][0]) + jnp.sum(params["w"] ** 2), (model_state, {})

    tx = optax.adam(0.1)
    state = _plain_state({"w": jnp.array([0.0, 1.0])}, tx)
    new, m = jax.jit(train.make_step(loss_fn, tx))(state, None)
    assert np.isfinite(float(m["loss"])) and not np.isfinite(float(m["grad_norm"]))
    assert int(new.skipped) == 1 and int(new.step) == 1
    chex.assert_trees_all_equal(new.params, state.params)
    chex.assert_trees_all_equal(new.opt_state, state.opt_state)


def _counting_sqrt_loss(params, model_state, batch, rng):
    """√w₀ + ‖w‖²: at w₀ = 0 a finite loss with an infinite gradient. The model state counts calls."""
    return jnp.sqrt(params["w"][0]) + jnp.sum(params["w"] ** 2), ({"calls": model_state["calls"] + 1}, {})


def test_skipped_step_keeps_the_model_state_and_reports_a_zero_update():
    """A skipped step keeps the *old* model state (not the one the loss returned) and reports
    update_norm 0; the next finite step takes the new model state and a non-zero update."""
    tx = optax.adam(0.1)
    state = _plain_state({"w": jnp.array([0.0, 1.0])}, tx).replace(model_state={"calls": jnp.zeros((), jnp.int32)})
    step = jax.jit(train.make_step(_counting_sqrt_loss, tx))
    new, m = step(state, None)
    assert int(new.skipped) == 1 and int(new.model_state["calls"]) == 0 and float(m["update_norm"]) == 0.0
    good = new.replace(params={"w": jnp.array([1.0, 1.0])})
    after, m = step(good, None)
    assert int(after.skipped) == 1 and int(after.model_state["calls"]) == 1 and float(m["update_norm"]) > 0


def test_vmapped_step_guards_each_member_on_its_own():
    """vmap over two states, one at w₀ = 0 (infinite gradient) and one at w₀ = 1: only the first is
    skipped; the second moves exactly as when it is stepped alone."""
    tx = optax.adam(0.1)
    states = [_plain_state({"w": jnp.array([w0, 1.0])}, tx).replace(model_state={"calls": jnp.zeros((), jnp.int32)})
              for w0 in (0.0, 1.0)]
    step = train.make_step(_counting_sqrt_loss, tx)
    batched, m = jax.jit(jax.vmap(step, in_axes=(0, None)))(jax.tree.map(lambda *x: jnp.stack(x), *states), None)
    np.testing.assert_array_equal(batched.skipped, [1, 0])
    np.testing.assert_array_equal(batched.model_state["calls"], [0, 1])
    np.testing.assert_array_equal(batched.params["w"][0], states[0].params["w"])
    alone, m_alone = jax.jit(step)(states[1], None)
    np.testing.assert_allclose(batched.params["w"][1], alone.params["w"], rtol=1e-6)
    np.testing.assert_allclose(m["update_norm"], [0.0, float(m_alone["update_norm"])], rtol=1e-6)
