"""SPACES performance claims: (1) copy-constrained top-k beam search costs <= 1.3x unconstrained beam
search at 256 new tokens; (2) labelling 1,000 documents of 100 clauses takes < 30 s on CPU.

(1) Both run the same jitted `shared.decoding` while loop on a `spaces.generator.CopyGenerator`; ours
adds the copy head, the B/I/O constraint (O(S) carry update + scatter to the vocabulary) and top-k
(k = 10) via the logits processor. eos is never emitted (eos_id = -1), so every run decodes exactly
`max_new` tokens. (2) `spaces.labelling.extract_matching` over synthetic judgments with exactly 100
clauses and full-style summaries; the baseline is the same recursion scoring every pair with
rouge-score (timed on a subset, reported per document).

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
from spaces.labelling import extract_matching
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


def _reference(texts, summaries):
    """The recursion scoring every pair with rouge-score (the straightforward implementation)."""
    if not texts or not summaries:
        return []
    i = int(np.argmax([len(s) for s in summaries]))
    j = int(np.argmax([weighted_rouge(t, summaries[i], "char") for t in texts]))
    return _reference(texts[:j + 1], summaries[:i]) + [j] + _reference(texts[j:], summaries[i + 1:])


def bench_labelling(a):
    docs = synthetic_documents(a.docs, seed=0, min_clauses=100, max_clauses=100)
    pairs = [(document_clauses(d), split_clauses(d.summary, None)) for d in docs]
    assert all(len(c) == 100 for c, _ in pairs), "synthetic documents should have exactly 100 clauses"
    sub = pairs[:a.baseline_docs]
    ours, base = [], []
    for _ in range(a.runs):  # interleaved
        t0 = time.perf_counter()
        for c, s in pairs:
            extract_matching(c, s)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for c, s in sub:
            _reference(c, s)
        base.append((time.perf_counter() - t0) / len(sub) * len(pairs))
    med_ours, med_base = statistics.median(ours), statistics.median(base)
    return {"claim": "labelling 1,000 docs x 100 clauses < 30 s", "docs": a.docs, "clauses": 100,
            "summary_clauses_mean": float(np.mean([len(s) for _, s in pairs])), "ours_s": med_ours,
            "rouge_score_baseline_s_extrapolated": med_base, "speedup": med_base / med_ours,
            "passes": med_ours < 30.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small", choices=["small", *sorted(unilm.CONFIGS)])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--source", type=int, default=512)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--baseline-docs", type=int, default=10)
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
