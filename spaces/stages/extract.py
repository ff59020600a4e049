"""Stage 2, extraction: a k-fold DGCNN extractor, out-of-fold extractions for the training documents.

The k fold models train together: `shared.train.make_step` vmapped over their stacked states, each
fold's own documents weighted 0 in its model, in one jitted step. Each training document is then
extracted by the fold model that never saw it, each test document by the mean of the k folds'
probabilities. All folds' final states are saved, stacked (fold f is index f of every leaf), under
`checkpoints/extractor/` of the run directory with the history; `--resume` restores them instead of
training again.

Why not `shared.trainer.Trainer`: it trains one state through one sharded step over epoch permutations
of a data source, while the k folds here are one vmapped program over k stacked states whose batches
weight each fold's held-out documents 0, drawn by `(seed, step)` without replacement
(`_batch_indices`). Neither fits its `Loop` without changing every number of the run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shared.experiment import RunContext
from shared.train import TrainState
from spaces.configs import PipelineConfig
from spaces.stages.label import Corpus

__all__ = ["Extraction", "run_extractor", "train_extractor", "init_extractors", "fold_probabilities",
           "restore_extractor", "clause_vectors", "EXTRACTOR_DIR"]

EXTRACTOR_DIR = "extractor"  # under the run's checkpoints/


@dataclasses.dataclass(frozen=True)
class Extraction:
    """The extractor's output.

    Attributes:
      extracted: per document (train then test) the extracted clause indices.
      clause_f1: test-set clause F1 of the extraction against the labels.
      history: `{"step", "loss", "accuracy"}` records (mean over folds) every 50 steps and at the end.
      seconds: wall time of the stage.
    """

    extracted: list[list[int]]
    clause_f1: float
    history: list[dict]
    seconds: float


def _batch_indices(seed: int, step: int, n: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, step]).choice(n, size=min(size, n), replace=False)


def _input_key(inputs: np.ndarray) -> str:
    """"clause_ids" for token ids [D, N, L] (trainable clause encoder), "vectors" for clause vectors [D, N, H]."""
    return "clause_ids" if inputs.ndim == 3 and np.issubdtype(inputs.dtype, np.integer) else "vectors"


def init_extractors(config: PipelineConfig, folds: int, *, vocab_size: int | None = None,
                    vector_dim: int | None = None) -> tuple[nnx.GraphDef, TrainState]:
    """The `folds` extractors' initial states stacked on a leading fold axis, and their graphdef.

    With `vocab_size` the extractor encodes clause token ids itself; with `vector_dim` it reads
    precomputed clause vectors of that width.
    """
    from shared import train
    from spaces.extractor import Extractor

    def make(f):
        kw: dict[str, Any] = (dict(vocab_size=vocab_size, encoder_dim=config.encoder_dim) if vector_dim is None
                              else dict(vector_dim=vector_dim))
        return Extractor(**kw, dim=config.extractor_dim, dropout=config.extractor_dropout,
                         rngs=nnx.Rngs(config.seed * 1000 + f))

    tx = optax.adam(config.extractor_lr)
    pairs = [train.create_train_state(make(f), tx, jax.random.PRNGKey(config.seed * 1000 + f)) for f in range(folds)]
    return pairs[0][0], jax.tree.map(lambda *x: jnp.stack(x), *[s for _, s in pairs])


def train_extractor(config: PipelineConfig, inputs: np.ndarray, clause_mask: np.ndarray, labels: np.ndarray,
                    fold_masks: np.ndarray, ctx: RunContext | None = None,
                    vocab_size: int | None = None) -> tuple[nnx.GraphDef, TrainState, list[dict]]:
    """Trains `folds` extractors at once (vmapped step); returns (graphdef, stacked final states, history).

    inputs: clause token ids int [D, N, L] (trainable encoder, needs `vocab_size`) or precomputed clause
    vectors float [D, N, H]; clause_mask bool [D, N]; labels [D, N]; fold_masks bool [folds, D] (True:
    the document belongs to that fold, so its model does not train on it).
    """
    from shared import train
    from spaces.extractor import extraction_loss

    key = _input_key(inputs)
    graphdef, state = init_extractors(config, fold_masks.shape[0], vocab_size=vocab_size,
                                      vector_dim=None if key == "clause_ids" else inputs.shape[-1])
    step = train.make_step(train.nnx_loss(graphdef, extraction_loss), optax.adam(config.extractor_lr))
    batch_axes = {key: None, "clause_mask": None, "labels": None, "weight": 0}
    vstep = jax.jit(jax.vmap(step, in_axes=(0, batch_axes)))
    history = []
    bar = ctx.progress(range(config.extractor_steps), desc="extractor") if ctx else range(config.extractor_steps)
    for i in bar:
        idx = _batch_indices(config.seed, i, len(inputs), config.extractor_batch)
        batch = {key: np.asarray(inputs[idx], np.float32 if key == "vectors" else np.int32),
                 "clause_mask": clause_mask[idx],
                 "labels": labels[idx].astype(np.float32), "weight": (~fold_masks[:, idx]).astype(np.float32)}
        state, metrics = vstep(state, batch)
        if (i + 1) % 50 == 0 or i + 1 == config.extractor_steps:
            history.append({"step": i + 1, "loss": float(metrics["loss"].mean()),
                            "accuracy": float(metrics["accuracy"].mean())})
    return graphdef, state, history


def fold_probabilities(graphdef: nnx.GraphDef, state: TrainState, inputs: np.ndarray, clause_mask: np.ndarray,
                       chunk: int = 64) -> np.ndarray:
    """Every fold's clause probabilities [folds, D, N] for inputs [D, N, L] (ids) or [D, N, H] (vectors)."""
    key = _input_key(inputs)
    cast = np.float32 if key == "vectors" else np.int32

    @jax.jit
    def probs(params, rest, ids, mask):
        def one(p, r):
            return jax.nn.sigmoid(nnx.merge(graphdef, p, r)({key: ids, "clause_mask": mask}))
        return jax.vmap(one)(params, rest)

    out = [np.asarray(probs(state.params, state.model_state, np.asarray(inputs[s:s + chunk], cast),
                            clause_mask[s:s + chunk]))
           for s in range(0, len(inputs), chunk)]
    return np.concatenate(out, axis=1)


