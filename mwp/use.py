"""`kexue eval` and `kexue predict` for the solver's runs (as the Ape210K baseline's prediction script).

Both experiments: `mwp.synthetic_solver` (character vocabulary, number slots) and `mwp.ape210k` (BERT
UniLM, WordPiece vocabulary; the run directory holds `vocab/vocab.txt` and `unilm_config.json`, so
neither command needs the BERT checkpoint directory; the best epoch's checkpoint on valid is restored).
- eval: answer accuracy on valid and test at every beam of the run's config (the report's numbers again;
  for Ape210K beside the post's).
- predict: questions from the command line, or a JSON-lines file with Ape210K's fields (`original_text`,
  optional `id`), decoded in one batch with the KV-cached beam search at the largest configured beam.
  One JSON object per problem: the generated expression, its exact value from the safe evaluator, and
  the answer as the baseline's submission formats it (`mwp.format_answer`). An expression that does not
  evaluate is reported as such for its problem and never stops the batch.
"""

from __future__ import annotations

import functools
import json
import pathlib

from mwp.expressions import ExpressionError, safe_eval
from mwp.solver import VOCAB_FILE, beam_accuracies, encode_sources, make_decoder, synthetic_splits, synthetic_trainer
from mwp.submission import format_answer
from mwp.tokenizer import CharTokenizer, fill_slots, number_slots
from shared.overrides import UsageError
from shared.use import RunDir, restore_model, write_outputs

__all__ = ["MAX_QUESTION_CHARS", "evaluate_run", "predict_run", "evaluate_ape210k", "predict_ape210k",
           "read_questions"]

MAX_QUESTION_CHARS = 2_000  # a word problem is a paragraph; Ape210K's longest question is far shorter


def _restored(run: RunDir):
    path = run.path / VOCAB_FILE
    if not path.is_file():
        raise UsageError(f"{run.path} has no {VOCAB_FILE} (the tokeniser's vocabulary that kexue run writes)")
    tok = CharTokenizer(path.read_text(encoding="utf-8").splitlines(), run.config.expression_tokens)
    trainer = synthetic_trainer(run.config, tok)
    return trainer, restore_model(trainer, run), tok


def _restored_ape210k(run: RunDir):
    """(trainer, the best epoch's state, tokenizer) from the run directory's own vocabulary and UniLM config."""
    from flax import nnx

    from mwp.ape210k import MODEL_FILE, VOCAB_FILE as APE_VOCAB, make_trainer
    from mwp.tokenizer import WordPieceTokenizer
    from shared import unilm

    for name in (APE_VOCAB, MODEL_FILE):
        if not (run.path / name).is_file():
            raise UsageError(f"{run.path} has no {name} (kexue run mwp.ape210k writes it; runs from before it "
                             "was written cannot be used)")
    try:
        model_config = unilm.UniLMConfig(**json.loads((run.path / MODEL_FILE).read_text()))
        tok = WordPieceTokenizer(run.path / APE_VOCAB, expression_tokens=run.config.expression_tokens)
    except (ValueError, TypeError) as error:
        raise UsageError(f"{run.path}: {error}") from None
    trainer = make_trainer(run.config, unilm.UniLM(model_config, rngs=nnx.Rngs(0)))
    return trainer, restore_model(trainer, run, best_metric="valid_beam1"), tok


def evaluate_run(run: RunDir) -> dict:
    """Answer accuracy at each beam on the run's valid and test problems; writes eval.json and eval.md."""
    trainer, state, tok = _restored(run)
    results, _ = beam_accuracies(trainer.graphdef, state, synthetic_splits(run.config), tok, run.config)
    metrics = {**results, "step": int(state.step)}
    lines = [f"# {run.experiment}: evaluation of {run.path} at step {int(state.step)}"]
    lines += [f"beam {b}: valid {results[f'valid_beam{b}']:.4f}, test {results[f'test_beam{b}']:.4f}"
              for b in run.config.beams]
    lines.append("Goal: >= 0.90 test answer accuracy (synthetic data; the post's Ape210K numbers are in "
                 "mwp/README.md).")
    write_outputs(run, "eval", metrics, lines)
    return metrics


