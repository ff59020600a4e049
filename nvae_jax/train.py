"""NVAE training objective on the shared harness (shared/train.py), with NVAE's schedules.

loss = mean_b[recon_b + β·Σ_i w_i KL_bi] + λ·(Σ_convs σ_max(W) + Σ_BN max|γ|)      (NVAE Sec. 3.2, App. A)

β = `shared.hvae.kl_warmup_coeff`: kl_min_coeff for the first `kl_const_portion` of training, then
linear to 1 over `kl_anneal_portion`; w are the KL-balancing coefficients (shared.hvae.kl_balance, only while β < 1);
λ = `weight_decay_norm`, or annealed from `weight_decay_norm_init` with β (`spectral_coeff`); σ_max by
power iteration with persistent vectors (`spectral_penalty`, every conv, in a few zero-padded batches);
Adamax(0.9, 0.999, eps 1e-3) with L2 3e-4 added to the gradient and the lr schedule of `lr_schedule`,
with its small leaves flattened into one vector. CIFAR-10 and CelebA-64 batches are flipped left-right at random
(`random_flip`, as the official training transforms). Reference: Vahdat & Kautz 2020, arXiv 2007.03898.

β is a pure function of the step counter: the jitted step computes β(state.step) and hands it to the
loss as `batch["beta"]` (a scalar made inside the step), so a resumed run sees exactly the β schedule
of an uninterrupted one. Binarised MNIST is dynamically binarised inside the step (Bernoulli draw
from the step key). Training runs on `shared.trainer`: data-parallel mesh, data indexed by step,
checkpoints of the whole `TrainState` (params, Adamax state, BN statistics and the persistent
power-iteration vectors in `model_state`); exact resume.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nvae_jax.configs import Config
from nvae_jax.layers import WNConv, power_iteration, warm_start_spectral
from nvae_jax.model import NVAE
from shared import hvae, workarounds
from shared.data import ArraySource
from shared.experiment import RunContext
from shared.trainer import Loop, Trainer
from shared.transforms import flatten_small_leaves

__all__ = ["bn_penalty", "padded_buckets", "spectral_penalty", "spectral_coeff", "lr_schedule",
           "make_optimizer", "nvae_loss", "make_trainer", "build_step", "fit"]


def spectral_coeff(cfg: Config, beta: jax.Array) -> jax.Array:
    """λ: `weight_decay_norm`, or with `weight_decay_norm_anneal` exp((1 − β) log λ_init + β log λ) (official)."""
    if not cfg.weight_decay_norm_anneal:
        return jnp.float32(cfg.weight_decay_norm)
    if cfg.weight_decay_norm_init <= 0 or cfg.weight_decay_norm <= 0:
        raise ValueError("weight_decay_norm_anneal needs weight_decay_norm_init > 0 and weight_decay_norm > 0")
    return jnp.exp((1.0 - beta) * math.log(cfg.weight_decay_norm_init) + beta * math.log(cfg.weight_decay_norm))


def lr_schedule(cfg: Config, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """The learning rate per step.

    "official" (train.py): lr·step/W over the first W = `warmup_steps` steps (from 0), then a cosine
    stepped once per epoch: lr_min + (lr_W − lr_min)·½(1 + cos(π e/E)) with e = epoch − warmup_epochs
    (≥ 0), E = epochs − warmup_epochs − 1 and lr_W = lr·(W − 1)/W the last warm-up value (PyTorch's
    recursive CosineAnnealingLR started from it); an epoch is total_steps / epochs steps.
    "per_step": linear from lr·1e-3 to lr over W steps, then a cosine per step to lr_min.
    """
    lr, lr_min = cfg.learning_rate, cfg.learning_rate_min
    if cfg.lr_schedule == "per_step":
        warm = max(1, min(warmup_steps, total_steps - 1))
        return optax.join_schedules([
            optax.linear_schedule(lr * 1e-3, lr, warm),
            optax.cosine_decay_schedule(lr, max(total_steps - warm, 1), alpha=lr_min / lr)], [warm])
    warm = max(0, warmup_steps)
    per_epoch = total_steps / max(cfg.epochs, 1)
    span = max(cfg.epochs - cfg.warmup_epochs - 1, 1)
    lr_w = lr * (warm - 1) / warm if warm > 0 else lr

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        e = jnp.clip(jnp.floor(step / per_epoch) - cfg.warmup_epochs, 0, span)
        cosine = lr_min + (lr_w - lr_min) * 0.5 * (1.0 + jnp.cos(jnp.pi * e / span))
        return cosine if warm == 0 else jnp.where(step < warm, lr * step / warm, cosine)

    return schedule


def bn_penalty(model: nnx.Module) -> jax.Array:
    """Σ over BN layers of max |γ| (NVAE's BN term); a stacked BN (γ [n, C]) counts as its n layers."""
    tot = jnp.float32(0.0)
    for _, m in nnx.iter_graph(model):
        if isinstance(m, nnx.BatchNorm) and m.scale is not None:
            tot = tot + jnp.sum(jnp.max(jnp.abs(m.scale[...]), axis=-1))
    return tot


def padded_buckets(shapes: list[tuple[int, int]], max_padding: float = 1.5) -> list[list[int]]:
    """Groups matrix shapes [M_i, N_i] into buckets padded to (max M, max N) of their members.

    Greedy: start from one bucket per distinct shape, then repeatedly merge the two buckets whose
    merge adds the fewest padded elements, while all buckets together hold at most `max_padding` ×
    the real elements. Returns the indices into `shapes` of each bucket, in first-seen order.
    Deterministic (a pure function of `shapes`), so every trace of a model makes the same buckets.
    """
    if max_padding < 1.0:
        raise ValueError(f"padded_buckets: max_padding must be >= 1, got {max_padding}")
    distinct = list(dict.fromkeys(shapes))
    members = {s: [i for i, t in enumerate(shapes) if t == s] for s in distinct}
    # a bucket: [max rows, max cols, number of matrices, indices]
    buckets: list[list[Any]] = [[m, n, len(members[(m, n)]), members[(m, n)]] for m, n in distinct]
    budget = max_padding * sum(m * n for m, n in shapes)

    def size(b):
        return b[0] * b[1] * b[2]

    total = sum(size(b) for b in buckets)
    while len(buckets) > 1:
        extra, i, j = min((max(a[0], b[0]) * max(a[1], b[1]) * (a[2] + b[2]) - size(a) - size(b), i, j)
                          for i, a in enumerate(buckets) for j, b in enumerate(buckets) if i < j)
        if total + extra > budget:
            break
        a, b = buckets[i], buckets.pop(j)
        buckets[i] = [max(a[0], b[0]), max(a[1], b[1]), a[2] + b[2], sorted(a[3] + b[3])]
        total += extra
    return sorted((b[3] for b in buckets), key=lambda idx: idx[0])


def _zero_pad(x: jax.Array, *target: int) -> jax.Array:
    """x zero-padded at the end of each axis to the `target` sizes."""
    return jnp.pad(x, [(0, t - d) for t, d in zip(target, x.shape)])


# convs with at least this many weights (a stacked conv counted whole) skip `spectral_penalty`'s buckets
SPECTRAL_ALONE_MIN_SIZE = 1 << 20


def spectral_penalty(model: nnx.Module, num_iter: int) -> jax.Array:
    """Σ over all convs of σ_max(W reshaped [C_out, k·k·C_in/g]); updates the persistent u, v.

    As in the official `spectral_norm_parallel`, the power iterations of many convs run as one
    batched (vmapped) computation. Where the official code stacks convs of equal shape, here the
    matrices are zero-padded into a few buckets (`padded_buckets`, ≤ 1.5× the elements): zero rows
    and columns change no singular value and keep the padded entries of u and v at zero, so every
    conv gets exactly its own σ, u and v, while the step has a few batched power iterations instead of
    one per distinct shape, so far fewer compiled kernels (`benchmarks/bench_nvae.py`; figures in
    benchmarks/RESULTS.md, nvae_jax item 10). A conv of at least `SPECTRAL_ALONE_MIN_SIZE` weights runs
    its own iteration on its kernel as it is, since a bucket would copy it.
    """
    convs = [m for _, m in nnx.iter_graph(model) if isinstance(m, WNConv)]
    # a conv stored stacked (`shared.layer_scan`, sn_u [n, C_out]) is n matrices of one shape, so one bucket
    counts = [m.sn_u.size // m.sn_u.shape[-1] for m in convs]
    shapes = [(m.sn_u.shape[-1], m.sn_v.shape[-1]) for m in convs]
    # a large conv runs its own (stacked) power iteration on its kernel as it is: copying it into a padded
    # bucket would add a temporary of its size to the step
    alone = [i for i, n in enumerate(counts) if n * shapes[i][0] * shapes[i][1] >= SPECTRAL_ALONE_MIN_SIZE]
    matrices = [i for i, n in enumerate(counts) if i not in alone for _ in range(n)]  # the conv of each matrix
    buckets = [list(dict.fromkeys(matrices[k] for k in idx)) for idx in padded_buckets([shapes[i] for i in matrices])]
    tot = jnp.float32(0.0)
    for members in buckets + [[i] for i in alone]:
        rows, cols = max(shapes[i][0] for i in members), max(shapes[i][1] for i in members)
        # W [C_out, k·k·C_in/g] is the transpose of the HWIO kernel reshaped (a free bitcast) to
        # [k·k·C_in/g, C_out]: stack those and let the batched matvecs contract the other axis
        kernels = [_zero_pad(convs[i].weight().reshape(counts[i], -1, shapes[i][0]), counts[i], cols, rows)
                   for i in members]
        w = jnp.swapaxes(jnp.concatenate(kernels), 1, 2)
        u = jnp.concatenate([_zero_pad(convs[i].sn_u[...].reshape(counts[i], -1), counts[i], rows) for i in members])
        v = jnp.concatenate([_zero_pad(convs[i].sn_v[...].reshape(counts[i], -1), counts[i], cols) for i in members])
        sigma, u, v = jax.vmap(power_iteration, in_axes=(0, 0, 0, None))(w, u, v, num_iter)
        start = 0
        for i in members:  # set_value, not `[...] =`, whose tracer probe walks the whole trace
            n = counts[i]
            convs[i].sn_u.set_value(u[start:start + n, :shapes[i][0]].reshape(convs[i].sn_u.shape))
            convs[i].sn_v.set_value(v[start:start + n, :shapes[i][1]].reshape(convs[i].sn_v.shape))
            start += n
        tot = tot + jnp.sum(sigma)
    return tot


def make_optimizer(cfg: Config, total_steps: int, warmup_steps: int) -> optax.GradientTransformation:
    """Adamax(0.9, 0.999, eps 1e-3) with L2 `weight_decay` added to the gradient; the lr of `lr_schedule`.

    Wrapped in `shared.transforms.flatten_small_leaves`: the hundreds of small leaves are updated as one
    raveled vector (few kernels: faster to compile and to run on CPU), the large ones in place (no
    parameter-sized copies of the gradient and the update). Same maths.
    """
    sched = lr_schedule(cfg, total_steps, warmup_steps)
    return flatten_small_leaves(optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                                            optax.scale_by_adamax(0.9, 0.999, 1e-3),
                                            optax.scale_by_learning_rate(sched)))


def nvae_loss(model: NVAE, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """NVAE objective for one batch: {"image": [B,H,W,C] in [0,1], "beta": [] (from the step)} → (loss, metrics).

    MNIST (`cfg.dataset == "mnist"`) is binarised here, x ~ Bernoulli(pixel intensity), from the step key;
    CIFAR-10 / CelebA-64 images are flipped left-right with probability ½ each (`cfg.random_flip`).
    """
    cfg = model.cfg
    x = batch["image"]
    if cfg.dataset == "mnist":
        x = jax.random.bernoulli(jax.random.fold_in(rng, 1), x).astype(jnp.float32)
    if cfg.random_flip and cfg.dataset in ("cifar10", "celeba64"):
        flip = jax.random.bernoulli(jax.random.fold_in(rng, 2), 0.5, (x.shape[0], 1, 1, 1))
        x = jnp.where(flip, x[:, :, ::-1], x)
    beta = batch["beta"]
    alpha = hvae.kl_balancer_coeffs(cfg.groups)
    recon, kl_groups, _ = model(x, jax.random.fold_in(rng, 0))
    kl_w, _ = hvae.kl_balance(kl_groups, beta, alpha, cfg.kl_balance)
    spec = spectral_penalty(model, cfg.num_power_iter)
    bn = bn_penalty(model)
    loss = jnp.mean(recon + kl_w) + spectral_coeff(cfg, beta) * (spec + bn)  # the batch reduction
    nelbo = jnp.mean(recon + jnp.sum(kl_groups, axis=1))
    return loss, {"nelbo": nelbo, "recon": jnp.mean(recon), "kl": jnp.mean(jnp.sum(kl_groups, axis=1)),
                  "spectral": spec, "bn": bn, "beta": beta}


def make_trainer(cfg: Config, total_steps: int, mesh=None) -> Trainer:
    """The `shared.trainer.Trainer` of `cfg` for a run of `total_steps` steps; batches are {"image"}.

    The step is `shared.train.make_step` of `nvae_loss`, wrapped to put β(state.step) into the batch,
    jitted with the trainer's shardings (`mesh` defaults to all devices) and, on CPU,
    `shared.workarounds.cpu_compiler_options()` (XLA:CPU's elemental emitters: a third of the compile memory).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    model = NVAE(cfg, rngs=nnx.Rngs(cfg.seed))
    warm_start_spectral(model, 40)  # NVAE's long first power-iteration estimate
    warm = max(1, round(total_steps * cfg.warmup_epochs / max(cfg.epochs, 1)))

    def with_beta(step):
        def beta_step(state, batch):
            beta = hvae.kl_warmup_coeff(state.step, total_steps, cfg.kl_anneal_portion, cfg.kl_min_coeff,
                                        cfg.kl_const_portion)
            return step(state, {**batch, "beta": beta})

        return beta_step

    return Trainer(model, make_optimizer(cfg, total_steps, warm), nvae_loss, seed=cfg.seed, mesh=mesh,
                   wrap_step=with_beta, compiler_options=workarounds.cpu_compiler_options())


def build_step(cfg: Config, total_steps: int, mesh=None):
    """(graphdef, state placed on the mesh, jitted step) of `make_trainer(cfg, total_steps, mesh)`,
    for driving the step by hand (benchmarks, tests)."""
    trainer = make_trainer(cfg, total_steps, mesh)
    return trainer.graphdef, trainer.state, trainer.train_step


def fit(cfg: Config, images, steps: int, *, ctx: RunContext | None = None,
        checkpoint_dir: str | pathlib.Path | None = None, resume: bool = False, checkpoint_every: int = 0,
        log_every: int = 25, desc: str = "nvae", transform=None, mesh=None):
    """Train `steps` steps on images [N,H,W,C] in [0, 1] (or a random-access source + `transform`).

    Runs `shared.trainer.Trainer.fit` (checkpoints under `checkpoint_dir` every `checkpoint_every`
    steps and at the end; `resume` continues from the newest one exactly). Returns (graphdef, state,
    history) with history a list of {"step", "nelbo", "loss", ...} window means.
    """
    trainer = make_trainer(cfg, steps, mesh)
    source = ArraySource({"image": images}) if isinstance(images, np.ndarray) else images
    loop = Loop(num_steps=steps, batch_size=cfg.batch_size, seed=cfg.seed, log_every=log_every,
                checkpoint_every=checkpoint_every)
    state, history = trainer.fit(source, loop, ctx=ctx, checkpoint_dir=checkpoint_dir, resume=resume,
                                 transform=transform, config=cfg, desc=desc)
    return trainer.graphdef, state, history
