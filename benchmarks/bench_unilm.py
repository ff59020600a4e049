"""Training-step throughput and MFU of the UniLM seq2seq step (BERT-base, length 192, bf16 on a GPU).

Step = `shared.train.make_step(nnx_loss(seq2seq_loss), adam)` jitted; batch of random tokens with
half source / half target segments.  Model FLOPs per step (no rematerialisation counted):
  6 * N_matmul * tokens + 3 * (4 * layers * T^2 * hidden) * batch + 6 * tokens * hidden * vocab
(N_matmul = non-embedding matmul params; the second term is QK^T and AV; the last the tied MLM decoder).
MFU = FLOPs / step time / peak.  Peak defaults to 989e12 (H100 SXM dense bf16) on GPU; on CPU pass
--peak-tflops or MFU is not reported.

  python benchmarks/bench_unilm.py --size base --length 192 --batch 32 --dtype bfloat16   # GPU
  python benchmarks/bench_unilm.py --size tiny --length 64 --batch 8                        # CPU smoke
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shared import train, unilm


def model_flops(c: unilm.UniLMConfig, batch: int, length: int) -> float:
    tokens = batch * length
    per_layer = 4 * c.hidden * c.hidden + 2 * c.hidden * c.intermediate
    n_matmul = c.layers * per_layer + c.hidden * c.hidden  # + MLM transform
    attn = 4 * c.layers * length * length * c.hidden * batch
    return 6.0 * n_matmul * tokens + 3.0 * attn + 6.0 * tokens * c.hidden * c.vocab_size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="base", choices=sorted(unilm.CONFIGS))
    ap.add_argument("--length", type=int, default=192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps-per-run", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--machine", default="2-core CPU sandbox, shared with other jobs")
    a = ap.parse_args()
    c = dataclasses.replace(unilm.CONFIGS[a.size], dtype=a.dtype, dropout=0.1)
    model = unilm.UniLM(c, rngs=nnx.Rngs(0))
    tx = optax.adam(2e-5)
    graphdef, state = train.create_train_state(model, tx, jax.random.PRNGKey(0))
    step = jax.jit(train.make_step(train.nnx_loss(graphdef, unilm.seq2seq_loss), tx))
    ids = jax.random.randint(jax.random.PRNGKey(1), (a.batch, a.length), 5, c.vocab_size)
    seg = jnp.broadcast_to((jnp.arange(a.length) >= a.length // 2).astype(jnp.int32)[None], ids.shape)
    batch = {"ids": ids, "segments": seg}
    t0 = time.perf_counter()
    state, m = jax.block_until_ready(step(state, batch))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        for _ in range(a.steps_per_run):
            state, m = step(state, batch)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / a.steps_per_run)
    med = statistics.median(times)
    flops = model_flops(c, a.batch, a.length)
    peak = a.peak_tflops * 1e12 if a.peak_tflops else (989e12 if jax.default_backend() == "gpu" else None)
    rec = dict(bench="unilm_train_step", size=a.size, length=a.length, batch=a.batch, dtype=a.dtype,
               backend=jax.default_backend(), device=str(jax.devices()[0].device_kind), machine=a.machine,
               compile_s=compile_s, step_s=med, examples_per_s=a.batch / med, tokens_per_s=a.batch * a.length / med,
               model_tflops_per_step=flops / 1e12, achieved_tflops=flops / med / 1e12,
               mfu=None if peak is None else flops / med / peak, loss=float(m["loss"]))
    print(json.dumps(rec, indent=1))
    out = pathlib.Path(__file__).parent / "results" / "unilm.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
