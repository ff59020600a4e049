"""Makes the NVAE parity fixture: numbers that the official NVlabs/NVAE code produces on tiny configs.

    /work/venv-torch/bin/python scripts/make_nvae_parity_fixture.py --peer-src /work/peers/NVAE \
        [--out tests/fixtures/nvae_parity] [--full-mnist /tmp/nvae_full_mnist.pt]

Runs under an interpreter with torch (CPU is enough) and imports nothing of this repository but
`scripts/nvae_official_patches.py` (the run-time CPU patches; the official checkout stays outside the
repository, read-only). For each config (`CONFIGS`: Bernoulli MNIST with a flow and adaptive groups,
DMoL colour, Normal colour) it builds the official `AutoEncoder` from the official `train.py` argument
parser (its source is read and the parser block executed, so `args` has exactly train.py's fields and
defaults), trains it `TRAIN_STEPS` steps with train.py's objective so that parameters and BN statistics
move off their initial values, then records with the Normal sampler patched to draw and keep its noise:

- eval mode (`model.eval()`): the forward pass on a fixed batch: per-group KL [B, G], log p(x|z) [B],
  log q and log p [B], the decoder output, and the balanced loss mean(recon + balanced KL) at β = `BETA`;
- a sample at t = 0.7: the decoder output of `model.sample(B, 0.7)`;
- train mode: the same batch's forward pass with batch statistics and its balanced loss at β = `BETA`.

Each config is saved as `<name>.npz`: `sd/<state_dict key>` (the official tensors), `args_json`, `x`
[B, H, W, C], the injected noise `eps_eval_i`, `eps_sample_i`, `eps_train_i` (NHWC, in drawing order) and
the outputs. A fourth, smallest config (`CHECKPOINT`) is also written in the official train.py checkpoint
format (`official_checkpoint.pt`: state_dict, optimizer, args, ...), its npz without the `sd/` tensors, to
test the checkpoint reader.
`--full-mnist PATH` writes an initialised official full-MNIST-architecture checkpoint (33.4M parameters,
not committed) to time the converter.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import textwrap

import numpy as np

BATCH = 2
TRAIN_STEPS = 3
BETA = 0.3  # KL coefficient of the recorded balanced losses (< 1, so KL balancing is active)
TINY = ["--num_channels_enc", "4", "--num_channels_dec", "4", "--num_latent_per_group", "4",
        "--num_preprocess_blocks", "1", "--num_postprocess_blocks", "1", "--num_cell_per_cond_enc", "1",
        "--num_cell_per_cond_dec", "1", "--use_se", "--res_dist", "--learning_rate", "1e-2",
        "--weight_decay_norm", "1e-2", "--batch_size", str(BATCH), "--seed", "0"]
CONFIGS = {
    # Bernoulli output, a paired flow per group, adaptive groups (3, 1)
    "mnist_flow_adaptive": ["--dataset", "mnist", "--num_latent_scales", "2", "--num_groups_per_scale", "3",
                            "--ada_groups", "--num_nf", "1", "--num_preprocess_cells", "2",
                            "--num_postprocess_cells", "2"] + TINY,
    # discretised logistic mixture (2 components, RGB coupling)
    "cifar10_dmol": ["--dataset", "cifar10", "--num_latent_scales", "2", "--num_groups_per_scale", "2",
                     "--num_mixture_dec", "2", "--num_preprocess_cells", "1", "--num_postprocess_cells", "1"] + TINY,
    # Normal output (num_mixture_dec 1), one flow, one scale
    "cifar10_normal": ["--dataset", "cifar10", "--num_latent_scales", "1", "--num_groups_per_scale", "2",
                       "--num_mixture_dec", "1", "--num_nf", "1", "--num_preprocess_cells", "2",
                       "--num_postprocess_cells", "2"] + TINY,
}
# the checkpoint-reader test's file, in train.py's format (with the optimiser state): as small as it gets
CHECKPOINT = ["--dataset", "mnist", "--num_latent_scales", "1", "--num_groups_per_scale", "2",
              "--num_preprocess_cells", "1", "--num_postprocess_cells", "1"] + TINY
FULL_MNIST = ["--dataset", "mnist", "--batch_size", "200", "--epochs", "400", "--num_latent_scales", "2",
              "--num_groups_per_scale", "10", "--num_postprocess_cells", "3", "--num_preprocess_cells", "3",
              "--num_cell_per_cond_enc", "2", "--num_cell_per_cond_dec", "2", "--num_latent_per_group", "20",
              "--num_preprocess_blocks", "2", "--num_postprocess_blocks", "2", "--weight_decay_norm", "1e-2",
              "--num_channels_enc", "32", "--num_channels_dec", "32", "--num_nf", "0", "--ada_groups",
              "--num_process_per_node", "2", "--use_se", "--res_dist", "--fast_adamax"]


def official_parser(src: pathlib.Path) -> argparse.ArgumentParser:
    """train.py's own argument parser, from its source (the block from `ArgumentParser(` to `parse_args()`)."""
    text = (src / "train.py").read_text()
    start = text.index("    parser = argparse.ArgumentParser(")
    end = text.index("    args = parser.parse_args()")
    scope: dict = {"argparse": argparse}
    exec(textwrap.dedent(text[start:end]), scope)  # the official checkout's own parser
    return scope["parser"]


