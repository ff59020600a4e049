"""The generator: UniLM seq2seq with a 3-way copy head, copy labels, Sparse Softmax, EMA (SPACES).

Copy labels (SPACES `generate_copy_labels`): align source and target by one longest common subsequence
(`lcs_alignment`, traced back as bert4keras does); a matched pair (i, j) is I on both sides if the
previous matched pair is (i − 1, j − 1), B otherwise; unmatched tokens are O. Ids: O = 0, B = 1, I = 2.
They are drawn on the host for every training draw, from the noised source
(`spaces.generator_data.make_train_transform`).

Model: `CopyGenerator` = `shared.unilm.UniLM` (sequence `[CLS] source [SEP] target [SEP]`, UniLM mask)
plus a Dense(3) copy head on the last hidden state; in decoding, position t predicts the label of
token t + 1.

Loss (`generator_loss`): sparse-CE_k over the target tokens plus 2 · CE of the copy head at every
non-padding position, source included, each averaged over its own positions;
sparse-CE_k = log Σ_{i∈Ω_k} e^{s_i} − s_y (k = 10; k = 0 means dense CE). EMA: θ̄ ← d·θ̄ + (1 − d)·θ
after every step (d = 0.9999 in SPACES); evaluation uses θ̄.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.sparse_softmax import sparse_softmax_cross_entropy
from shared.unilm import UniLM, seq2seq_targets
from spaces.metrics import lcs_rows

if TYPE_CHECKING:
    from spaces.vocab import Vocab

__all__ = ["O", "B", "I", "lcs_alignment", "copy_labels", "CopyGenerator", "generator_loss", "ema_update",
           "encode_pair", "encode_pairs"]

O, B, I = 0, 1, 2


def lcs_alignment(source: Sequence, target: Sequence) -> list[tuple[int, int]]:
    """Matched (source index, target index) pairs of one longest common subsequence, in order: the one
    bert4keras' `longest_common_subsequence` traces back (SPACES' copy labels). From the end: match when
    source[i−1] = target[j−1], else step back in the target if L(i, j−1) > L(i−1, j), else in the source;
    L(i, j) = LCS(source[:i], target[:j]) read from `spaces.metrics.lcs_rows`.
    """
    m, n = len(source), len(target)
    if m == 0 or n == 0:
        return []
    rows = lcs_rows(source, target)

    def L(i, j):
        return i - (rows[j] & ((1 << i) - 1)).bit_count()

    pairs = []
    i, j = m, n
    while i > 0 and j > 0:
        if source[i - 1] == target[j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif L(i, j - 1) > L(i - 1, j):
            j -= 1
        else:
            i -= 1
    return pairs[::-1]


def copy_labels(source: Sequence, target: Sequence) -> tuple[list[int], list[int]]:
    """O/B/I labels (0/1/2) of every source and every target token (SPACES `generate_copy_labels`).

    Along `lcs_alignment(source, target)`, a matched pair (i, j) is I on both sides if the previous
    matched pair is (i − 1, j − 1), else B; unmatched tokens are O.
    """
    src, tgt = [O] * len(source), [O] * len(target)
    prev = (-2, -2)
    for i, j in lcs_alignment(source, target):
        src[i] = tgt[j] = I if (i, j) == (prev[0] + 1, prev[1] + 1) else B
        prev = (i, j)
    return src, tgt


class CopyGenerator(nnx.Module):
    """UniLM + copy head. `model(ids, segments)` -> (LM logits [B, T, V], copy logits [B, T, 3])."""

    def __init__(self, lm: UniLM, *, rngs: nnx.Rngs):
        self.lm = lm
        self.copy = nnx.Linear(lm.config.hidden, 3, rngs=rngs)

    def copy_logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., H] -> float32 [..., 3] (O, B, I) logits for the NEXT token."""
        return self.copy(hidden).astype(jnp.float32)

    def __call__(self, ids: jax.Array, segments: jax.Array, *,
                 key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        logits, aux = self.lm(ids, segments, key=key)
        return logits, self.copy_logits(aux["hidden"])


def generator_loss(*, sparse_k: int = 10, copy_weight: float = 2.0,
                   ) -> Callable[[CopyGenerator, dict, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]:
    """`fn(model, batch, rng)` for `shared.train.nnx_loss`, on batches of
    `spaces.generator_data.make_train_transform` (noise and copy labels drawn on the host, as SPACES).

    batch: "ids" (clean), "inputs" (noised; the model reads these), "segments", "copy" int [B, T];
    optional "weight" [B]. With next-token targets y_{t+1} = ids[t+1] on the target segment (w_t) and
    the copy labels c_t of every non-padding output position (v_t = [ids[t+1] is not padding]):
        loss = Σ_t w_t · CE_k(logits_t, y_{t+1}) / Σ w + copy_weight · Σ_t v_t · CE(copy_t, c_t) / Σ v,
    CE_k the sparse-softmax CE over the k largest logits (k = 0: dense CE). The copy term covers the
    source positions too (SPACES' `compute_copy_loss`); copy_weight = 0 drops the copy head.
    """

    def fn(model: CopyGenerator, batch: dict, rng: jax.Array):
        ids, seg = batch["ids"], batch["segments"]
        pad = model.lm.config.pad_id
        key = jax.random.fold_in(rng, 2) if model.lm.config.dropout > 0 else None
        logits, copy = model(batch["inputs"], seg, key=key)
        labels, w = seq2seq_targets(ids, seg, pad_id=pad)  # [B, T-1]
        v = (ids[:, 1:] != pad).astype(jnp.float32)  # [B, T-1]
        if "weight" in batch:
            w, v = w * batch["weight"][:, None], v * batch["weight"][:, None]
        lg = logits[:, :-1]
        if sparse_k:
            lm = sparse_softmax_cross_entropy(lg, labels, min(sparse_k, lg.shape[-1]))
        else:
            lm = -jnp.take_along_axis(jax.nn.log_softmax(lg), labels[..., None], axis=-1)[..., 0]
        cp_logits, cp_labels = copy[:, :-1], batch["copy"][:, :-1]
        cp = -jnp.take_along_axis(jax.nn.log_softmax(cp_logits), cp_labels[..., None], axis=-1)[..., 0]
        n, m = jnp.maximum(w.sum(), 1.0), jnp.maximum(v.sum(), 1.0)
        lm_loss, copy_loss = (lm * w).sum() / n, (cp * v).sum() / m
        token_acc = ((lg.argmax(-1) == labels) * w).sum() / n
        copy_acc = ((cp_logits.argmax(-1) == cp_labels) * v).sum() / m
        return lm_loss + copy_weight * copy_loss, {"lm_loss": lm_loss, "copy_loss": copy_loss,
                                                   "token_accuracy": token_acc, "copy_accuracy": copy_acc}

    return fn


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """θ̄ ← decay·θ̄ + (1 − decay)·θ, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def encode_pair(vocab: Vocab, source: str, target: str | None, max_source: int,
                max_target: int) -> tuple[list[int], int]:
    """(`[CLS] source [SEP]` + `target [SEP]` ids, length of `[CLS] source [SEP]`); the source keeps its
    LAST `max_source` tokens (the judgment is at the end), the target its first `max_target`."""
    ids = [vocab.cls_id] + (vocab.encode(source)[-max_source:] if max_source > 0 else []) + [vocab.sep_id]
    n = len(ids)
    if target is not None:
        ids += vocab.encode(target)[:max_target] + [vocab.sep_id]
    return ids, n


def encode_pairs(vocab: Vocab, sources: Sequence[str], targets: Sequence[str] | None, max_source: int,
                 max_target: int) -> dict[str, np.ndarray]:
    """Padded int32 arrays "ids", "segments" [D, T] (T = max_source + 2, + max_target + 1 with targets) and
    "source_len" [D] (the `[CLS] .. [SEP]` length)."""
    t = max_source + 2 + (0 if targets is None else max_target + 1)
    out = {"ids": np.full((len(sources), t), vocab.pad_id, np.int32), "segments": np.zeros((len(sources), t), np.int32),
           "source_len": np.zeros(len(sources), np.int32)}
    for d, source in enumerate(sources):
        ids, n = encode_pair(vocab, source, None if targets is None else targets[d], max_source, max_target)
        out["ids"][d, :len(ids)] = ids
        out["segments"][d, n:len(ids)] = 1
        out["source_len"][d] = n
    return out
