"""Bad input: every WEISSI / L2 / weight-decay weight below 0 (or NaN) is rejected when the config is built,
and the message names the field (issue 28)."""

import dataclasses

import pytest

from weissi import configs

DIGITS_FIELDS = ("l2", "weight_decay", "adamw", "weissi_lambda1", "weissi_lambda2", "decoupled_weissi")
CIFAR_GRIDS = ("l2_grid", "weight_decay_grid", "adamw_grid", "weissi_grid", "decoupled_weissi_grid")


@pytest.mark.parametrize("field", DIGITS_FIELDS)
@pytest.mark.parametrize("value", [-1e-3, float("nan")])
def test_digits_rejects_a_negative_weight_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"config.{field}"):
        dataclasses.replace(configs.DIGITS_QUICK, **{field: value})
    dataclasses.replace(configs.DIGITS_QUICK, **{field: 0.0})  # zero switches the penalty off: allowed


@pytest.mark.parametrize("field", CIFAR_GRIDS)
def test_cifar_rejects_a_negative_grid_value_naming_the_field(field):
    with pytest.raises(ValueError, match=f"config.{field}"):
        dataclasses.replace(configs.CIFAR_FULL, **{field: (1e-3, -1e-3)})


def test_cifar_rejects_a_negative_lambda2():
    with pytest.raises(ValueError, match=r"config\.weissi_lambda2"):
        dataclasses.replace(configs.CIFAR_FULL, weissi_lambda2=-1e-5)