def _checkpointer(directory: pathlib.Path):
    from shared.checkpoint import Checkpointer

    return Checkpointer(directory, keep=1, async_save=False)


def restore_extractor(run_dir: pathlib.Path | str, config: PipelineConfig, *, fold: int | None = None,
                      vocab_size: int | None = None,
                      vector_dim: int | None = None) -> tuple[nnx.GraphDef, TrainState, list[dict]]:
    """The saved extractor of a run: (graphdef, state, history), the state stacked over folds, or fold
    `fold`'s alone (its leaves without the fold axis). `vocab_size` / `vector_dim` as in `init_extractors`
    (the run's character vocabulary size for the trainable encoder). FileNotFoundError without one."""
    from shared.checkpoint import abstract_like

    directory = pathlib.Path(run_dir) / "checkpoints" / EXTRACTOR_DIR
    graphdef, state = init_extractors(config, config.folds, vocab_size=vocab_size, vector_dim=vector_dim)
    checkpointer = _checkpointer(directory)
    try:
        restored = checkpointer.restore(abstract_like(state, jax.tree.map(lambda x: x.sharding, state)))
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"no extractor checkpoint under {directory}")
    state = restored.state
    if fold is not None:
        if not 0 <= fold < config.folds:
            raise ValueError(f"fold {fold} is not one of the run's {config.folds} folds (0..{config.folds - 1})")
        state = jax.tree.map(lambda x: x[fold], state)
    return graphdef, state, list((restored.data_state or {}).get("history", []))


