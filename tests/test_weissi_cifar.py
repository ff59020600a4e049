import dataclasses

import jax
import pytest

from shared.classification import make_resnet
from shared.experiment import RunContext
from shared.report import Report
from weissi import cifar, configs


def test_full_config_grid_and_resnet18_shapes():
    config = configs.CIFAR_FULL
    assert config.methods == configs.METHODS and config.grid("none") == (0.0,)
    assert all(len(config.grid(m)) >= 2 for m in config.methods if m != "none")
    out = jax.eval_shape(lambda x: make_resnet(config.model, 10, 0)(x),
                         jax.ShapeDtypeStruct((2, 32, 32, 3), "float32"))
    assert out.shape == (2, 10)


@pytest.mark.slow  # compiles a ResNet-8 (duration: benchmarks/RESULTS.md, flooding and weissi)
def test_a_few_steps_on_mock_cifar(tmp_path):
    import tensorflow_datasets as tfds

    config = dataclasses.replace(configs.CIFAR_QUICK, methods=("weissi",), batch_size=8, val_size=8, eval_batch_size=8)
    ctx = RunContext(out_dir=tmp_path, report=Report("t", tmp_path))
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        metrics = cifar.run(config, ctx)
    assert set(metrics) == {"weissi"} and 0.0 <= metrics["weissi"]["clean_accuracy"] <= 1.0


def test_negative_grid_is_named():
    with pytest.raises(ValueError, match="l2_grid"):
        dataclasses.replace(configs.CIFAR_FULL, l2_grid=(-1e-4,))
