"""SPACES performance claims: (1) copy-constrained top-k beam search costs <= 1.3x unconstrained beam
search at 256 new tokens; (2) labelling a 100-clause document with the SPACES scorer takes < 50 ms on CPU.

(1) Both run the same jitted `shared.decoding` while loop on a `spaces.generator.CopyGenerator`; ours
adds the copy head, the B/I/O constraint (O(S) carry update + scatter to the vocabulary) and top-k
(k = 10) via the logits processor. eos is never emitted (eos_id = -1), so every run decodes exactly
`max_new` tokens. (2) `spaces.labelling.extract_matching` over synthetic judgments with exactly 100
clauses and full-style summaries, with the SPACES scorer (backend "spaces", the default) and with the
previous one (backend "rouge-score"), interleaved; the baseline is SPACES' own recursion scoring every
pair with the `rouge` 1.0.0 package (timed on a subset, reported per document; skipped if `rouge` is
not installed).

  python benchmarks/bench_spaces.py                          # hidden 256, 4 layers, source 512, 256 new
  python benchmarks/bench_spaces.py --size base --source 512 # BERT-base on a GPU
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared import unilm
from spaces.copy_decoding import generate
from spaces.data import document_clauses, split_clauses
from spaces.generator import CopyGenerator
from spaces.labelling import extract_matching, oracle_text
from spaces.metrics import weighted_rouge
from spaces.synthetic import synthetic_documents


def bench_decoding(a):
    if a.size == "small":
        c = dataclasses.replace(unilm.TINY, vocab_size=8000, hidden=256, layers=4, heads=4, intermediate=1024)
    else:
        c = unilm.CONFIGS[a.size]
    c = dataclasses.replace(c, dropout=0.0, max_position=max(512, a.source + a.max_new))
    model = CopyGenerator(unilm.UniLM(c, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    graphdef, state = nnx.split(model)
    src = jax.random.randint(jax.random.PRNGKey(1), (a.batch, a.source), 5, c.vocab_size)
    src = src.at[:, 0].set(2).at[:, -1].set(3)
    src_len = jnp.full((a.batch,), a.source)

    def make(use_copy, top_k):
        @jax.jit
        def gen(state, src, src_len):
            return generate(nnx.merge(graphdef, state), src, src_len, beam_size=a.beam, max_new=a.max_new,
                            eos_id=-1, use_copy=use_copy, top_k=top_k).tokens
        return gen

    fns = {"copy_topk": make(True, 10), "unconstrained": make(False, 0)}
    compile_s, times = {}, {k: [] for k in fns}
    for k, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(state, src, src_len))
        compile_s[k] = time.perf_counter() - t0
    for _ in range(a.runs):  # interleaved
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(state, src, src_len))
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"claim": "copy-constrained beam <= 1.3x unconstrained", "size": a.size, "batch": a.batch,
            "beam": a.beam, "source": a.source, "max_new": a.max_new, "median_s": med,
            "compile_s": compile_s, "ratio": med["copy_topk"] / med["unconstrained"],
            "tokens_per_s": {k: a.batch * a.beam * a.max_new / v for k, v in med.items()}}


def _spaces_reference(texts, summaries, rouge, start=0):
    """bojone/SPACES `extract_matching` (source indices), scoring every pair with the rouge 1.0.0 package."""
    if not texts or not summaries:
        return []

    def score(h, r):
        try:
            s = rouge.get_scores(hyps=" ".join(h), refs=" ".join(r))[0]
        except ValueError:
            return 0.0
        return s["rouge-1"]["f"] * 0.2 + s["rouge-2"]["f"] * 0.4 + s["rouge-l"]["f"] * 0.4

    i = int(np.argmax([len(s) for s in summaries]))
    j = int(np.argmax([score(t, summaries[i]) for t in texts]))
    return (_spaces_reference(texts[:j + 1], summaries[:i], rouge, start) + [start + j]
            + _spaces_reference(texts[j:], summaries[i + 1:], rouge, start + j))


def bench_labelling(a):
    docs = synthetic_documents(a.docs, seed=0, min_clauses=100, max_clauses=100, summary_style="full")
    pairs = [(document_clauses(d), split_clauses(d.summary, None)) for d in docs]
    assert all(len(c) == 100 for c, _ in pairs), "synthetic documents should have exactly 100 clauses"
    times = {"spaces": [], "rouge-score": []}
    for _ in range(a.runs):  # interleaved
        for backend in times:
            t0 = time.perf_counter()
            for c, s in pairs:
                extract_matching(c, s, backend)
            times[backend].append((time.perf_counter() - t0) / len(pairs))
    med = {k: statistics.median(v) for k, v in times.items()}
    # one whole-summary score (the evaluation): the extracted oracle against the reference summary
    texts = [(oracle_text(c, extract_matching(c, s)), d.summary) for (c, s), d in zip(pairs[:50], docs)]
    pair_ms = {}
    for unit in ("char", "word"):
        for backend in ("spaces", "rouge-score"):
            weighted_rouge(*texts[0], unit, backend)  # warm-up: jieba's dictionary, rouge-score's import
            runs = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                for h, r in texts:
                    weighted_rouge(h, r, unit, backend)
                runs.append((time.perf_counter() - t0) / len(texts))
            pair_ms[f"{unit}/{backend}"] = 1e3 * statistics.median(runs)
    out = {"claim": "labelling a 100-clause document with the SPACES scorer < 50 ms", "docs": a.docs,
           "clauses": 100, "summary_clauses_mean": float(np.mean([len(s) for _, s in pairs])),
           "ms_per_doc": {k: 1e3 * v for k, v in med.items()}, "spaces_over_rouge_score": med["spaces"] /
           med["rouge-score"], "passes": med["spaces"] < 0.05, "summary_score_ms": pair_ms}
    try:
        from rouge import Rouge
    except ImportError:
        return out
    sub = pairs[:a.baseline_docs]
    t0 = time.perf_counter()
    same = [sorted(set(_spaces_reference(c, s, Rouge()))) == extract_matching(c, s) for c, s in sub]
    base = (time.perf_counter() - t0) / len(sub)
    return {**out, "rouge_1_0_0_recursion_ms_per_doc": 1e3 * base, "speedup_vs_rouge_1_0_0": base / med["spaces"],
            "labels_equal_to_rouge_1_0_0_recursion": f"{sum(same)}/{len(same)}"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small", choices=["small", *sorted(unilm.CONFIGS)])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--source", type=int, default=512)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--baseline-docs", type=int, default=5)
    ap.add_argument("--skip", choices=["decoding", "labelling"], default=None)
    ap.add_argument("--machine", default="2-core CPU sandbox, shared with other jobs")
    a = ap.parse_args()
    out = pathlib.Path(__file__).parent / "results" / "spaces.jsonl"
    out.parent.mkdir(exist_ok=True)
    for name, fn in (("labelling", bench_labelling), ("decoding", bench_decoding)):
        if a.skip == name:
            continue
        r = {"bench": name, **fn(a), "machine": a.machine, "backend": jax.default_backend(),
             "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        print(json.dumps(r))
        with out.open("a") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
