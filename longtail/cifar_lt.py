"""`longtail.cifar_lt`: CIFAR-10-LT / CIFAR-100-LT with ResNet-32 (Menon et al. 2021, Sec. 6.2, Table 3).

Data: CIFAR-10 / CIFAR-100 from the python release or a TFDS build (`shared.cifar_files`), the
training split subsampled to n_i = ⌊n_max ρ^{−i/(L−1)}⌋ with ρ = 100 (12,406 images for CIFAR-10-LT,
10,847 for CIFAR-100-LT) with `config.subsample_seed`, the test split balanced.
Recipe (`longtail.configs.CifarLTConfig`, after google-research `logit_adjustment/`): the official
ResNet-32 (`shared.models.la_resnet32`), SGD momentum 0.9 Nesterov, batch 128, Keras l2(1e-4) on conv
and dense weights (2e-4·w on the gradient), lr 0.1 warmed up from 0 over 20 epochs and ×0.1 at
epochs 604 / 926 / 1128 of 1241 (CIFAR-10-LT); inputs x/255 − 0.5, pad-4 crop + flip on device
(`shared.augment`). Each method of `config.methods` is a separate, resumable run through
`shared.trainer`; post-hoc adjustment re-scores the ERM model with τ = 1 and with τ tuned on
`holdout_fraction` of the test set; every method is reported on the remaining test examples.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from longtail import metrics
from longtail.configs import CifarLTConfig
from longtail.methods import make_loss
from shared import checks, cifar_files, data
from shared.augment import random_crop_flip
from shared.experiment import RunContext
from shared.losses import posthoc_logit_adjustment
from shared.models import cifar_resnet, la_resnet32
from shared.trainer import Loop, Trainer

MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
# Table 3 of Menon et al. (balanced error %, ResNet-32, ρ = 100)
PUBLISHED = {"cifar10": {"erm": 27.16, "posthoc": 22.60, "posthoc_tuned": 19.08, "logit_adjusted_loss": 22.33},
             "cifar100": {"erm": 61.64, "posthoc": 58.24, "posthoc_tuned": 57.90, "logit_adjusted_loss": 56.11}}


def _mock_context(config: CifarLTConfig):
    if not config.mock_data:
        return contextlib.nullcontext()
    import tensorflow_datasets as tfds

    return tfds.testing.mock_data(num_examples=config.mock_examples, policy=tfds.testing.MockPolicy.USE_CODE)


def load_split(config: CifarLTConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All of a split in memory (python release or TFDS): images uint8 [N, 32, 32, 3], labels int32 [N]."""
    with _mock_context(config):
        images, labels = cifar_files.load_split(config.dataset, split, config.data_dir)
    checks.check_labels(labels, config.num_classes, ndim=1)
    return images, labels


