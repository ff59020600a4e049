"""Training and evaluating the seq2seq solver: encoding problems, the answer-accuracy evaluation, the
synthetic-solver experiment.

Evaluation decodes an expression per problem, puts the numbers back (`fill_slots`), evaluates it with
`safe_eval` and compares with the gold value by the 6-decimal rule (`answers_equal`). A prediction
that is not a valid expression counts as wrong; nothing in evaluation can raise on model output.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mwp.configs import SyntheticConfig
from mwp.expressions import ExpressionError, answers_equal, normalize_problem
from mwp.tokenizer import CharTokenizer, fill_slots, number_slots
from shared.experiment import RunContext


def prepare_problems(records: Sequence[dict], number_slot: bool) -> list[dict]:
    """Normalised problems -> {"question", "equation", "numbers", "value", ...} (slots applied if asked)."""
    out = []
    for r in records:
        n = r if "value" in r else normalize_problem(r)
        q, e, numbers = (number_slots(n["question"], n["equation"]) if number_slot
                         else (n["question"], n["equation"], []))
        out.append({**r, "question": q, "equation": e, "numbers": numbers, "value": n["value"]})
    return out


def encode(problems: Sequence[dict], tokenizer, max_source: int, max_target: int) -> dict[str, np.ndarray]:
    """Training arrays: ids, segments int32 [N, max_source + max_target + 3] (zero padded)."""
    t = max_source + max_target + 3
    ids = np.zeros((len(problems), t), np.int32)
    segs = np.zeros((len(problems), t), np.int32)
    for i, p in enumerate(problems):
        x, s = tokenizer.encode_pair(p["question"], p["equation"], max_source, max_target)
        ids[i, :len(x)], segs[i, :len(s)] = x, s
        segs[i, len(s):] = 1  # padding counts as target (masked as a key anyway)
    return {"ids": ids, "segments": segs}


def encode_sources(problems: Sequence[dict], tokenizer, max_source: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoder inputs: `[CLS] q [SEP]` int32 [N, max_source + 2] and their lengths int32 [N]."""
    src = np.zeros((len(problems), max_source + 2), np.int32)
    lens = np.zeros((len(problems),), np.int32)
    for i, p in enumerate(problems):
        x, _ = tokenizer.encode_pair(p["question"], None, max_source, 0)
        src[i, :len(x)], lens[i] = x, len(x)
    return src, lens


def is_correct(prediction: str, problem: dict) -> bool:
    """Whether a decoded expression (slots allowed) evaluates to the problem's gold value; never raises."""
    try:
        expr = fill_slots(prediction, problem.get("numbers", []))
    except ExpressionError:
        return False
    return answers_equal(expr, problem["value"])


def answer_accuracy(decode_fn, problems: Sequence[dict], tokenizer, max_source: int, batch_size: int
                    ) -> tuple[float, list[str]]:
    """Decodes every problem with `decode_fn(source [B, S], lens [B]) -> tokens [B, L]` (fixed batch
    size, the last batch padded) and returns (answer accuracy, predictions)."""
    from shared.data import map_fixed_batches

    if not problems:
        return 0.0, []
    src, lens = encode_sources(problems, tokenizer, max_source)
    out = map_fixed_batches(decode_fn, (src, lens), batch_size)
    preds = [tokenizer.decode_expression(row) for row in out]
    correct = [is_correct(p, prob) for p, prob in zip(preds, problems)]
    return float(np.mean(correct)) if correct else 0.0, preds


def noisy_source_loss(noise: float, low: int, high: int):
    """`shared.unilm.seq2seq_loss` with source-token noise: each source id in [low, high) (ordinary
    characters) is replaced, with probability `noise`, by a uniform random id in [low, high) drawn from
    the step's rng.  The SPACES post uses the same kind of input noise (15% of input tokens) against
    exposure to fixed phrasings.  Returns `fn(model, batch, rng) -> (loss, aux)` for `nnx_loss`."""
    from shared.unilm import seq2seq_loss

    def loss(model, batch: dict, rng: jax.Array):
        ids, seg = batch["ids"], batch["segments"]
        k1, k2 = jax.random.split(jax.random.fold_in(rng, 1))
        eligible = (seg == 0) & (ids >= low) & (ids < high)
        flip = eligible & jax.random.bernoulli(k1, noise, ids.shape)
        random_ids = jax.random.randint(k2, ids.shape, low, high, dtype=ids.dtype)
        return seq2seq_loss(model, {**batch, "ids": jnp.where(flip, random_ids, ids)}, rng)

    return loss


def make_decoder(graphdef, beam: int, max_new: int, eos_id: int, *, drop_finished: bool = True):
    """A jitted `(params, rest, source [B, S], lens [B]) -> tokens [B, max_new]` of the best beam:
    `shared.decoding.unilm_generate` (KV-cached beam search, baseline scoring; beam 1 is greedy).

    `drop_finished=True` is the baseline's beam search (finished non-best beams are dropped and the
    beam shrinks); False keeps them (see `shared.decoding.beam_search`)."""
    from shared.decoding import unilm_generate

    @jax.jit
    def decode(params, rest, source, lens):
        model = nnx.merge(graphdef, params, rest)
        return unilm_generate(model, source, lens, beam_size=beam, max_new=max_new, eos_id=eos_id,
                              drop_finished=drop_finished).tokens[:, 0]

    return decode


def synthetic_splits(config) -> dict[str, list[dict]]:
    """The synthetic train / valid / test problems of `config` (a pure function of the config)."""
    from mwp import synthetic

    return {s: prepare_problems(synthetic.generate_split(s, n, seed=config.seed), config.number_slots)
            for s, n in (("train", config.train_size), ("valid", config.valid_size), ("test", config.test_size))}


