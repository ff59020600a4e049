"""tiny_mnist trained on real MNIST by nvae_jax and by the official NVlabs/NVAE code, side by side on CPU.

    python benchmarks/nvae_real_mnist.py --data-dir DIR --peer-src /work/peers/NVAE \
        [--peer-python /work/venv-torch/bin/python] [--steps 2000] [--batch 32] [--num-test 2000] [--k 100]

DIR holds the original MNIST IDX files (`shared.idx`). Both sides train `TINY_MNIST` (the official
code's arguments for the same architecture) with the same hyper-parameters and schedule: `--steps`
steps at `--batch`, an "epoch" of `--steps-per-epoch` steps for the lr schedule (warm-up from 0 over
one epoch, then the per-epoch cosine of 20 epochs), β annealed over 30% of the steps after a 1e-4
constant portion, λ 1e-2, Adamax; MNIST binarised dynamically on each side with its own draws and its
own data order and initialisation. Each side is a subprocess pinned to its own CPU core (one thread),
and they run at the same time. Then each scores the same fixed subset of `--num-test` test images (the
first ones, binarised stochastically once with `nvae_jax.full.TEST_BINARIZE_SEED`) by the IW bound with
K = `--k` (eval-mode BN). Written: `benchmarks/results/nvae_real_mnist.json` (curves, NLLs, steps/s)
and `nvae_real_mnist.png` (the training −ELBO curves).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"


def config(args):
    from nvae_jax.configs import TINY_MNIST

    return dataclasses.replace(TINY_MNIST, batch_size=args.batch, train_steps=args.steps,
                               epochs=args.steps // args.steps_per_epoch, warmup_epochs=1, num_iw_samples=args.k,
                               num_eval=args.num_test, data_dir=args.data_dir, seed=0)


def official_flags(cfg, args) -> list[str]:
    """train.py flags of the same architecture and hyper-parameters."""
    flags = ["--dataset", "mnist", "--batch_size", str(cfg.batch_size), "--epochs", str(cfg.epochs),
             "--warmup_epochs", str(cfg.warmup_epochs), "--num_channels_enc", str(cfg.num_channels),
             "--num_channels_dec", str(cfg.num_channels), "--num_preprocess_blocks", str(cfg.num_preprocess_blocks),
             "--num_preprocess_cells", str(cfg.num_preprocess_cells),
             "--num_postprocess_blocks", str(cfg.num_postprocess_blocks),
             "--num_postprocess_cells", str(cfg.num_postprocess_cells),
             "--num_latent_scales", str(cfg.num_latent_scales), "--num_groups_per_scale", str(cfg.num_groups_per_scale),
             "--num_latent_per_group", str(cfg.num_latent_per_group),
             "--num_cell_per_cond_enc", str(cfg.num_cell_per_group_enc),
             "--num_cell_per_cond_dec", str(cfg.num_cell_per_group_dec), "--learning_rate", str(cfg.learning_rate),
             "--learning_rate_min", str(cfg.learning_rate_min), "--weight_decay", str(cfg.weight_decay),
             "--weight_decay_norm", str(cfg.weight_decay_norm), "--kl_anneal_portion", str(cfg.kl_anneal_portion),
             "--kl_const_portion", str(cfg.kl_const_portion), "--kl_const_coeff", str(cfg.kl_min_coeff),
             "--num_nf", str(cfg.num_nf), "--seed", str(cfg.seed), "--use_se", "--res_dist"]
    return flags + (["--ada_groups"] if cfg.adaptive_groups else [])


class _Speed:
    """A stand-in for the run context: keeps the trainer's per-window steps/s and −ELBO means."""

    def __init__(self):
        self.windows: list[dict] = []
        self.checkpoint_dir, self.resume = None, False

    def log_scalars(self, step: int, scalars: dict, prefix: str = "") -> None:
        self.windows.append({"step": step, **scalars})


def ours(args, train_file: str, test_file: str, out: str) -> None:
    """Our side (worker mode): train with nvae_jax.train.fit, then the IW NLL on the test subset."""
    import jax
    import jax.numpy as jnp

    from nvae_jax import evaluate, train

    cfg = config(args)
    images = np.load(train_file)
    speed = _Speed()
    t0 = time.perf_counter()
    graphdef, state, history = train.fit(cfg, images, cfg.train_steps, ctx=speed, log_every=args.log_every,  # type: ignore[arg-type]
                                         desc="ours")
    train_s = time.perf_counter() - t0
    timed = speed.windows[1:]  # the first window holds the compilation
    steps_per_s = sum(args.log_every for _ in timed) / sum(args.log_every / w["steps_per_s"] for w in timed)
    test = np.load(test_file)
    t1 = time.perf_counter()
    nll = np.concatenate([np.asarray(evaluate.iw_nll(graphdef, state, jnp.asarray(test[i:i + args.eval_batch]),
                                                     jax.random.fold_in(jax.random.PRNGKey(1), i), args.k))
                          for i in range(0, len(test), args.eval_batch)])
    rec = {"curve": [{"step": h["step"], "nelbo": h["nelbo"]} for h in history], "train_s": train_s,
           "steps_per_s": steps_per_s, "first_window_s": args.log_every / speed.windows[0]["steps_per_s"],
           "test_nll": float(nll.mean()), "test_nll_sem": float(nll.std() / np.sqrt(len(nll))),
           "test_nll_per_image": nll.tolist(), "eval_s": time.perf_counter() - t1, "skipped": int(state.skipped),
           "backend": jax.default_backend()}
    pathlib.Path(out).write_text(json.dumps(rec))


