"""shared.checks: each check names the argument, checks values only when they are concrete."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import checks


def test_check_labels_names_the_argument_and_checks_range_dtype_and_rank():
    checks.check_labels(np.array([0, 2, 1]), 3)  # fine
    checks.check_labels(np.zeros((0,), np.int32), 3)  # empty: nothing to check
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\).*got values in \[0, 3\]"):
        checks.check_labels(np.array([0, 3]), 3, name="targets")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*\[-1, 1\]"):
        checks.check_labels(jnp.array([-1, 1]), 3)
    with pytest.raises(ValueError, match="y must be integer class indices"):
        checks.check_labels(np.array([0.0, 1.0]), 3, name="y")
    with pytest.raises(ValueError, match="labels must be a 1-D array"):
        checks.check_labels(np.zeros((2, 2), np.int32), 3, ndim=1)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        checks.check_labels(np.array([0]), 0)


def test_value_checks_are_skipped_under_jit_but_dtype_is_not():
    @jax.jit
    def f(labels, tau):
        checks.check_labels(labels, 3)
        checks.check_nonnegative(tau, "tau")
        return labels.sum() + tau

    assert float(f(jnp.array([7, 8]), -1.0)) == 14.0  # traced values: unknown, not checked
    with pytest.raises(ValueError, match="integer class indices"):
        f(jnp.array([0.5]), 1.0)


def test_check_nonnegative_and_is_concrete():
    checks.check_nonnegative(0.0, "gamma")
    checks.check_nonnegative(np.array([0.0, 2.0]), "class_weights")
    with pytest.raises(ValueError, match=r"class_weights must be >= 0, got \[ 1. -2.\]"):
        checks.check_nonnegative(np.array([1.0, -2.0]), "class_weights")
    assert checks.is_concrete(1.0, np.ones(2), jnp.ones(2))
    assert jax.jit(lambda x: jnp.float32(checks.is_concrete(1.0, x)))(1.0) == 0.0
