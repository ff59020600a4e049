"""shared.classification's evaluation helpers: class errors by hand, and `kexue eval` of a checkpointed CIFAR run."""

import json

import numpy as np
import pytest

from shared.classification import class_errors


def test_class_errors_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 0, 1, 0, 0, 2])  # class 0: 1/4 wrong, class 1: 2/2, class 2: 0/1, class 3 absent
    out = class_errors(predicted, labels, 4)
    assert out["accuracy"] == pytest.approx(4 / 7)
    assert out["per_class_error"] == [0.25, 1.0, 0.0, None]
    assert out["balanced_error"] == pytest.approx((0.25 + 1.0 + 0.0) / 3)  # over the classes present
    assert out["balanced_error"] != pytest.approx(1 - out["accuracy"])  # unlike the plain error on skewed classes


@pytest.mark.parametrize("experiment, model, args", [
    ("flooding.cifar10", "b=0.05", ["--config.flood_levels", "0.05"]),
    pytest.param("weissi.cifar10", "weissi_0.01", ["--config.methods", "weissi"], marks=pytest.mark.slow),
])
def test_kexue_eval_of_a_cifar_run_gives_its_numbers(tmp_path, experiment, model, args):
    """A 1-step ResNet-8 run on small CIFAR-10 release files: eval restores it and gets the run's val and test
    accuracy, and reports per-class and balanced error (slow: each compiles a ResNet step)."""
    from tests.test_shared_cifar_files import write_release
    from tests.test_shared_use import _snapshot, kexue

    write_release(tmp_path / "data", "cifar10", per_file=8)
    out = tmp_path / "run"
    common = ["--config.data_dir", str(tmp_path / "data"), "--config.steps_override", "1", "--config.batch_size", "8",
              "--config.val_size", "8", "--config.eval_batch_size", "16"]
    trained = kexue("run", experiment, "--out", str(out), *common, *args)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = kexue("eval", experiment, "--run", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((out / "eval.json").read_text())[model]
    metrics = json.loads((out / "metrics.json").read_text())
    run_numbers = metrics[model] if experiment.startswith("flooding") else None
    if run_numbers is not None:
        assert evaluated["val"]["accuracy"] == pytest.approx(run_numbers["val_accuracy"])
        assert evaluated["test"]["accuracy"] == pytest.approx(run_numbers["test_accuracy"])
    else:
        assert evaluated["test"]["accuracy"] == pytest.approx(metrics["weissi"]["clean_accuracy"])
    errors = [e for e in evaluated["test"]["per_class_error"] if e is not None]
    assert evaluated["test"]["balanced_error"] == pytest.approx(np.mean(errors)) and evaluated["step"] == 1
    assert "balanced error" in (out / "eval.md").read_text()
    before = _snapshot(out)
    wrong = kexue("eval", experiment, "--run", str(out), "--model", "nope")
    assert wrong.returncode == 2 and "--model 'nope'" in wrong.stderr and _snapshot(out) == before
