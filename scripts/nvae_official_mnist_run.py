"""The official NVAE trained and scored on real MNIST on CPU, as `benchmarks/nvae_real_mnist.py`'s peer side.

    PEER_PYTHON scripts/nvae_official_mnist_run.py SRC SPEC_JSON

Runs under an interpreter with torch and imports nothing of this repository but `nvae_official_patches`
(the run-time CPU patches; the official checkout SRC stays outside, read-only). SPEC_JSON names the
official train.py flags, the step count, the schedule's epoch length, the data files (.npy written by
the orchestrator: train intensities [N, 32, 32, 1] in [0, 1], the fixed binarised test subset) and the
output JSON. The training step is train.py's `train` loop body in fp32 (no autocast / GradScaler): lr
warm-up per step from 0, `CosineAnnealingLR` stepped at each epoch start after the warm-up epochs,
`utils.kl_coeff`, KL balancing, spectral + BN terms, Adamax(eps 1e-3), dynamic binarisation. The test
score is train.py's `test`: eval-mode BN, log p(x) by logsumexp over K importance weights − log K.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np


def main() -> None:
    src, spec = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import nvae_official_patches
    import torch
    from make_nvae_parity_fixture import official_parser

    torch.set_num_threads(spec["threads"])
    official_model, utils, _ = nvae_official_patches.patch(src)
    args = official_parser(pathlib.Path(src)).parse_args(spec["flags"])
    torch.manual_seed(args.seed)
    model = official_model.AutoEncoder(args, None, utils.get_arch_cells(args.arch_instance))
    opt = torch.optim.Adamax(model.parameters(), args.learning_rate, weight_decay=args.weight_decay, eps=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, float(args.epochs - args.warmup_epochs - 1),
                                                       eta_min=args.learning_rate_min)
    alpha = utils.kl_balancer_coeff(num_scales=model.num_latent_scales, groups_per_scale=model.groups_per_scale,
                                    fun="square")
    train_x = torch.from_numpy(np.load(spec["train"])).permute(0, 3, 1, 2).contiguous()
    steps, per_epoch, warm = spec["steps"], spec["steps_per_epoch"], spec["warmup_steps"]
    rng = np.random.default_rng(args.seed)
    order = np.concatenate([rng.permutation(len(train_x)) for _ in range(steps * args.batch_size // len(train_x) + 1)])
    curve, window, t_train = [], [], time.perf_counter()
    model.train()
    for step in range(steps):
        if step % per_epoch == 0 and step // per_epoch > args.warmup_epochs:
            sched.step()  # train.py steps the scheduler at the start of each epoch after the warm-up epochs
        if step < warm:
            for group in opt.param_groups:
                group["lr"] = args.learning_rate * float(step) / warm
        x = torch.bernoulli(train_x[order[step * args.batch_size:(step + 1) * args.batch_size]])
        opt.zero_grad()
        logits, _, _, kl_all, _ = model(x)
        output = model.decoder_output(logits)
        beta = utils.kl_coeff(step, args.kl_anneal_portion * steps, args.kl_const_portion * steps, args.kl_const_coeff)
        recon = utils.reconstruction_loss(output, x, crop=model.crop_output)
        balanced, _, _ = utils.kl_balancer(kl_all, beta, kl_balance=True, alpha_i=alpha)
        loss = torch.mean(recon + balanced)
        loss = loss + (model.spectral_norm_parallel() + model.batchnorm_loss()) * args.weight_decay_norm
        loss.backward()
        opt.step()
        window.append(float(torch.mean(recon + sum(kl_all)).detach()))
        if (step + 1) % spec["log_every"] == 0:
            curve.append({"step": step + 1, "nelbo": float(np.mean(window)), "seconds": time.perf_counter() - t_train})
            window = []
            print(json.dumps(curve[-1]), flush=True)
    train_s = time.perf_counter() - t_train
    test_x = torch.from_numpy(np.load(spec["test"])).permute(0, 3, 1, 2).contiguous()
    model.eval()
    nll, t_eval = [], time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(test_x), spec["eval_batch"]):
            x = test_x[lo:lo + spec["eval_batch"]]
            log_iw = []
            for _ in range(spec["k"]):
                logits, log_q, log_p, _, _ = model(x)
                log_iw.append(utils.log_iw(model.decoder_output(logits), x, log_q, log_p, crop=model.crop_output))
            nll.append(-(torch.logsumexp(torch.stack(log_iw, 1), 1) - np.log(spec["k"])).numpy())
    nll_all = np.concatenate(nll)
    out = {"curve": curve, "train_s": train_s, "steps_per_s": steps / train_s, "test_nll": float(nll_all.mean()),
           "test_nll_sem": float(nll_all.std() / np.sqrt(len(nll_all))),
           "test_nll_per_image": nll_all.tolist(), "eval_s": time.perf_counter() - t_eval,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "torch": torch.__version__,
           "threads": torch.get_num_threads()}
    pathlib.Path(spec["out"]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
