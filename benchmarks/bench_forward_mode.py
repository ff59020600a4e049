"""Custom JVPs transposed by JAX against the hand-written VJPs they replaced (issue 24, forward mode).

Claim: NVAE's CPU depthwise convolution (`shared.workarounds.depthwise_conv`) and `shared.sparse_softmax`'s
two functions are `jax.custom_jvp`s (so jvp, linearize and Hessians work) whose reverse mode, JAX's
transpose of the tangent rule, keeps the speed of the `jax.custom_vjp`s they replaced (commit b68c19a):
ratio of medians <= 1.05 for the jitted gradient.

    python benchmarks/bench_forward_mode.py [--only depthwise,sparse,step] [--repeats 7] [--inner 10]
        [--variants ours,hand_vjp,...] [--step-repeats 5] [--sparse-batch 1024]

`depthwise`, per shape [B, H, W, C] with a 5x5 kernel: `jax.jit(jax.grad(Σ tanh(dw(x, k))·g))` w.r.t.
(x, k) for ours, the hand-written VJP (baseline), and the alternatives the layer's docstrings name:
the tangent's ẋ term in the slice form of the forward (`slice_dx`), the k̇ term's tap scan without remat
(`no_remat`), plain autodiff of the forward (`autodiff`), XLA's grouped convolution (`grouped_conv`).
`sparse`: `jax.jit(jax.value_and_grad)` of the mean sparse CE (k = 10) and of Σ sin(sparse_softmax)·w on
[batch, 21128] logits (SPACES' vocabulary), ours vs the hand-written VJPs. `step`: the gradient of
`nvae_jax.train.nvae_loss` on the `tiny_mnist` model at batch 8, with ours and with
`workarounds._depthwise_taps` swapped for the baseline while tracing. Every repeat runs all variants back to
back in rotated order; ratios are median(variant) / median(hand-written VJP); compile time is reported
separately. Appends one JSON line to benchmarks/results/forward_mode.jsonl.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from shared import workarounds
from shared.sparse_softmax import (
    _scatter_last,
    _sparse_ce_parts,
    _top_k_softmax,
    sparse_softmax,
    sparse_softmax_cross_entropy,
)

RESULTS = pathlib.Path(__file__).parent / "results" / "forward_mode.jsonl"
SHAPES = [(8, 16, 16, 192), (8, 32, 32, 96), (8, 8, 8, 384), (4, 16, 16, 576)]
VOCAB = 21128


# --- baselines: the hand-written VJPs as they were at commit b68c19a -----------------------------------
@jax.custom_vjp
def hand_depthwise(x, kernel):
    return workarounds._shifted_sum(x, kernel, *workarounds._same_padding(kernel.shape[0]))


def _hand_depthwise_fwd(x, kernel):
    return hand_depthwise(x, kernel), (x, kernel)


def _hand_depthwise_bwd(res, g):
    x, kernel = res
    k = kernel.shape[0]
    lo, hi = workarounds._same_padding(k)
    dx = workarounds._shifted_sum(g, kernel[::-1, ::-1], hi, lo)
    xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))

    def tap_grad(t):
        window = jax.lax.dynamic_slice(xp, (0, t // k, t % k, 0), x.shape)
        return jnp.sum(window * g, axis=(0, 1, 2))

    dk = jax.lax.map(tap_grad, jnp.arange(k * k))
    return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


hand_depthwise.defvjp(_hand_depthwise_fwd, _hand_depthwise_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def hand_sparse_softmax(x, k):
    return _hand_ssm_fwd(x, k)[0]


def _hand_ssm_fwd(x, k):
    q, idx = _top_k_softmax(x, k)
    return _scatter_last(q.astype(x.dtype), idx, x.shape[-1]), (q, idx)


def _hand_ssm_bwd(k, res, g):
    q, idx = res
    gk = jnp.take_along_axis(g, idx, axis=-1).astype(q.dtype)
    dq = q * (gk - jnp.sum(q * gk, axis=-1, keepdims=True))
    return (_scatter_last(dq.astype(g.dtype), idx, g.shape[-1]),)


hand_sparse_softmax.defvjp(_hand_ssm_fwd, _hand_ssm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def hand_sparse_ce(x, labels, k):
    return _sparse_ce_parts(x, labels, k)[0]


def _hand_ce_fwd(x, labels, k):
    loss, pk, idx = _sparse_ce_parts(x, labels, k)
    return loss, (labels, pk, idx, jnp.zeros((0, x.shape[-1]), x.dtype))


def _hand_ce_bwd(k, res, g):
    labels, pk, idx, carrier = res
    gf = g.astype(pk.dtype)
    dx = _scatter_last(pk * gf[:, None], idx, carrier.shape[-1])
    dx = dx.at[jnp.arange(labels.shape[0]), labels].add(-gf, mode="drop")
    return dx.astype(carrier.dtype), None


hand_sparse_ce.defvjp(_hand_ce_fwd, _hand_ce_bwd)


# --- the depthwise alternatives the layer's docstrings mention -----------------------------------------
def _tap_scan_no_remat(x, dkernel):
    k = dkernel.shape[0]
    lo, hi = workarounds._same_padding(k)
    xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))

    def tap(acc, t_and_row):
        t, row = t_and_row
        return acc + jax.lax.dynamic_slice(xp, (0, t // k, t % k, 0), x.shape) * row, None

    return jax.lax.scan(tap, jnp.zeros_like(x), (jnp.arange(k * k), dkernel.reshape(k * k, -1)))[0]


def _with_tangent(dx_term, dk_term):
    @jax.custom_jvp
    def f(x, kernel):
        return workarounds._shifted_sum(x, kernel, *workarounds._same_padding(kernel.shape[0]))

    @f.defjvp
    def f_jvp(primals, tangents):
        (x, kernel), (dx, dk) = primals, tangents
        return f(x, kernel), dx_term(dx, kernel) + dk_term(x, dk)

    return f


def _slice_dx(dx, kernel):
    return workarounds._shifted_sum(dx, kernel, *workarounds._same_padding(kernel.shape[0]))


def _autodiff(x, kernel):
    return workarounds._shifted_sum(x, kernel, *workarounds._same_padding(kernel.shape[0]))


def _grouped_conv(x, kernel):
    pad = workarounds._same_padding(kernel.shape[0])
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), [pad, pad], dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])


DEPTHWISE = {
    "ours": workarounds.depthwise_conv,
    "hand_vjp": hand_depthwise,
    "slice_dx": _with_tangent(_slice_dx, workarounds._tap_scan),
    "no_remat": _with_tangent(workarounds._scattered_sum, _tap_scan_no_remat),
    "autodiff": _autodiff,
    "grouped_conv": _grouped_conv,
}


# --- timing -------------------------------------------------------------------------------------------
def _timed(fn, args, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / inner


def race(fns: dict, args, repeats: int, inner: int) -> dict:
    """Compile, warm up, then `repeats` rounds of every fn in rotated order; medians and ratios to hand_vjp."""
    compile_s = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        compile_s[name] = time.perf_counter() - t0
        _timed(fn, args, inner)  # warm-up
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(_timed(fns[name], args, inner))
    med = {name: statistics.median(t) for name, t in times.items()}
    return {"median_ms": {n: 1e3 * m for n, m in med.items()},
            "ratio_to_hand_vjp": {n: m / med["hand_vjp"] for n, m in med.items()},
            "compile_s": compile_s, "repeats": repeats, "inner": inner}


def depthwise_race(shape, variants, repeats, inner):
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, shape)
    kernel = 0.2 * jax.random.normal(kk, (5, 5, 1, shape[-1]))
    g = jax.random.normal(kg, shape)

    def grad_of(f):
        return jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.tanh(f(x, k)) * g), argnums=(0, 1)))

    return race({name: grad_of(DEPTHWISE[name]) for name in variants}, (x, kernel), repeats, inner)


def sparse_races(batch, repeats, inner):
    kx, kl, kw = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (batch, VOCAB))
    labels = jax.random.randint(kl, (batch,), 0, VOCAB)
    w = jax.random.normal(kw, (batch, VOCAB))
    ce = {"ours": lambda x: jnp.mean(sparse_softmax_cross_entropy(x, labels, 10)),
          "hand_vjp": lambda x: jnp.mean(hand_sparse_ce(x, labels, 10))}
    sm = {"ours": lambda x: jnp.sum(jnp.sin(sparse_softmax(x, 10)) * w),
          "hand_vjp": lambda x: jnp.sum(jnp.sin(hand_sparse_softmax(x, 10)) * w)}
    return {name: race({n: jax.jit(jax.value_and_grad(f)) for n, f in fns.items()}, (x,), repeats, inner)
            for name, fns in (("sparse_ce", ce), ("sparse_softmax", sm))}


def step_race(repeats, inner):
    """Gradient of nvae_loss on tiny_mnist, batch 8: ours vs the hand-written VJP traced in its place."""
    from flax import nnx

    from nvae_jax import configs
    from nvae_jax.model import NVAE
    from nvae_jax.train import nvae_loss

    cfg = configs.TINY_MNIST
    graphdef, params, rest = nnx.split(NVAE(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (8, cfg.image_size, cfg.image_size, 1)),
             "beta": jnp.float32(0.5)}

    def loss(params, rest, batch, rng):
        return nvae_loss(nnx.merge(graphdef, params, rest, copy=True), batch, rng)[0]

    ours, base = jax.jit(jax.grad(loss)), jax.jit(jax.grad(loss))
    args = (params, rest, batch, jax.random.PRNGKey(2))
    t0 = time.perf_counter()
    jax.block_until_ready(ours(*args))  # traced with the layer's custom JVP
    compile_s = {"ours": time.perf_counter() - t0}
    original = workarounds._depthwise_taps
    workarounds._depthwise_taps = lambda: hand_depthwise
    try:
        t0 = time.perf_counter()
        jax.block_until_ready(base(*args))  # traced (and cached) with the baseline
        compile_s["hand_vjp"] = time.perf_counter() - t0
    finally:
        workarounds._depthwise_taps = original
    return {**race({"ours": ours, "hand_vjp": base}, args, repeats, inner), "compile_s": compile_s}


def _ratios(res):
    return json.dumps({n: round(r, 3) for n, r in res["ratio_to_hand_vjp"].items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="depthwise,sparse", help="comma-separated subset of depthwise, sparse, step")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--variants", default=",".join(DEPTHWISE),
                        help="depthwise variants, a subset of " + ", ".join(DEPTHWISE) + " (hand_vjp always runs)")
    parser.add_argument("--step-repeats", type=int, default=5)
    parser.add_argument("--sparse-batch", type=int, default=1024)
    args = parser.parse_args()
    only = {o for o in args.only.split(",") if o}
    if only - {"depthwise", "sparse", "step"}:
        parser.error(f"--only: unknown {sorted(only - {'depthwise', 'sparse', 'step'})}")
    if min(args.repeats, args.step_repeats) < 5:
        parser.error("--repeats and --step-repeats must be >= 5 (ratios are medians of interleaved runs)")
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(DEPTHWISE):
        parser.error(f"--variants: unknown {sorted(set(variants) - set(DEPTHWISE))}; choose from {sorted(DEPTHWISE)}")
    variants = list(dict.fromkeys(["hand_vjp", *variants]))
    record = {"bench": "forward_mode", "backend": jax.default_backend(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0]}
    if "depthwise" in only:
        record["depthwise_5x5"] = {}
        for shape in SHAPES:
            res = depthwise_race(shape, variants, args.repeats, args.inner)
            record["depthwise_5x5"]["x".join(map(str, shape))] = res
            print("depthwise", "x".join(map(str, shape)), _ratios(res), flush=True)
    if "sparse" in only:
        for name, res in sparse_races(args.sparse_batch, args.repeats, max(1, args.inner // 5)).items():
            record[f"{name}_{args.sparse_batch}x{VOCAB}"] = res
            print(name, f"{args.sparse_batch}x{VOCAB}", _ratios(res), flush=True)
    if "step" in only:
        res = step_race(args.step_repeats, 1)
        record["tiny_mnist_loss_grad_b8"] = res
        print("tiny_mnist loss grad", _ratios(res), json.dumps({n: round(m, 1) for n, m in res["median_ms"].items()}),
              "ms", flush=True)
    record["load_avg_end"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
