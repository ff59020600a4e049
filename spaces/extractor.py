"""The extraction model: clause vectors -> DGCNN -> per-clause sigmoid (SPACES, kexue 8046).

Clause vectors: the masked mean of an encoder's last hidden states over each clause's tokens,
v_n = Σ_l m_nl h_nl / Σ_l m_nl. For real data the encoder is a pretrained BERT (`unilm_clause_vectors`,
frozen, computed once); for embedded runs a small trainable encoder (`ClauseEncoder`: mean and max of
token embeddings) is trained with the DGCNN.

DGCNN (SPACES `extract_model.py`): x_0 = W v (Dense(384) without bias); 6 residual gated dilated 1-D
convolutions over the clause axis, kernel 3, dilations 1, 2, 4, 8, 1, 1:
    [h; g] = Conv_r(x) (2·384 channels),   x <- x + α · LayerNorm(h ⊙ σ(g)),   α a scalar starting at 0,
with padded clauses zeroed after every block (LayerNorm ε = 1e-12, as bert4keras'); dropout 0.1 on
the clause vectors, after the dense layer and after every block; p_n = σ(w·x_n + c); loss = BCE over
the real clauses. Extraction keeps the clauses with p_n > 0.2, none if no clause passes.

K-fold: `kfold_masks` splits documents into k folds; `shared.train.make_step` is vmapped over the k
models (each fold's documents weighted 0 in its own model), so all folds train in one jitted step;
the pipeline then reads each training document's probabilities from the fold model that never saw
it (`spaces.stages.extract`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

if TYPE_CHECKING:
    from shared.unilm import UniLM
    from spaces.vocab import Vocab

__all__ = ["masked_mean", "GatedConv", "DGCNN", "ClauseEncoder", "Extractor", "extraction_loss",
           "kfold_masks", "select_clauses", "unilm_clause_vectors", "encode_clauses"]

DILATIONS = (1, 2, 4, 8, 1, 1)


def masked_mean(h: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of h [..., L, H] over the positions where mask [..., L] is True -> [..., H] (0 if none)."""
    m = mask.astype(h.dtype)[..., None]
    return (h * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)


def _dropout(x, rate, key):
    if key is None or rate == 0.0:
        return x
    return jnp.where(jax.random.bernoulli(key, 1.0 - rate, x.shape), x / (1.0 - rate), 0.0)


class GatedConv(nnx.Module):
    """x + α·LayerNorm(h ⊙ σ(g)) with [h; g] = dilated Conv1D(x), kernel 3; α starts at 0 (identity at init)."""

    def __init__(self, dim: int, dilation: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(dim, 2 * dim, kernel_size=(3,), kernel_dilation=(dilation,), padding="SAME",
                             rngs=rngs)
        self.norm = nnx.LayerNorm(dim, epsilon=1e-12, rngs=rngs)
        self.alpha = nnx.Param(jnp.zeros(()))

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B, N, D] (zero at padded clauses), mask bool [B, N] -> [B, N, D] (zero at padded clauses)."""
        h, g = jnp.split(self.conv(x), 2, axis=-1)  # [B, N, D] each
        return jnp.where(mask[..., None], x + self.alpha[...] * self.norm(h * jax.nn.sigmoid(g)), 0.0)


class DGCNN(nnx.Module):
    """Dense(dim, no bias) + gated dilated residual convolutions + per-clause logit."""

    def __init__(self, in_dim: int, dim: int = 384, dilations: Sequence[int] = DILATIONS,
                 dropout: float = 0.1, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(in_dim, dim, use_bias=False, rngs=rngs)
        self.blocks = nnx.List([GatedConv(dim, r, rngs=rngs) for r in dilations])
        self.out = nnx.Linear(dim, 1, rngs=rngs)
        self.dropout = dropout

    def __call__(self, v: jax.Array, mask: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Clause vectors v [B, N, in_dim], mask bool [B, N] -> logits [B, N]."""
        def drop(x, i):
            return _dropout(x, self.dropout, None if key is None else jax.random.fold_in(key, i))

        x = jnp.where(mask[..., None], self.dense(drop(v, 0)), 0.0)  # [B, N, dim]
        for i, block in enumerate(self.blocks):
            x = block(drop(x, i + 1), mask)
        return self.out(drop(x, len(self.blocks) + 1))[..., 0]


class ClauseEncoder(nnx.Module):
    """Small trainable clause encoder for embedded runs: masked mean ‖ masked max of token embeddings.

    (A bag of characters: cheap enough to train with k DGCNNs at once on a CPU; real runs use BERT.)
    """

    def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab_size, dim, rngs=rngs)

    def __call__(self, ids: jax.Array, pad_id: int = 0) -> jax.Array:
        """ids int [B, N, L] -> clause vectors [B, N, 2·dim]."""
        mask = ids != pad_id
        e = self.embed(ids)  # [B, N, L, d]
        peak = jnp.where(mask[..., None], e, -1e9).max(-2)
        return jnp.concatenate([masked_mean(e, mask), jnp.where(mask.any(-1)[..., None], peak, 0.0)], axis=-1)


