"""KV-cached beam search vs recomputing the whole sequence every step (the baseline's decoder).

Both go through the same jitted `shared.decoding.beam_search`; only the step function differs
(`unilm_generate(use_cache=True|False)`).  eos is never emitted (eos_id = -1), so exactly `max_new`
tokens are produced per beam.  tokens/s counts generated tokens (batch x beams x max_new).

  python benchmarks/bench_decoding.py                       # base size, beam 3, prefix 192, 64 new
  python benchmarks/bench_decoding.py --max-new 8 --runs 5  # what fits a 2-core CPU
"""

import argparse
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from shared import decoding, unilm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="base", choices=sorted(unilm.CONFIGS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--prefix", type=int, default=192)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--machine", default="2-core CPU sandbox, shared with other jobs")
    a = ap.parse_args()
    c = dataclasses_replace(unilm.CONFIGS[a.size], dropout=0.0, dtype=a.dtype,
                            max_position=max(512, a.prefix + a.max_new))
    model = unilm.UniLM(c, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    src = jax.random.randint(jax.random.PRNGKey(1), (a.batch, a.prefix), 5, c.vocab_size)
    src_len = jnp.full((a.batch,), a.prefix)

    def make(use_cache):
        @jax.jit
        def gen(state, src, src_len):
            m = nnx.merge(graphdef, state)
            return decoding.unilm_generate(m, src, src_len, beam_size=a.beam, max_new=a.max_new, eos_id=-1,
                                           use_cache=use_cache).tokens
        return gen

    fns = {"cached": make(True), "recompute": make(False)}
    compile_s, times = {}, {k: [] for k in fns}
    outs = {}
    for k, f in fns.items():
        t0 = time.perf_counter()
        outs[k] = jax.block_until_ready(f(state, src, src_len))
        compile_s[k] = time.perf_counter() - t0
    same = bool((outs["cached"] == outs["recompute"]).all())
    for _ in range(a.runs):  # interleaved
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(state, src, src_len))
            times[k].append(time.perf_counter() - t0)
    n_tok = a.batch * a.beam * a.max_new
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: n_tok / med[k] for k in med}
    ratio = tps["cached"] / tps["recompute"]
    rec = dict(bench="decoding", size=a.size, batch=a.batch, beam=a.beam, prefix=a.prefix, max_new=a.max_new,
               dtype=a.dtype, runs=a.runs, backend=jax.default_backend(), machine=a.machine,
               first_call_s=compile_s, median_s=med, tokens_per_s=tps, speedup=ratio, identical_tokens=same)
    print(json.dumps(rec, indent=1))
    print(f"cached {tps['cached']:.1f} tok/s vs recompute {tps['recompute']:.1f} tok/s: {ratio:.1f}x "
          f"(identical outputs: {same})")
    out = pathlib.Path(__file__).parent / "results" / "decoding.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


def dataclasses_replace(c, **kw):
    import dataclasses
    return dataclasses.replace(c, **kw)


if __name__ == "__main__":
    main()
