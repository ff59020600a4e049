"""Full-config experiments: registered with the official hyper-parameters; a mock-data smoke run (slow)."""

import pytest

from nvae_jax import experiments


def test_full_experiments_registered_with_official_hyperparameters():
    exps = experiments.EXPERIMENTS
    assert {"digits", "mnist", "cifar10", "celeba64"} <= set(exps)
    m, c, a = exps["mnist"].presets["full"], exps["cifar10"].presets["full"], exps["celeba64"].presets["full"]
    assert (m.num_channels, m.groups, m.epochs, m.output) == (32, (10, 5), 400, "bernoulli")
    assert (c.num_channels, c.groups, c.num_nf, c.output) == (128, (30,), 1, "dmol")
    assert (a.num_channels, a.groups, a.weight_decay_norm, a.epochs) == (64, (20, 10, 5), 1e-1, 90)
    # global batches: the official per-GPU batch x its GPU count (MNIST 200 x 2, CIFAR-10 32 x 8, CelebA 16 x 8)
    assert (m.batch_size, c.batch_size, a.batch_size) == (200 * 2, 32 * 8, 16 * 8)
    for e in ("mnist", "cifar10", "celeba64"):
        assert not exps[e].reproduce and exps[e].presets["quick"].mock_data > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_mock_data_smoke_run(name, tmp_path):
    from shared.experiment import RunContext
    from shared.report import Report

    exp = experiments.EXPERIMENTS[name]
    ctx = RunContext(out_dir=tmp_path, report=Report(exp.name, tmp_path))
    metrics = exp.run(exp.presets["quick"], ctx)
    assert metrics["steps"] == 2 and metrics["skipped"] == 0
    value = next(v for k, v in metrics.items() if k.startswith("test_nll"))
    assert value == value and value > 0  # finite, positive NLL
    assert (tmp_path / "samples.png").exists()
