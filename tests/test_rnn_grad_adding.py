"""Tasks, baselines, a short training run (LSTM learns adding, tanh RNN does not), the experiment
contract and the full configs' shapes."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_grad import adding, configs, experiments


def test_adding_batch_and_baseline():
    xs, y = adding.adding_batch(jax.random.PRNGKey(0), 4096, 20)
    assert xs.shape == (4096, 20, 2) and y.shape == (4096,)
    np.testing.assert_array_equal(xs[..., 1].sum(1), 2.0)
    assert bool(jnp.all(xs[:, :10, 1].sum(1) == 1))  # one marker per half
    np.testing.assert_allclose(jnp.var(y), adding.baseline("adding", 20), rtol=0.08)  # predicting the mean


def test_copy_batch_and_baseline():
    xs, lab = adding.copy_batch(jax.random.PRNGKey(0), 3, 5)
    assert xs.shape == (3, 25, 10) and lab.shape == (3, 25)
    sym = jnp.argmax(xs[:, :10], -1)
    np.testing.assert_array_equal(lab[:, -10:], sym)
    assert bool(jnp.all(jnp.argmax(xs[:, 14], -1) == 9))  # delimiter after T − 1 blanks
    # memoryless predictor: uniform over 8 symbols on the last 10 steps, blank elsewhere
    np.testing.assert_allclose(adding.baseline("copy", 5), 10 * math.log(8) / 25)


def test_lstm_learns_adding_tanh_rnn_does_not():
    cfg = dataclasses.replace(configs.ADDING_QUICK, lengths=(30,), hidden=32, steps=250, learning_rate=1e-2)
    _, _, f_lstm = adding.train("lstm", "adding", 30, cfg, (math.inf, 1.0))
    _, gn, f_rnn = adding.train("simple", "adding", 30, cfg, (math.inf, 1.0))
    assert float(f_lstm.max()) < 0.05
    assert float(f_rnn.min()) > 0.1
    assert np.all(np.isfinite(gn))


def test_bad_input():
    with pytest.raises(ValueError, match="task"):
        adding.init_model("lstm", jax.random.PRNGKey(0), "sort", 8)
    with pytest.raises(ValueError, match="length"):
        adding.adding_batch(jax.random.PRNGKey(0), 2, 0)
    with pytest.raises(ValueError, match="cell"):
        adding.init_model("transformer", jax.random.PRNGKey(0), "adding", 8)


def test_experiments_registered_and_full_shapes():
    assert set(experiments.EXPERIMENTS) == {"jacobians", "adding"}
    for exp in experiments.EXPERIMENTS.values():
        assert {"quick", "full"} <= set(exp.presets)
        assert exp.presets["quick"].seed == 0
    q = configs.ADDING_QUICK
    assert max(q.lengths) <= 100 and q.hidden == 64 and q.steps <= 1000
    full = configs.ADDING_FULL
    assert full.lengths == (50, 100, 200)
    for cell in full.cells:
        p = jax.eval_shape(lambda: adding.init_model(cell, jax.random.PRNGKey(0), "copy", full.hidden))
        xs = jax.ShapeDtypeStruct((full.batch, 220, 10), jnp.float32)
        lab = jax.ShapeDtypeStruct((full.batch, 220), jnp.int32)
        out = jax.eval_shape(lambda p_, x_, y_: adding.per_example_loss(cell, "copy", p_, x_, y_), p, xs, lab)
        assert out.shape == (full.batch,)
