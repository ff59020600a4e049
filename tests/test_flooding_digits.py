import dataclasses

import numpy as np
import pytest

from flooding import configs, digits

TINY = dataclasses.replace(configs.DIGITS_QUICK, hidden=(16,), num_steps=40, num_seeds=1, batch_size=32)


def test_symmetric_noise_changes_exactly_the_fraction_to_other_classes():
    labels = np.arange(1000) % 10
    noisy = digits.symmetric_noise(labels, 0.2, 10, seed=0)
    assert (noisy != labels).sum() == 200
    assert set(np.unique(noisy)) == set(range(10))


def test_zero_strength_methods_reduce_to_plain_training():
    """flooding(b=0), iFlood(b=0) and the penalty with ε=0 give the same updates as plain SGD."""
    data = [digits.split_data(TINY, 0.2, 0)]
    results = [digits.train_family(TINY, family, (0.0,), data, [0]) for family in ("flood", "iflood", "gnp")]
    for res in results[1:]:
        np.testing.assert_allclose(res["test_loss"], results[0]["test_loss"], rtol=1e-4)


def test_high_flood_level_stops_the_fit():
    data = [digits.split_data(TINY, 0.0, 0)]
    res = digits.train_family(dataclasses.replace(TINY, num_steps=150), "flood", (0.0, 1.5), data, [0])
    assert res["train_accuracy"][0, 0] > 0.85
    assert res["train_loss"][0, 1] > 1.0  # the loss is held around b = 1.5


def test_sam_trains():
    data = [digits.split_data(TINY, 0.0, 0)]
    res = digits.train_family(dataclasses.replace(TINY, num_steps=150), "sam", (0.05,), data, [0])
    assert res["test_accuracy"][0, 0] > 0.8


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="flood_levels"):
        dataclasses.replace(configs.DIGITS_QUICK, flood_levels=(-0.1,))
    with pytest.raises(ValueError, match="gnp_eps"):
        dataclasses.replace(configs.DIGITS_QUICK, gnp_eps=(-1.0,))
