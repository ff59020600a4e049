"""shared.cifar_files: the CIFAR python release (small files in its real Python 2 pickle format), format detection."""

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from shared import cifar_files


def _py2_pickle(record: dict) -> bytes:
    """`record` as Python 2's cPickle (protocol 2) wrote the release: `str` keys and strings as BINSTRING,
    ints as BININT1, `data` as numpy.core.multiarray._reconstruct + BUILD with the raw bytes (the opcode
    sequence of the real `data_batch_1`, less the memo opcodes)."""

    def string(s):
        s = s.encode("latin1") if isinstance(s, str) else s
        return b"U" + bytes([len(s)]) + s if len(s) < 256 else b"T" + struct.pack("<i", len(s)) + s

    def value(v):
        if isinstance(v, np.ndarray):  # uint8 [rows, cols]
            shape = b"M" + struct.pack("<H", v.shape[0]) + b"M" + struct.pack("<H", v.shape[1]) + b"\x86"
            dtype = (b"cnumpy\ndtype\n" + string("u1") + b"K\x00K\x01\x87R(K\x03" + string("|")
                     + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
            return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string("b") + b"\x87R"
                    + b"(K\x01" + shape + dtype + b"\x89" + string(v.tobytes()) + b"tb")
        if isinstance(v, list):
            return b"](" + b"".join(value(x) for x in v) + b"e"
        if isinstance(v, int):
            return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)
        return string(v)

    return b"\x80\x02}(" + b"".join(string(k) + value(v) for k, v in record.items()) + b"u."


def _dump(path: Path, record: dict) -> None:
    """A Python 3 pickle of `record` with `bytes` keys (as `pickle.dump` of a re-saved release would write)."""
    path.write_bytes(pickle.dumps({k.encode(): v for k, v in record.items()}, protocol=2))


def write_release(root: Path, dataset: str = "cifar10", per_file: int = 20, seed: int = 0, subfolder: bool = True):
    """Writes a small python release of `dataset` under `root` (in its tarball's folder if `subfolder`), in
    the format of the real files (`_py2_pickle`).

    Every file holds `per_file` random images with labels cycling over the classes. Returns
    {"train": (images [N, 32, 32, 3], labels [N]), "test": (...)}, in file order.
    """
    release = cifar_files.RELEASES[dataset]
    folder = root / release.folder if subfolder else root
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"class{i}" for i in range(release.num_classes)]
    (folder / release.meta).write_bytes(_py2_pickle({"num_cases_per_batch": per_file, release.names_key: names}))
    out = {}
    for split, files in (("train", release.train), ("test", release.test)):
        images, labels = [], []
        for name in files:
            x = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
            y = (np.arange(per_file) + len(labels) * per_file) % release.num_classes
            record = {"batch_label": f"{name} of 1", release.label_key: y.tolist(),
                      "data": x.transpose(0, 3, 1, 2).reshape(per_file, 3072),
                      "filenames": [f"{i}.png" for i in range(per_file)]}
            if dataset == "cifar100":
                record["coarse_labels"] = (y // 5).tolist()
            (folder / name).write_bytes(_py2_pickle(record))
            images.append(x)
            labels.append(y)
        out[split] = (np.concatenate(images), np.concatenate(labels))
    return out


def test_cifar10_release_round_trip_and_pixel_layout(tmp_path):
    written = write_release(tmp_path, "cifar10", per_file=6)
    assert cifar_files.detect_format("cifar10", str(tmp_path)) == ("pickle", tmp_path / "cifar-10-batches-py")
    for split, n in (("train", 30), ("test", 6)):
        images, labels = cifar_files.load_split("cifar10", split, str(tmp_path))
        assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int32
        np.testing.assert_array_equal(images, written[split][0])  # data_batch_1..5 concatenated in order
        np.testing.assert_array_equal(labels, written[split][1])
    # one hand-checked pixel: row r holds R(1024) G(1024) B(1024), each 32x32 row-major
    record = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="latin1")
    row = record["data"][0]
    images, _ = cifar_files.load_split("cifar10", "train", str(tmp_path))
    assert tuple(images[0, 2, 5]) == (row[2 * 32 + 5], row[1024 + 2 * 32 + 5], row[2048 + 2 * 32 + 5])


