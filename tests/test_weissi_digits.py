import dataclasses

import numpy as np
import pytest

from weissi import configs, digits
from shared.experiment import RunContext
from shared.report import Report

TINY = dataclasses.replace(configs.DIGITS_QUICK, hidden=(16,), num_steps=100, num_seeds=1, eps=(0.1,), pgd_steps=3)


def test_run_writes_the_issue_metrics_format(tmp_path):
    config = dataclasses.replace(TINY, methods=("weissi",))
    metrics = digits.run(config, RunContext(out_dir=tmp_path, report=Report("t", tmp_path)))
    assert set(metrics) == {"weissi"}
    assert (tmp_path / "robust_accuracy.png").exists()
    for m in metrics.values():
        assert set(m) == {"clean_accuracy", "fgsm_accuracy", "pgd_accuracy"}
        assert m["clean_accuracy"] > 0.4 and m["pgd_accuracy"] <= m["clean_accuracy"]


def test_l2_shrinks_the_shifted_layer_weissi_does_not_care():
    """From the shifted init (W₁ × e^s), a strong L2 pulls ‖W₁‖ down; training without it does not."""
    config = dataclasses.replace(TINY, l2=0.05, num_steps=150)
    none = digits.train_method(config, "none", [0])["layer_norms"]  # [S, 2 inits, layers]
    l2 = digits.train_method(config, "l2", [0])["layer_norms"]
    assert l2[0, 1, 0] < 0.85 * none[0, 1, 0]  # Adam moves each weight by ~lr per step: bounded shrink


@pytest.mark.parametrize("method", ["weight_decay", "adamw", "decoupled_weissi"])
def test_every_method_trains(method):
    res = digits.train_method(TINY, method, [0])
    assert res["clean_accuracy"].shape == (1, 2) and res["fgsm_accuracy"].shape == (1, 2, 1)
    assert np.all(res["clean_accuracy"] > 0.5)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="weissi_lambda1"):
        dataclasses.replace(configs.DIGITS_QUICK, weissi_lambda1=-1.0)
    with pytest.raises(ValueError, match="main_eps"):
        dataclasses.replace(configs.DIGITS_QUICK, main_eps=0.3)
    with pytest.raises(ValueError, match="methods"):
        dataclasses.replace(configs.DIGITS_QUICK, methods=("dropout",))


@pytest.mark.slow  # ~40 s: SmallCNN compile + attacks
def test_small_cnn_variant_trains_from_both_inits():
    config = dataclasses.replace(TINY, model="cnn", num_steps=60)
    res = digits.train_method(config, "weissi", [0])
    assert res["layer_norms"].shape == (1, 2, 3)  # conv1, conv2, head kernels
    assert res["layer_norms"][0, 1, 0] > 2 * res["layer_norms"][0, 0, 0]  # the shift survives short training
    assert np.all(res["clean_accuracy"] > 0.3)
