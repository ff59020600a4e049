"""The harness against hand-written JAX, on the same model and data, as ratios of medians of interleaved runs.

1. `step`: the harness's jitted step vs a hand-written `jax.jit` step. Both train the same MLP with Adam
   on the same batches; the harness step adds its non-finite guard, the `value=` extra argument and the
   gradient / parameter / update norms. Goal: <= 1.10 on CPU (<= 1.05 on a GPU).
2. `loop`: `shared.trainer.Trainer.fit` (batches indexed by step through grain with prefetch threads,
   window metrics, progress bar, SIGTERM check) vs a bare Python loop calling the same jitted step on the
   same step-indexed batches. Goal: <= 1.05.
3. `data_bound`: a small CNN on 32x32x3 uint8 images with host-side augmentation (pad-4 random crop and
   flip per example, a `random_transform`), through `Trainer.fit` without prefetch and with
   `--prefetch` threads: steps/s of each and the share of step time spent waiting for data
   (`Trainer.data_wait`). Goal with prefetch: < 5 %.

Each repeat times `--steps` steps of one side, then of the other.

    python benchmarks/bench_harness.py [--steps 200] [--repeats 7] [--batch 256] [--width 512]
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
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shared import data, train
from shared.models import MLP
from shared.trainer import Loop, Trainer


def hand_written_step(graphdef, tx):
    """The baseline: value_and_grad, optax update, apply; nothing else."""

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        logits = model(batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--prefetch", type=int, default=4, help="prefetch threads of the data-bound case")
    parser.add_argument("--data-steps", type=int, default=200, help="steps of the data-bound case")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    batches = [{"image": rng.normal(size=(args.batch, 8, 8, 1)).astype(np.float32),
                "label": rng.integers(0, 10, args.batch).astype(np.int32)} for _ in range(8)]
    tx = optax.adam(1e-3)
    model = MLP((64, args.width, args.width, 10), rngs=nnx.Rngs(0))

    # ours: the harness
    mesh = train.make_mesh()
    graphdef, state = train.create_train_state(model, tx, jax.random.PRNGKey(0))
    state = jax.tree.map(jnp.copy, state)

    def xent(model, batch, rng):
        logits = model(batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), {}

    harness_step = train.build_train_step(train.nnx_loss(graphdef, xent), tx, mesh, state)
    state = jax.device_put(state, train.state_sharding(state, mesh))
    device_batches = [train.shard_batch(b, mesh) for b in batches]

    # baseline: hand-written
    baseline_step = hand_written_step(graphdef, tx)
    params = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))  # the harness donates its own buffers
    opt_state = tx.init(params)
    plain_batches = [jax.device_put(b) for b in batches]

    t0 = time.perf_counter()
    state, metrics = harness_step(state, device_batches[0])
    jax.block_until_ready(metrics)
    compile_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    params, opt_state, loss = baseline_step(params, opt_state, plain_batches[0])
    jax.block_until_ready(loss)
    compile_base = time.perf_counter() - t0

    def time_ours():
        nonlocal state
        start = time.perf_counter()
        for i in range(args.steps):
            state, metrics = harness_step(state, device_batches[i % len(device_batches)])
        jax.block_until_ready(metrics)
        return time.perf_counter() - start

    def time_base():
        nonlocal params, opt_state
        start = time.perf_counter()
        for i in range(args.steps):
            params, opt_state, loss = baseline_step(params, opt_state, plain_batches[i % len(plain_batches)])
        jax.block_until_ready(loss)
        return time.perf_counter() - start

    time_ours(), time_base()  # warm-up
    ours, base = [], []
    for _ in range(args.repeats):
        ours.append(time_ours())
        base.append(time_base())
    result = {
        "benchmark": "harness_step_vs_hand_written_jit", "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind), "machine": platform.processor() or platform.machine(),
        "steps": args.steps, "batch": args.batch, "width": args.width, "repeats": args.repeats,
        "ours_step_ms": 1e3 * statistics.median(ours) / args.steps,
        "baseline_step_ms": 1e3 * statistics.median(base) / args.steps,
        "ratio": statistics.median(ours) / statistics.median(base),
        "compile_s": {"ours": compile_ours, "baseline": compile_base},
    }
    results = [result, bench_loop(args), bench_data_bound(args)]
    out = pathlib.Path(__file__).with_name("results") / "harness.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        for result in results:
            print(json.dumps(result))
            f.write(json.dumps(result) + "\n")


def _augment(example: dict, rng: np.random.Generator) -> dict:
    """Pad-4 random crop and horizontal flip of one HWC uint8 image, on the host (numpy)."""
    image = np.pad(example["image"], ((4, 4), (4, 4), (0, 0)))
    top, left = rng.integers(0, 9, size=2)
    image = image[top:top + 32, left:left + 32]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return {**example, "image": np.ascontiguousarray(image)}


def bench_data_bound(args) -> dict:
    """Steps/s and data-wait share of a host-augmented CNN run, without and with prefetch threads."""
    from shared.models import SmallCNN

    rng = np.random.default_rng(2)
    n = 4096
    source = data.ArraySource({"image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                               "label": rng.integers(0, 10, n).astype(np.int32)})

    def xent(model, batch, rng):
        logits = model(batch["image"].astype(jnp.float32) / 255.0)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), {}

    runs = {}
    for prefetch in (0, args.prefetch, 0, args.prefetch):  # interleaved: each setting twice, the second counts
        trainer = Trainer(SmallCNN(10, rngs=nnx.Rngs(0), in_channels=3), optax.adam(1e-3), xent, seed=0)
        loop = Loop(num_steps=args.data_steps, batch_size=128, log_every=args.data_steps // 2, prefetch=prefetch)
        trainer.fit(source, dataclasses.replace(loop, num_steps=loop.log_every), random_transform=_augment)
        start = time.perf_counter()
        trainer.fit(source, loop, random_transform=_augment)  # continues from the warm-up's step
        runs[prefetch] = {"steps_per_s": (args.data_steps - loop.log_every) / (time.perf_counter() - start),
                          "data_wait": trainer.data_wait}
    return {"benchmark": "data_bound_prefetch", "backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind), "machine": platform.processor() or platform.machine(),
            "steps": args.data_steps, "batch": 128, "prefetch_threads": args.prefetch,
            "no_prefetch": runs[0], "prefetch": runs[args.prefetch],
            "speedup": runs[args.prefetch]["steps_per_s"] / runs[0]["steps_per_s"]}


def bench_loop(args) -> dict:
    """`Trainer.fit` vs a bare loop over the same jitted step and the same step-indexed batches."""
    rng = np.random.default_rng(1)
    n = 16 * args.batch
    source = data.ArraySource({"image": rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
                               "label": rng.integers(0, 10, n).astype(np.int32)})

    def xent(model, batch, rng):
        logits = model(batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), {}

    trainer = Trainer(MLP((64, args.width, args.width, 10), rngs=nnx.Rngs(0)), optax.adam(1e-3), xent, seed=0)
    loop = Loop(num_steps=1, batch_size=args.batch, log_every=50)
    dataset = trainer.dataset(source, loop)
    hand = {"state": jax.tree.map(jnp.copy, trainer.state), "step": 0}

    def time_trainer():
        start = time.perf_counter()
        target = int(trainer.state.step) + args.steps
        state, _ = trainer.fit(source, dataclasses.replace(loop, num_steps=target))
        jax.block_until_ready(state)
        return time.perf_counter() - start

    def time_hand():
        start = time.perf_counter()
        state = hand["state"]
        for s in range(hand["step"], hand["step"] + args.steps):
            state, _metrics = trainer.train_step(state, train.shard_batch(dataset[s], trainer.mesh))
        jax.block_until_ready(state)
        hand["state"], hand["step"] = state, hand["step"] + args.steps
        return time.perf_counter() - start

    time_trainer(), time_hand()  # warm-up (compilation)
    ours, base = [], []
    for _ in range(args.repeats):
        ours.append(time_trainer())
        base.append(time_hand())
    return {"benchmark": "trainer_fit_vs_bare_loop", "backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind), "machine": platform.processor() or platform.machine(),
            "steps": args.steps, "batch": args.batch, "width": args.width, "repeats": args.repeats,
            "ours_step_ms": 1e3 * statistics.median(ours) / args.steps,
            "baseline_step_ms": 1e3 * statistics.median(base) / args.steps,
            "ratio": statistics.median(ours) / statistics.median(base)}


if __name__ == "__main__":
    main()
