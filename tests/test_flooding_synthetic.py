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
    # plain training drives the loss towards 0 (noisy labels memorised)
    assert final[0] < 0.2 and final[0] < final[1] - 0.05, final
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


def test_the_loss_is_the_demos_two_logit_softmax_cross_entropy():
    model = synthetic.paper_mlp(2, 16, 2, seed=0)
    x = np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)
    logits = np.asarray(model(x))
    assert logits.shape == (8, 2)
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1], np.int32)
    other = logits[np.arange(8), 1 - y] - logits[np.arange(8), y]
    np.testing.assert_allclose(synthetic.softmax_losses(logits, y), np.log1p(np.exp(other)), rtol=1e-5, atol=1e-6)


def test_hidden_biases_are_inert_under_batch_norm_and_the_output_bias_learns():
    from flax import nnx

    model = synthetic.paper_mlp(2, 16, 2, seed=0)
    x = np.random.default_rng(1).standard_normal((32, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    grads = nnx.grad(lambda m: synthetic.softmax_losses(m(x), y).mean())(model)
    for i in range(2):  # hidden layers: BatchNorm subtracts the batch mean, so d loss / d bias = 0
        assert np.abs(np.asarray(grads["layers"][i]["bias"][...])).max() < 1e-6
    assert np.abs(np.asarray(grads["layers"][2]["bias"][...])).max() > 1e-3


def test_presets_use_the_demos_split_sizes():
    from flooding.datasets import make_synthetic

    for preset in EXPERIMENTS["synthetic"].presets.values():
        assert (preset.n_train, preset.n_val) == (50, 50)
    data = make_synthetic("sinusoid", n_train=TINY.n_train, n_val=TINY.n_val, n_test=10)
    assert data["x_train"].shape == (100, 2) and data["x_val"].shape == (100, 2)


@pytest.mark.parametrize("preset,field", [
    (configs.SYNTHETIC_QUICK, "sinusoid_levels"), (configs.SYNTHETIC_QUICK, "gaussian_levels"),
    (configs.SYNTHETIC_QUICK, "spiral_levels"), (configs.DIGITS_QUICK, "flood_levels"),
    (configs.DIGITS_QUICK, "iflood_levels"), (configs.CIFAR_QUICK, "flood_levels")])
@pytest.mark.parametrize("level", [-0.01, float("nan")])
def test_a_flood_level_below_zero_is_rejected_naming_the_field(preset, field, level):
    with pytest.raises(ValueError, match=f"config.{field}"):
        dataclasses.replace(preset, **{field: (0.0, level)})
    dataclasses.replace(preset, **{field: (0.0,)})  # b = 0 (plain training) is allowed
