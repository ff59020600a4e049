"""Tests for mwp.synthetic: families, valid gold equations, held-out numbers and phrasings."""

import collections
import re

import pytest

from mwp.expressions import answers_equal, normalize_problem, safe_eval
from mwp.synthetic import FAMILIES, TRAIN_FRACTION, generate_split

REQUIRED = {"chickens_rabbits", "surplus_deficit", "ages", "tree_planting", "cows_grass", "discount", "profit",
            "percentage", "fraction", "meeting", "work_rate", "average", "rectangle"}


def test_families():
    assert len(FAMILIES) >= 12 and set(FAMILIES) >= REQUIRED


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_records_are_valid_ape210k(split):
    records = generate_split(split, 300, seed=0)
    assert len(records) == 300
    for r in records:
        assert {"id", "segmented_text", "original_text", "ans", "equation"} <= set(r)
        assert r["equation"].startswith("x=")
        n = normalize_problem(r)  # raises if the gold equation does not give the answer
        assert answers_equal(n["equation"], r["ans"].replace("%", "/100"))
        assert safe_eval(n["equation"]) > 0


def test_phrasings_and_numbers_held_out():
    train = generate_split("train", 1500, seed=0)
    test = generate_split("test", 600, seed=0)
    phrasings = collections.defaultdict(set)
    for r in train:
        phrasings[r["family"]].add(r["phrasing"])
        assert not r["held_out_phrasing"]
    assert all(len(p) >= 3 for p in phrasings.values())  # several phrasings per family in train
    held = [r for r in test if r["held_out_phrasing"]]
    assert 0.35 < len(held) / len(test) < 0.65
    assert not {r["original_text"] for r in test} & {r["original_text"] for r in train}
    # held-out number ranges: e.g. the rectangle's length, drawn from [3, 60]
    cut = 3 + int(57 * TRAIN_FRACTION)

    def lengths(records):
        return [int(re.search(r"长是?([0-9]+)", r["original_text"]).group(1))
                for r in records if r["family"] == "rectangle"]
    assert len(lengths(test)) > 20 and max(lengths(train)) <= cut < min(lengths(test))


def test_deterministic_and_seeded():
    assert generate_split("valid", 50, seed=1) == generate_split("valid", 50, seed=1)
    assert generate_split("valid", 50, seed=1) != generate_split("valid", 50, seed=2)
    with pytest.raises(ValueError, match="split"):
        generate_split("dev", 5)