def test_cifar100_reads_fine_labels_from_the_folder_itself(tmp_path):
    written = write_release(tmp_path, "cifar100", per_file=120, subfolder=False)
    images, labels = cifar_files.load_split("cifar100", "train", str(tmp_path))
    np.testing.assert_array_equal(images, written["train"][0])
    np.testing.assert_array_equal(labels, written["train"][1])  # fine (0..99), not coarse (0..19)
    assert labels.max() == 99


def test_train_val_test_holds_out_the_last_training_images(tmp_path):
    written = write_release(tmp_path, "cifar10", per_file=4)
    source, evals = cifar_files.train_val_test("cifar10", 5, str(tmp_path))
    assert len(source) == 15 and len(evals["val"]["label"]) == 5 and len(evals["test"]["label"]) == 4
    np.testing.assert_array_equal(source[3]["image"], written["train"][0][3])
    np.testing.assert_array_equal(evals["val"]["image"], written["train"][0][15:])
    with pytest.raises(ValueError, match=r"config\.val_size"):
        cifar_files.train_val_test("cifar10", 20, str(tmp_path))


def test_a_missing_file_is_named(tmp_path):
    write_release(tmp_path, "cifar10", per_file=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing data_batch_3"):
        cifar_files.load_split("cifar10", "test", str(tmp_path))


def test_a_truncated_pickle_is_named(tmp_path):
    write_release(tmp_path, "cifar10", per_file=2)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"data_batch_2: .*truncated"):
        cifar_files.load_split("cifar10", "train", str(tmp_path))


def test_another_dataset_in_the_folder_is_named(tmp_path):
    write_release(tmp_path, "cifar100", per_file=2)
    with pytest.raises(ValueError, match=r"holds the cifar100 python release .* config.dataset is 'cifar10'"):
        cifar_files.load_split("cifar10", "train", str(tmp_path))
    # CIFAR-100 contents under CIFAR-10 file names: the label field and the meta's class count are checked
    folder = tmp_path / "c10"
    write_release(folder, "cifar10", per_file=2, subfolder=False)
    _dump(folder / "data_batch_4", {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 1]})
    with pytest.raises(ValueError, match=r"data_batch_4: no field 'labels' \(fields: data, fine_labels\)"):
        cifar_files.load_split("cifar10", "train", str(folder))
    _dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(100)]})
    with pytest.raises(ValueError, match=r"batches\.meta: field 'label_names' lists 100 classes"):
        cifar_files.load_split("cifar10", "test", str(folder))


def test_bad_fields_and_foreign_pickles_are_refused(tmp_path):
    folder = tmp_path / "c10"
    write_release(folder, "cifar10", per_file=2, subfolder=False)
    _dump(folder / "test_batch", {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]})
    with pytest.raises(ValueError, match=r"test_batch: field 'labels' has labels in \[0, 10\]"):
        cifar_files.load_split("cifar10", "test", str(folder))
    _dump(folder / "test_batch", {"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]})
    with pytest.raises(ValueError, match=r"test_batch: field 'data' must be uint8 \[N, 3072\]"):
        cifar_files.load_split("cifar10", "test", str(folder))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Path("x")}, protocol=2))  # a class outside numpy
    with pytest.raises(ValueError, match=r"test_batch: .*is not allowed"):
        cifar_files.load_split("cifar10", "test", str(folder))


def test_format_detection(tmp_path):
    assert cifar_files.detect_format("cifar10", "") == ("tfds", None)
    (tmp_path / "cifar10" / "3.0.2").mkdir(parents=True)
    assert cifar_files.detect_format("cifar10", str(tmp_path)) == ("tfds", None)
    with pytest.raises(FileNotFoundError, match=r"neither the cifar100 python release .* nor a TFDS build"):
        cifar_files.detect_format("cifar100", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        cifar_files.detect_format("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"config\.dataset"):
        cifar_files.detect_format("mnist", str(tmp_path))