def evaluate_ape210k(run: RunDir) -> dict:
    """Answer accuracy at each beam on the run's Ape210K valid and test files (`config.data_dir`), beside
    the post's; writes eval.json and eval.md."""
    from mwp.ape210k import PUBLISHED, load_splits
    from mwp.solver import answer_accuracy

    config = run.config
    trainer, state, tok = _restored_ape210k(run)
    try:
        splits, _ = load_splits(config)
    except ValueError as error:
        raise UsageError(f"config.data_dir: {error}") from None
    results: dict = {}
    rows = ["| beam | valid % | valid % (post) | test % | test % (post) |", "|---|---|---|---|---|"]
    for beam in config.beams:
        fn = functools.partial(make_decoder(trainer.graphdef, beam, config.max_target + 1, tok.sep_id),
                               state.params, state.model_state)
        for split in ("valid", "test"):
            results[f"{split}_beam{beam}"] = answer_accuracy(fn, splits[split], tok, config.max_source,
                                                             config.eval_batch_size)[0]
        post = PUBLISHED.get((config.size, beam), ("—", "—"))
        rows.append(f"| {beam} | {100 * results[f'valid_beam{beam}']:.2f} | {post[0]} | "
                    f"{100 * results[f'test_beam{beam}']:.2f} | {post[1]} |")
    metrics = {**results, "step": int(state.step)}
    write_outputs(run, "eval", metrics, [
        f"# {run.experiment} ({config.size}): evaluation of {run.path} at step {int(state.step)} (best on valid)",
        "\n".join(rows), "Answer accuracy; the post: kexue.fm 2020-10-19."])
    return metrics


def read_questions(texts: list[str], input_file: str | None) -> list[dict]:
    """[{"id", "question"}] from command-line texts and/or a JSON-lines file of Ape210K records.

    Raises UsageError naming the problem: an empty question, one over `MAX_QUESTION_CHARS` characters,
    an unreadable file, a line that is not a JSON object with `original_text`.
    """
    problems = [{"id": str(i), "question": t} for i, t in enumerate(texts)]
    if input_file is not None:
        path = pathlib.Path(input_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--input {path}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                question = record["original_text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UsageError(f"{path}, line {number}: not a JSON object with an 'original_text' field") from None
            problems.append({"id": str(record.get("id", f"{path.name}:{number}")), "question": question})
    if not problems:
        raise UsageError("no question: give questions as arguments or --input FILE.jsonl")
    for p in problems:
        if not isinstance(p["question"], str) or not p["question"].strip():
            raise UsageError(f"question {p['id']} is empty")
        if len(p["question"]) > MAX_QUESTION_CHARS:
            raise UsageError(f"question {p['id']} has {len(p['question']):,} characters; a word problem has at most "
                             f"{MAX_QUESTION_CHARS:,}")
    return problems


def _solve(trainer, state, tok, config, problems: list[dict], slots: bool) -> list[dict]:
    """Decodes every problem in one batch at the largest beam; one output dict per problem."""
    slotted = [number_slots(p["question"], "") if slots else (p["question"], "", []) for p in problems]
    source, lengths = encode_sources([{"question": q} for q, _, _ in slotted], tok, config.max_source)
    beam = max(config.beams)
    decode = functools.partial(make_decoder(trainer.graphdef, beam, config.max_target + 1, tok.sep_id),
                               state.params, state.model_state)
    tokens = decode(source, lengths)  # one batch: every problem at once
    predictions = []
    for problem, (_, _, numbers), row in zip(problems, slotted, tokens, strict=True):
        expression = tok.decode_expression(row)
        out = {"id": problem["id"], "question": problem["question"], "expression": expression, "beam": beam}
        try:
            value = safe_eval(fill_slots(expression, numbers))
            out.update(value=str(value), answer=format_answer(value, problem["question"]))
        except ExpressionError as error:
            out.update(value=None, answer=None, error=f"the expression does not evaluate: {error}")
        predictions.append(out)
    return predictions


def predict_run(run: RunDir) -> dict:
    """Solves new problems (see the module docstring); returns {"predictions": [one dict per problem]}."""
    problems = read_questions(run.options.get("texts", []), run.options.get("input"))
    trainer, state, tok = _restored(run)
    return {"predictions": _solve(trainer, state, tok, run.config, problems, run.config.number_slots),
            "step": int(state.step)}


def predict_ape210k(run: RunDir) -> dict:
    """Solves new problems with an Ape210K run's best epoch (no number slots, as its training)."""
    problems = read_questions(run.options.get("texts", []), run.options.get("input"))
    trainer, state, tok = _restored_ape210k(run)
    return {"predictions": _solve(trainer, state, tok, run.config, problems, slots=False), "step": int(state.step)}
