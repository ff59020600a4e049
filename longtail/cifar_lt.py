"""`longtail.cifar_lt`: CIFAR-10-LT / CIFAR-100-LT with ResNet-32 (Menon et al. 2021, Sec. 6.2, Table 3).

Data: TFDS `cifar10` / `cifar100` read through `tfds.data_source` (array_record builds; see
`shared.data.tfds_source`), the training split subsampled to n_i = ⌊n_max ρ^{−i/(L−1)}⌋ with ρ = 100
(12,406 images for CIFAR-10-LT, 10,847 for CIFAR-100-LT), the test split balanced.
Recipe: ResNet-32 (`shared.models.cifar_resnet`), SGD momentum 0.9, batch 128, weight decay 1e-4,
lr 0.1 with linear warm-up over 5 epochs and ×0.1 at epochs 160 and 180, 200 epochs; pad-4 crop +
flip on device (`shared.augment`). Each method of `config.methods` is a separate, resumable run
through the harness (`shared.train.build_train_step`, `shared.loop.fit`); post-hoc adjustment
re-scores the ERM model with τ = 1 and with τ tuned on `holdout_fraction` of the test set; every
method is reported on the remaining test examples.
"""

from __future__ import annotations

import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from longtail import metrics
from longtail.configs import CifarLTConfig
from longtail.methods import make_loss
from shared import data, train
from shared.augment import random_crop_flip
from shared.loop import fit
from shared.losses import posthoc_logit_adjustment
from shared.models import cifar_resnet

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
    """All of a TFDS split in memory: images uint8 [N, 32, 32, 3], labels int32 [N] (CIFAR is 180 MB)."""
    with _mock_context(config):
        source = data.tfds_source(config.dataset, split, data_dir=config.data_dir or None)
        examples = [data.drop_non_array_fields(source[i]) for i in range(len(source))]
    images = np.stack([e["image"] for e in examples]).astype(np.uint8)
    labels = np.asarray([e["label"] for e in examples], np.int32)
    metrics.check_labels(labels, config.num_classes)
    return images, labels


