"""The long-tail experiments end to end on small configs: synthetic study, long-tailed digits, CIFAR-LT on
mock data, and the registry."""

import dataclasses
import json
import math

import chex
import jax
import numpy as np
import pytest

from longtail import configs, synthetic
from longtail.experiments import EXPERIMENTS
from shared.experiment import RunContext
from shared.report import Report


def _ctx(tmp_path):
    return RunContext(out_dir=tmp_path, report=Report("test", tmp_path))


def test_registry():
    assert set(EXPERIMENTS) == {"synthetic", "digits_lt", "cifar_lt"}
    assert not EXPERIMENTS["cifar_lt"].reproduce
    assert EXPERIMENTS["synthetic"].presets["full"].trials == 100


def test_bayes_rate_closed_form():
    assert pytest.approx(0.0786, abs=1e-4) == synthetic.BAYES_BALANCED_ERROR
    assert pytest.approx(0.5 * math.erfc(1.0)) == synthetic.BAYES_BALANCED_ERROR


def test_synthetic_study_small(tmp_path):
    config = dataclasses.replace(configs.SYNTHETIC_QUICK, trials=6, n_train=4000, n_test=4000, trial_batch=3)
    ctx = _ctx(tmp_path)
    out = synthetic.run(config, ctx)
    ctx.report.write(out, config)
    be = json.loads((tmp_path / "metrics.json").read_text())["balanced_error"]
    assert set(be) == set(synthetic.METHODS) | {"bayes"}
    assert all(0 <= v <= 1 for v in be.values())
    assert abs(be["logit_adjusted_loss"] - be["bayes"]) < 0.01  # within 1 point of Bayes
    assert abs(be["posthoc"] - be["bayes"]) < 0.01
    assert be["erm"] > be["bayes"] + 0.06  # ERM far above
    assert out["max_grad_norm"] < 1e-3  # every fit converged
    assert (tmp_path / "boundaries.png").stat().st_size > 10_000
    # the vectorised program gives each trial what a one-trial call gives (trial t = fold_in(seed, t))
    outputs = jax.device_get(synthetic.make_study(config)(synthetic.trial_keys(config)))
    chex.assert_shape(outputs["balanced_error"], (6, len(synthetic.METHODS)))
    single = jax.jit(lambda k: synthetic.run_trial(k, config))(synthetic.trial_keys(config)[4])
    np.testing.assert_allclose(outputs["theta"][4], single["theta"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(outputs["theta"][0], outputs["theta"][1])


def test_digits_lt_small(tmp_path):
    from longtail import digits_lt

    config = dataclasses.replace(configs.DIGITS_QUICK, rhos=(100.0,), seeds=2, steps=100)
    out = digits_lt.run(config, _ctx(tmp_path))
    be = out["balanced_error"]["rho100"]
    assert set(be) == set(configs.DIGITS_METHODS)
    # logit adjustment (loss or post-hoc) beats ERM on the balanced error at ρ = 100
    assert be["logit_adjusted_loss"] < be["erm"] - 0.02
    assert be["posthoc"] < be["erm"] - 0.02
    g = out["groups"]["rho100"]["erm"]
    assert g["tail"] > g["head"]  # ERM errs on the tail
    assert out["skipped_steps"]["rho100"] == 0
    assert (tmp_path / "per_class_error.png").exists()


def test_cifar_lt_full_config_shapes():
    """The official ResNet-32 on CIFAR-10-LT and its full step, checked abstractly (no FLOPs)."""

    from longtail import cifar_lt

    config = configs.CIFAR10_FULL
    counts = np.floor(5000 * 100.0 ** (-np.arange(10) / 9)).astype(int)
    assert counts.sum() == 12406  # CIFAR-10-LT with ρ = 100, as in the literature
    per_epoch, total = cifar_lt.step_counts(config, int(counts.sum()))
    assert (per_epoch, total) == (96, 1241 * 96)  # the schedule's values: tests/test_longtail_cifar_lt.py

    trainer = cifar_lt.build(config, "logit_adjusted_loss", counts, per_epoch)
    batch = {"image": jax.ShapeDtypeStruct((128, 32, 32, 3), np.uint8), "label": jax.ShapeDtypeStruct((128,), np.int32)}
    new_state, metrics = jax.eval_shape(trainer.train_step, trainer.state, batch)
    chex.assert_trees_all_equal_shapes_and_dtypes(
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), trainer.state), new_state)
    assert metrics["loss"].shape == ()


def test_cifar_lt_runs_on_mock_data(tmp_path):
    """A few steps of the whole pipeline on `tfds.testing.mock_data` (random images, USE_CODE policy)."""
    from longtail import cifar_lt

    out = cifar_lt.run(configs.CIFAR_QUICK, _ctx(tmp_path))
    assert out["steps"] == 2 and out["num_train"] == sum(out["train_counts"])
    assert set(out["balanced_error"]) == {"erm", "posthoc", "posthoc_tuned"}
    assert all(0 <= v <= 1 for v in out["balanced_error"].values())
    assert (tmp_path / "checkpoints" / "erm").exists()
