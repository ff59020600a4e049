"""Embedded data, the long-tail subsampler and the grain pipeline (sharding, resumable state)."""

import grain
import numpy as np
import pytest

from shared import data


def test_digits_fixed_split_and_views():
    x_tr, y_tr = data.digits("train")
    x_te, y_te = data.digits("test")
    assert x_tr.shape == (1347, 8, 8, 1) and x_te.shape == (450, 8, 8, 1)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int32
    assert x_tr.min() >= 0.0 and x_tr.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_te), np.bincount(data.digits("test")[1]))  # deterministic
    xb, _ = data.digits("train", binarize=True)
    assert set(np.unique(xb)) == {0.0, 1.0}
    np.testing.assert_array_equal(xb, (x_tr >= 0.5).astype(np.float32))
    with pytest.raises(ValueError, match="split"):
        data.digits("valid")


@pytest.mark.parametrize("rho", [1, 10, 100])
def test_long_tail_counts_follow_the_formula(rho):
    labels = np.repeat(np.arange(10), 500)
    idx = data.long_tail_subsample(labels, rho, seed=0)
    counts = np.bincount(labels[idx], minlength=10)
    expected = [int(np.floor(500 * rho ** (-i / 9))) for i in range(10)]
    np.testing.assert_array_equal(counts, expected)
    assert counts[0] / counts[-1] == pytest.approx(rho, rel=0.02)
    assert len(np.unique(idx)) == len(idx)


def test_long_tail_rejects_bad_rho():
    with pytest.raises(ValueError, match="rho"):
        data.long_tail_subsample(np.arange(10), 0.5, seed=0)


def test_drop_non_array_fields():
    kept = data.drop_non_array_fields({"image": np.zeros((2, 2)), "label": 3, "id": b"train_1", "name": "x"})
    assert set(kept) == {"image", "label"}


def test_process_shards_are_the_global_batches_blocks_in_process_order():
    """Fails if the processes' shares, stacked in process order as `shard_batch` places them, are not the
    one-process batch row for row (an interleaved split holds the same examples in other rows, so randomness
    drawn per row in the step, e.g. crop offsets or dropout masks, would meet other examples on a pod)."""
    source = data.ArraySource({"x": np.arange(40), "y": np.arange(40) * 2})
    full = data.make_dataset(source, batch_size=8, seed=3)
    parts = [data.make_dataset(source, batch_size=4, seed=3, process_index=i, process_count=2) for i in range(2)]
    for step in range(12):  # crosses epoch boundaries
        for key in ("x", "y"):
            np.testing.assert_array_equal(np.concatenate([parts[0][step][key], parts[1][step][key]]), full[step][key])
    epoch0 = np.concatenate([full[i]["x"] for i in range(5)])
    epoch1 = np.concatenate([full[i]["x"] for i in range(5, 10)])
    assert sorted(epoch0) == list(range(40)) and not np.array_equal(epoch0, epoch1)  # reshuffled per epoch


def test_process_block_of_a_finite_dataset_keeps_the_last_partial_batch():
    """10 examples, global batches of 4 over 2 processes: process 0 holds rows 0-1, 4-5 and 8-9; process 1
    rows 2-3 and 6-7 (the last global batch has only 2 examples)."""
    parent = grain.MapDataset.range(10)
    blocks = [data.ProcessBlock(parent, 2, index, 2) for index in range(2)]
    assert [[b[i] for i in range(len(b))] for b in blocks] == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7]]
    assert list(blocks[0][2:4]) == [4, 5]  # slicing stays random access


def test_random_transform_draws_per_global_example_whatever_the_process_count():
    """Fails if the random transform is seeded by the per-process position (2 processes would then draw
    other noise than 1 process) or by nothing that changes between epochs."""
    source = data.ArraySource({"x": np.arange(20)})

    def noise(example, rng):
        return {**example, "noise": rng.integers(1 << 30, size=())}

    full = data.make_dataset(source, batch_size=4, seed=5, random_transform=noise)
    parts = [data.make_dataset(source, batch_size=2, seed=5, random_transform=noise, process_index=i,
                               process_count=2) for i in range(2)]
    for step in range(8):
        pairs = dict(zip(full[step]["x"].tolist(), full[step]["noise"].tolist()))
        for part in parts:
            for x, n in zip(part[step]["x"].tolist(), part[step]["noise"].tolist()):
                assert pairs[x] == n
    epoch0 = {int(x): int(n) for b in (full[i] for i in range(5)) for x, n in zip(b["x"], b["noise"])}
    epoch1 = {int(x): int(n) for b in (full[i] for i in range(5, 10)) for x, n in zip(b["x"], b["noise"])}
    assert sorted(epoch0) == sorted(epoch1) == list(range(20))
    assert sum(epoch0[x] != epoch1[x] for x in epoch0) >= 18  # a new draw every epoch


def test_tfds_mock_source_through_the_pipeline():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        source = data.tfds_source("mnist", "train")
        batch = data.make_dataset(source, batch_size=4, seed=0)[0]
    assert batch["image"].shape == (4, 28, 28, 1) and batch["label"].shape == (4,)


def test_missing_tfds_dataset_names_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10"):
        data.tfds_source("cifar10", "train", data_dir=str(tmp_path))
