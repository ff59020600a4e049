"""Input pipelines: TFDS array_record sources and embedded data, batched by grain with resumable state.

Real data goes through `tfds.data_source` (datasets built with `file_format=array_record`; no
TensorFlow needed at read time). Embedded data needs no download: scikit-learn's digits and the
packages' synthetic generators. Either kind becomes a `grain.MapDataset` that is shuffled (a new
permutation per epoch), repeated, sharded per process and batched. It is random access: batch `s` is
`dataset[s]`, so the data position follows from the step and a resumed run sees exactly the batches
an uninterrupted one would have seen (`shared.trainer` reads `dataset[start:]`).

Multi-host: each process builds the same pipeline with `process_index=jax.process_index()` and
`process_count=jax.process_count()` and so reads only its share: process p reads the p-th contiguous
block of every global batch of the shuffled order, and `shared.train.shard_batch` assembles the blocks in
process order. The global batch therefore holds the same examples in the same rows whatever the number of
processes, so randomness the step draws per row (augmentation, dropout, a VAE's noise) meets the same
examples on a pod as on one host. Per-example host transforms run on the global example index, before the
per-process split, so a random transform draws the same numbers for an example whatever the number of
processes.

Host-side batching for evaluation and inference: `pad_batch` pads a batch to a fixed size with a
`weight` field, `map_fixed_batches` runs a jitted function over fixed-size chunks (one compilation).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

Example = dict[str, np.ndarray]
RandomTransform = Callable[[Example, np.random.Generator], Example]  # (example, rng) -> example
PyTree = Any


# --------------------------------------------------------------------------------------- sources
class ArraySource(Sequence):
    """A random-access source over a dict of equally long arrays; item i is `{k: v[i]}`."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"ArraySource: arrays have different lengths {lengths}")
        self._arrays = dict(arrays)
        self._len = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Example:  # type: ignore[override]  # one example per int; no slices
        return {k: v[index] for k, v in self._arrays.items()}


def tfds_source(name: str, split: str, data_dir: str | None = None) -> Any:
    """`tfds.data_source(name, split=split, data_dir=data_dir)`: random access to an array_record build.

    The dataset must have been prepared with `file_format="array_record"`, e.g.
    `tfds build cifar10 --file_format=array_record --data_dir DIR` on a machine with internet.
    """
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as error:  # tfds raises several types; name what was asked for
        raise FileNotFoundError(
            f"could not open TFDS dataset {name!r} split {split!r} under data_dir={data_dir!r} as an "
            f"array_record data source ({error}). Build it first with "
            f"`tfds build {name.split(':')[0]} --file_format=array_record --data_dir <DIR>`.") from error


def drop_non_array_fields(example: Mapping[str, Any]) -> Example:
    """Keeps numeric array fields; drops strings/bytes (e.g. cifar10's `id`) that cannot be batched."""
    kept = {}
    for key, value in example.items():
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            kept[key] = array
    return kept


# ------------------------------------------------------------------------------------- pipelines
def make_dataset(source: Sequence, *, batch_size: int, seed: int, shuffle: bool = True,
                 num_epochs: int | None = None, drop_remainder: bool = True,
                 process_index: int = 0, process_count: int = 1,
                 transform: Callable[[Example], Example] | None = None,
                 random_transform: RandomTransform | None = None) -> grain.MapDataset:
    """source -> [drop non-array fields] -> shuffle -> repeat -> map -> per-process shard -> batch.

    Args:
      source: random-access source of dict examples (`tfds_source(...)` or `ArraySource`).
      batch_size: the per-process batch size (global batch / process_count).
      seed: shuffle seed; each epoch gets its own permutation.
      num_epochs: None repeats forever (index the dataset by step), else that many epochs.
      process_index, process_count: this process's share of every global batch.
      transform: optional per-example function applied after the field filter.
      random_transform: optional `fn(example, rng: np.random.Generator) -> example` (augmentation,
        input noise); its generator is seeded by (seed, global example position), so every epoch
        draws anew and a resumed run draws the same numbers.
    Returns:
      A `grain.MapDataset` of batched dict examples; `iter(ds.to_iter_dataset())` has
      `get_state()` / `set_state()` for checkpointing.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, process_count={process_count})")
    ds = grain.MapDataset.source(source).map(drop_non_array_fields)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if transform is not None:
        ds = ds.map(transform)
    if random_transform is not None:
        ds = ds.random_map(random_transform, seed=seed)
    if process_count > 1:
        ds = ProcessBlock(ds, batch_size, process_index, process_count)
    return ds.batch(batch_size, drop_remainder=drop_remainder)


class ProcessBlock(grain.MapDataset):
    """Process `index`'s share of every global batch of `parent`: its `index`-th contiguous block of `block`
    examples. Item j is the parent's item (j // block) · block · count + index · block + j mod block."""

    def __init__(self, parent: grain.MapDataset, block: int, index: int, count: int):
        super().__init__(parent)
        self._block, self._index, self._count = block, index, count

    def __len__(self) -> int:
        full, rest = divmod(len(self._parent), self._block * self._count)
        return full * self._block + min(self._block, max(0, rest - self._index * self._block))

    def __getitem__(self, j: int | slice) -> Any:
        if isinstance(j, slice):
            return self.slice(j)
        batch, row = divmod(j, self._block)
        return self._parent[(batch * self._count + self._index) * self._block + row]

    def __str__(self) -> str:
        return f"ProcessBlock(block={self._block}, index={self._index}, count={self._count})"


