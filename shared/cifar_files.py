"""CIFAR-10 / CIFAR-100 from either of their two on-disk formats, as uint8 arrays in memory.

`data_dir` may hold
- the original python release (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html), as
  unpacked from `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz`: the folder itself or its parent
  holding `cifar-10-batches-py/` (`data_batch_1` … `data_batch_5`, `test_batch`, `batches.meta`) or
  `cifar-100-python/` (`train`, `test`, `meta`). Each file is a pickled dict (written by Python 2, so
  read with `encoding="latin1"`; keys may be `str` or `bytes`) with `data` uint8 [N, 3072], each row
  the 1024 red, then green, then blue values of a 32x32 image in row-major order, and `labels`
  (CIFAR-10) or `fine_labels` (CIFAR-100), a list of N ints;
- a TFDS `array_record` build (`<data_dir>/cifar10/<version>/...`), read through
  `shared.data.tfds_source`; an empty `data_dir` means TFDS's default directory.

The format is detected from the folder's contents. Files are unpickled with an allow-list of the
globals a numpy array needs, so a foreign pickle cannot run code. Errors name the file, the field
and what was expected: a missing file, a truncated pickle, the other CIFAR's release.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np

from shared import data

__all__ = ["RELEASES", "Release", "detect_format", "read_release", "load_split", "train_val_test"]


@dataclasses.dataclass(frozen=True)
class Release:
    """The file layout of one dataset's python release."""

    folder: str  # the folder the tarball unpacks to
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str  # the class-name list in `meta`
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return self.train + self.test + (self.meta,)

    def describe(self) -> str:
        return f"{self.folder} ({', '.join(self.files)})"


RELEASES = {
    "cifar10": Release("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                       "batches.meta", "labels", "label_names", 10),
    "cifar100": Release("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names", 100),
}
_IMAGE_BYTES = 32 * 32 * 3
# what unpickling a dict of numpy arrays, lists, ints and strings needs (numpy 1 and numpy 2 module names)
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


def _check_dataset(dataset: str) -> Release:
    if dataset not in RELEASES:
        raise ValueError(f"config.dataset must be one of {sorted(RELEASES)}, got {dataset!r}")
    return RELEASES[dataset]


def _release_folder(root: Path, release: Release) -> Path | None:
    """`root` or `root/<release.folder>` when it holds at least one file of `release`, else None."""
    for folder in (root, root / release.folder):
        if any((folder / name).is_file() for name in release.files):
            return folder
    return None


def detect_format(dataset: str, data_dir: str) -> tuple[str, Path | None]:
    """("pickle", folder of the python release) or ("tfds", None) for `dataset` under `data_dir`.

    Raises:
      FileNotFoundError: the release is incomplete (names the missing files), or `data_dir` holds
        neither format.
      ValueError: `data_dir` holds the python release of the other CIFAR.
    """
    release = _check_dataset(dataset)
    if not data_dir:
        return "tfds", None
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"config.data_dir={data_dir!r} is not a directory")
    folder = _release_folder(root, release)
    if folder is not None:
        missing = [name for name in release.files if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: the {dataset} python release is incomplete, missing "
                                    f"{', '.join(missing)} (expected {release.describe()})")
        return "pickle", folder
    if (root / dataset).is_dir():
        return "tfds", None
    for other_name, other in RELEASES.items():
        other_folder = _release_folder(root, other) if other_name != dataset else None
        if other_folder is not None:
            raise ValueError(f"config.data_dir={data_dir!r} holds the {other_name} python release "
                             f"({other_folder}), but config.dataset is {dataset!r}, which needs "
                             f"{release.describe()}")
    raise FileNotFoundError(f"config.data_dir={data_dir!r} holds neither the {dataset} python release "
                            f"({release.describe()}) nor a TFDS build ({data_dir}/{dataset}/<version>/)")


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals that numpy arrays need."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """The file's dict with `str` keys. Raises ValueError naming the file if it is truncated or foreign."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{path}: not a readable CIFAR python-release pickle (truncated or corrupt? "
                         f"{type(error).__name__}: {error}); download and unpack the release again") from error
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _field(record: dict, key: str, path: Path):
    if key not in record:
        raise ValueError(f"{path}: no field {key!r} (fields: {', '.join(sorted(map(str, record)))})")
    return record[key]


def _read_batch(path: Path, release: Release) -> tuple[np.ndarray, np.ndarray]:
    """One pickle file -> images uint8 [N, 32, 32, 3], labels int32 [N]."""
    record = _unpickle(path)
    flat = np.asarray(_field(record, "data", path))
    if flat.ndim != 2 or flat.shape[1] != _IMAGE_BYTES or flat.dtype != np.uint8:
        raise ValueError(f"{path}: field 'data' must be uint8 [N, {_IMAGE_BYTES}], got {flat.dtype} {flat.shape}")
    labels = np.asarray(_field(record, release.label_key, path))
    if labels.shape != (len(flat),) or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: field {release.label_key!r} must hold {len(flat)} ints, got "
                         f"{labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= release.num_classes):
        raise ValueError(f"{path}: field {release.label_key!r} has labels in [{labels.min()}, {labels.max()}], "
                         f"expected [0, {release.num_classes})")
    images = flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> NHWC
    return np.ascontiguousarray(images), labels.astype(np.int32)


def read_release(folder: str | Path, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split of the python release in `folder`: images uint8 [N, 32, 32, 3], labels int32 [N].

    Checks the meta file's class count (another dataset's files fail here or on the label field).
    """
    release = _check_dataset(dataset)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(folder)
    meta_path = folder / release.meta
    names = _field(_unpickle(meta_path), release.names_key, meta_path)
    if len(names) != release.num_classes:
        raise ValueError(f"{meta_path}: field {release.names_key!r} lists {len(names)} classes, "
                         f"{dataset} has {release.num_classes}")
    parts = [_read_batch(folder / name, release) for name in getattr(release, split)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_split(dataset: str, split: str, data_dir: str = "") -> tuple[np.ndarray, np.ndarray]:
    """All of `split` ("train" / "test") in memory from either format (see the module docstring).

    Returns images uint8 [N, 32, 32, 3] and labels int32 [N] (uint8 keeps a whole CIFAR split in host memory).
    """
    kind, folder = detect_format(dataset, data_dir)
    if kind == "pickle" and folder is not None:
        return read_release(folder, dataset, split)
    source = data.tfds_source(dataset, split, data_dir=data_dir or None)
    examples = [data.drop_non_array_fields(source[i]) for i in range(len(source))]
    images = np.stack([e["image"] for e in examples]).astype(np.uint8)
    return images, np.asarray([e["label"] for e in examples], np.int32)


def train_val_test(dataset: str, val_size: int, data_dir: str = ""):
    """(`ArraySource` of the training split without its last `val_size` images, {"val": arrays, "test": arrays}).

    The arrays are {"image": uint8 [N, 32, 32, 3], "label": int32 [N]}; the split is the same in both formats.
    """
    images, labels = load_split(dataset, "train", data_dir)
    if not 0 < val_size < len(labels):
        raise ValueError(f"config.val_size must be in (0, {len(labels)}), got {val_size}")
    cut = len(labels) - val_size
    test_images, test_labels = load_split(dataset, "test", data_dir)
    return (data.ArraySource({"image": images[:cut], "label": labels[:cut]}),
            {"val": {"image": images[cut:], "label": labels[cut:]},
             "test": {"image": test_images, "label": test_labels}})
