"""`kexue eval` and `kexue sample` for NVAE runs, as the official `evaluate.py --eval_mode evaluate|sample`.

- eval: the IW bound on the test images (`config.num_eval` of them, 0 for the whole test set) with
  K = `config.num_iw_samples`, in nats (binary data) or bits/dim (colour), beside the published number.
  The official protocol is `--config.num_iw_samples 1000 --config.num_eval 0`.
- sample: `--num` samples at `--temperature` (`samples_t{T}.png`, and `samples_t{T}.npy` [N, H, W, C] in
  [0, 1]); `--readjust-bn` first re-estimates the batch-norm statistics from `--bn-iterations` prior
  passes at that temperature (the official code's 500); `--reconstruct` adds a grid of test images over
  their reconstructions (`reconstructions.png`); `--interpolate I J ...` adds rows from test image I to J
  at the top latent group (`nvae_jax.interpolate`; `interpolation_t{T}.png`, each row image I, `--steps`
  decoded images, image J; `interpolation_t{T}.npy` [P, steps, H, W, C] in [0, 1]).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import auto as tqdm_auto

from nvae_jax import evaluate, train
from nvae_jax.configs import Config
from shared.overrides import UsageError
from shared.use import RunDir, restore_model, write_outputs

__all__ = ["evaluate_run", "sample_run"]

PUBLISHED_DIGITS = "no published number (the paper's MNIST is 28x28: 78.01 nats)"


def _model_config(run: RunDir) -> Config:
    from nvae_jax.digits import one_group

    return one_group(run.config) if run.model == "vae_1group" else run.config


def _test_images(config: Config) -> np.ndarray:
    """The run's test images as its evaluation preprocesses them: float32 [N, H, W, C] in [0, 1]."""
    if config.dataset == "digits":
        from nvae_jax.digits import load_digits16

        images = load_digits16("test")
        return images[: config.num_eval] if config.num_eval > 0 else images
    from nvae_jax.full import load_test_images

    return load_test_images(config)


def _restored(run: RunDir):
    """(trainer, restored state) of the run's `--model`; the schedule length does not shape the state."""
    config = _model_config(run)
    trainer = train.make_trainer(config, max(config.train_steps, 2))
    state = restore_model(trainer, run, (run.model or "") if run.config.dataset == "digits" else "")
    return trainer, state


def evaluate_run(run: RunDir) -> dict:
    """IW test NLL of the restored model (see the module docstring); writes eval.json and eval.md."""
    config = _model_config(run)
    trainer, state = _restored(run)
    step = int(state.step)
    images = _test_images(config)
    k, chunk = config.num_iw_samples, min(10, config.num_iw_samples)
    batch = 64
    nll, start = [], time.perf_counter()
    for lo in tqdm_auto.tqdm(range(0, len(images), batch), desc=f"IW bound, K={k}", leave=False):
        x = jnp.asarray(images[lo:lo + batch])
        key = jax.random.fold_in(jax.random.PRNGKey(1), lo)
        nll.append(np.asarray(evaluate.iw_nll(trainer.graphdef, state, x, key, k, chunk=chunk)))
    per_image = np.concatenate(nll)
    value = float(per_image.mean())
    binary = config.dataset in ("digits", "mnist")
    unit = "nats" if binary else "bits/dim"
    reported = value if binary else evaluate.nats_to_bpd(value, int(np.prod(images.shape[1:])))
    if config.dataset == "digits":
        published, how = PUBLISHED_DIGITS, ""
    else:
        from nvae_jax.full import PUBLISHED, protocol

        published = f"{PUBLISHED[config.dataset][1]} {PUBLISHED[config.dataset][0]} (Vahdat & Kautz 2020, Table 2)"
        how = f" Protocol: {protocol(config, len(per_image))}"
    metrics = {f"test_nll_{unit.replace('/', '_per_')}": reported, "num_images": len(per_image),
               "num_iw_samples": k, "model": run.model or "nvae", "step": step,
               "seconds": time.perf_counter() - start}
    write_outputs(run, "eval", metrics, [
        f"# {run.experiment} ({run.model or 'nvae'}): evaluation of {run.path} at step {step}",
        f"IW test NLL {reported:.3f} {unit} on {len(per_image)} test images with K = {k}; "
        f"published: {published}.{how}"])
    return metrics


def sample_run(run: RunDir) -> dict:
    """Samples at `--temperature` (after `--readjust-bn`), and reconstructions with `--reconstruct`."""
    options = run.options
    t, n = float(options["temperature"]), int(options["num"])
    pairs = _interpolation_pairs(run, options.get("interpolate"))  # checked before anything is written
    trainer, state = _restored(run)
    model, step = nnx.merge(trainer.graphdef, state.params, state.model_state), int(state.step)
    key = jax.random.PRNGKey(options["seed"])
    if options["readjust_bn"]:
        evaluate.readjust_bn(model, jax.random.fold_in(key, 1), t, batch=min(n, 64), iters=options["bn_iterations"])
    images = evaluate.sample_images(model, key, n, t)
    stem = f"samples_t{t:g}"
    np.save(run.path / f"{stem}.npy", images.astype(np.float32))
    evaluate.save_grid(images, str(run.path / f"{stem}.png"))
    out = {"samples": str(run.path / f"{stem}.png"), "array": str(run.path / f"{stem}.npy"),
           "shape": list(images.shape), "temperature": t, "readjust_bn": bool(options["readjust_bn"]), "step": step}
    if options.get("reconstruct"):
        test = jnp.asarray(_test_images(_model_config(run))[:16])
        recon = evaluate.reconstruct(model, test, jax.random.fold_in(key, 2))
        evaluate.save_grid(np.concatenate([np.asarray(test), recon]), str(run.path / "reconstructions.png"))
        out["reconstructions"] = str(run.path / "reconstructions.png")
    if pairs is not None:
        out.update(_write_interpolation(run, model, pairs, jax.random.fold_in(key, 3), t, int(options["steps"])))
    return out


def _interpolation_pairs(run: RunDir, indices: list[int] | None) -> np.ndarray | None:
    """The test images of `--interpolate I J ...` as [P, 2, H, W, C]; None without the option."""
    if indices is None:
        return None
    indices = list(indices) or list(range(8))
    images = _test_images(_model_config(run))
    bad = [i for i in indices if not 0 <= i < len(images)]
    if bad:
        raise UsageError(f"--interpolate {bad[0]}: the run's test set has images 0 to {len(images) - 1}")
    return images[np.asarray(indices)].reshape(len(indices) // 2, 2, *images.shape[1:])


def _write_interpolation(run: RunDir, model, pairs: np.ndarray, key: jax.Array, t: float, steps: int) -> dict:
    from nvae_jax.interpolate import interpolate

    rows = interpolate(model, jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1]), key, steps, t)
    stem = f"interpolation_t{t:g}"
    np.save(run.path / f"{stem}.npy", rows.astype(np.float32))
    grid = np.concatenate([pairs[:, :1], rows, pairs[:, 1:]], axis=1)  # [P, steps + 2, H, W, C]
    evaluate.save_grid(grid.reshape(-1, *grid.shape[2:]), str(run.path / f"{stem}.png"), ncol=steps + 2)
    return {"interpolation": str(run.path / f"{stem}.png"), "interpolation_shape": list(rows.shape)}
