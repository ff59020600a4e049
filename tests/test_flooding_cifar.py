import dataclasses

import jax
import pytest

from flooding import cifar, configs
from shared.classification import make_resnet
from shared.experiment import RunContext
from shared.report import Report


def test_full_config_resnet18_shapes():
    config = configs.CIFAR_FULL
    assert config.flood_levels == pytest.approx(tuple(i / 100 for i in range(11)))
    assert (config.learning_rate, config.momentum, config.batch_size) == (0.1, 0.9, 128)
    out = jax.eval_shape(lambda x: make_resnet(config.model, 10, 0)(x),
                         jax.ShapeDtypeStruct((2, 32, 32, 3), "float32"))
    assert out.shape == (2, 10)


@pytest.mark.slow  # compiles a ResNet-8 (duration: benchmarks/RESULTS.md, flooding and weissi)
def test_a_few_steps_on_mock_cifar(tmp_path):
    import tensorflow_datasets as tfds

    config = dataclasses.replace(configs.CIFAR_QUICK, batch_size=8, val_size=8, eval_batch_size=8, flood_levels=(0.05,))
    ctx = RunContext(out_dir=tmp_path, report=Report("t", tmp_path))
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        metrics = cifar.run(config, ctx)
    assert metrics["chosen_b"] in config.flood_levels
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert (tmp_path / "checkpoints" / "b=0.05").exists()


def test_bad_model_name():
    with pytest.raises(ValueError, match=r"config\.model"):
        make_resnet("vgg", 10, 0)
