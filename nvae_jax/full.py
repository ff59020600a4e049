"""Full-scale NVAE runs (mnist, cifar10, celeba64) with the official hyper-parameters and protocol.

Data: TFDS (`--config.data_dir` holding the prepared `mnist`, `cifar10` or `celeb_a`), or for MNIST the
original IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-...`; `shared.idx`) in `--config.data_dir`.
MNIST: 28×28 padded to 32×32 and dynamically binarised (Bernoulli draw per step), the likelihood on
the central 28×28 pixels (`NVAE.log_px`, as the official crop); the test images binarised
stochastically once with a fixed seed (`test_binarize="stochastic"`, the official protocol) or
thresholded at 0.5. Colour: quantised to `num_bits`, scored with the discretised logistic mixture
(2x − 1); CelebA-64: the official crop (rows 40:188, columns 15:163 of the 218×178 image), resized to
64; CIFAR-10 / CelebA-64 training flips left-right at random (`nvae_jax.train.nvae_loss`).
Evaluation: IW test NLL in nats (binary) or bits/dim (colour), K = `num_iw_samples`, on `num_eval`
test images (0: all of them).
"""

from __future__ import annotations

import contextlib
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nvae_jax import evaluate, train
from nvae_jax.configs import Config
from shared.data import ArraySource, tfds_source
from shared.experiment import RunContext

TFDS_NAMES = {"mnist": "mnist", "cifar10": "cifar10", "celeba64": "celeb_a"}
PUBLISHED = {"mnist": ("nats", 78.01), "cifar10": ("bits/dim", 2.91), "celeba64": ("bits/dim", 2.03)}
TEST_BINARIZE_SEED = 0  # the fixed draw of the stochastically binarised MNIST test set
CELEBA_CROP = (40, 188, 15, 163)  # rows, columns of the official CropCelebA64 box (15, 40, 163, 188)


def preprocess(cfg: Config, images: np.ndarray, binarize: str | None = None) -> np.ndarray:
    """uint8 [B,h,w,C] → float32 [B, S, S, C] in [0, 1].

    MNIST: padded 28→32 and left as intensities (the train step binarises dynamically), or with
    `binarize` "stochastic" x ~ Bernoulli(intensity) from a generator seeded `TEST_BINARIZE_SEED`
    (the official test protocol; the same images on every call) or "threshold" (x > 0.5).
    Colour: quantised to `num_bits`; CelebA cropped and resized to 64.
    """
    x = np.asarray(images, np.float32) / 255.0
    if cfg.dataset == "mnist":
        x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        if binarize == "stochastic":
            return (np.random.default_rng(TEST_BINARIZE_SEED).random(x.shape) < x).astype(np.float32)
        return (x > 0.5).astype(np.float32) if binarize == "threshold" else x
    if cfg.dataset == "celeba64":
        r0, r1, c0, c1 = CELEBA_CROP
        x = np.asarray(jax.image.resize(jnp.asarray(x[:, r0:r1, c0:c1]), (x.shape[0], 64, 64, x.shape[3]),
                                        "bilinear"))
    levels = 2.0**cfg.num_bits - 1.0
    return np.round(np.clip(x, 0.0, 1.0) * levels) / levels


def _uses_idx(config: Config) -> bool:
    """MNIST from IDX files: a data_dir without a TFDS `mnist` folder."""
    return (config.dataset == "mnist" and bool(config.data_dir)
            and not (pathlib.Path(config.data_dir) / "mnist").is_dir())


def source(config: Config, split: str):
    """The random-access examples ({"image": uint8 [h, w, C]}) of `split` ("train" | "test")."""
    if _uses_idx(config):
        from shared.idx import mnist_idx

        return ArraySource({"image": mnist_idx(config.data_dir, split)[0]})
    return tfds_source(TFDS_NAMES[config.dataset], split, config.data_dir or None)


def load_test_images(config: Config) -> np.ndarray:
    """The first `config.num_eval` test images (all of them for 0), preprocessed as `config.test_binarize`."""
    test_src = source(config, "test")
    n = len(test_src) if config.num_eval <= 0 else min(config.num_eval, len(test_src))
    images = np.stack([np.asarray(test_src[i]["image"]) for i in range(n)])
    return preprocess(config, images, binarize=config.test_binarize)


def run_full(config: Config, ctx: RunContext) -> dict:
    """Train `config` on its dataset, then report the IW test NLL beside the paper's number and the protocol."""
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        if config.mock_data > 0:  # the quick preset: TFDS mock data, no files
            import tensorflow_datasets as tfds

            stack.enter_context(tfds.testing.mock_data(num_examples=config.mock_data,
                                                       policy=tfds.testing.MockPolicy.USE_CODE))
        train_src = source(config, "train")
        per_epoch = max(1, len(train_src) // config.batch_size)
        steps = config.train_steps or config.epochs * per_epoch

        def transform(example):
            return {"image": preprocess(config, np.asarray(example["image"])[None])[0]}

        graphdef, state, _ = train.fit(config, train_src, steps, ctx=ctx, checkpoint_dir=ctx.checkpoint_dir,
                                       resume=ctx.resume, checkpoint_every=min(steps, 5000), log_every=100,
                                       desc=f"nvae_jax.{config.dataset}", transform=transform)
        xte = load_test_images(config)
    nll = float(np.mean(np.concatenate([
        np.asarray(evaluate.iw_nll(graphdef, state, jnp.asarray(xte[i:i + 64]), jax.random.fold_in(
            jax.random.PRNGKey(1), i), config.num_iw_samples, chunk=min(10, config.num_iw_samples)))
        for i in range(0, len(xte), 64)])))
    unit, published = PUBLISHED[config.dataset]
    value = nll if unit == "nats" else evaluate.nats_to_bpd(nll, int(np.prod(xte.shape[1:])))
    model = nnx.merge(graphdef, state.params, state.model_state)
    evaluate.save_grid(evaluate.sample_images(model, jax.random.PRNGKey(2), 16, 1.0),
                       str(ctx.out_dir / "samples.png"))
    ctx.report.table(["model", f"test NLL ({unit})", "steps", "skipped"],
                     [["NVAE (ours)", f"{value:.3f}", steps, int(state.skipped)],
                      ["NVAE (paper)", published, "", ""]])
    ctx.report.text(f"Protocol: {protocol(config, len(xte))}\n\nSamples at t = 1: ![](samples.png)")
    return {f"test_nll_{unit.replace('/', '_per_')}": value, "steps": steps, "skipped": int(state.skipped),
            "num_test_images": len(xte), "wall_s": time.time() - t0}


def protocol(config: Config, num_images: int) -> str:
    """One sentence naming the evaluation and training protocol that produced a run's number."""
    binar = {"stochastic": "binarised stochastically (fixed seed, official)",
             "threshold": "thresholded at 0.5"}[config.test_binarize] if config.dataset == "mnist" else ""
    return (f"IW bound with K = {config.num_iw_samples} on {num_images} test images"
            + (f" {binar}" if binar else "")
            + f"; lr schedule {config.lr_schedule}; KL constant for {config.kl_const_portion:g} of training at "
            f"{config.kl_min_coeff:g}, then annealed over {config.kl_anneal_portion:g}; λ "
            + (f"annealed {config.weight_decay_norm_init:g} → {config.weight_decay_norm:g}"
               if config.weight_decay_norm_anneal else f"{config.weight_decay_norm:g}")
            + (f"; DMoL top edge {config.dmol_top_edge:g}" if config.output == "dmol" else "")
            + ("; random flips" if config.random_flip and config.dataset != "mnist" else "") + ".")
