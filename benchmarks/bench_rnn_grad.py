"""Long-range Jacobian norms for every lag: one jitted O(T) reverse scan vs per-lag `jax.jacrev`.

"ours": `jacobians.long_range_norms` vmapped over the batch and jitted — spectral and Frobenius
log-norms of ∂h_T/∂h_t for all T lags in one program. Baseline: for a lag, `jax.jacrev` of the rest
of the sequence from h_t (then its norms), jitted per lag; timed on `--sampled-lags` lags spread
evenly over 1..T and extrapolated to all T lags (mean time × T; the full naive run would take hours).
Compile times are reported separately; repeats interleave ours and the baseline; medians.

    python benchmarks/bench_rnn_grad.py [--length 1000 --hidden 256 --batch 32 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import numpy as np

from rnn_grad import cells, jacobians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cell", default="simple", choices=cells.CELLS)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--gain", type=float, default=1.0)
    parser.add_argument("--sampled-lags", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--machine", default="2-core CPU sandbox, shared with other jobs")
    args = parser.parse_args()
    T, d, B = args.length, args.hidden, args.batch

    key = jax.random.PRNGKey(0)
    params = cells.init(args.cell, key, d, d, gain=args.gain)
    xs = 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (B, T, d))

    start = time.perf_counter()
    ours_c = jax.jit(jax.vmap(lambda x: jacobians.long_range_norms(args.cell, params, x))).lower(xs).compile()
    compile_ours = time.perf_counter() - start

    lags = np.unique(np.linspace(1, T, args.sampled_lags).round().astype(int))
    naive_c, compile_naive = {}, 0.0
    for lag in lags:
        t = int(T - lag)
        fn = jax.jit(jax.vmap(lambda x, t=t: jacobians.naive_jacobian_norm(args.cell, params, x, t)))
        start = time.perf_counter()
        naive_c[lag] = fn.lower(xs).compile()
        compile_naive += time.perf_counter() - start

    def ours():
        return jax.block_until_ready(ours_c(xs))

    def naive():
        return {lag: jax.block_until_ready(f(xs)) for lag, f in naive_c.items()}

    out, ref = ours(), naive()  # warm-up, and the same answer where float32 can represent it
    view = "state" if args.cell == "lstm" else "h"
    underflowed = 0
    for lag, (_spec, frob) in ref.items():
        frob = np.asarray(frob)
        ok = frob > 1e-30  # the naive product under/overflows in float32 at long lags; ours does not
        underflowed += int((~ok).sum())
        np.testing.assert_allclose(np.asarray(out[f"log_frob_{view}"][:, lag - 1])[ok],
                                   np.log(frob[ok]), atol=1e-2, rtol=1e-3)
    times = {"ours": [], "naive_sampled": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("naive_sampled", naive)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    t_ours = statistics.median(times["ours"])
    t_naive_lag = statistics.median(times["naive_sampled"]) / len(lags)
    t_naive_all = t_naive_lag * T
    ratio = t_naive_all / t_ours
    print(f"{args.cell}, T={T}, hidden={d}, batch={B} on {jax.devices()[0].platform} ({args.machine})")
    print(f"compile: ours {compile_ours:.2f} s, naive {compile_naive / len(lags):.2f} s per lag")
    print(f"ours (all {T} lags, one jitted scan): {t_ours:.3f} s (median of {args.repeats})")
    print(f"naive jacrev: {t_naive_lag:.3f} s per lag (mean of {len(lags)} sampled lags), "
          f"extrapolated to all {T} lags: {t_naive_all:.1f} s")
    print(f"speed-up: {ratio:.1f}x (goal >= 20x); naive norms that underflowed to ~0: {underflowed}"
          f"/{len(lags) * B}")
    record = {"benchmark": "rnn_grad_long_range", "cell": args.cell, "length": T, "hidden": d, "batch": B,
              "sampled_lags": [int(v) for v in lags], "ours_s": t_ours, "naive_per_lag_s": t_naive_lag,
              "naive_all_lags_extrapolated_s": t_naive_all, "speedup": ratio, "naive_underflowed": underflowed,
              "compile_ours_s": compile_ours, "compile_naive_per_lag_s": compile_naive / len(lags),
              "repeats": args.repeats, "device": jax.devices()[0].platform, "machine": args.machine,
              "jax": jax.__version__, "python": platform.python_version(), "time": time.time()}
    path = pathlib.Path(__file__).parent / "results" / "rnn_grad.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
