"""The IDX file format of the original MNIST distribution (LeCun et al.), which every public mirror ships.

An IDX file: two zero bytes, a type byte (0x08 = uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions n, then n big-endian uint32 sizes and the values, big-endian,
row-major. Files may be gzip-compressed (`.gz`, as the mirrors serve them).
"""

from __future__ import annotations

import gzip
import pathlib

import numpy as np

from shared.overrides import ConfigError

__all__ = ["read_idx", "mnist_idx"]

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str | pathlib.Path) -> np.ndarray:
    """The array in an IDX file (gzip or plain), in native byte order. ConfigError (one line) if malformed."""
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ConfigError(f"{path}: damaged gzip ({error})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _TYPES:
        raise ConfigError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_TYPES[raw[2]])
    count = int(np.prod(shape))
    if len(raw) != 4 + 4 * ndim + count * dtype.itemsize:
        raise ConfigError(f"{path}: truncated IDX file ({len(raw)} bytes for shape {shape})")
    return np.frombuffer(raw, dtype, count, 4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def mnist_idx(data_dir: str | pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28, 1], labels int64 [N]) of MNIST's `split` ("train" | "test") from `data_dir`.

    Each file is looked up as `<name>` or `<name>.gz`, with `-idx` or `.idx` (both spellings are in
    circulation: train-images-idx3-ubyte, train-images.idx3-ubyte); a missing one is a ConfigError naming it.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"mnist_idx: split must be 'train' or 'test', got {split!r}")
    arrays = []
    for name in MNIST_FILES[split]:
        candidates = [pathlib.Path(data_dir) / f"{n}{gz}" for n in (name, name.replace("-idx", ".idx"))
                      for gz in ("", ".gz")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise ConfigError(f"data_dir {data_dir}: no MNIST file {name} (or {name}.gz)")
        arrays.append(read_idx(found[0]))
    images, labels = arrays
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ConfigError(f"data_dir {data_dir}: MNIST {split} images {images.shape} and labels {labels.shape} "
                          "do not match")
    return images[..., None].astype(np.uint8), labels.astype(np.int64)