def long_tailed_train(config: CifarLTConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The long-tailed training set: images [N, 32, 32, 3] uint8, labels [N], class counts [K]."""
    images, labels = load_split(config, "train")
    keep = data.long_tail_subsample(labels, config.rho, seed=config.seed)
    counts = np.bincount(labels[keep], minlength=config.num_classes)
    return images[keep], labels[keep], counts


def normalise(images: jax.Array) -> jax.Array:
    """uint8 [B, 32, 32, 3] -> float32 standardised per channel."""
    x = images.astype(jnp.float32) / 255.0
    return (x - MEAN[None, None, None, :]) / STD[None, None, None, :]


def learning_rate_schedule(config: CifarLTConfig, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up to `learning_rate` over `warmup_epochs`, then ×`decay_factor` at each of `decay_epochs`."""
    boundaries = {int(e * steps_per_epoch): config.decay_factor for e in config.decay_epochs}
    decay = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(config.learning_rate / warmup_steps, config.learning_rate, warmup_steps)
    return lambda step: jnp.where(step < warmup_steps, warmup(step), decay(step))


def optimizer(config: CifarLTConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum and L2 weight decay (added to the gradient, as in the paper's recipe)."""
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(learning_rate_schedule(config, steps_per_epoch), momentum=config.momentum))


def num_steps(config: CifarLTConfig, num_train: int) -> tuple[int, int]:
    """(steps per epoch, total steps) for `num_train` long-tailed training images."""
    per_epoch = max(1, num_train // config.batch_size)
    total = config.epochs * per_epoch
    return per_epoch, (min(total, config.max_steps) if config.max_steps > 0 else total)


def build(config: CifarLTConfig, method: str, counts: np.ndarray, steps_per_epoch: int, mesh):
    """(graphdef, placed state, jitted train step) for one method."""
    model = cifar_resnet(config.depth, config.num_classes, rngs=nnx.Rngs(config.seed))
    tx = optimizer(config, steps_per_epoch)
    graphdef, state = train.create_train_state(model, tx, jax.random.PRNGKey(config.seed))
    loss_of = make_loss(method, counts, tau=config.tau, ldam_scale=config.ldam_scale)

    def objective(model, batch, rng):
        model.train()
        images = random_crop_flip(rng, normalise(batch["image"]))
        logits = model(images)  # [B, K]
        per_example = loss_of(logits, batch["label"])  # [B]
        return per_example.mean(), {"accuracy": jnp.mean(logits.argmax(-1) == batch["label"])}

    step = train.build_train_step(train.nnx_loss(graphdef, objective), tx, mesh, state)
    state = jax.device_put(state, train.state_sharding(state, mesh))
    return graphdef, state, step


def predict(graphdef, state, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Test logits [N, K] of the model in eval mode (batches padded to `batch_size`)."""

    @jax.jit
    def forward(params, model_state, x):
        model = nnx.merge(graphdef, params, model_state)
        model.eval()
        return model(normalise(x))

    return train.map_fixed_batches(lambda x: forward(state.params, state.model_state, x), (images,), batch_size)


def run(config: CifarLTConfig, ctx) -> dict:
    """Trains every method, evaluates balanced / per-class / group errors, compares with Table 3."""
    x_train, y_train, counts = long_tailed_train(config)
    x_test, y_test = load_split(config, "test")
    mesh = train.make_mesh()
    per_epoch, total = num_steps(config, len(y_train))
    dataset = data.make_dataset(data.ArraySource({"image": x_train, "label": y_train}),
                                batch_size=config.batch_size, seed=config.seed)
    held, rest = metrics.holdout_split(y_test, config.holdout_fraction, seed=config.seed)
    prior = jnp.asarray(counts / counts.sum(), jnp.float32)
    groups = metrics.class_groups(counts)
    logits, seconds = {}, {}
    for method in config.methods:
        graphdef, state, step = build(config, method, counts, per_epoch, mesh)
        checkpointer = train.Checkpointer(ctx.checkpoint_dir / method, keep=2)
        start = time.perf_counter()
        state, history = fit(state=state, train_step=step, dataset=dataset, mesh=mesh, num_steps=total,
                             checkpointer=checkpointer, checkpoint_every=config.checkpoint_every,
                             resume=ctx.resume, log_every=config.log_every, config=config, ctx=ctx,
                             desc=f"cifar_lt/{method}")
        checkpointer.close()
        seconds[method] = time.perf_counter() - start
        logits[method] = predict(graphdef, state, x_test, config.eval_batch_size)
    tau, tau_errors = metrics.tune_posthoc_tau(logits["erm"][held], y_test[held], prior)
    logits["posthoc"] = np.asarray(posthoc_logit_adjustment(logits["erm"], prior, config.tau))
    logits["posthoc_tuned"] = np.asarray(posthoc_logit_adjustment(logits["erm"], prior, tau))

    result = {"balanced_error": {}, "groups": {}, "tuned_tau": tau, "train_seconds": seconds,
              "steps": total, "num_train": int(len(y_train)), "train_counts": counts.tolist()}
    for method, z in logits.items():
        per_class = np.asarray(metrics.per_class_error(z[rest].argmax(-1), y_test[rest], config.num_classes))
        result["balanced_error"][method] = float(np.nanmean(per_class))
        result["groups"][method] = metrics.group_errors(per_class, groups)

    published = PUBLISHED[config.dataset]
    ctx.report.text(
        f"{config.dataset.upper()}-LT, ρ = {config.rho:g} ({len(y_train)} training images), ResNet-{config.depth}, "
        f"SGD {config.learning_rate} (momentum {config.momentum}, wd {config.weight_decay}), batch "
        f"{config.batch_size}, {total} steps ({per_epoch}/epoch). Post-hoc τ tuned on "
        f"{len(held)} test images: τ = {tau}; errors on the other {len(rest)}."
        + (" **Mock data: the numbers are meaningless (pipeline smoke test).**" if config.mock_data else ""))
    ctx.report.table(["method", "balanced error %", "head %", "middle %", "tail %", "Table 3 %"],
                     [[m, 100 * result["balanced_error"][m], 100 * result["groups"][m]["head"],
                       100 * result["groups"][m]["middle"], 100 * result["groups"][m]["tail"], published.get(m)]
                      for m in logits], floatfmt=".2f")
    return result


__all__ = ["PUBLISHED", "load_split", "long_tailed_train", "normalise", "learning_rate_schedule", "optimizer",
           "num_steps", "build", "predict", "run"]