def _pinned(cpu: int):
    def pin():
        os.sched_setaffinity(0, {cpu})

    return pin


def plot(ours_rec: dict, peer_rec: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for rec, name in ((ours_rec, "nvae_jax"), (peer_rec, "official (PyTorch)")):
        ax.plot([c["step"] for c in rec["curve"]], [c["nelbo"] for c in rec["curve"]], label=name)
    ax.set_xlabel("step (batch 32)")
    ax.set_ylabel("training −ELBO (nats, window mean)")
    ax.set_ylim(top=min(250.0, ax.get_ylim()[1]))
    ax.set_title("tiny_mnist on real MNIST, CPU, one core each")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--peer-src", required=True)
    ap.add_argument("--peer-python", default="/work/venv-torch/bin/python")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--num-test", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--eval-batch", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--compare-from", type=int, default=500, help="curve gap reported from this step on")
    ap.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        ours(args, *args.worker)
        return
    from nvae_jax.full import preprocess
    from shared.idx import mnist_idx

    cfg = config(args)
    with tempfile.TemporaryDirectory(prefix="nvae_real_mnist_") as d:
        tmp = pathlib.Path(d)
        np.save(tmp / "train.npy", preprocess(cfg, mnist_idx(args.data_dir, "train")[0]))
        np.save(tmp / "test.npy", preprocess(cfg, mnist_idx(args.data_dir, "test")[0][: args.num_test], "stochastic"))
        spec = {"flags": official_flags(cfg, args), "steps": args.steps, "steps_per_epoch": args.steps_per_epoch,
                "warmup_steps": args.steps_per_epoch * cfg.warmup_epochs, "train": str(tmp / "train.npy"),
                "test": str(tmp / "test.npy"), "k": args.k, "eval_batch": args.eval_batch, "threads": 1,
                "log_every": args.log_every, "out": str(tmp / "peer.json")}
        env = dict(os.environ, OMP_NUM_THREADS="1")  # XLA:CPU sizes its thread pool from the affinity mask
        argv = sys.argv[1:]
        commands = {"ours": [sys.executable, __file__, *argv, "--worker", str(tmp / "train.npy"),
                             str(tmp / "test.npy"), str(tmp / "ours.json")],
                    "peer": [args.peer_python, str(SCRIPTS / "nvae_official_mnist_run.py"), args.peer_src,
                             json.dumps(spec)]}
        with open(tmp / "ours.log", "w") as ours_log, open(tmp / "peer.log", "w") as peer_log:
            procs = {name: subprocess.Popen(cmd, env=env, preexec_fn=_pinned(cpu), stdout=log, stderr=subprocess.STDOUT)
                     for (name, cmd), cpu, log in zip(commands.items(), (0, 1), (ours_log, peer_log))}
            failed = [name for name, p in procs.items() if p.wait() != 0]
        if failed:
            log = (tmp / f"{failed[0]}.log").read_text()[-3000:]
            raise SystemExit(f"nvae_real_mnist: the {failed[0]} side failed:\n{log}")
        ours_rec, peer_rec = (json.loads((tmp / f"{n}.json").read_text()) for n in ("ours", "peer"))
    RESULTS.mkdir(exist_ok=True)
    ratio = [o["nelbo"] / p["nelbo"] - 1.0 for o, p in zip(ours_rec["curve"], peer_rec["curve"])
             if o["step"] >= args.compare_from]
    gap = np.asarray(ours_rec["test_nll_per_image"]) - np.asarray(peer_rec["test_nll_per_image"])  # same images
    rec = {"bench": "nvae_real_mnist", "steps": args.steps, "batch": args.batch, "num_test": args.num_test,
           "k": args.k, "ours": ours_rec, "peer": peer_rec, "compare_from": args.compare_from,
           "max_rel_gap": max(abs(r) for r in ratio), "mean_rel_gap": float(np.mean(ratio)),
           "nll_gap": ours_rec["test_nll"] - peer_rec["test_nll"],
           "nll_gap_sem": float(np.std(gap) / np.sqrt(len(gap))),
           "loadavg": [round(x, 2) for x in os.getloadavg()]}
    (RESULTS / "nvae_real_mnist.json").write_text(json.dumps(rec, indent=1))
    plot(ours_rec, peer_rec, RESULTS / "nvae_real_mnist.png")
    print(json.dumps({k: v for k, v in rec.items() if k not in ("ours", "peer")}))
    for name, r in (("ours", ours_rec), ("peer", peer_rec)):
        print(f"{name}: test NLL {r['test_nll']:.2f} ± {r['test_nll_sem']:.2f} nats, {r['steps_per_s']:.2f} steps/s, "
              f"last −ELBO {r['curve'][-1]['nelbo']:.2f}, eval {r['eval_s']:.0f} s")


if __name__ == "__main__":
    main()
