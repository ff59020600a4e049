"""`kexue eval` and `kexue predict` for the SPACES runs, from what the run directory holds (`vocab.json`,
`checkpoints/extractor/`, `checkpoints/<variant>/`; `spaces/README.md`, "Run directory").

- predict (`--input DOC.json [--fold K] [--model VARIANT]`), as SPACES' own prediction script: one
  CAIL2020-format document (a JSON object; `summary` may be absent) or a JSON-lines file of them. Each
  document is cut into clauses, extracted by fold K's extractor (default 0) at `config.threshold`, and
  its extracted text summarised by the generator VARIANT (default: the run's first, SPACES' sparse
  softmax with copy) with beam search, under the copy constraint when it was trained with the copy loss.
  One JSON object per document: id, the extracted clause indices and text, the summary.
- eval: the pipeline's score again on the run's test documents (re-read and re-labelled as the run did):
  oracle extraction, extract only (the folds' mean probability, as the run), and every generator with
  each of its decodings, ROUGE on jieba words and characters (`spaces.stages.score`).

The full preset's extractor reads frozen-BERT clause vectors and its generator starts from that BERT's
shape, so with `config.checkpoint_dir` both commands also need the BERT directory.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import numpy as np

from shared.overrides import UsageError
from shared.use import RunDir, restore_model, write_outputs
from spaces.configs import PipelineConfig, Variant
from spaces.data import Document, document_clauses, parse_record
from spaces.labelling import oracle_text

__all__ = ["read_documents", "predict_run", "evaluate_run"]


def read_documents(path: str | pathlib.Path) -> list[Document]:
    """The documents of `--input`: one JSON object, or JSON lines of them, in CAIL2020's format
    (`{"id", "text": [{"sentence", "label"}], "summary"}`, the summary optional).

    Raises UsageError naming the file, the line and the field of the first malformed document.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise UsageError(f"--input {path}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"--input {path}: not UTF-8 text (byte {error.start})") from None
    if not text.strip():
        raise UsageError(f"--input {path}: no document in it")
    records: list[tuple[str, Any]] = []
    bad_line = None
    for number, line in enumerate(text.splitlines(), 1):  # JSON lines (a one-line document among them)
        if line.strip():
            try:
                records.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as error:
                bad_line = bad_line or (number, error.msg)
    if bad_line is not None:
        try:
            records = [(str(path), json.loads(text))]  # one document over several lines
        except json.JSONDecodeError:
            raise UsageError(f"{path}:{bad_line[0]}: not a JSON object ({bad_line[1]})") from None
    documents = []
    for where, record in records:
        if isinstance(record, dict) and "summary" not in record:
            record = {**record, "summary": ""}  # a document to summarise need not carry its summary
        try:
            documents.append(parse_record(record, where, allow_empty_summary=True))
        except ValueError as error:
            raise UsageError(str(error)) from None
    return documents


def _vocabularies(run: RunDir):
    from spaces.stages.label import VOCAB_FILE, load_vocabularies

    if not (run.path / VOCAB_FILE).is_file():
        raise UsageError(f"{run.path} has no {VOCAB_FILE} (the vocabularies kexue run writes; runs from before "
                         "it was written cannot be used)")
    return load_vocabularies(run.path / VOCAB_FILE)


def _variant(run: RunDir) -> Variant:
    variants = run.config.generators()
    if not variants:
        raise UsageError(f"{run.path}: the run trained no generator (config.variants is empty)")
    if run.model is None:
        return variants[0]
    for variant in variants:
        if variant.name == run.model:
            return variant
    raise UsageError(f"--model {run.model!r}: the run trained the generators {', '.join(v.name for v in variants)}")


def _clause_inputs(config: PipelineConfig, char_vocab, clauses: list[list[str]], max_clauses: int):
    """(extractor inputs, clause mask): token ids [D, N, L], or frozen-BERT clause vectors with `checkpoint_dir`."""
    from spaces.extractor import encode_clauses

    ids, mask = encode_clauses(clauses, char_vocab, max_clauses, config.clause_len)
    if not config.checkpoint_dir:
        return ids, mask
    from spaces.stages.extract import clause_vectors

    return clause_vectors(config, char_vocab, ids, mask), mask


def _probabilities(run: RunDir, char_vocab, inputs: np.ndarray, mask: np.ndarray, fold: int | None) -> np.ndarray:
    """Clause probabilities [D, N]: fold `fold`'s extractor, or the folds' mean (None)."""
    from spaces.stages.extract import fold_probabilities, restore_extractor

    vector_dim = None if np.issubdtype(inputs.dtype, np.integer) else inputs.shape[-1]
    try:
        graphdef, state, _ = restore_extractor(run.path, run.config, fold=fold, vocab_size=len(char_vocab),
                                               vector_dim=vector_dim)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None
    except (ValueError, TypeError) as error:  # Orbax: the saved arrays do not fit this config's extractor
        raise UsageError(f"the extractor checkpoint of {run.path} does not fit this config "
                         f"({str(error).strip().splitlines()[0][:300]})") from None
    if fold is not None:
        state = jax.tree.map(lambda x: x[None], state)  # fold_probabilities maps over a fold axis
    return fold_probabilities(graphdef, state, inputs, mask).mean(0)


def _summaries(run: RunDir, vocab, char_vocab, variant: Variant, sources: list[str]) -> dict[str, list[str]]:
    """{decoding label: summaries of `sources`} for each decoding of the restored generator `variant`."""
    from spaces.stages.generate import build_generator, decode_summaries, make_generator_trainer

    config = run.config
    sparse_k = config.sparse_k_of(variant)
    trainer = make_generator_trainer(config, build_generator(config, vocab, config.seed, char_vocab),
                                     sparse_k=sparse_k, copy_weight=config.copy_weight_of(variant))
    state = restore_model(trainer, run, variant.name)
    weights = (state.ema, state.model_state)
    return {variant.label(use_copy): decode_summaries(trainer.graphdef, weights, vocab, sources, config,
                                                      use_copy=use_copy, top_k=sparse_k)
            for use_copy in variant.decodings()}


def predict_run(run: RunDir) -> dict:
    """Extracts and summarises new documents (see the module docstring); {"predictions": [per document]}."""
    if run.options.get("texts"):
        raise UsageError("kexue predict spaces.* reads documents from --input DOC.json, not from arguments")
    if run.options.get("input") is None:
        raise UsageError("kexue predict spaces.* needs --input DOC.json (one CAIL2020 document or JSON lines)")
    documents = read_documents(run.options["input"])
    config = run.config
    fold = int(run.options.get("fold") or 0)
    if not 0 <= fold < config.folds:
        raise UsageError(f"--fold {fold}: the run trained folds 0 to {config.folds - 1}")
    variant = _variant(run)
    char_vocab, vocab = _vocabularies(run)
    clauses = [document_clauses(d, config.max_clauses) for d in documents]
    inputs, mask = _clause_inputs(config, char_vocab, clauses, max(len(c) for c in clauses))
    probs = _probabilities(run, char_vocab, inputs, mask, fold)
    from spaces.extractor import select_clauses

    extracted = [select_clauses(probs[d], len(c), config.threshold) for d, c in enumerate(clauses)]
    texts = [oracle_text(c, e) for c, e in zip(clauses, extracted, strict=True)]
    decoding = variant.label(variant.copy)  # the copy constraint when the generator learnt it
    summaries = _summaries(run, vocab, char_vocab, variant, texts)[decoding]
    return {"predictions": [{"id": d.id, "extracted": e, "extracted_text": t, "summary": s, "fold": fold,
                             "generator": decoding}
                            for d, e, t, s in zip(documents, extracted, texts, summaries, strict=True)]}


def evaluate_run(run: RunDir) -> dict:
    """The pipeline's scores on the run's test documents (see the module docstring); writes eval.json, eval.md."""
    from spaces.extractor import select_clauses
    from spaces.stages.label import label_corpus
    from spaces.stages.score import HEADER, system_scores, table_row

    config = run.config
    char_vocab, vocab = _vocabularies(run)
    try:
        corpus = label_corpus(config)
    except ValueError as error:
        raise UsageError(f"the run's documents cannot be read again: {str(error).splitlines()[0]}") from None
    if corpus.vocab.tokens != vocab.tokens:
        raise UsageError(f"the documents of config.data_dir give another vocabulary than {run.path}'s vocab.json: "
                         "they changed since the run")
    n_tr, clauses = corpus.n_train, corpus.clauses
    inputs, mask = _clause_inputs(config, char_vocab, clauses[n_tr:], max(len(c) for c in clauses))
    probs = _probabilities(run, char_vocab, inputs, mask, None)
    test = range(len(corpus.test_docs))
    refs = [d.summary for d in corpus.test_docs]
    systems = {"oracle extraction": [oracle_text(clauses[n_tr + d], corpus.chosen[n_tr + d]) for d in test],
               "extract only": [oracle_text(clauses[n_tr + d], select_clauses(probs[d], len(clauses[n_tr + d]),
                                                                               config.threshold)) for d in test]}
    for variant in config.generators():
        for label, hyps in _summaries(run, vocab, char_vocab, variant, systems["extract only"]).items():
            systems[f"extract + generate: {label}"] = hyps
    scores = {name: system_scores(hyps, refs, config) for name, hyps in systems.items()}
    rows = [table_row(name, s) for name, s in scores.items()]
    table = "\n".join(["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
                      + ["| " + " | ".join([r[0], *(f"{v:.4f}" for v in r[1:])]) + " |" for r in rows])
    metrics = {"rows": [[r[0], *map(float, r[1:])] for r in rows], "scores": scores,
               "num_test_documents": len(refs)}
    write_outputs(run, "eval", metrics, [
        f"# {run.experiment}: evaluation of {run.path} ({len(refs)} test documents)", table,
        "ROUGE F on jieba words (score = 0.2·R1 + 0.4·R2 + 0.4·RL) and, last column, on characters. Published: "
        "SPACES placed first in CAIL2020 summarisation; the post's ablation numbers were not obtained, so no "
        "published column."])
    return metrics
