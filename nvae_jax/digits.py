"""nvae_jax.digits: a 2-scale NVAE vs a trained 1-group VAE on binarised 16×16 scikit-learn digits."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nvae_jax import evaluate, train
from nvae_jax.configs import Config
from shared.data import digits
from shared.experiment import RunContext


def load_digits16(split: str) -> np.ndarray:
    """sklearn digits (8×8, [0,1]) upsampled bilinearly to 16×16 and binarised at 0.5; [N,16,16,1] float32."""
    x, _ = digits(split)
    x = jax.image.resize(jnp.asarray(x), (x.shape[0], 16, 16, 1), "bilinear")
    return np.asarray(x > 0.5, np.float32)


def one_group(cfg: Config) -> Config:
    """The baseline: the same model with one latent scale and one group (a plain conv VAE)."""
    return dataclasses.replace(cfg, num_latent_scales=1, num_groups_per_scale=1, adaptive_groups=False)


def run_digits(config: Config, ctx: RunContext) -> dict:
    """Train the NVAE config and its 1-group baseline; report IW test NLL (nats), samples, reconstructions."""
    t0 = time.time()
    xtr, xte = load_digits16("train"), load_digits16("test")[: config.num_eval]
    steps = config.train_steps or config.epochs * max(1, xtr.shape[0] // config.batch_size)
    k = config.num_iw_samples
    out, rows = {}, []
    for name, cfg in (("nvae", config), ("vae_1group", one_group(config))):
        graphdef, state, hist = train.fit(cfg, xtr, steps, ctx=ctx, checkpoint_dir=ctx.checkpoint_dir / name,
                                          resume=ctx.resume, desc=name)
        nll = float(jnp.mean(evaluate.iw_nll(graphdef, state, jnp.asarray(xte), jax.random.PRNGKey(1), k)))
        out[f"{name}_test_nll_nats"] = nll
        out[f"{name}_train_nelbo_last"] = hist[-1]["nelbo"]
        out[f"{name}_skipped_steps"] = int(state.skipped)
        rows.append([name, sum(cfg.groups), f"{nll:.2f}", f"{hist[-1]['nelbo']:.2f}"])
        if name == "nvae":
            model = nnx.merge(graphdef, state.params, state.model_state)
            key = jax.random.PRNGKey(2)
            rec = evaluate.reconstruct(model, jnp.asarray(xte[:16]), key)
            evaluate.save_grid(np.concatenate([xte[:16], rec]), str(ctx.out_dir / "reconstructions.png"))
            for t in (1.0, 0.7):
                evaluate.readjust_bn(model, jax.random.fold_in(key, 10), t, batch=64, iters=cfg.bn_readjust_iters)
                evaluate.save_grid(evaluate.sample_images(model, key, 32, t),
                                   str(ctx.out_dir / f"samples_t{t}.png"))
    out["wall_s"] = time.time() - t0
    ctx.report.section("Test NLL on binarised 16×16 digits")
    ctx.report.table(["model", "latent groups", f"IW test NLL (K={k}, nats)", "last train −ELBO (nats)"], rows)
    ctx.report.text(
        f"{steps} steps each, batch {config.batch_size}; NLL on the first {xte.shape[0]} test images. "
        f"Protocol (fast settings, not the official ones): lr schedule {config.lr_schedule}, constant-KL "
        f"portion {config.kl_const_portion:g}, {config.bn_readjust_iters} BN passes before sampling. "
        "Published (real MNIST 28×28, not comparable): NVAE 78.01 nats, BIVA 78.41, IAF-VAE 79.10.\n\n"
        "Reconstructions (top 2 rows: data, bottom 2: reconstructions): ![](reconstructions.png)\n\n"
        "Samples at t = 1.0 and t = 0.7 (BN re-estimated at each t): ![](samples_t1.0.png) ![](samples_t0.7.png)")
    return out