def synthetic_trainer(config, tok):
    """The `shared.trainer.Trainer` of the synthetic solver: a tiny UniLM over `tok`'s vocabulary, Adam with
    warm-up + cosine, the seq2seq loss (with source noise when `config.input_noise > 0`)."""
    from shared import train, unilm
    from shared.trainer import Trainer

    model = unilm.create("tiny", seed=config.seed, vocab_size=tok.vocab_size, hidden=config.hidden,
                         layers=config.layers, heads=config.heads, intermediate=config.mlp,
                         max_position=config.max_source + config.max_target + 3, dropout=config.dropout)
    schedule = train.warmup_cosine(config.learning_rate, config.warmup_steps, config.num_steps)
    loss_fn = (noisy_source_loss(config.input_noise, tok.char_start, tok.vocab_size) if config.input_noise > 0
               else unilm.seq2seq_loss)
    return Trainer(model, optax.adam(schedule), loss_fn, seed=config.seed, learning_rate=schedule)


def beam_accuracies(graphdef, state, splits: dict, tok, config) -> tuple[dict[str, float], list]:
    """Answer accuracy on valid and test at every beam of `config.beams` (test also split by seen /
    held-out phrasing); returns (results, the first test examples decoded at the first beam)."""
    results, examples = {}, []
    for beam in config.beams:
        decode = make_decoder(graphdef, beam, config.max_target + 1, tok.sep_id)
        fn = functools.partial(decode, state.params, state.model_state)
        for split in ("valid", "test"):
            acc, preds = answer_accuracy(fn, splits[split], tok, config.max_source, config.eval_batch_size)
            results[f"{split}_beam{beam}"] = acc
            if split == "test":
                held = [is_correct(p, q) for p, q in zip(preds, splits["test"]) if q["held_out_phrasing"]]
                seen = [is_correct(p, q) for p, q in zip(preds, splits["test"]) if not q["held_out_phrasing"]]
                results[f"test_beam{beam}_heldout_phrasing"] = float(np.mean(held)) if held else 0.0
                results[f"test_beam{beam}_seen_phrasing"] = float(np.mean(seen)) if seen else 0.0
                if beam == config.beams[0]:
                    examples = [(q["original_text"], q["equation"], p, is_correct(p, q))
                                for p, q in list(zip(preds, splits["test"]))[:6]]
    return results, examples


VOCAB_FILE = "vocab.txt"  # the run directory's tokeniser vocabulary (one token per line), for kexue predict


def run_synthetic(config: SyntheticConfig, ctx: RunContext) -> dict:
    """mwp.synthetic_solver: tiny UniLM from scratch on synthetic Ape210K-format problems."""
    from mwp import synthetic
    from shared import data
    from shared.trainer import Loop

    t0 = time.perf_counter()
    splits = synthetic_splits(config)
    tok = CharTokenizer.build([p["question"] for p in splits["train"]], expression_tokens=config.expression_tokens,
                              equations=[p["equation"] for p in splits["train"]])
    if ctx.main_process:
        (ctx.out_dir / VOCAB_FILE).write_text("\n".join(tok.id_to_token) + "\n", encoding="utf-8")
    arrays = encode(splits["train"], tok, config.max_source, config.max_target)
    trainer = synthetic_trainer(config, tok)
    loop = Loop(num_steps=config.num_steps, batch_size=config.batch_size, seed=config.seed,
                log_every=config.log_every, checkpoint_every=config.checkpoint_every)
    t1 = time.perf_counter()
    state, history = trainer.fit(data.ArraySource(arrays), loop, ctx=ctx, config=config, desc="mwp_synthetic")
    train_time = time.perf_counter() - t1
    results, examples = beam_accuracies(trainer.graphdef, state, splits, tok, config)
    wall = time.perf_counter() - t0

    ctx.report.text(
        f"A {config.layers}-layer UniLM (hidden {config.hidden}, {config.heads} heads, character vocabulary of "
        f"{tok.vocab_size}) trained from scratch for {config.num_steps} steps (batch {config.batch_size}, Adam "
        f"{config.learning_rate}, warmup + cosine) on {config.train_size} synthetic problems of "
        f"{len(synthetic.FAMILIES)} families. Valid/test hold out the number range (upper 30%) and, for half of "
        f"their problems, one phrasing per family. Number slots: {config.number_slots}; input noise "
        f"{config.input_noise}. Answer accuracy: the "
        "decoded expression evaluated by `safe_eval` equals the gold answer to 6 decimals.")
    rows = [[f"beam {b}", results[f"valid_beam{b}"], results[f"test_beam{b}"],
             results[f"test_beam{b}_seen_phrasing"], results[f"test_beam{b}_heldout_phrasing"]]
            for b in config.beams]
    ctx.report.table(["decoding", "valid acc", "test acc", "test (seen phrasing)", "test (held-out phrasing)"],
                     rows)
    ctx.report.text("Goal: >= 0.90 test answer accuracy (synthetic data; the post's Ape210K numbers are in "
                    "`mwp.ape210k`). Training time "
                    f"{train_time:.1f} s, total wall time {wall:.1f} s.")
    ctx.report.table(["question", "gold", "predicted", "correct"], examples)
    return {**results, "train_time_s": train_time, "wall_time_s": wall, "vocab_size": tok.vocab_size,
            "final_loss": history[-1]["loss"] if history else None, "history": history}
