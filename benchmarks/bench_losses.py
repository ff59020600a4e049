"""The shared losses vs optax's dense softmax cross-entropy (forward + backward, CPU ratios).

Claims (issue 4): logit-adjusted CE and pairwise-margin loss with LA margins <= 1.10x optax dense CE;
sparse_softmax_cross_entropy with k = 10 on [4096, 21128] logits <= 1.5x dense CE (a plain
`lax.top_k` + autodiff version is timed too; results in RESULTS.md); gradient_norm_penalty <= 2.5x a plain
`value_and_grad`. Every timed function is `jax.jit(jax.value_and_grad(mean loss))`; compile time is
reported separately; each repeat runs ours and the baseline back to back (interleaved, order
alternating) and the ratio is of medians.

    python benchmarks/bench_losses.py [--repeats 9] [--only sparse,la,pairwise,la_head,gnp] [--small]

`la_head` times the same two losses on the logits of a linear head (gradient w.r.t. its weights),
for context: the claims are about the losses alone (`la`, `pairwise`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from shared import losses
from shared.sparse_softmax import sparse_softmax_cross_entropy
from shared.transforms import gradient_norm_penalty

RESULTS = pathlib.Path(__file__).parent / "results" / "losses.jsonl"


def _compile(fn, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def _time(fn, args, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / inner


def compare(name, ours, baseline, args, repeats, inner=1, extra=None, target=None):
    """Interleaved medians of ours vs baseline; returns the result record."""
    compile_ours = _compile(ours, *args)
    compile_base = _compile(baseline, *args)
    for _ in range(2):  # warm-up
        _time(ours, args, inner)
        _time(baseline, args, inner)
    t_ours, t_base = [], []
    for r in range(repeats):
        pair = [(ours, t_ours), (baseline, t_base)]
        for fn, acc in pair if r % 2 == 0 else pair[::-1]:
            acc.append(_time(fn, args, inner))
    mo, mb = statistics.median(t_ours), statistics.median(t_base)
    rec = {
        "bench": name,
        "ours_ms": 1e3 * mo,
        "baseline_ms": 1e3 * mb,
        "ratio": mo / mb,
        "target": target,
        "compile_ours_s": compile_ours,
        "compile_baseline_s": compile_base,
        "repeats": repeats,
        "device": jax.devices()[0].device_kind,
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    ok = "" if target is None else ("  OK" if rec["ratio"] <= target else "  OVER TARGET")
    print(f"{name:48s} ours {1e3 * mo:9.2f} ms  base {1e3 * mb:9.2f} ms  ratio {rec['ratio']:.3f}"
          f"  (target {target}){ok}  compile {compile_ours:.2f}s/{compile_base:.2f}s", flush=True)
    return rec


def vg(loss, *consts):
    """jit(value_and_grad(mean of per-example loss)) w.r.t. the logits."""
    return jax.jit(jax.value_and_grad(lambda x, y: jnp.mean(loss(x, y, *consts))))


def dense_ce(x, y):
    return optax.softmax_cross_entropy_with_integer_labels(x, y)


def topk_autodiff_ce(x, y, k):
    """The plain version: lax.top_k + autodiff (its backward scatters through top_k)."""
    vals, _ = jax.lax.top_k(x, k)
    return jax.nn.logsumexp(vals, axis=-1) - jnp.take_along_axis(x, y[:, None], axis=-1)[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--only", default="la,pairwise,la_head,sparse,gnp")
    parser.add_argument("--small", action="store_true", help="smaller shapes (smoke test)")
    args = parser.parse_args()
    which = set(args.only.split(","))
    records = []
    key = jax.random.PRNGKey(0)

    if which & {"la", "pairwise"}:
        b, k = (256, 100) if args.small else (1024, 1000)
        x = 3.0 * jax.random.normal(key, (b, k))
        y = jax.random.randint(jax.random.PRNGKey(1), (b,), 0, k)
        prior = jnp.exp(-jnp.linspace(0.0, jnp.log(100.0), k))
        prior = prior / prior.sum()
        shape = {"shape": [b, k]}
        if "la" in which:
            records.append(compare("logit_adjusted_cross_entropy vs dense CE",
                                   vg(losses.logit_adjusted_cross_entropy, prior), vg(dense_ce), (x, y), args.repeats,
                                   inner=20, extra=shape, target=1.10))
        if "pairwise" in which:
            margins = losses.logit_adjustment_margins(prior, 1.0)
            records.append(compare("pairwise_margin_loss(LA margins) vs dense CE",
                                   vg(losses.pairwise_margin_loss, margins), vg(dense_ce), (x, y), args.repeats,
                                   inner=20, extra=shape, target=1.10))

    if "la_head" in which:
        # the same losses where they are used: on the logits of a linear head, gradient w.r.t. its weights
        b, d, k = (256, 64, 100) if args.small else (1024, 512, 1000)
        feats = jax.random.normal(key, (b, d))
        w = 0.05 * jax.random.normal(jax.random.PRNGKey(2), (d, k))
        y = jax.random.randint(jax.random.PRNGKey(1), (b,), 0, k)
        prior = jnp.exp(-jnp.linspace(0.0, jnp.log(100.0), k))
        prior = prior / prior.sum()

        def head(loss, *consts):
            return jax.jit(jax.value_and_grad(lambda w_, f_, y_: jnp.mean(loss(f_ @ w_, y_, *consts))))

        shape = {"shape": [b, d, k]}
        records.append(compare("linear head + logit-adjusted CE vs head + dense CE",
                               head(losses.logit_adjusted_cross_entropy, prior), head(dense_ce), (w, feats, y),
                               args.repeats, inner=20, extra=shape))
        records.append(compare("linear head + pairwise_margin_loss vs head + dense CE",
                               head(losses.pairwise_margin_loss, losses.logit_adjustment_margins(prior, 1.0)),
                               head(dense_ce), (w, feats, y), args.repeats, inner=20, extra=shape))

    if "sparse" in which:
        b, k = (512, 21128) if args.small else (4096, 21128)
        x = 3.0 * jax.random.normal(key, (b, k))
        y = jax.random.randint(jax.random.PRNGKey(1), (b,), 0, k)
        shape = {"shape": [b, k], "k": 10}
        records.append(compare("sparse_softmax_cross_entropy k=10 vs dense CE", vg(sparse_softmax_cross_entropy, 10),
                               vg(dense_ce), (x, y), args.repeats, extra=shape, target=1.5))
        records.append(compare("lax.top_k+autodiff sparse CE k=10 vs dense CE", vg(topk_autodiff_ce, 10),
                               vg(dense_ce), (x, y), args.repeats, extra=shape))

    if "gnp" in which:
        k1, k2, k3 = jax.random.split(key, 3)
        width = 256
        params = {"w1": jax.random.normal(k1, (64, width)) / 8, "b1": jnp.zeros(width),
                  "w2": jax.random.normal(k2, (width, width)) / 16, "b2": jnp.zeros(width),
                  "w3": jax.random.normal(k3, (width, 10)) / 16}
        xb = jax.random.normal(key, (256, 64))
        yb = jnp.arange(256) % 10

        def loss_fn(p, x, y):
            h = jnp.tanh(x @ p["w1"] + p["b1"][None, :])
            h = jnp.tanh(h @ p["w2"] + p["b2"][None, :])
            return jnp.mean(dense_ce(h @ p["w3"], y))

        records.append(compare("gradient_norm_penalty vs value_and_grad (MLP)",
                               jax.jit(gradient_norm_penalty(loss_fn, 0.01)), jax.jit(jax.value_and_grad(loss_fn)),
                               (params, xb, yb), args.repeats, inner=20, extra={"mlp": [64, width, width, 10]},
                               target=2.5))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
