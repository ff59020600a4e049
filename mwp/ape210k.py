"""mwp.ape210k: the post's recipe on the real Ape210K files (UniLM fine-tuning, best epoch on valid).

Data: `<data_dir>/{train,valid,test}.ape.json` (JSON lines, see `mwp.data`).  Model: `shared.unilm.UniLM`.
`size="base"`/`"large"` load the HF BERT checkpoint directory `checkpoint_dir` (config.json, vocab.txt,
model.safetensors) through `shared.hf_bert`; with `simplified_vocab` the vocabulary is cut to the tokens
whose characters occur in the data (plus specials and "[unused1]", the `**` alias), slicing the word
embeddings and the MLM bias (the baseline's `keep_tokens`).  `size="tiny"` trains the `tiny` UniLM from
scratch with the checkpoint's vocab.txt (a smoke test of the pipeline).  Tokeniser: WordPiece from the
(possibly simplified) vocabulary.  Adam (learning rate 2e-5 in the post), bf16 compute option, the best
epoch on valid (greedy answer accuracy) is kept and decoded with beam 1/2/3. Training runs through
`shared.trainer` as one run over all epochs, with the best epoch's checkpoint kept beside the newest.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import shutil
import time

import optax

from mwp.configs import Ape210kConfig
from mwp.data import load_ape210k
from mwp.solver import answer_accuracy, encode, make_decoder, prepare_problems
from shared.experiment import RunContext

# answer accuracy (%) of the post, valid / test
PUBLISHED = {("base", 1): (71.67, 71.65), ("base", 2): (71.81, 72.27), ("base", 3): (71.85, 72.35),
             ("large", 1): (74.51, 74.43), ("large", 2): (74.97, 74.99), ("large", 3): (75.04, 75.01)}
EXPRESSION_CHARS = frozenset("0123456789.+-*/()")
VOCAB_FILE = "vocab/vocab.txt"  # in the run directory: the tokeniser's vocabulary (simplified or the checkpoint's)
MODEL_FILE = "unilm_config.json"  # in the run directory: the UniLM's dimensions (eval/predict need no checkpoint_dir)


def load_splits(config) -> tuple[dict, dict]:
    """{split: prepared problems (no number slots)}, {split: load summary} for train/valid/test of data_dir."""
    root = pathlib.Path(config.data_dir)
    splits, summaries = {}, {}
    for split in ("train", "valid", "test"):
        path = root / f"{split}.ape.json"
        records, summary = load_ape210k(path, on_error="skip", limit=config.limit or None)
        splits[split], summaries[split] = prepare_problems(records, number_slot=False), summary
    return splits, summaries


def build_model(config, splits: dict, vocab_dir: str | pathlib.Path):
    """(model, tokenizer, info) for `config.size`.

    base/large: `shared.hf_bert.load_hf_bert` from `config.checkpoint_dir`; with `config.simplified_vocab`
    the vocabulary is simplified to the characters of `splits` (the new vocab.txt is written to
    `vocab_dir`, and the tokenizer reads it).  tiny: `shared.unilm.create("tiny")` with the full vocab.
    info: {"source", "vocab_size", "kept_token_ids" (None = all), "missing"}.
    """
    from mwp.tokenizer import WordPieceTokenizer
    from shared import hf_bert, unilm

    ckpt = pathlib.Path(config.checkpoint_dir)
    vocab_path = ckpt / "vocab.txt"
    if not vocab_path.is_file():
        raise ValueError(f"config.checkpoint_dir: no vocab.txt in {ckpt}")
    dtype = "bfloat16" if config.bf16 else "float32"
    length = config.max_source + config.max_target + 3
    if config.size == "tiny":
        tok = WordPieceTokenizer(vocab_path, expression_tokens=config.expression_tokens)
        model = unilm.create("tiny", seed=config.seed, vocab_size=tok.vocab_size, max_position=length, dtype=dtype)
        return model, tok, {"source": "random init (tiny)", "vocab_size": tok.vocab_size, "kept_token_ids": None,
                            "missing": []}
    keep = None
    if config.simplified_vocab:
        chars = set(EXPRESSION_CHARS)
        for problems in splits.values():
            for p in problems:
                chars.update(p["question"])
                chars.update(p["question"].lower())
        vocab, keep = hf_bert.simplified_vocab(hf_bert.read_vocab(vocab_path), chars,
                                               startswith=(*hf_bert.SPECIAL_TOKENS, "[unused1]"))
        vocab_dir = pathlib.Path(vocab_dir)
        vocab_dir.mkdir(parents=True, exist_ok=True)
        vocab_path = vocab_dir / "vocab.txt"
        vocab_path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    model, info = hf_bert.load_hf_bert(ckpt, keep_tokens=keep, dtype=dtype, seed=config.seed)
    if model.config.max_position < length:
        raise ValueError(f"config.max_source + max_target + 3 = {length} exceeds the checkpoint's "
                         f"max_position_embeddings={model.config.max_position}")
    tok = WordPieceTokenizer(vocab_path, expression_tokens=config.expression_tokens)
    if tok.vocab_size != model.config.vocab_size:
        raise ValueError(f"{vocab_path} has {tok.vocab_size} tokens but the checkpoint has "
                         f"{model.config.vocab_size} embedding rows")
    return model, tok, {"source": str(ckpt), "vocab_size": tok.vocab_size, "kept_token_ids": keep,
                        "missing": info["missing"]}


def save_model_files(out_dir: str | pathlib.Path, model, vocab: pathlib.Path | None) -> None:
    """Writes `MODEL_FILE` into the run directory, and copies `vocab` (the checkpoint's vocab.txt) to
    `VOCAB_FILE` (None: `build_model` already wrote the simplified vocabulary there)."""
    out_dir = pathlib.Path(out_dir)
    if vocab is not None:
        (out_dir / VOCAB_FILE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vocab, out_dir / VOCAB_FILE)
    (out_dir / MODEL_FILE).write_text(json.dumps(dataclasses.asdict(model.config), indent=2))


def make_trainer(config: Ape210kConfig, model):
    """The run's `shared.trainer.Trainer`: Adam at `config.learning_rate` on the UniLM seq2seq loss."""
    from shared import unilm
    from shared.trainer import Trainer

    return Trainer(model, optax.adam(config.learning_rate), unilm.seq2seq_loss, seed=config.seed,
                   learning_rate=config.learning_rate)


def run_ape210k(config: Ape210kConfig, ctx: RunContext) -> dict:
    """Fine-tunes on train, keeps the best epoch on valid (beam 1), reports beam 1/2/3 valid/test."""
    from shared import data
    from shared.trainer import Loop

    t0 = time.perf_counter()
    splits, summaries = load_splits(config)
    model, tok, init = build_model(config, splits, pathlib.Path(ctx.out_dir) / "vocab")
    arrays = encode(splits["train"], tok, config.max_source, config.max_target)
    steps_per_epoch = max(len(splits["train"]) // config.batch_size, 1)
    save_model_files(ctx.out_dir, model, None if init["kept_token_ids"] is not None
                     else pathlib.Path(config.checkpoint_dir) / "vocab.txt")
    trainer = make_trainer(config, model)
    graphdef = trainer.graphdef
    greedy = make_decoder(graphdef, 1, config.max_target + 1, tok.sep_id)

    def valid_accuracy(state) -> dict[str, float]:
        fn = functools.partial(greedy, state.params, state.model_state)
        return {"valid_beam1": answer_accuracy(fn, splits["valid"], tok, config.max_source, config.eval_batch_size)[0]}

    # one run over every epoch (the data position follows from the step), evaluated at each epoch's end;
    # the best epoch's checkpoint is kept beside the newest, so it survives an interruption
    loop = Loop(num_steps=config.epochs * steps_per_epoch, batch_size=config.batch_size, seed=config.seed,
                log_every=min(config.log_every, steps_per_epoch), checkpoint_every=config.checkpoint_every,
                eval_every=steps_per_epoch, best_metric="valid_beam1")
    _, history = trainer.fit(data.ArraySource(arrays), loop, ctx=ctx, evaluate=valid_accuracy, config=config,
                             desc="ape210k")
    best_state, best_step = trainer.best_state, trainer.best_step
    assert best_state is not None and best_step is not None  # best_metric keeps the best epoch's checkpoint
    best_epoch = best_step // steps_per_epoch
    epochs = [{"epoch": h["step"] // steps_per_epoch, "valid_beam1": h["eval_valid_beam1"], "loss": h.get("loss")}
              for h in history if "eval_valid_beam1" in h]

    results, rows = {}, []
    for beam in config.beams:
        decode = greedy if beam == 1 else make_decoder(graphdef, beam, config.max_target + 1, tok.sep_id)
        fn = functools.partial(decode, best_state.params, best_state.model_state)
        for split in ("valid", "test"):
            results[f"{split}_beam{beam}"] = answer_accuracy(fn, splits[split], tok, config.max_source,
                                                             config.eval_batch_size)[0]
        pub = PUBLISHED.get((config.size, beam), (None, None))
        rows.append([f"{config.size} beam {beam}", 100 * results[f"valid_beam{beam}"], pub[0],
                     100 * results[f"test_beam{beam}"], pub[1]])
    ctx.report.text(f"UniLM fine-tuning on Ape210K ({config.size}; Adam {config.learning_rate}, batch "
                    f"{config.batch_size}, {config.epochs} epochs, best epoch on valid). Kept problems: "
                    + ", ".join(f"{s} {summaries[s]['kept']} (dropped {summaries[s]['dropped']})" for s in summaries))
    ctx.report.table(["model", "valid (ours)", "valid (post)", "test (ours)", "test (post)"], rows,
                     caption="Answer accuracy (%); the post: kexue.fm 2020-10-19.")
    ctx.report.text(f"Initial weights: {init['source']} (vocabulary {init['vocab_size']} tokens"
                    + (", simplified from the checkpoint's" if init["kept_token_ids"] is not None else "")
                    + (f"; left at random init: {init['missing']}" if init["missing"] else "") + ").")
    init_info = {k: v for k, v in init.items() if k != "kept_token_ids"}
    return {**results, "best_epoch": best_epoch, "init": init_info, "history": epochs, "data": summaries,
            "wall_time_s": time.perf_counter() - t0, "steps_per_epoch": steps_per_epoch}
