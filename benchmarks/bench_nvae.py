"""Times full NVAE training steps (forward, balanced KL, spectral + BN terms, backward, Adamax), fp32.

python benchmarks/bench_nvae.py --config tiny_mnist|mnist --batch 8 --steps 10
Prints one JSON line (step_s_mean, step_s_median, compile_s, peak_rss_mb) and appends it to
benchmarks/results/nvae.jsonl. The step is `nvae_jax.train.build`'s jitted step (β from the step counter).
The PyTorch peer (--peer-src, NVlabs/NVAE) is not implemented yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import resource
import statistics
import time

import jax
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny_mnist", choices=["tiny_mnist", "mnist"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    from nvae_jax import configs, train

    cfg = dataclasses.replace({"tiny_mnist": configs.TINY_MNIST, "mnist": configs.MNIST}[args.config],
                              batch_size=args.batch)
    _, state, step = train.build(cfg, 1000)
    rng = np.random.default_rng(0)
    batch = {"image": (rng.random((args.batch, 32, 32, 1)) > 0.5).astype(np.float32)}
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t)
    rec = {"bench": "nvae", "config": args.config, "batch": args.batch, "steps": args.steps,
           "step_s_mean": statistics.mean(times), "step_s_median": statistics.median(times),
           "compile_s": compile_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "backend": jax.default_backend(), "device": str(jax.devices()[0])}
    line = json.dumps(rec)
    print(line)
    out = pathlib.Path(__file__).parent / "results" / "nvae.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
