"""flooding and add_decoupled_weissi: overhead on a jitted optax sgd / adam step (CPU ratios).

Claim (issue 4): each adds <= 10% to an optax sgd / adam training step of a small MLP. Ours is the
same jitted step (value_and_grad of the MLP's mean CE, tx.update with `value=`, apply_updates) with
the transform chained in; the baseline is the plain optimiser. Compile time is reported
separately; each repeat times `--steps` steps of one side then of the other (interleaved, order
alternating) and the ratio is of medians.

    python benchmarks/bench_transforms.py [--repeats 9] [--steps 100] [--width 256] [--batch 128]
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from shared.transforms import add_decoupled_weissi, flooding

RESULTS = pathlib.Path(__file__).parent / "results" / "transforms.jsonl"


def make_problem(width, batch):
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    sizes = [64, width, width, 10]
    params = {}
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        params[f"layer{i}"] = {"kernel": jax.random.normal(keys[i], (a, b)) / jnp.sqrt(a), "bias": jnp.zeros(b)}
    x = jax.random.normal(keys[3], (batch, 64))
    y = jnp.arange(batch) % 10

    def loss_fn(p, x, y):
        h = x
        for i in range(len(sizes) - 1):
            h = h @ p[f"layer{i}"]["kernel"] + p[f"layer{i}"]["bias"][None, :]
            if i < len(sizes) - 2:
                h = jax.nn.relu(h)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h, y))

    return params, x, y, loss_fn


def make_runner(tx, loss_fn, steps):
    """`steps` training steps in one jitted `fori_loop` (no per-step dispatch noise)."""

    def step(carry, x, y):
        p, s = carry
        value, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, s = tx.update(g, s, p, value=value)
        return optax.apply_updates(p, u), s

    @jax.jit
    def run(p, s, x, y):
        return jax.lax.fori_loop(0, steps, lambda i, c: step(c, x, y), (p, s))

    return run


def _once(run, args):
    t0 = time.perf_counter()
    jax.block_until_ready(run(*args))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    params, x, y, loss_fn = make_problem(args.width, args.batch)
    optimisers = {"sgd": lambda: optax.sgd(0.01, momentum=0.9), "adam": lambda: optax.adam(1e-3)}
    records = []
    for opt_name, opt in optimisers.items():
        base_tx = opt()
        variants = {
            "flooding": optax.chain(flooding(0.05), opt()),
            "add_decoupled_weissi": (
                optax.chain(optax.scale_by_adam(), add_decoupled_weissi(1e-3), optax.scale_by_learning_rate(1e-3))
                if opt_name == "adam"
                else optax.chain(add_decoupled_weissi(1e-3), optax.sgd(0.01, momentum=0.9))
            ),
        }
        base = make_runner(base_tx, loss_fn, args.steps)
        base_args = (params, base_tx.init(params), x, y)
        for name, tx in variants.items():
            ours = make_runner(tx, loss_fn, args.steps)
            ours_args = (params, tx.init(params), x, y)
            c_ours, c_base = _once(ours, ours_args), _once(base, base_args)
            for _ in range(2):
                _once(ours, ours_args)
                _once(base, base_args)
            t_ours, t_base = [], []
            for r in range(args.repeats):
                pair = [(ours, ours_args, t_ours), (base, base_args, t_base)]
                for fn, a, acc in pair if r % 2 == 0 else pair[::-1]:
                    acc.append(_once(fn, a) / args.steps)
            mo, mb = statistics.median(t_ours), statistics.median(t_base)
            rec = {
                "bench": f"{name} + {opt_name} step vs {opt_name} step",
                "ours_ms": 1e3 * mo,
                "baseline_ms": 1e3 * mb,
                "ratio": mo / mb,
                "target": 1.10,
                "compile_ours_s": c_ours,
                "compile_baseline_s": c_base,
                "repeats": args.repeats,
                "steps_per_repeat": args.steps,
                "mlp": [64, args.width, args.width, 10],
                "batch": args.batch,
                "device": jax.devices()[0].device_kind,
                "platform": platform.platform(),
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            ok = "OK" if rec["ratio"] <= 1.10 else "OVER TARGET"
            print(f"{rec['bench']:50s} ours {1e3 * mo:8.3f} ms/step  base {1e3 * mb:8.3f} ms/step  "
                  f"ratio {rec['ratio']:.3f} (target 1.10) {ok}  compile {c_ours:.2f}s/{c_base:.2f}s", flush=True)
            records.append(rec)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