def long_tailed_train(config: CifarLTConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The long-tailed training set: images [N, 32, 32, 3] uint8, labels [N], class counts [K].

    Class i keeps n_i = ⌊n_max ρ^{−i/(K−1)}⌋ images (n_max: the smallest class of the full split),
    chosen uniformly without replacement with `config.subsample_seed` (`shared.data.long_tail_subsample`).
    Raises ValueError naming `config.rho` when it leaves a class with no image (ρ > n_max).
    """
    images, labels = load_split(config, "train")
    n_max = int(np.bincount(labels, minlength=config.num_classes).min())
    wanted = data.long_tail_counts(n_max, config.num_classes, config.rho)
    if wanted.min() == 0:
        empty = int(np.argmin(wanted))
        raise ValueError(f"config.rho={config.rho:g} leaves class {empty} with no training image "
                         f"(n_i = floor({n_max} * rho^(-i/{config.num_classes - 1})) = 0); rho must be <= {n_max}")
    keep = data.long_tail_subsample(labels, config.rho, seed=config.subsample_seed)
    counts = np.bincount(labels[keep], minlength=config.num_classes)
    return images[keep], labels[keep], counts


def normalise(images: jax.Array, scaling: str) -> jax.Array:
    """uint8 [B, 32, 32, 3] -> float32: "centre" x/255 − 0.5 (official code), "standardise" (x/255 − μ_c)/σ_c."""
    x = images.astype(jnp.float32) / 255.0
    if scaling == "centre":
        return x - 0.5
    if scaling == "standardise":
        return (x - MEAN[None, None, None, :]) / STD[None, None, None, :]
    raise ValueError(f"config.input_scaling must be 'centre' or 'standardise', got {scaling!r}")


def make_model(config: CifarLTConfig) -> nnx.Module:
    """`config.model`: "la_resnet32" (the official code's ResNet-32) or "he_resnet" (He et al., `config.depth`)."""
    rngs = nnx.Rngs(config.seed)
    if config.model == "la_resnet32":
        return la_resnet32(config.num_classes, rngs=rngs)
    return cifar_resnet(config.depth, config.num_classes, rngs=rngs)


def learning_rate_schedule(config: CifarLTConfig, steps_per_epoch: int) -> optax.Schedule:
    """lr(step) of the official `LearningRateSchedule`, with epoch e = step / steps_per_epoch (a float).

    lr = η·e/W for e < W (linear from 0; W = `warmup_epochs`), else η·d^k with k = #{decay epochs ≤ e}
    (d = `decay_factor`): the new rate starts at the first step of a decay epoch.
    """
    decay_epochs = jnp.asarray(config.decay_epochs, jnp.float32)  # [D]

    def schedule(step):
        epoch = jnp.asarray(step, jnp.float32) / steps_per_epoch
        decayed = config.learning_rate * config.decay_factor ** jnp.sum(epoch >= decay_epochs)
        if config.warmup_epochs == 0:
            return decayed
        return jnp.where(epoch < config.warmup_epochs, config.learning_rate * epoch / config.warmup_epochs, decayed)

    return schedule


def decay_mask(params):
    """True for every leaf but the parameters of normalisation layers (a node holding a `scale`).

    In `la_resnet32` that decays the conv kernels and the dense kernel and bias, as Keras `l2` does there.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)

    def module_and_name(path):
        keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]
        while keys and keys[-1] == "value":  # an nnx Variable flattens to its `.value`
            keys.pop()
        return tuple(keys[:-1]), keys[-1]

    named = [module_and_name(path) for path, _ in leaves]
    norm_layers = {module for module, name in named if name == "scale"}
    return jax.tree_util.tree_unflatten(treedef, [module not in norm_layers for module, _ in named])


def optimizer(config: CifarLTConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum as Keras's `SGD(momentum, nesterov)` of the official code, on g + `weight_decay`·w.

    With u_t = −η_t (g_t + λ w_t) (λ on all leaves, or all but BatchNorm's with `weight_decay_batchnorm=False`):
    v_t = m v_{t−1} + u_t, update = m v_t + u_t (Nesterov) or v_t. The rate enters before the momentum
    trace, as in Keras; `optax.sgd` applies it after, which differs whenever η changes (warm-up, decays).
    """
    mask = None if config.weight_decay_batchnorm else decay_mask
    return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=mask),
                       optax.scale_by_learning_rate(learning_rate_schedule(config, steps_per_epoch)),
                       optax.trace(decay=config.momentum, nesterov=config.nesterov))