class NoiseTape:
    """Replaces `distributions.Normal.sample` with draws from a seeded generator that it keeps (NCHW)."""

    def __init__(self, distributions, torch, seed: int):
        self.drawn: list[np.ndarray] = []
        self.gen = torch.Generator().manual_seed(seed)
        tape = self

        def sample(normal):
            eps = torch.randn(normal.mu.shape, generator=tape.gen)
            tape.drawn.append(eps.numpy().copy())
            return eps * normal.sigma + normal.mu, eps

        distributions.Normal.sample = sample

    def take(self) -> list[np.ndarray]:
        """The noise drawn since the last call, NHWC."""
        out, self.drawn = [e.transpose(0, 2, 3, 1) for e in self.drawn], []
        return out


def batch(args, rng: np.random.Generator) -> np.ndarray:
    """A fixed batch [B, C, H, W] in [0, 1]: binarised padded MNIST-like images, or 8-bit colour with the
    values 0, 254 and 255 present (the DMoL edges)."""
    if args.dataset == "mnist":
        x = (rng.random((BATCH, 1, 28, 28)) < 0.3).astype(np.float32)
        return np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    x = rng.integers(0, 256, (BATCH, 3, 32, 32))
    x[:, :, 0, :3] = [0, 254, 255]
    return (x / 255.0).astype(np.float32)


def losses(model, utils, x, alpha, beta):
    """One forward pass: (outputs dict, balanced loss) as train.py computes them."""
    import torch

    logits, log_q, log_p, kl_all, _ = model(x)
    output = model.decoder_output(logits)
    recon = utils.reconstruction_loss(output, x, crop=model.crop_output)
    balanced, _, _ = utils.kl_balancer(kl_all, beta, kl_balance=True, alpha_i=alpha)
    loss = torch.mean(recon + balanced)
    outs = {"kl": torch.stack(kl_all, 1), "log_px": -recon, "log_q": log_q, "log_p": log_p,
            "logits": logits.permute(0, 2, 3, 1)}
    return {k: v.detach().numpy() for k, v in outs.items()}, loss