def batches_of(arrays: Mapping[str, np.ndarray], batch_size: int, drop_remainder: bool = False) -> Iterator[Example]:
    """Deterministic in-order batches of a dict of arrays (evaluation)."""
    n = len(next(iter(arrays.values())))
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        yield {k: v[start:start + batch_size] for k, v in arrays.items()}


# ---------------------------------------------------------------------------------- embedded data
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


@functools.cache
def _digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]  # [1797, 8, 8, 1] in [0, 1]
    labels = bunch.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=DIGITS_TEST_FRACTION,
                                              random_state=DIGITS_SPLIT_SEED, stratify=labels)
    return {"train": (x_tr, y_tr), "test": (x_te, y_te)}


def digits(split: str, binarize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (ships with the package: no download), with a fixed stratified split.

    Args:
      split: "train" (1,347 examples) or "test" (450), fixed forever (seed 0, 25% test).
      binarize: threshold the intensities at 0.5 (the binarised view for Bernoulli likelihoods).
    Returns:
      images float32 [N, 8, 8, 1] in [0, 1] (or {0, 1}), labels int32 [N] in 0..9.
    """
    if split not in ("train", "test"):
        raise ValueError(f"digits: split must be 'train' or 'test', got {split!r}")
    images, labels = _digits_split()[split]
    if binarize:
        images = (images >= 0.5).astype(np.float32)
    return images.copy(), labels.copy()


def long_tail_counts(n_max: int, num_classes: int, rho: float) -> np.ndarray:
    """n_i = floor(n_max * rho^(-i / (L - 1))) for i = 0..L-1 (Cui et al. 2019; Menon et al. 2021)."""
    if rho < 1:
        raise ValueError(f"rho (imbalance ratio) must be >= 1, got {rho}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    i = np.arange(num_classes)
    return np.floor(n_max * rho ** (-i / (num_classes - 1)) + 1e-9).astype(np.int64)


def long_tail_subsample(labels: np.ndarray, rho: float, seed: int) -> np.ndarray:
    """Indices of a long-tailed subset: class i keeps n_i = floor(n_max * rho^(-i/(L-1))) examples.

    Args:
      labels: int [N] in 0..L-1; n_max is the smallest class count so every n_i is available.
      rho: imbalance ratio n_0 / n_{L-1} (>= 1).
      seed: which examples of each class are kept.
    Returns:
      Sorted int64 indices into `labels`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got min {labels.min()}")
    num_classes = int(labels.max()) + 1
    available = np.bincount(labels, minlength=num_classes)
    if available.min() == 0:
        raise ValueError(f"labels: class {int(available.argmin())} has no examples")
    counts = long_tail_counts(int(available.min()), num_classes, rho)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == c), size=int(n), replace=False) for c, n in enumerate(counts)]
    return np.sort(np.concatenate(keep))


def pad_batch(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads every field of a host batch to `size` rows and adds `weight` (1 real, 0 padding)."""
    n = len(next(iter(batch.values())))
    if n > size:
        raise ValueError(f"batch of {n} examples does not fit the evaluation batch size {size}")
    padded = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
    padded["weight"] = (np.arange(size) < n).astype(np.float32)
    return padded


def map_fixed_batches(fn: Callable[..., PyTree], arrays: Sequence[np.ndarray], batch_size: int) -> PyTree:
    """`fn` over row chunks of exactly `batch_size` rows, so a jitted `fn` compiles once; real rows only.

    The last chunk is padded by repeating its last row (a valid input for any model, unlike zeros or
    pad tokens), and the padded rows are dropped from the outputs.

    Args:
      fn: `fn(*chunks) -> outputs`, a pytree of arrays whose leading axis is the batch.
      arrays: host arrays with the same number of rows N.
      batch_size: rows per call.
    Returns:
      the outputs' pytree as NumPy arrays with N rows (chunks concatenated in order).
    """
    n = len(arrays[0])
    if n == 0 or any(len(a) != n for a in arrays):
        raise ValueError(f"map_fixed_batches: arrays need the same, non-zero number of rows, got "
                         f"{[len(a) for a in arrays]}")
    outs = []
    for start in range(0, n, batch_size):
        chunk = [np.asarray(a[start:start + batch_size]) for a in arrays]
        real = len(chunk[0])
        if real < batch_size:
            chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - real, 0)]) for c in chunk]
        out = jax.device_get(fn(*chunk))
        outs.append(jax.tree.map(lambda o: np.asarray(o)[:real], out))  # noqa: B023 (called at once)
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outs)
