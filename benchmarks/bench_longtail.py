"""The synthetic long-tail study as one jitted, vmapped program vs a Python loop over trials.

Both compute the same thing: every method of `longtail.synthetic` (5 fitted losses + post-hoc) on
`--trials` independent trials of 10k/10k points. "ours" is `jax.jit(jax.vmap(run_trial))` over the
trial keys; the baseline calls `jax.jit(run_trial)` once per trial from Python. Both are compiled
before timing (compile times reported separately); each repeat times one side then the other
(interleaved); the ratio of medians is the speed-up. The issue's target: 100 trials in < 30 s on
2 CPU cores.

    python benchmarks/bench_longtail.py [--trials 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import statistics
import time

import jax
import numpy as np

from longtail import synthetic
from longtail.configs import SYNTHETIC_FULL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--machine", default="2-core CPU sandbox, shared with other jobs")
    args = parser.parse_args()

    config = dataclasses.replace(SYNTHETIC_FULL, trials=args.trials)
    keys = synthetic.trial_keys(config)

    start = time.perf_counter()
    vmapped = synthetic.make_study(config).lower(keys).compile()
    compile_vmapped = time.perf_counter() - start
    start = time.perf_counter()
    single = jax.jit(lambda key: synthetic.run_trial(key, config)).lower(keys[0]).compile()
    compile_single = time.perf_counter() - start

    def ours():
        return jax.block_until_ready(vmapped(keys))["balanced_error"]

    def loop():
        return np.stack([np.asarray(jax.block_until_ready(single(keys[t]))["balanced_error"])
                         for t in range(args.trials)])

    np.testing.assert_allclose(np.asarray(ours()), loop(), atol=2e-3)  # warm-up and same answer
    times = {"vmapped": [], "python_loop": []}
    for _ in range(args.repeats):
        for name, fn in (("vmapped", ours), ("python_loop", loop)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["python_loop"] / med["vmapped"]
    print(f"synthetic study, {args.trials} trials x {len(synthetic.METHODS)} methods, "
          f"{args.repeats} interleaved repeats")
    print(f"  compile: vmapped {compile_vmapped:.2f} s, one-trial {compile_single:.2f} s")
    print(f"  vmapped program: median {med['vmapped']:.2f} s  (target < 30 s for 100 trials)")
    print(f"  python loop:     median {med['python_loop']:.2f} s")
    print(f"  speed-up (loop / vmapped): {ratio:.2f}x")
    record = {"benchmark": "longtail_synthetic_vmap", "trials": args.trials, "repeats": args.repeats,
              "compile_s": {"vmapped": compile_vmapped, "single": compile_single},
              "median_s": med, "all_s": times, "speedup": ratio, "machine": args.machine,
              "backend": jax.default_backend(), "devices": jax.device_count(), "platform": platform.platform(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = pathlib.Path(__file__).parent / "results" / "longtail.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