def make(name: str, flags: list[str], src: pathlib.Path, out: pathlib.Path, modules) -> None:
    import torch

    official_model, utils, distributions = modules
    args = official_parser(src).parse_args(flags)
    torch.manual_seed(args.seed)
    model = official_model.AutoEncoder(args, None, utils.get_arch_cells(args.arch_instance))
    x = torch.from_numpy(batch(args, np.random.default_rng(0)))
    alpha = utils.kl_balancer_coeff(num_scales=model.num_latent_scales, groups_per_scale=model.groups_per_scale,
                                    fun="square")
    opt = torch.optim.Adamax(model.parameters(), args.learning_rate, weight_decay=args.weight_decay, eps=1e-3)
    model.train()
    for step in range(TRAIN_STEPS):  # train.py's objective, so that weights and BN statistics move
        opt.zero_grad()
        _, loss = losses(model, utils, x, alpha, utils.kl_coeff(step, 10, 0, 1e-4))
        loss = loss + args.weight_decay_norm * (model.spectral_norm_parallel() + model.batchnorm_loss())
        loss.backward()
        opt.step()
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    tape = NoiseTape(distributions, torch, seed=1)
    rec = {"x": x.permute(0, 2, 3, 1).numpy(), "beta": np.float32(BETA), "args_json": json.dumps(vars(args))}
    model.eval()
    with torch.no_grad():
        outs, loss = losses(model, utils, x, alpha, BETA)
        rec.update({f"eval_{k}": v for k, v in outs.items()}, eval_loss=loss.numpy())
        rec.update({f"eps_eval_{i}": e for i, e in enumerate(tape.take())})
        rec["sample_logits"] = model.sample(BATCH, 0.7).permute(0, 2, 3, 1).numpy()
        rec.update({f"eps_sample_{i}": e for i, e in enumerate(tape.take())})
        model.train()
        outs, loss = losses(model, utils, x, alpha, BETA)
        rec.update({f"train_{k}": v for k, v in outs.items() if k != "logits"}, train_loss=loss.numpy())
        rec.update({f"eps_train_{i}": e for i, e in enumerate(tape.take())})
    if name != "checkpoint":  # that one's tensors are in official_checkpoint.pt
        rec.update({f"sd/{k}": v for k, v in state.items()})
    np.savez_compressed(out / f"{name}.npz", **rec)
    print(f"{name}: {sum(v.size for k, v in state.items() if 'running' not in k)} numbers in the state_dict, "
          f"groups {model.groups_per_scale}, eval loss {float(rec['eval_loss']):.3f}")
    if name == "checkpoint":
        save_checkpoint(out / "official_checkpoint.pt", model, opt, args, utils)


def save_checkpoint(path: pathlib.Path, model, opt, args, utils) -> None:
    """The dictionary that the official train.py saves as checkpoint.pt, with this model and optimiser."""
    import torch

    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, float(args.epochs - args.warmup_epochs - 1),
                                                           eta_min=args.learning_rate_min)
    torch.save({"epoch": 1, "state_dict": model.state_dict(), "optimizer": opt.state_dict(), "global_step": TRAIN_STEPS,
                "args": args, "arch_instance": utils.get_arch_cells(args.arch_instance),
                "scheduler": scheduler.state_dict(), "grad_scalar": {}}, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-src", required=True, help="a checkout of NVlabs/NVAE outside this repository")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
                                         / "nvae_parity"))
    ap.add_argument("--full-mnist", default=None, help="also write an official full-MNIST checkpoint here")
    ap.add_argument("--only", default=None, help="write only this config")
    args = ap.parse_args(argv)
    src = pathlib.Path(args.peer_src).resolve()
    if not (src / "model.py").is_file() or not (src / "train.py").is_file():
        sys.exit(f"make_nvae_parity_fixture: {src} is not an NVlabs/NVAE checkout (no model.py / train.py)")
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import nvae_official_patches
    import torch

    torch.set_num_threads(2)
    modules = nvae_official_patches.patch(str(src))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, flags in {**CONFIGS, "checkpoint": CHECKPOINT}.items():
        if args.only in (None, name):
            make(name, flags, src, out, modules)
    if args.full_mnist:
        official_model, utils, _ = modules
        margs = official_parser(src).parse_args(FULL_MNIST)
        torch.manual_seed(margs.seed)
        model = official_model.AutoEncoder(margs, None, utils.get_arch_cells(margs.arch_instance))
        opt = torch.optim.Adamax(model.parameters(), margs.learning_rate, weight_decay=margs.weight_decay, eps=1e-3)
        save_checkpoint(pathlib.Path(args.full_mnist), model, opt, margs, utils)
        print(f"full MNIST: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters -> {args.full_mnist}")


if __name__ == "__main__":
    main()
