"""Synthetic solver answer accuracy: finished beams kept vs dropped, equations digit by digit vs WordPiece.

Each variant (`expression_tokens` x number slots on/off; the quick preset otherwise, with max_target 20
when numbers are not slotted) is trained once by `mwp.solver.run_synthetic`, unchanged; the script
records the parameters, tokenizer and problems that run decodes with, then decodes valid and test with
`make_decoder(..., drop_finished=False)` and `(..., drop_finished=True)` for beams 1-3, and checks the
dropped numbers against the ones the run reported itself.  Answer accuracy is deterministic for a
given seed, so there is nothing to interleave; wall times are only indicative on a shared CPU.

  python benchmarks/bench_mwp_decoding.py                                # the four variants
  python benchmarks/bench_mwp_decoding.py --variants digits:slots wordpiece:slots
"""

import argparse
import dataclasses
import functools
import json
import pathlib
import tempfile
import time

import numpy as np

import mwp.solver as solver
from mwp.configs import SYNTHETIC_QUICK
from shared.experiment import RunContext
from shared.report import Report


def train_and_record(config):
    """Runs `run_synthetic(config)`; returns (its results, graphdef, params, rest, tokenizer, {split: problems})."""
    seen = {}
    make_decoder, answer_accuracy = solver.make_decoder, solver.answer_accuracy

    def recording_decoder(graphdef, *args, **kwargs):
        decode = make_decoder(graphdef, *args, **kwargs)

        def wrapped(params, rest, source, lens):
            seen.update(graphdef=graphdef, params=params, rest=rest)
            return decode(params, rest, source, lens)
        return wrapped

    def recording_accuracy(decode_fn, problems, tokenizer, *args, **kwargs):
        seen.setdefault("problems", []).append(problems)
        seen["tokenizer"] = tokenizer
        return answer_accuracy(decode_fn, problems, tokenizer, *args, **kwargs)

    solver.make_decoder, solver.answer_accuracy = recording_decoder, recording_accuracy
    try:
        with tempfile.TemporaryDirectory() as out:
            ctx = RunContext(out_dir=pathlib.Path(out), report=Report("bench", out))
            results = solver.run_synthetic(config, ctx)
            ctx.close()
    finally:
        solver.make_decoder, solver.answer_accuracy = make_decoder, answer_accuracy
    splits = {"valid": seen["problems"][0], "test": seen["problems"][1]}  # run_synthetic's order per beam
    return results, seen["graphdef"], seen["params"], seen["rest"], seen["tokenizer"], splits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["digits:slots", "wordpiece:slots", "digits:noslots",
                                                      "wordpiece:noslots"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--machine", default="2-core CPU sandbox, shared with other jobs")
    a = ap.parse_args()
    out = pathlib.Path(__file__).parent / "results" / "mwp_decoding.jsonl"
    out.parent.mkdir(exist_ok=True)
    for variant in a.variants:
        tokens, slots = variant.split(":")
        config = dataclasses.replace(SYNTHETIC_QUICK, seed=a.seed, expression_tokens=tokens,
                                     number_slots=slots == "slots",
                                     max_target=SYNTHETIC_QUICK.max_target if slots == "slots" else 20)
        t0 = time.perf_counter()
        results, graphdef, params, rest, tok, splits = train_and_record(config)
        train_s = time.perf_counter() - t0
        rec = dict(bench="mwp_decoding", variant=variant, seed=a.seed, vocab_size=tok.vocab_size,
                   run_wall_s=round(train_s, 1), machine=a.machine, accuracy={}, changed_predictions={})
        for beam in config.beams:
            preds = {}
            for drop in (False, True):
                decode = solver.make_decoder(graphdef, beam, config.max_target + 1, tok.sep_id, drop_finished=drop)
                fn = functools.partial(decode, params, rest)
                for split, problems in splits.items():
                    acc, p = solver.answer_accuracy(fn, problems, tok, config.max_source, config.eval_batch_size)
                    key = f"{split}_beam{beam}_{'drop' if drop else 'keep'}"
                    rec["accuracy"][key], preds[(split, drop)] = acc, p
                    if split == "test":
                        held = [solver.is_correct(q, r) for q, r in zip(p, problems) if r["held_out_phrasing"]]
                        rec["accuracy"][f"{key}_heldout_phrasing"] = float(np.mean(held))
                    if drop:  # the run decoded with the same (default) behaviour: same numbers
                        assert acc == results[f"{split}_beam{beam}"], (key, acc, results[f"{split}_beam{beam}"])
            for split in splits:
                rec["changed_predictions"][f"{split}_beam{beam}"] = sum(
                    x != y for x, y in zip(preds[(split, False)], preds[(split, True)]))
        print(json.dumps(rec), flush=True)
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
