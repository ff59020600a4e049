import numpy as np
import pytest

from flooding.datasets import flip_labels, make_synthetic


@pytest.mark.parametrize("name,dim", [("gaussian", 10), ("sinusoid", 2), ("spiral", 2)])
def test_shapes_and_noise_rate(name, dim):
    d = make_synthetic(name, n_train=50, n_val=10, n_test=200, label_noise=0.1, seed=3)
    assert d["x_train"].shape == (100, dim) and d["y_train"].shape == (100,)
    assert d["x_val"].shape == (20, dim) and d["x_test"].shape == (400, dim)
    assert set(np.unique(d["y_test"])) <= {0, 1}
    clean = make_synthetic(name, n_train=50, n_val=10, n_test=200, label_noise=0.0, seed=3)
    assert np.all(clean["x_train"] == d["x_train"]) or name == "sinusoid"  # same draw, labels differ


def test_sinusoid_test_labels_follow_the_rule():
    d = make_synthetic("sinusoid", n_test=500, seed=0)
    x = d["x_test"]
    assert np.all(np.linalg.norm(x, axis=1) <= 2.0 + 1e-6)
    np.testing.assert_array_equal(d["y_test"], (1.5 * x[:, 0] + np.sin(1.5 * x[:, 1]) > 0).astype(np.int32))


def test_gaussian_class_means():
    d = make_synthetic("gaussian", n_test=5000, seed=0)
    x, y = d["x_test"], d["y_test"]
    np.testing.assert_allclose(x[y == 1].mean(0) - x[y == 0].mean(0), np.ones(10), atol=0.08)


def test_flip_labels_flips_exactly_the_fraction():
    y = np.zeros(100, np.int64)
    assert flip_labels(np.random.default_rng(0), y, 0.1).sum() == 10


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="name"):
        make_synthetic("moons")
    with pytest.raises(ValueError, match="label_noise"):
        make_synthetic("spiral", label_noise=-0.1)
    with pytest.raises(ValueError, match="n_test"):
        make_synthetic("spiral", n_test=0)


@pytest.mark.parametrize("name", ["gaussian", "sinusoid", "spiral"])
def test_measured_flip_rate_is_the_configured_noise(name):
    """Against the same draw with label_noise=0 (the inputs are identical), the fraction of changed
    train and validation labels is 0.2 within 4 binomial standard deviations, test labels are all
    clean, and the flips hit both classes in proportion to their sizes. Fails if labels are never (or
    always, or only in one class) flipped."""
    noise, n = 0.2, 1000
    d = make_synthetic(name, n_train=n, n_val=n // 2, n_test=200, label_noise=noise, seed=7)
    clean = make_synthetic(name, n_train=n, n_val=n // 2, n_test=200, label_noise=0.0, seed=7)
    for split in ("train", "val"):
        np.testing.assert_array_equal(d[f"x_{split}"], clean[f"x_{split}"])
        flipped = d[f"y_{split}"] != clean[f"y_{split}"]
        m = len(flipped)
        assert abs(flipped.mean() - noise) < 4 * np.sqrt(noise * (1 - noise) / m), (split, flipped.mean())
        ones = clean[f"y_{split}"] == 1
        share = ones.mean()  # a uniformly chosen flip is in class 1 with this probability
        k = flipped.sum()
        assert abs(flipped[ones].sum() / k - share) < 4 * np.sqrt(share * (1 - share) / k)
    np.testing.assert_array_equal(d["y_test"], clean["y_test"])
    if name == "sinusoid":  # the clean labels are the documented rule, so the flips are measured against it
        x = d["x_train"]
        rule = (1.5 * x[:, 0] + np.sin(1.5 * x[:, 1]) > 0).astype(np.int32)
        np.testing.assert_array_equal(clean["y_train"], rule)
