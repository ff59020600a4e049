"""The SPACES pipeline end to end: labels -> k-fold extractor -> generator -> decoding -> ROUGE.

`run_pipeline(config, ctx)` is the run function of `spaces.synthetic_pipeline` (embedded documents,
tiny models from scratch) and `spaces.cail2020` (real files, pretrained checkpoint). Training loops are
plain jitted `shared.train.make_step`s: the k extractor folds are vmapped into one step; each
generator step also updates the EMA of the weights. Batches are drawn from `(seed, step)`, so a run
resumed from a checkpoint (`--resume`, generator only) sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import pathlib
import random
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shared.experiment import RunContext
from shared.train import TrainState
from spaces.configs import PipelineConfig
from spaces.data import Document, document_clauses, load_cail2020, split_clauses
from spaces.labelling import extract_matching, oracle_text

__all__ = ["GeneratorState", "run_pipeline", "label_documents", "train_extractor", "train_generator",
           "decode_summaries"]


class GeneratorState(TrainState):
    """The harness's `TrainState` plus `ema`, the exponential moving average of `params` that decoding
    uses (updated inside the jitted step, checkpointed and resumed with the rest)."""

    ema: Any


def _batch_indices(seed: int, step: int, n: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, step]).choice(n, size=min(size, n), replace=False)


def label_documents(docs: list[Document], max_clauses: int,
                    scorer: str = "spaces") -> tuple[list[list[str]], list[list[int]]]:
    """Clauses of every document and the indices chosen by the greedy alignment (scored by `scorer`)."""
    clauses = [document_clauses(d, max_clauses) for d in docs]
    chosen = [extract_matching(c, split_clauses(d.summary, None), scorer) for c, d in zip(clauses, docs)]
    return clauses, chosen


# ------------------------------------------------------------------------------------------ extractor
def train_extractor(config: PipelineConfig, inputs: np.ndarray, clause_mask: np.ndarray, labels: np.ndarray,
                    fold_masks: np.ndarray, ctx: RunContext | None = None,
                    vocab_size: int | None = None) -> tuple[Callable[..., Any], list[dict]]:
    """Trains `folds` extractors at once (vmapped step); returns (predict, history).

    inputs: clause token ids int [D, N, L] (trainable encoder, needs `vocab_size`) or precomputed clause
    vectors float [D, N, H]. predict(inputs, clause_mask) -> probabilities [folds, D, N] from every fold.
    """
    from shared import train
    from spaces.extractor import Extractor, extraction_loss

    k = fold_masks.shape[0]
    key = "clause_ids" if inputs.ndim == 3 and np.issubdtype(inputs.dtype, np.integer) else "vectors"

    def make(f):
        kw = dict(vocab_size=vocab_size, encoder_dim=config.encoder_dim) if key == "clause_ids" else dict(
            vector_dim=inputs.shape[-1])
        return Extractor(**kw, dim=config.extractor_dim, dropout=config.extractor_dropout,
                         rngs=nnx.Rngs(config.seed * 1000 + f))

    tx = optax.adam(config.extractor_lr)
    pairs = [train.create_train_state(make(f), tx, jax.random.PRNGKey(config.seed * 1000 + f)) for f in range(k)]
    graphdef = pairs[0][0]
    state = jax.tree.map(lambda *x: jnp.stack(x), *[s for _, s in pairs])
    step = train.make_step(train.nnx_loss(graphdef, extraction_loss), tx)
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

    @jax.jit
    def probs(params, rest, ids, mask):
        def one(p, r):
            return jax.nn.sigmoid(nnx.merge(graphdef, p, r)({key: ids, "clause_mask": mask}))
        return jax.vmap(one)(params, rest)

    def predict(ids, mask, chunk: int = 64):
        cast = np.float32 if key == "vectors" else np.int32
        out = [np.asarray(probs(state.params, state.model_state, np.asarray(ids[s:s + chunk], cast), mask[s:s + chunk]))
               for s in range(0, len(ids), chunk)]
        return np.concatenate(out, axis=1)

    return predict, history


# ------------------------------------------------------------------------------------------ generator
def build_generator(config: PipelineConfig, vocab, seed: int, char_vocab=None):
    """A `CopyGenerator` from scratch or from `config.checkpoint_dir` (HF BERT directory).

    With a word-level `vocab` over the checkpoint's `char_vocab`, the word embeddings start as the mean
    of their characters' (`init_word_embeddings`) and the MLM bias of new words at 0.
    """

    from shared import unilm
    from spaces.generator import CopyGenerator
    from spaces.vocab import init_word_embeddings

    max_len = config.max_source + config.max_target + 3
    if config.checkpoint_dir:
        from shared.hf_bert import load_hf_bert

        lm, _ = load_hf_bert(config.checkpoint_dir, relative_position=config.relative_position)
        if not config.relative_position and max_len > lm.config.max_position:
            raise ValueError(f"max_source + max_target + 3 = {max_len} exceeds the checkpoint's max_position "
                             f"{lm.config.max_position}; set relative_position=True or shorten the source")
        if len(vocab) > lm.config.vocab_size:
            table = init_word_embeddings(np.asarray(lm.word.embedding[...]), char_vocab, vocab)
            lm.word = nnx.Embed(len(vocab), lm.config.hidden, rngs=nnx.Rngs(seed))
            lm.word.embedding.value = jnp.asarray(table)
            bias = np.asarray(lm.mlm_bias[...])
            lm.mlm_bias = nnx.Param(jnp.asarray(np.concatenate([bias, np.zeros(len(vocab) - len(bias), bias.dtype)])))
            lm.config = dataclasses.replace(lm.config, vocab_size=len(vocab))
    else:
        lm = unilm.create(unilm.TINY, vocab_size=len(vocab), hidden=config.hidden, layers=config.layers,
                          heads=config.heads, intermediate=config.intermediate, max_position=max_len,
                          relative_position=config.relative_position, dropout=0.0, seed=seed)
    return CopyGenerator(lm, rngs=nnx.Rngs(seed + 1))


def train_generator(config: PipelineConfig, model, arrays: dict[str, np.ndarray], *, sparse_k: int,
                    copy_weight: float, name: str, ctx: RunContext | None = None):
    """Trains a generator through `shared.trainer` (data-parallel mesh, batches indexed by step, checkpoints
    under `ctx.checkpoint_dir / name`, exact `--resume`); returns (graphdef, EMA weights to decode with,
    history).

    arrays: "ids" int [N, 2, T] and "source_len" [N, 2] (`spaces.generator_data.encode_generator_examples`);
    every draw goes through `make_train_transform` (SPACES: oracle or extracted input, noise, copy labels on
    the noised source), so each epoch draws anew; global batches of `config.generator_batch` (a fresh
    permutation every epoch). The state is a `GeneratorState`: each step also updates the EMA.
    """
    from shared import data, train
    from shared.trainer import Loop, Trainer, check_global_batch
    from spaces.generator import ema_update, generator_loss
    from spaces.generator_data import make_train_transform

    check_global_batch(config.generator_batch, "generator_batch")
    schedule = train.warmup_cosine(config.generator_lr, config.warmup_steps, config.generator_steps,
                                   end_fraction=0.05)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    loss = generator_loss(sparse_k=sparse_k, copy_weight=copy_weight)

    def with_ema(step):
        def step_with_ema(state, batch):
            state, metrics = step(state, batch)
            t = state.step.astype(jnp.float32)
            decay = jnp.minimum(config.ema, (1.0 + t) / (10.0 + t))  # EMA warm-up for short runs
            return state.replace(ema=ema_update(state.ema, state.params, decay)), metrics

        return step_with_ema

    def add_ema(state: TrainState) -> GeneratorState:
        return GeneratorState(**{f.name: getattr(state, f.name) for f in dataclasses.fields(state)}, ema=state.params)

    trainer = Trainer(model, tx, loss, seed=config.seed, learning_rate=schedule, wrap_step=with_ema,
                      extend_state=add_ema)
    loop = Loop(num_steps=config.generator_steps, batch_size=config.generator_batch, seed=config.seed + 1,
                log_every=min(50, config.generator_steps), checkpoint_every=config.checkpoint_every,
                batch_field="generator_batch")
    source = data.ArraySource({k: arrays[k] for k in ("ids", "source_len")})
    draw = make_train_transform(pad_id=model.lm.config.pad_id, noise=config.noise,
                                oracle_fraction=config.oracle_fraction)
    state, history = trainer.fit(source, loop, ctx=ctx, name=name, config=config, desc=name, random_transform=draw)
    assert isinstance(state, GeneratorState)  # extend_state=add_ema
    return trainer.graphdef, (state.ema, state.model_state), history


def decode_summaries(graphdef, weights, vocab, sources: list[str], config: PipelineConfig, *, use_copy: bool,
                     top_k: int) -> list[str]:
    """Beam search (`config.beam_size`) for every source text; returns the decoded summaries."""
    from shared.train import map_fixed_batches
    from spaces.copy_decoding import make_generate
    from spaces.generator import encode_pairs

    run = make_generate(graphdef, beam_size=config.beam_size, max_new=config.max_target + 1, eos_id=vocab.sep_id,
                        use_copy=use_copy, top_k=top_k)

    if not sources:
        return []
    enc = encode_pairs(vocab, sources, None, config.max_source, 0)
    tokens = map_fixed_batches(lambda ids, lens: run(tuple(weights), ids, lens).tokens[:, 0],
                               (enc["ids"], enc["source_len"]), config.decode_batch)
    return [vocab.decode(t) for t in tokens]


# ------------------------------------------------------------------------------------------ the run
def _load(config: PipelineConfig) -> tuple[list[Document], list[Document]]:
    if config.data_dir:
        docs = load_cail2020(pathlib.Path(config.data_dir) / "train.jsonl")
        rng = random.Random(config.seed)
        rng.shuffle(docs)
        return docs[config.n_test:config.n_test + config.n_train], docs[:config.n_test]
    from spaces.synthetic import synthetic_documents

    docs = synthetic_documents(config.n_train + config.n_test, config.seed, summary_style="short")
    return docs[:config.n_train], docs[config.n_train:]


def run_pipeline(config: PipelineConfig, ctx: RunContext) -> dict:
    """Oracle, extract-only and extract-then-generate (per variant, with / without copy decoding)."""
    from spaces.extractor import encode_clauses, kfold_masks, select_clauses
    from spaces.generator_data import encode_generator_examples
    from spaces.metrics import corpus_rouge, describe
    from spaces.vocab import Vocab

    t0 = time.perf_counter()
    timings = {}
    train_docs, test_docs = _load(config)
    docs = train_docs + test_docs
    clauses, chosen = label_documents(docs, config.max_clauses, config.scorer)
    user_dict = config.user_dict or None

    def score(hyps, unit):
        return corpus_rouge(hyps, refs, unit, config.scorer, user_dict)

    timings["labelling_s"] = time.perf_counter() - t0
    refs = [d.summary for d in test_docs]
    n_tr = len(train_docs)

    if config.checkpoint_dir:
        from shared.hf_bert import read_vocab

        char_vocab = Vocab(read_vocab(pathlib.Path(config.checkpoint_dir) / "vocab.txt"))
    else:
        char_vocab = Vocab.build([d.text for d in train_docs] + [d.summary for d in train_docs])
    vocab = char_vocab
    if config.word_vocab:
        vocab = char_vocab.with_words([d.summary for d in train_docs] + [d.text for d in train_docs],
                                      user_dict=user_dict)
    n_max = max(len(c) for c in clauses)
    ids, mask = encode_clauses(clauses, char_vocab, n_max, config.clause_len)
    labels = np.zeros(mask.shape, np.float32)
    for d, ch in enumerate(chosen):
        labels[d, ch] = 1.0
    if config.checkpoint_dir:  # frozen BERT clause vectors (float16 to hold 9,484 x 256 x 768 in memory)
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
        inputs = vectors
        del bert
    else:
        inputs = ids

    # extractor: k folds over the training documents, out-of-fold predictions for them, mean for test
    t = time.perf_counter()
    folds = kfold_masks(n_tr, config.folds, config.seed)
    predict, ext_history = train_extractor(config, inputs[:n_tr], mask[:n_tr], labels[:n_tr], folds, ctx,
                                           vocab_size=len(char_vocab))
    probs = predict(inputs, mask)  # [k, D, N]
    fold_of = folds.argmax(0)
    oof = probs[fold_of, np.arange(n_tr)]
    test_probs = probs[:, n_tr:].mean(0)
    extracted = [select_clauses(oof[d], len(clauses[d]), config.threshold) for d in range(n_tr)]
    extracted += [select_clauses(test_probs[d], len(clauses[n_tr + d]), config.threshold)
                  for d in range(len(test_docs))]
    timings["extractor_s"] = time.perf_counter() - t
    tp = fp = fn = 0
    for d in range(n_tr, len(docs)):
        a, b = set(extracted[d]), set(chosen[d])
        tp, fp, fn = tp + len(a & b), fp + len(a - b), fn + len(b - a)
    ext_f1 = 2 * tp / max(1, 2 * tp + fp + fn)

    oracle_texts = [oracle_text(clauses[n_tr + d], chosen[n_tr + d]) for d in range(len(test_docs))]
    extract_texts = [oracle_text(clauses[n_tr + d], extracted[n_tr + d]) for d in range(len(test_docs))]
    rows, metrics = [], {}
    for name, hyps in (("oracle extraction", oracle_texts), ("extract only", extract_texts)):
        w, c = score(hyps, "word"), score(hyps, "char")
        rows.append([name, w["rouge-1"], w["rouge-2"], w["rouge-l"], w["weighted"], c["weighted"]])
        metrics[name.replace(" ", "_")] = {"word": w, "char": c}

    # generator inputs: the out-of-fold extraction and the oracle clauses, one drawn at every draw (SPACES)
    arrays = encode_generator_examples(vocab, [oracle_text(clauses[d], extracted[d]) for d in range(n_tr)],
                                       [oracle_text(clauses[d], chosen[d]) for d in range(n_tr)],
                                       [d.summary for d in train_docs], config.max_source, config.max_target)
    examples = {"reference": refs[:config.examples], "extract only": extract_texts[:config.examples]}
    for variant in config.variants:
        softmax, _, copy = variant.partition("-")
        sparse_k = config.sparse_k if softmax == "sparse" else 0
        copy_weight = config.copy_weight if copy == "copy" else 0.0
        t = time.perf_counter()
        model = build_generator(config, vocab, config.seed, char_vocab)
        graphdef, weights, history = train_generator(config, model, arrays, sparse_k=sparse_k,
                                                     copy_weight=copy_weight, name=variant, ctx=ctx)
        timings[f"train_{variant}_s"] = time.perf_counter() - t
        metrics[f"history_{variant}"] = history
        for use_copy in ((True, False) if copy == "copy" else (False,)):
            t = time.perf_counter()
            hyps = decode_summaries(graphdef, weights, vocab, extract_texts, config, use_copy=use_copy,
                                    top_k=sparse_k)
            label = f"{softmax} softmax, {'copy decoding' if use_copy else 'no copy constraint'}" + (
                "" if copy == "copy" else " (no copy loss)")
            timings[f"decode_{variant}_{use_copy}_s"] = time.perf_counter() - t
            w, c = score(hyps, "word"), score(hyps, "char")
            rows.append([f"extract + generate: {label}", w["rouge-1"], w["rouge-2"], w["rouge-l"], w["weighted"],
                         c["weighted"]])
            metrics[label] = {"word": w, "char": c}
            examples[label] = hyps[:config.examples]
    wall = time.perf_counter() - t0

    source = f"CAIL2020 files in {config.data_dir}" if config.data_dir else "embedded synthetic judgments"
    ctx.report.text(
        f"SPACES (kexue 8046) end to end on {source}: "
        f"{n_tr} training and {len(test_docs)} test documents ({np.mean([len(c) for c in clauses]):.0f} clauses on "
        f"average). Labels: greedy monotone clause alignment (character-level 0.2·R1 + 0.4·R2 + 0.4·RL). "
        f"Every score here, the labels' included, is computed by {describe(config.scorer, user_dict)}. "
        f"Extractor: {config.folds}-fold DGCNN ({config.extractor_steps} steps, all folds vmapped in one step) on a "
        f"small trainable clause encoder; threshold {config.threshold}; test-set clause F1 against the labels "
        f"{ext_f1:.3f}. Generator: UniLM ({config.layers} layers, hidden {config.hidden}, vocabulary {len(vocab)}) "
        f"with a copy head, {config.generator_steps} steps, input noise {config.noise}, EMA {config.ema}, "
        f"beam {config.beam_size}; each time a document is drawn its input is the oracle clauses with "
        f"probability {config.oracle_fraction}, else the out-of-fold extraction.")
    ctx.report.section(f"Results (test documents; ROUGE F on jieba words, last column on characters; "
                       f"scorer: {config.scorer})")
    ctx.report.table(["system", "R1", "R2", "RL", "score (0.2/0.4/0.4)", "char score"], rows)
    ctx.report.text("Published: SPACES placed first in CAIL2020 summarisation by a small margin; the post's "
                    "ablation numbers (copy, sparse softmax) were not obtained here, so no published column.")
    ctx.report.section("Example summaries")
    ctx.report.table(["system"] + [f"document {i}" for i in range(len(refs[:config.examples]))],
                     [[k] + list(v) for k, v in examples.items()])
    ctx.report.text("Wall times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
                    + f"; total {wall:.1f}.")
    return {"rows": [[r[0], *map(float, r[1:])] for r in rows], "extractor_clause_f1": ext_f1,
            "extractor_history": ext_history, **metrics, "timings": timings, "wall_time_s": wall,
            "vocab_size": len(vocab), "scorer": describe(config.scorer, user_dict)}