def clause_vectors(config: PipelineConfig, char_vocab, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Frozen BERT clause vectors [D, N, H] of clause ids [D, N, L] in `char_vocab` (the checkpoint's), from
    `config.checkpoint_dir` (float16 to hold 9,484 x 256 x 768 in memory)."""
    from shared.hf_bert import load_hf_bert
    from spaces.extractor import unilm_clause_vectors

    bert, _ = load_hf_bert(config.checkpoint_dir, relative_position=config.relative_position, dropout=0.0)
    flat = np.full((mask.sum(), config.clause_len + 2), char_vocab.pad_id, np.int32)
    rows = ids[mask]  # [M, L]
    lens = (rows != char_vocab.pad_id).sum(-1)
    flat[:, 0] = char_vocab.cls_id
    flat[:, 1:-1] = rows
    flat[np.arange(len(flat)), lens + 1] = char_vocab.sep_id
    vectors = np.zeros(mask.shape + (bert.config.hidden,), np.float16)
    vectors[mask] = unilm_clause_vectors(bert, flat).astype(np.float16)
    return vectors


def run_extractor(corpus: Corpus, config: PipelineConfig, ctx: RunContext | None = None) -> Extraction:
    """Trains (or, with `ctx.resume` and a saved extractor, restores) the k folds and extracts every document."""
    from spaces.extractor import encode_clauses, kfold_masks, select_clauses

    t = time.perf_counter()
    clauses, n_tr = corpus.clauses, corpus.n_train
    ids, mask = encode_clauses(clauses, corpus.char_vocab, max(len(c) for c in clauses), config.clause_len)
    labels = np.zeros(mask.shape, np.float32)
    for d, ch in enumerate(corpus.chosen):
        labels[d, ch] = 1.0
    inputs = clause_vectors(config, corpus.char_vocab, ids, mask) if config.checkpoint_dir else ids

    folds = kfold_masks(n_tr, config.folds, config.seed)
    vocab_size = len(corpus.char_vocab)
    restored = None
    if ctx is not None and ctx.resume and (ctx.checkpoint_dir / EXTRACTOR_DIR).exists():
        restored = restore_extractor(ctx.out_dir, config, vocab_size=vocab_size,
                                     vector_dim=None if _input_key(inputs) == "clause_ids" else inputs.shape[-1])
    if restored is not None:
        graphdef, state, history = restored
    else:
        graphdef, state, history = train_extractor(config, inputs[:n_tr], mask[:n_tr], labels[:n_tr], folds, ctx,
                                                   vocab_size=vocab_size)
        if ctx is not None:
            from shared.checkpoint import replicated_globally

            checkpointer = _checkpointer(ctx.checkpoint_dir / EXTRACTOR_DIR)
            try:
                # every process trained all k folds itself: saved as one replicated global state
                checkpointer.save(config.extractor_steps, replicated_globally(state), data_state={"history": history},
                                  config=config)
            finally:
                checkpointer.close()
    probs = fold_probabilities(graphdef, state, inputs, mask)  # [k, D, N]
    oof = probs[folds.argmax(0), np.arange(n_tr)]  # each training document from the fold that never saw it
    test_probs = probs[:, n_tr:].mean(0)
    extracted = [select_clauses(oof[d], len(clauses[d]), config.threshold) for d in range(n_tr)]
    extracted += [select_clauses(test_probs[d], len(clauses[n_tr + d]), config.threshold)
                  for d in range(len(corpus.test_docs))]
    tp = fp = fn = 0
    for d in range(n_tr, len(clauses)):
        a, b = set(extracted[d]), set(corpus.chosen[d])
        tp, fp, fn = tp + len(a & b), fp + len(a - b), fn + len(b - a)
    return Extraction(extracted, 2 * tp / max(1, 2 * tp + fp + fn), history, time.perf_counter() - t)
