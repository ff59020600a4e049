"""The generator's training examples as SPACES draws them (`seq2seq_model.data_generator`), host-side.

Every time a document is drawn (so anew every epoch), `make_train_transform`'s function:
  1. picks the generator input: the oracle clauses with probability `oracle_fraction` (SPACES: 1/2),
     else the extractor's out-of-fold clauses;
  2. adds noise: each token of `[CLS] source [SEP] target [SEP]`, the specials included, is replaced
     with probability `noise` (0.15) by the token at a uniformly drawn position of the same sequence;
  3. labels the copy head from one longest common subsequence (`spaces.generator.lcs_alignment`) of
     the *noised* source `[CLS] .. [SEP]` (length S) and the clean target `.. [SEP]` (length T − S):
     matched tokens get B, or I when the previous matched pair is (i − 1, j − 1), the rest O, on both
     sides (`spaces.generator.copy_labels`);
  4. lays the labels out as SPACES' loss reads them: output position t < S is trained on the label of
     source token t, position t ≥ S on the label of target token t + 1 − S (so the first target
     token's own label is never a target), and every non-padding output position t < T − 1 counts.
The model reads the noised ids; the language-model targets stay the clean ids.

It is a `fn(example, rng: np.random.Generator) -> example` for grain's `random_map`
(`shared.data.make_dataset(random_transform=...)`): deterministic for a seed and example position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from spaces.generator import copy_labels, encode_pair

if TYPE_CHECKING:
    from spaces.vocab import Vocab

__all__ = ["encode_generator_examples", "noise_tokens", "make_train_transform", "ORACLE", "EXTRACTED"]

EXTRACTED, ORACLE = 0, 1  # rows of an example's "ids"


def encode_generator_examples(vocab: Vocab, extracted: Sequence[str], oracle: Sequence[str], targets: Sequence[str],
                              max_source: int, max_target: int) -> dict[str, np.ndarray]:
    """Both candidate inputs of every training document, encoded.

    Returns "ids" int32 [D, 2, L] (row `EXTRACTED` from the extracted clauses, row `ORACLE` from the
    oracle clauses; each `[CLS] source [SEP] target [SEP]`, the source keeping its last `max_source`
    tokens, the target its first `max_target`, padded with `vocab.pad_id`, L = max_source + max_target
    + 3) and "source_len" int32 [D, 2] (tokens through the first [SEP]).
    """
    if not len(extracted) == len(oracle) == len(targets):
        raise ValueError(f"extracted ({len(extracted)}), oracle ({len(oracle)}) and targets ({len(targets)}) "
                         "must have one entry per document")
    length = max_source + max_target + 3
    ids = np.full((len(targets), 2, length), vocab.pad_id, np.int32)
    source_len = np.zeros((len(targets), 2), np.int32)
    for d, target in enumerate(targets):
        for row, source in ((EXTRACTED, extracted[d]), (ORACLE, oracle[d])):
            seq, n = encode_pair(vocab, source, target, max_source, max_target)
            ids[d, row, :len(seq)] = seq
            source_len[d, row] = n
    return {"ids": ids, "source_len": source_len}


def noise_tokens(ids: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    """ids int [L] (no padding) with each token replaced, with probability `rate`, by the token at a
    uniformly drawn position of `ids` (SPACES' `random_masking`)."""
    replace = rng.random(len(ids)) < rate
    return np.where(replace, ids[rng.integers(0, len(ids), len(ids))], ids)


def make_train_transform(*, pad_id: int, noise: float = 0.15,
                         oracle_fraction: float = 0.5) -> Callable[[dict, np.random.Generator], dict]:
    """The per-draw transform (module docstring) of an example {"ids" [2, L], "source_len" [2]}.

    Returns a function giving int32 [L] arrays: "ids" (clean, the LM targets), "inputs" (noised, what
    the model reads), "segments" (0 on `[CLS] source [SEP]`, 1 on `target [SEP]`, 0 on padding) and
    "copy" (the B/I/O label output position t is trained on; 0 from position T − 1 on).
    """
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must lie in [0, 1), got {noise}")
    if not 0.0 <= oracle_fraction <= 1.0:
        raise ValueError(f"oracle_fraction must lie in [0, 1], got {oracle_fraction}")

    def transform(example: dict, rng: np.random.Generator) -> dict:
        row = ORACLE if rng.random() < oracle_fraction else EXTRACTED
        ids = np.asarray(example["ids"][row])
        s = int(example["source_len"][row])
        t = int((ids != pad_id).sum())
        if not 2 <= s < t:
            raise ValueError(f"example has source length {s} and length {t}; expected [CLS] .. [SEP] then the target")
        clean = ids[:t]
        noised = noise_tokens(clean, rng, noise)
        src_labels, tgt_labels = copy_labels(noised[:s].tolist(), clean[s:].tolist())
        out = {k: np.zeros(len(ids), np.int32) for k in ("inputs", "segments", "copy")}
        out["inputs"][:] = pad_id
        out["inputs"][:t] = noised
        out["segments"][s:t] = 1
        out["copy"][:t - 1] = src_labels + tgt_labels[1:]
        out["ids"] = ids.astype(np.int32)
        return out

    return transform
