"""CIFAR-10-LT from the python release: input-pipeline throughput against the official ResNet-32's training step.

Writes a full-size CIFAR-10 python release of random images (50,000 + 10,000, in the real files' Python 2
pickle format, `tests.test_shared_cifar_files.write_release`) to a temporary folder, then measures
  1. reading it: `shared.cifar_files.load_split` of both splits (once per repeat);
  2. the input pipeline alone: `shared.data.make_dataset` over the 12,406-image long-tailed set
     (`longtail.cifar_lt.long_tailed_train`), batch 128, batch s read as `dataset[s]` (as the trainer does);
  3. the training step alone: `la_resnet32` (or `--model`), batch 128, logit-adjusted loss, the preset's optimiser
     (Nesterov SGD, L2 without BatchNorm), x/255 − 0.5 and crop + flip on device, one jitted step
     (the model's compute; the harness adds ~1%, bench_harness.py), on batches already on the device.
Each repeat times `--batches` pipeline batches, then as many training steps (interleaved). A loop that
fetches each batch before running its step waits t_data / (t_data + t_step) of its time for data (an
upper bound: a prefetching loop overlaps the two). The issue's goal: < 5 %.

    python benchmarks/bench_cifar_pipeline.py [--batches 10] [--repeats 5] [--model he_resnet --depth 8]

`--model` / `--depth` time another `config.model` in step 3 (smaller nets for a CPU-budget study).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longtail import cifar_lt, configs
from longtail.methods import make_loss
from shared import cifar_files, data
from shared.augment import random_crop_flip

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the fixture writer lives in tests/
from tests.test_shared_cifar_files import write_release


def make_step(config, counts, steps_per_epoch):
    """(jitted step(params, rest, opt_state, images, labels, key), params, rest, opt_state)."""
    model = cifar_lt.make_model(config)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = cifar_lt.optimizer(config, steps_per_epoch)
    loss_of = make_loss("logit_adjusted_loss", counts, tau=config.tau, ldam_scale=config.ldam_scale)

    def loss_fn(params, rest, images, labels, key):
        model = nnx.merge(graphdef, params, rest, copy=True)
        model.train()
        logits = model(random_crop_flip(key, cifar_lt.normalise(images, config.input_scaling)))  # [B, K]
        return loss_of(logits, labels).mean(), nnx.split(model, nnx.Param, ...)[2]

    @jax.jit
    def step(params, rest, opt_state, images, labels, key):
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, images, labels, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        return params, rest, opt_state, loss

    return step, params, rest, tx.init(params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=configs.CIFAR10_FULL.model, choices=configs.CIFAR_MODELS)
    parser.add_argument("--depth", type=int, default=configs.CIFAR10_FULL.depth, help="of --model he_resnet")
    parser.add_argument("--machine", default="2-core CPU sandbox, shared with other jobs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_release(pathlib.Path(tmp), "cifar10", per_file=10_000)
        print(f"wrote a 60,000-image release in {time.perf_counter() - start:.1f} s")
        config = dataclasses.replace(configs.CIFAR10_FULL, data_dir=tmp, model=args.model, depth=args.depth)
        read_s = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            cifar_files.load_split("cifar10", "train", tmp)
            cifar_files.load_split("cifar10", "test", tmp)
            read_s.append(time.perf_counter() - start)
        images, labels, counts = cifar_lt.long_tailed_train(config)

    per_epoch, _ = cifar_lt.step_counts(config, len(labels))
    dataset = data.make_dataset(data.ArraySource({"image": images, "label": labels}),
                                batch_size=config.batch_size, seed=0)
    step, params, rest, opt_state = make_step(config, counts, per_epoch)
    batch = dataset[0]  # batch s is dataset[s], as the trainer reads it
    device_batch = (jnp.asarray(batch["image"]), jnp.asarray(batch["label"]))
    start = time.perf_counter()
    params, rest, opt_state, loss = jax.block_until_ready(
        step(params, rest, opt_state, *device_batch, jax.random.PRNGKey(0)))
    compile_s = time.perf_counter() - start
    assert np.isfinite(float(loss))

    times = {"pipeline": [], "train_step": []}
    for r in range(args.repeats):
        start = time.perf_counter()
        for i in range(args.batches):
            batch = dataset[1 + r * args.batches + i]
            assert batch["image"].shape == (config.batch_size, 32, 32, 3)
        times["pipeline"].append((time.perf_counter() - start) / args.batches)
        start = time.perf_counter()
        for i in range(args.batches):
            params, rest, opt_state, loss = step(params, rest, opt_state, *device_batch,
                                                 jax.random.PRNGKey(r * args.batches + i))
        jax.block_until_ready(loss)
        times["train_step"].append((time.perf_counter() - start) / args.batches)
    med = {k: statistics.median(v) for k, v in times.items()}
    images_per_s = {k: config.batch_size / v for k, v in med.items()}
    read_images_per_s = 60_000 / statistics.median(read_s)
    waiting = med["pipeline"] / (med["pipeline"] + med["train_step"])
    print(f"read the release (60,000 images): median {statistics.median(read_s):.2f} s = "
          f"{read_images_per_s:,.0f} images/s")
    print(f"pipeline alone: {med['pipeline'] * 1e3:.1f} ms/batch = {images_per_s['pipeline']:,.0f} images/s")
    print(f"{args.model} (depth {args.depth}) train step (compile {compile_s:.1f} s): "
          f"{med['train_step'] * 1e3:.0f} ms/step = {images_per_s['train_step']:,.1f} images/s")
    print(f"waiting for data in a non-prefetching loop: {100 * waiting:.2f} % of step time (goal < 5 %)")
    record = {"benchmark": "cifar_lt_pipeline", "model": args.model, "depth": args.depth,
              "batches": args.batches, "repeats": args.repeats,
              "batch_size": config.batch_size, "read_release_s": read_s, "read_images_per_s": read_images_per_s,
              "compile_s": compile_s, "median_s_per_batch": med, "all_s_per_batch": times,
              "images_per_s": images_per_s, "waiting_fraction": waiting, "machine": args.machine,
              "backend": jax.default_backend(), "devices": jax.device_count(), "platform": platform.platform(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = pathlib.Path(__file__).parent / "results" / "cifar_pipeline.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