def step_counts(config: CifarLTConfig, num_train: int) -> tuple[int, int]:
    """(steps per epoch, total steps) for `num_train` long-tailed training images (⌊N / batch⌋ per epoch)."""
    per_epoch = max(1, num_train // config.batch_size)
    total = config.epochs * per_epoch
    return per_epoch, (min(total, config.max_steps) if config.max_steps > 0 else total)


def build(config: CifarLTConfig, method: str, counts: np.ndarray, steps_per_epoch: int, mesh=None) -> Trainer:
    """The trainer of one method: `make_model(config)`, `optimizer(...)`, the method's loss on
    augmented images (`shared.augment.random_crop_flip`, on device from the step key)."""
    loss_of = make_loss(method, counts, tau=config.tau, ldam_scale=config.ldam_scale)

    def objective(model, batch, rng):
        model.train()
        images = random_crop_flip(rng, normalise(batch["image"], config.input_scaling))
        logits = model(images)  # [B, K]
        per_example = loss_of(logits, batch["label"])  # [B]
        return per_example.mean(), {"accuracy": jnp.mean(logits.argmax(-1) == batch["label"])}

    return Trainer(make_model(config), optimizer(config, steps_per_epoch), objective, seed=config.seed, mesh=mesh,
                   learning_rate=learning_rate_schedule(config, steps_per_epoch))


def predict(graphdef, state, images: np.ndarray, batch_size: int, scaling: str) -> np.ndarray:
    """Test logits [N, K] of the model in eval mode (batches padded to `batch_size`)."""

    @jax.jit
    def forward(params, model_state, x):
        model = nnx.merge(graphdef, params, model_state)
        model.eval()
        return model(normalise(x, scaling))

    return data.map_fixed_batches(lambda x: forward(state.params, state.model_state, x), (images,), batch_size)


def score(config: CifarLTConfig, logits: dict[str, np.ndarray], y_test: np.ndarray, counts: np.ndarray):
    """Balanced, per-class and head/middle/tail errors of every method's test logits [N, K], plus post-hoc
    adjustment of ERM with τ = `config.tau` and with τ tuned on `holdout_fraction` of the test set.

    Returns ({"balanced_error", "per_class_error", "groups": {method: ...}, "tuned_tau"}, (held, rest, τ));
    every error is measured on the test examples not held out for tuning (`rest`).
    """
    held, rest = metrics.holdout_split(y_test, config.holdout_fraction, seed=config.seed)
    prior = jnp.asarray(counts / counts.sum(), jnp.float32)
    logits = dict(logits)
    if "erm" in logits:
        tau, _ = metrics.tune_posthoc_tau(logits["erm"][held], y_test[held], prior)
        logits["posthoc"] = np.asarray(posthoc_logit_adjustment(logits["erm"], prior, config.tau))
        logits["posthoc_tuned"] = np.asarray(posthoc_logit_adjustment(logits["erm"], prior, tau))
    else:
        tau = None
    result: dict[str, Any] = {"balanced_error": {}, "per_class_error": {}, "groups": {}, "tuned_tau": tau}
    groups = metrics.class_groups(counts)
    for method, z in logits.items():
        per_class = np.asarray(metrics.per_class_error(z[rest].argmax(-1), y_test[rest], config.num_classes))
        result["balanced_error"][method] = float(np.nanmean(per_class))
        result["per_class_error"][method] = per_class.tolist()
        result["groups"][method] = metrics.group_errors(per_class, groups)
    return result, (held, rest, tau)


def evaluate_run(run) -> dict:
    """`kexue eval longtail.cifar_lt --run DIR`: every trained method restored (or `--model METHOD`), its test
    logits scored as the run scores them (`score`); writes eval.json and eval.md."""
    from shared.overrides import UsageError
    from shared.use import restore_model, write_outputs

    config = run.config
    _x_train, y_train, counts = long_tailed_train(config)
    x_test, y_test = load_split(config, "test")
    per_epoch, _ = step_counts(config, len(y_train))
    if run.model is not None and run.model not in config.methods:
        raise UsageError(f"--model {run.model!r}: the run trained {', '.join(config.methods)}")
    methods = [run.model] if run.model is not None else list(config.methods)
    logits, steps = {}, {}
    for method in methods:
        trainer = build(config, method, counts, per_epoch)
        state = restore_model(trainer, run, method)
        steps[method] = int(state.step)
        logits[method] = predict(trainer.graphdef, state, x_test, config.eval_batch_size, config.input_scaling)
    result, _ = score(config, logits, y_test, counts)
    result["step"] = steps
    published = PUBLISHED[config.dataset]
    write_outputs(run, "eval", result, [
        f"# longtail.cifar_lt: evaluation of {run.path} (steps {steps})",
        "| method | balanced error % | head % | middle % | tail % | Table 3 % |\n|---|---|---|---|---|---|\n"
        + "\n".join(f"| {m} | {100 * result['balanced_error'][m]:.2f} | {100 * result['groups'][m]['head']:.2f} | "
                    f"{100 * result['groups'][m]['middle']:.2f} | {100 * result['groups'][m]['tail']:.2f} | "
                    f"{published.get(m, '—')} |" for m in result["balanced_error"])])
    return result


def run(config: CifarLTConfig, ctx: RunContext) -> dict:
    """Trains every method, evaluates balanced / per-class / group errors, compares with Table 3."""
    x_train, y_train, counts = long_tailed_train(config)
    x_test, y_test = load_split(config, "test")
    per_epoch, total = step_counts(config, len(y_train))
    source = data.ArraySource({"image": x_train, "label": y_train})
    loop = Loop(num_steps=total, batch_size=config.batch_size, seed=config.seed, log_every=config.log_every,
                checkpoint_every=config.checkpoint_every)
    logits, seconds = {}, {}
    for method in config.methods:
        trainer = build(config, method, counts, per_epoch)
        start = time.perf_counter()
        state, _ = trainer.fit(source, loop, ctx=ctx, name=method, config=config, desc=f"cifar_lt/{method}")
        seconds[method] = time.perf_counter() - start
        logits[method] = predict(trainer.graphdef, state, x_test, config.eval_batch_size, config.input_scaling)
    result, (held, rest, tau) = score(config, logits, y_test, counts)
    result.update(train_seconds=seconds, steps=total, num_train=len(y_train), train_counts=counts.tolist())

    published = PUBLISHED[config.dataset]
    ctx.report.text(
        f"{config.dataset.upper()}-LT, ρ = {config.rho:g} ({len(y_train)} training images), {config.model}, "
        f"SGD {config.learning_rate} (momentum {config.momentum}, wd {config.weight_decay}), batch "
        f"{config.batch_size}, {total} steps ({per_epoch}/epoch). Post-hoc τ tuned on "
        f"{len(held)} test images: τ = {tau}; errors on the other {len(rest)}."
        + (" **Mock data: the numbers are meaningless (pipeline smoke test).**" if config.mock_data else ""))
    ctx.report.table(["method", "balanced error %", "head %", "middle %", "tail %", "Table 3 %"],
                     [[m, 100 * result["balanced_error"][m], 100 * result["groups"][m]["head"],
                       100 * result["groups"][m]["middle"], 100 * result["groups"][m]["tail"], published.get(m)]
                      for m in logits], floatfmt=".2f")
    return result


__all__ = ["PUBLISHED", "load_split", "long_tailed_train", "normalise", "make_model", "learning_rate_schedule",
           "decay_mask", "optimizer", "step_counts", "build", "predict", "score", "evaluate_run", "run"]