class Extractor(nnx.Module):
    """ClauseEncoder (if `vocab_size`) + DGCNN. Call with {"clause_ids" [B,N,L]} or {"vectors" [B,N,H]}."""

    def __init__(self, *, vocab_size: int | None = None, encoder_dim: int = 64, vector_dim: int | None = None,
                 dim: int = 384, dropout: float = 0.1, rngs: nnx.Rngs):
        if (vocab_size is None) == (vector_dim is None):
            raise ValueError("give exactly one of vocab_size (trainable encoder) or vector_dim (precomputed)")
        self.encoder = None if vocab_size is None else ClauseEncoder(vocab_size, encoder_dim, rngs=rngs)
        self.dgcnn = DGCNN(2 * encoder_dim if vector_dim is None else vector_dim, dim, dropout=dropout, rngs=rngs)

    def __call__(self, batch: dict, key: jax.Array | None = None) -> jax.Array:
        """Returns per-clause logits [B, N]; batch["clause_mask"] bool [B, N] marks real clauses."""
        v = self.encoder(batch["clause_ids"]) if self.encoder is not None else batch["vectors"]
        return self.dgcnn(v, batch["clause_mask"], key)


def extraction_loss(model: Extractor, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
    """`fn(model, batch, rng)` for `shared.train.nnx_loss`: mean BCE over the real clauses.

    batch: clause inputs, "clause_mask" bool [B, N], "labels" float [B, N], optional "weight" [B]
    (0 drops a document, e.g. the held-out fold). Per-clause BCE = softplus(z) − y·z.
    """
    logits = model(batch, rng)
    bce = jax.nn.softplus(logits) - batch["labels"] * logits  # [B, N]
    w = batch["clause_mask"].astype(jnp.float32)
    if "weight" in batch:
        w = w * batch["weight"][:, None]
    pred = logits > 0
    correct = (pred == (batch["labels"] > 0.5)).astype(jnp.float32)
    denom = jnp.maximum(w.sum(), 1.0)
    return (bce * w).sum() / denom, {"accuracy": (correct * w).sum() / denom}


def kfold_masks(n_docs: int, k: int, seed: int = 0) -> np.ndarray:
    """bool [k, n_docs]: row f marks the documents of fold f (a seeded permutation cut in k parts)."""
    if not 2 <= k <= n_docs:
        raise ValueError(f"k must satisfy 2 <= k <= n_docs={n_docs}, got {k}")
    perm = np.random.default_rng(seed).permutation(n_docs)
    masks = np.zeros((k, n_docs), bool)
    for f, part in enumerate(np.array_split(perm, k)):
        masks[f, part] = True
    return masks


def select_clauses(probs: np.ndarray, n_clauses: int, threshold: float = 0.2) -> list[int]:
    """Indices of the first `n_clauses` clauses with probability > threshold (empty if none passes, as
    SPACES: the summary of such a document is then empty and scores 0)."""
    if n_clauses < 0:
        raise ValueError(f"n_clauses must be >= 0, got {n_clauses}")
    return np.flatnonzero(np.asarray(probs)[:n_clauses] > threshold).tolist()


def encode_clauses(clauses_per_doc: Sequence[Sequence[str]], vocab: Vocab, max_clauses: int,
                   max_clause_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids int32 [D, N, L] (clauses longer than L keep their first L tokens) and mask bool [D, N]."""
    ids = np.full((len(clauses_per_doc), max_clauses, max_clause_len), vocab.pad_id, np.int32)
    mask = np.zeros((len(clauses_per_doc), max_clauses), bool)
    for d, clauses in enumerate(clauses_per_doc):
        if len(clauses) > max_clauses:
            raise ValueError(f"document {d} has {len(clauses)} clauses > max_clauses={max_clauses}")
        for n, c in enumerate(clauses):
            toks = vocab.encode(c)[:max_clause_len] or [vocab.unk_id]
            ids[d, n, :len(toks)] = toks
            mask[d, n] = True
    return ids, mask


def unilm_clause_vectors(model: UniLM, clause_ids: jax.Array | np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Frozen BERT clause vectors: masked mean of the last layer over each clause (SPACES).

    clause_ids int [M, L] ([CLS] clause [SEP], padded with pad_id) -> float32 [M, H]; plain bidirectional
    attention within the clause. Runs jitted in batches of `batch_size` (the last one padded).
    """
    from shared.data import map_fixed_batches
    from shared.unilm import padding_mask

    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, ids):
        m = nnx.merge(graphdef, state)
        valid = ids != m.config.pad_id
        h = m.encode(ids, jnp.zeros_like(ids), mask=padding_mask(valid), valid=valid)
        return masked_mean(h.astype(jnp.float32), valid)

    return map_fixed_batches(lambda ids: run(state, ids), (np.asarray(clause_ids),), batch_size)
