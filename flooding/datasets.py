"""The flooding paper's synthetic binary data sets: two Gaussians (10-D), a 2-D sinusoid, a spiral.

Each generator draws `n_per_class` points per class with numpy (host side, deterministic in `seed`)
and flips a fraction `label_noise` of the labels (exactly ⌊n·noise⌋ of them, chosen at random), as
the official code does for training and validation sets; test sets are returned with clean labels.
Reference: Ishida et al., "Do We Need Zero Training Loss After Achieving Zero Training Error?"
(ICML 2020), Sec. 4.1; takashiishida/flooding (the defaults below are that repository's).
"""

from __future__ import annotations

import numpy as np

DATASETS = ("gaussian", "sinusoid", "spiral")
DIMENSION = {"gaussian": 10, "sinusoid": 2, "spiral": 2}


def _gaussian(rng: np.random.Generator, n: int, mean_shift: float = 1.0, dim: int = 10):
    """N(0, I) (label 0) vs N(m·1, I) (label 1) in `dim` dimensions, n per class."""
    x0 = rng.standard_normal((n, dim))
    x1 = rng.standard_normal((n, dim)) + mean_shift
    return np.concatenate([x0, x1]), np.repeat(np.array([0, 1]), n)


def _sinusoid(rng: np.random.Generator, n: int):
    """x uniform in the disc of radius 2; y = 1[1.5·x₀ + sin(1.5·x₁) > 0]; 2n points (classes unbalanced)."""
    radius = 2.0 * np.sqrt(rng.uniform(size=2 * n))
    angle = rng.uniform(0.0, 2 * np.pi, size=2 * n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    y = (1.5 * x[:, 0] + np.sin(1.5 * x[:, 1]) > 0).astype(np.int64)
    return x, y


def _spiral(rng: np.random.Generator, n: int, noise: float = 1.0):
    """a on an even grid of [0, 4π]; class 1 at (a cos a, a sin a), class 0 at ((a+π) cos a, (a+π) sin a),
    plus N(0, σ²) noise."""
    a = np.linspace(0.0, 4 * np.pi, n)
    x1 = np.stack([a * np.cos(a), a * np.sin(a)], axis=1) + noise * rng.standard_normal((n, 2))
    x0 = np.stack([(a + np.pi) * np.cos(a), (a + np.pi) * np.sin(a)], axis=1) + noise * rng.standard_normal((n, 2))
    return np.concatenate([x1, x0]), np.repeat(np.array([1, 0]), n)


def flip_labels(rng: np.random.Generator, y: np.ndarray, label_noise: float) -> np.ndarray:
    """Flips exactly ⌊len(y)·label_noise⌋ binary labels chosen uniformly at random."""
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
    y = y.copy()
    idx = rng.permutation(len(y))[: int(len(y) * label_noise)]
    y[idx] = 1 - y[idx]
    return y


def make_synthetic(name: str, *, n_train: int = 50, n_val: int = 10, n_test: int = 10_000,
                   label_noise: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """One draw of a synthetic data set with train / validation (noisy labels) and test (clean labels).

    Args:
      name: "gaussian" (10-D), "sinusoid" (2-D) or "spiral" (2-D).
      n_train, n_val, n_test: points per class (the sinusoid draws 2n points without class balance).
      label_noise: fraction of flipped training and validation labels.
    Returns:
      dict with x_train float32 [2n_train, d], y_train int32 [2n_train], x_val, y_val, x_test, y_test.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset name must be one of {DATASETS}, got {name!r}")
    for field, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if value < 1:
            raise ValueError(f"{field} must be >= 1, got {value}")
    rng = np.random.default_rng(seed)
    draw = {"gaussian": _gaussian, "sinusoid": _sinusoid, "spiral": _spiral}[name]
    out = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        x, y = draw(rng, n)
        if split != "test":
            y = flip_labels(rng, y, label_noise)
        out[f"x_{split}"] = x.astype(np.float32)
        out[f"y_{split}"] = y.astype(np.int32)
    return out
