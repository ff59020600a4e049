import dataclasses

import numpy as np
import pytest

from flooding import configs, synthetic
from flooding.experiments import EXPERIMENTS
from shared.experiment import RunContext
from shared.report import Report

TINY = dataclasses.replace(configs.SYNTHETIC_QUICK, datasets=("sinusoid",), width=32, epochs=100, eval_every=25,
                           n_test=100, num_seeds=1, sinusoid_levels=(0.0, 0.3))


def test_flooding_keeps_the_training_loss_near_the_level():
    curves = synthetic.sweep(TINY, "sinusoid", [0.0, 0.3])
    assert curves["test_loss"].shape == (1, 2, 4)
    final = curves["train_loss"][0, :, -1]
    assert final[0] < 0.2 and final[0] < final[1] - 0.05, final  # plain training drives the loss towards 0 (noisy labels memorised)
    assert 0.2 < final[1] < 0.45, final  # flooding hovers around b = 0.3


def test_run_writes_the_issue_metrics_format(tmp_path):
    ctx = RunContext(out_dir=tmp_path, report=Report("t", tmp_path))
    metrics = synthetic.run(TINY, ctx)
    assert set(metrics) == {"sinusoid"}
    assert set(metrics["sinusoid"]) == {"b=0", "b=0.3", "chosen_b"}
    assert metrics["sinusoid"]["chosen_b"] in (0.0, 0.3)
    assert set(metrics["sinusoid"]["b=0"]) == {"test_accuracy", "test_loss"}
    assert (tmp_path / "curves_sinusoid.png").exists()


def test_choose_level_prefers_accuracy_then_loss():
    acc = np.array([0.8, 0.9, 0.9])[None, :, None]
    loss = np.array([0.1, 0.5, 0.4])[None, :, None]
    assert synthetic.choose_level(np.array([0.0, 0.1, 0.2]), acc, loss) == pytest.approx(0.2)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="sinusoid_levels"):
        dataclasses.replace(configs.SYNTHETIC_QUICK, sinusoid_levels=(0.0, -0.1))
    with pytest.raises(ValueError, match="eval_every"):
        dataclasses.replace(configs.SYNTHETIC_QUICK, eval_every=7)


def test_registry_and_full_preset_is_the_paper_scale():
    full = EXPERIMENTS["synthetic"].presets["full"]
    assert (full.width, full.depth, full.epochs, full.learning_rate, full.momentum) == (500, 4, 200, 0.01, 0.9)
    assert {0.0, 0.26, 0.27, 0.28} <= set(full.sinusoid_levels)
    assert len(full.gaussian_levels) == 41 and full.gaussian_levels[-1] == pytest.approx(0.4)
