"""Times full NVAE training steps (forward, balanced KL, spectral + BN terms, backward, Adamax), fp32.

python benchmarks/bench_nvae.py --config tiny_mnist|mnist --batch 8 --steps 10 [--repeats 5]
    [--peer-src /path/to/NVlabs/NVAE] [--peer-python /work/venv-torch/bin/python] [--malloc hugetlb|default]
    [--cache cold|warm] [--compiler-options harness|none] [--precision fp32 bf16] [--peer-precision fp32 amp]
    [--start sequential|parallel]

Prints one JSON line and appends it to benchmarks/results/nvae.jsonl. By default (`--malloc hugetlb`) the
script first re-executes itself with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, as the `kexue` command does
(`shared.workarounds.maybe_reexec`), and both workers inherit it, so both sides run with the same allocator settings.
The step is `nvae_jax.train.build_step`'s jitted step (β from the step counter). Timing: after compile and 2
warm-up steps, `--repeats` windows of `--steps` steps; `step_s_median` is the median of the per-window
mean step times, `step_s_mean` the mean over all timed steps.

With `--peer-src` (a checkout of NVlabs/NVAE outside this repository, used read-only), the official
PyTorch `AutoEncoder` is built with the same architecture and trained with the same step as its
train.py (forward, `utils.kl_balancer` with KL balancing, `spectral_norm_parallel` + `batchnorm_loss`,
backward, Adamax with eps 1e-3), on the same random binarised 32×32 batch, in fp32 or, with `--peer-precision
amp` on a GPU, as train.py's AMP (autocast fp16, `GradScaler(2**10)`). Where torch sees a GPU
(`--peer-device auto`) the official code runs there unpatched but for a `tensorboardX` stub, as one process
of a one-process gloo group (its fused sync-BN+Swish then takes its own no-sync branch), with the
`--fast_adamax` Adamax of its MNIST command; on CPU it runs with the CPU patches below. Our step runs in
fp32 and/or with `Config.bf16` (`--precision fp32 bf16`). Each side runs in its own long-lived worker
subprocess (ours under this interpreter, the peer under `--peer-python`); the parent runs one timed window
of each side in turn, the order reversed every other round, so only one side computes at a time and
machine-load drifts hit all. Peak memory is each worker's own peak RSS (getrusage RUSAGE_SELF), and
`rss_end_mb` its resident set at the end (our step is compiled ahead by `shared.trainer.compile_step`, which
gives the compiler's freed memory back before the first step, as `shared.trainer.Trainer.fit` does); on a
GPU also the peak device memory: for ours the allocator's `peak_bytes_in_use` (every worker allocates as it
goes, `XLA_PYTHON_CLIENT_PREALLOCATE=false`, since several share the device) and the compiled step's
footprint, for the peer `torch.cuda.max_memory_allocated` (and `max_memory_reserved`). For every pair of
one of our sides and another side the ratios printed are its step time / ours (> 1: we are faster) and
our peak (and end) RSS and device memory / its (< 1: we use less). `--cache warm` first compiles our step
into a fresh persistent compilation cache in a separate worker (reported as `cold_*`), then races a worker
that loads it, as a second `kexue` run does.
`--compiler-options none` compiles our step with XLA's defaults instead of
`shared.workarounds.cpu_compiler_options()` (the A/B of that choice).
`--scan-groups scan|unroll` sets `Config.scan_groups` of our step (default auto, as the default config: scan on
GPU/TPU, unroll on CPU); `--versus unrolled --scan-groups scan` races the scanned step against the unrolled one
(interleaved windows, as with the peer);
`--remat-groups` sets `Config.remat_groups` (each latent group under `jax.checkpoint`), and
`--versus no-remat --remat-groups` races it against the same step without; `--donate on|off` overrides
`shared.workarounds.donate_state_argnums` for our step, and `--versus no-donate` races it against `--donate off`;
`--depth` reports compile time and peak RSS of `tiny_mnist` and `mnist` at `--batch`, scanned and unrolled,
each in its own worker, one at a time (`--depth-large cifar10 celeba64`: those too, scanned, at batch 1).

CPU run-time patches for the official code (its files are never edited): `scripts/nvae_official_patches.py`
(a `tensorboardX` stub, `.cuda()` as identity, the fused sync-BN+Swish layer as `nn.BatchNorm2d` + SiLU,
`neural_operations.SYNC_BN = False`), shared with `scripts/make_nvae_parity_fixture.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from shared import workarounds

TAG = "@@NVAE_BENCH "  # prefix of protocol lines on the workers' stdout (the official code prints too)
WARM_STEPS = 2
TOTAL_STEPS = 1000  # schedule length given to both sides (KL warm-up, lr warm-up)

# The peer driver, run as `peer_python driver.py SRC CONFIG_JSON`; it is written to a temp dir at run time.
PEER_DRIVER = r'''
import json, resource, sys, time, types
src, spec = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, spec["patches_dir"])
import nvae_official_patches  # scripts/nvae_official_patches.py, shared with the parity fixture script
import numpy as np
import torch

device = spec["device"]
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
if device == "cuda":  # the official code as train.py runs it, one process of a world of one
    official_model, utils, _ = nvae_official_patches.patch_cuda(src, spec["rendezvous"])
    from thirdparty.adamax import Adamax as FastAdamax  # the official MNIST command's --fast_adamax
else:
    official_model, utils, _ = nvae_official_patches.patch(src)
AutoEncoder, _NoWriter = official_model.AutoEncoder, nvae_official_patches.NoWriter
amp = spec["precision"] == "amp"
if amp and device != "cuda":
    raise SystemExit("peer: --peer-precision amp needs a GPU (train.py's autocast + GradScaler are CUDA's)")

def say(kind, obj):
    sys.stdout.write("@@NVAE_BENCH " + kind + " " + json.dumps(obj) + "\n"); sys.stdout.flush()

if spec["threads"] > 0:
    torch.set_num_threads(spec["threads"])
torch.manual_seed(spec["seed"]); np.random.seed(spec["seed"])
t0 = time.perf_counter()
args = types.SimpleNamespace(**spec["args"])
model = AutoEncoder(args, _NoWriter(), utils.get_arch_cells(args.arch_instance)).to(device)
model.train()
adamax = FastAdamax if device == "cuda" else torch.optim.Adamax
opt = adamax(model.parameters(), args.learning_rate, weight_decay=args.weight_decay, eps=1e-3)
scaler = torch.amp.GradScaler("cuda", 2 ** 10) if amp else None  # train.py: GradScaler(2**10)
alpha_i = utils.kl_balancer_coeff(num_scales=model.num_latent_scales, groups_per_scale=model.groups_per_scale,
                                  fun="square")
x = torch.from_numpy(np.load(spec["batch"])).permute(0, 3, 1, 2).contiguous().to(device)  # [B,H,W,C] -> [B,C,H,W]
total, warm_iters = spec["total_steps"], spec["warmup_iters"]
gstep = 0

def train_step():
    # as NVAE train.py `train`, one process: fp32, or AMP (autocast fp16 + GradScaler) with --peer-precision amp
    global gstep
    if gstep < warm_iters:
        for g in opt.param_groups:
            g["lr"] = args.learning_rate * float(gstep) / warm_iters
    opt.zero_grad()
    with torch.autocast(device, dtype=torch.float16, enabled=amp):
        logits, log_q, log_p, kl_all, kl_diag = model(x)
        output = model.decoder_output(logits)
        kl_coeff = utils.kl_coeff(gstep, args.kl_anneal_portion * total, args.kl_const_portion * total,
                                  args.kl_const_coeff)
        recon_loss = utils.reconstruction_loss(output, x, crop=model.crop_output)
        balanced_kl, _, _ = utils.kl_balancer(kl_all, kl_coeff, kl_balance=True, alpha_i=alpha_i)
        loss = torch.mean(recon_loss + balanced_kl)
        norm_loss = model.spectral_norm_parallel()
        bn_loss = model.batchnorm_loss()
        loss = loss + norm_loss * args.weight_decay_norm + bn_loss * args.weight_decay_norm
    if amp:
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    else:
        loss.backward(); opt.step()
    gstep += 1
    return float(loss.detach())  # synchronises with the device

build_s = time.perf_counter() - t0
t0 = time.perf_counter()
for _ in range(spec["warm_steps"]):
    loss = train_step()
say("READY", {"build_s": build_s, "warmup_s": time.perf_counter() - t0, "loss": loss,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
              "precision": spec["precision"], "optimizer": adamax.__module__ + "." + adamax.__name__,
              "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "params_m": sum(p.numel() for p in model.parameters()) / 1e6})
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "window":
        times = []
        for _ in range(int(cmd[1])):
            t = time.perf_counter(); loss = train_step(); times.append(time.perf_counter() - t)
        say("WINDOW", {"times": times, "loss": loss})
    elif cmd[0] == "quit":
        rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
        done = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_end_mb": rss}
        if device == "cuda":  # the caching allocator's peak of live tensors, and of what it held from CUDA
            done.update(peak_device_mb=torch.cuda.max_memory_allocated() / 2 ** 20,
                        peak_reserved_mb=torch.cuda.max_memory_reserved() / 2 ** 20,
                        device_end_mb=torch.cuda.memory_allocated() / 2 ** 20)
        say("DONE", done)
        break
'''


CONFIGS = ("tiny_mnist", "mnist", "cifar10", "celeba64")


def _config(name: str, batch: int, scan: str = "auto", remat: bool = False, precision: str = "fp32"):
    from nvae_jax import configs

    base = {"tiny_mnist": configs.TINY_MNIST, "mnist": configs.MNIST, "cifar10": configs.CIFAR10,
            "celeba64": configs.CELEBA64}[name]
    return dataclasses.replace(base, batch_size=batch, scan_groups=scan, remat_groups=remat,
                               bf16=precision == "bf16")


def _batch(name: str, batch: int) -> np.ndarray:
    """Random images [B, H, W, C] of the config's shape (seed 0), identical for both sides: binary for the
    Bernoulli configs, 8-bit levels in [0, 1] for DMoL."""
    cfg = _config(name, batch)
    u = np.random.default_rng(0).random((batch, cfg.image_size, cfg.image_size, cfg.channels_in))
    return ((u > 0.5) if cfg.output == "bernoulli" else np.round(u * 255.0) / 255.0).astype(np.float32)


class _Ours:
    """Our jitted step on one fixed batch: compile + warm-up at construction, `window(n)` -> step times."""

    def __init__(self, config: str, batch: int, scan: str = "auto", remat: bool = False, precision: str = "fp32"):
        import jax

        from nvae_jax import train
        from shared.trainer import compile_step

        self.jax = jax
        t = time.perf_counter()
        _, self.state, self.step = train.build_step(_config(config, batch, scan, remat, precision), TOTAL_STEPS)
        self.build_s = time.perf_counter() - t
        self.batch = {"image": _batch(config, batch)}
        t = time.perf_counter()
        self.step = compile_step(self.step, self.state, self.batch)  # as shared.trainer.Trainer.fit does
        self.state, m = self.step(self.state, self.batch)
        jax.block_until_ready(m)
        self.compile_s = time.perf_counter() - t  # trace + lower + XLA compile + one step
        for _ in range(WARM_STEPS):
            self.state, m = self.step(self.state, self.batch)
        jax.block_until_ready((self.state, m))
        self.info = {"build_s": self.build_s, "compile_s": self.compile_s, "backend": jax.default_backend(),
                     "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
                     "jax": jax.__version__, "precision": precision}

    def device_memory(self) -> dict:
        """Off CPU: the allocator's peak and current bytes in use (the peak includes compile-time autotuning
        buffers), and the compiled step's own footprint (arguments + outputs + temporaries - donated), MiB."""
        stats = self.jax.devices()[0].memory_stats() if self.info["backend"] != "cpu" else None
        if not stats:
            return {}
        out = {"peak_device_mb": stats["peak_bytes_in_use"] / 2 ** 20, "device_end_mb": stats["bytes_in_use"] / 2 ** 20}
        analysis = getattr(self.step, "memory_analysis", lambda: None)()
        if analysis is not None:
            out["step_device_mb"] = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                                     + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes) / 2 ** 20
        return out

    def window(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            self.state, m = self.step(self.state, self.batch)
            self.jax.block_until_ready((self.state, m))
            times.append(time.perf_counter() - t)
        return times


def _say(kind: str, obj) -> None:
    sys.stdout.write(f"{TAG}{kind} {json.dumps(obj)}\n")
    sys.stdout.flush()


def _use_compiler_options(choice: str) -> None:
    """"none": our step compiles with XLA's defaults instead of `shared.workarounds.cpu_compiler_options()` (A/B)."""
    if choice == "none":

        workarounds.cpu_compiler_options = lambda: None


def _use_donation(choice: str) -> None:
    """"on" / "off": our step donates its state (or not) whatever `shared.workarounds.donate_state_argnums` picks."""
    if choice != "auto":
        workarounds.donate_state_argnums = lambda state_bytes=0: (0,) if choice == "on" else ()


def _serve_ours(args) -> None:
    """Worker mode: the same line protocol as the peer driver (READY, then `window N` / `quit`)."""
    _use_compiler_options(args.compiler_options)
    _use_donation(args.donate)
    ours = _Ours(args.config, args.batch, args.scan_groups, args.remat_groups, args.precision[0])
    _say("READY", ours.info)
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "window":
            _say("WINDOW", {"times": ours.window(int(cmd[1]))})
        elif cmd and cmd[0] == "quit":
            _say("DONE", {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          "rss_end_mb": _current_rss_mb(), **ours.device_memory()})
            break


def _progress(line: str) -> None:
    """A progress line on stderr, so a run cut short by a time limit still shows how far it got."""
    print(f"bench_nvae: {line}", file=sys.stderr, flush=True)


def _current_rss_mb() -> float:
    """This process's resident set size now (VmRSS), MB."""
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


class _Worker:
    """A worker subprocess speaking the TAG line protocol; stderr goes to a file shown on failure."""

    def __init__(self, name: str, argv: list[str], tmp: pathlib.Path, cwd: str | None = None, threads: int = 0,
                 cache_dir: pathlib.Path | None = None):
        self.name = name
        self.started = time.perf_counter()
        self.err_path = tmp / f"{name}.stderr"
        self.err = self.err_path.open("w")
        env, pin = dict(os.environ), None
        env.pop("JAX_COMPILATION_CACHE_DIR", None)  # cold unless a cache is asked for
        # on a GPU several workers share the device: each allocates as it goes instead of taking 75% up front
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if cache_dir is not None:
            env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        if threads > 0:  # pin to the first `threads` CPUs (XLA sizes its pool from the affinity mask)
            cpus = sorted(os.sched_getaffinity(0))[:threads]
            env["OMP_NUM_THREADS"] = str(threads)

            def pin():
                os.sched_setaffinity(0, cpus)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, bufsize=1, cwd=cwd, env=env, preexec_fn=pin)

    def expect(self, kind: str) -> dict:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                got, _, payload = line[len(TAG):].partition(" ")
                if got != kind:
                    self.fail(f"expected {kind}, got {got}")
                return json.loads(payload)
        self.fail(f"exited (rc={self.proc.wait()}) before sending {kind}")

    def send(self, cmd: str) -> None:
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.fail("exited early (broken pipe)")

    def fail(self, why: str):
        self.err.flush()
        tail = self.err_path.read_text()[-4000:]
        self.close()
        raise SystemExit(f"bench_nvae: the {self.name} worker {why}.\n--- its stderr (tail) ---\n{tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def _peer_spec(config: str, batch: int, batch_file: pathlib.Path, threads: int = 0, precision: str = "fp32",
               device: str = "auto", rendezvous: pathlib.Path | None = None) -> dict:
    """Official train.py arguments equal to our config (names as in its argparse), and the driver's settings."""
    cfg = _config(config, batch)
    if cfg.dataset != "mnist" or cfg.image_size != 32 or cfg.output != "bernoulli":
        raise ValueError(f"--peer-src: only the 32x32 Bernoulli MNIST configs are mapped, got {config!r}")
    args = dict(dataset="mnist", num_x_bits=8, arch_instance="res_mbconv", use_se=cfg.use_se, res_dist=True,
                num_channels_enc=cfg.num_channels, num_channels_dec=cfg.num_channels,
                num_preprocess_blocks=cfg.num_preprocess_blocks, num_preprocess_cells=cfg.num_preprocess_cells,
                num_postprocess_blocks=cfg.num_postprocess_blocks,
                num_postprocess_cells=cfg.num_postprocess_cells,
                num_cell_per_cond_enc=cfg.num_cell_per_group_enc, num_cell_per_cond_dec=cfg.num_cell_per_group_dec,
                num_latent_scales=cfg.num_latent_scales, num_groups_per_scale=cfg.num_groups_per_scale,
                num_latent_per_group=cfg.num_latent_per_group, ada_groups=cfg.adaptive_groups,
                min_groups_per_scale=cfg.min_groups_per_scale, num_nf=cfg.num_nf, num_mixture_dec=cfg.num_mixtures,
                learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                weight_decay_norm=cfg.weight_decay_norm, kl_anneal_portion=cfg.kl_anneal_portion,
                kl_const_portion=1e-4, kl_const_coeff=cfg.kl_min_coeff, batch_size=batch)
    warm = max(1, round(TOTAL_STEPS * cfg.warmup_epochs / max(cfg.epochs, 1)))
    return {"args": args, "seed": cfg.seed, "batch": str(batch_file), "total_steps": TOTAL_STEPS,
            "warmup_iters": warm, "warm_steps": WARM_STEPS, "threads": threads, "precision": precision,
            "device": device, "rendezvous": str(rendezvous),
            "patches_dir": str(pathlib.Path(__file__).resolve().parent.parent / "scripts")}


def _summary(windows: list[list[float]]) -> dict:
    flat = [t for w in windows for t in w]
    return {"step_s_median": statistics.median(statistics.mean(w) for w in windows),
            "step_s_mean": statistics.mean(flat), "step_s_min_window": min(statistics.mean(w) for w in windows),
            "window_means": [round(statistics.mean(w), 5) for w in windows]}


def _ours_argv(config: str, batch: int, args, scan: str | None = None, remat: bool | None = None,
               donate: str | None = None, precision: str | None = None) -> list[str]:
    """A worker running our step with `args`' settings, `scan` / `remat` / `donate` / `precision` changed where
    given."""
    remat = args.remat_groups if remat is None else remat
    return [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", "--config", config,
            "--batch", str(batch), "--compiler-options", args.compiler_options,
            "--scan-groups", scan or args.scan_groups, "--donate", donate or args.donate,
            "--precision", precision or args.precision[0], *(["--remat-groups"] if remat else [])]


def _compile_only(worker: _Worker) -> tuple[dict, dict]:
    """(READY info, DONE figures) of a worker that compiles, warms up and quits; it is closed either way."""
    try:
        info = worker.expect("READY")
        worker.send("quit")
        return info, worker.expect("DONE")
    finally:
        worker.close()


def _pair_ratios(ours: dict, other: dict) -> dict:
    """Step time other / ours (> 1: we are faster) and memory ours / other (< 1: we use less): peak and
    end-of-run RSS, and where both sides ran on a GPU, peak and end-of-run device memory."""
    out = {"time_other_over_ours": other["step_s_median"] / ours["step_s_median"],
           "peak_rss_ours_over_other": ours["peak_rss_mb"] / other["peak_rss_mb"],
           "rss_end_ours_over_other": ours["rss_end_mb"] / other["rss_end_mb"]}
    if "peak_device_mb" in ours and "peak_device_mb" in other:
        out["peak_device_ours_over_other"] = ours["peak_device_mb"] / other["peak_device_mb"]
        out["device_end_ours_over_other"] = ours["device_end_mb"] / other["device_end_mb"]
    return out


def _race(args) -> dict:
    """Interleaved windows of several long-lived workers: ours at each `--precision`, against the official code
    (`--peer-src`) at each `--peer-precision` or, with `--versus`, our same step changed in one setting. Every
    round runs one window of each side in turn, the order reversed every other round."""
    versus = args.versus != "peer"
    src = pathlib.Path(args.peer_src or ".").resolve()  # the peer worker runs in a temporary directory
    if not versus:
        missing = [f for f in ("model.py", "utils.py", "neural_operations.py", "distributions.py",
                               "thirdparty/__init__.py") if not (src / f).is_file()]
        if missing:
            raise SystemExit(f"bench_nvae: --peer-src {src} is not an NVlabs/NVAE checkout (missing {missing})")
        if not pathlib.Path(args.peer_python).is_file():
            raise SystemExit(f"bench_nvae: --peer-python {args.peer_python} does not exist (needs torch, CPU is fine)")
    load_before = os.getloadavg()
    workers: dict[str, _Worker] = {}
    infos: dict[str, dict] = {}

    def start(name: str, argv: list[str], **kw) -> None:
        workers[name] = _Worker(name, argv, tmp, threads=args.threads, **kw)
        if args.start == "sequential":  # one at a time: no start-up shares the cores
            ready(name)

    def ready(name: str) -> None:
        infos[name] = workers[name].expect("READY")
        _progress(f"{name} ready, {time.perf_counter() - workers[name].started:.1f} s after its start (at the latest)")

    with tempfile.TemporaryDirectory(prefix="bench_nvae_") as d:
        tmp = pathlib.Path(d)
        np.save(tmp / "batch.npy", _batch(args.config, args.batch))
        (tmp / "peer_driver.py").write_text(PEER_DRIVER)
        cache, cold = (tmp / "xla_cache" if args.cache == "warm" else None), {}
        if cache is not None:  # a first worker compiles into the cache (its numbers: the cold start)
            info, done = _compile_only(_Worker("ours-cold", _ours_argv(args.config, args.batch, args), tmp,
                                               threads=args.threads, cache_dir=cache))
            cold = {"cold_compile_s": info["compile_s"], "cold_peak_rss_mb": done["peak_rss_mb"],
                    "cold_rss_end_mb": done["rss_end_mb"]}
        try:
            for precision in args.precision:
                start(f"ours-{precision}", _ours_argv(args.config, args.batch, args, precision=precision),
                      cache_dir=cache)
            if versus:  # our step unrolled, or without rematerialisation, or without donation
                other = {"unrolled": {"scan": "unroll"}, "no-remat": {"remat": False},
                         "no-donate": {"donate": "off"}}[args.versus]
                start(args.versus, _ours_argv(args.config, args.batch, args, **other), cache_dir=cache)
            else:
                for precision in args.peer_precision:
                    spec = _peer_spec(args.config, args.batch, tmp / "batch.npy", args.threads, precision,
                                      args.peer_device, tmp / f"peer-{precision}.rendezvous")
                    start(f"peer-{precision}", [args.peer_python, str(tmp / "peer_driver.py"), str(src),
                                                json.dumps(spec)], cwd=str(tmp))
            for name in workers:
                if name not in infos:  # --start parallel
                    ready(name)
            wins: dict[str, list[list[float]]] = {name: [] for name in workers}
            for r in range(args.repeats):
                for name in (list(workers) if r % 2 == 0 else list(workers)[::-1]):
                    workers[name].send(f"window {args.steps}")
                    wins[name].append(workers[name].expect("WINDOW")["times"])
                _progress(f"round {r + 1}/{args.repeats}: " + ", ".join(
                    f"{name} {statistics.mean(w[-1]) * 1e3:.1f} ms" for name, w in wins.items()))
            for w in workers.values():
                w.send("quit")
            dones = {name: w.expect("DONE") for name, w in workers.items()}
        finally:
            for w in workers.values():
                w.close()
    sides = {name: {**_summary(wins[name]), **infos[name], **dones[name]} for name in workers}
    if not versus:
        for name in sides:
            if name.startswith("peer-"):
                sides[name].update(src=str(src), python=args.peer_python)
    ours = [name for name in sides if name.startswith("ours-")]
    return {"sides": sides, **cold, "cache": args.cache, "versus": args.versus,
            "ratios": {f"{o} vs {other}": _pair_ratios(sides[o], sides[other])
                       for o in ours for other in sides if other not in ours},
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def _depth(args) -> dict:
    """Compile time (trace + XLA compile + first step) and peak RSS of our step per config, one worker at a
    time: `tiny_mnist` and `mnist` at `--batch` both scanned and unrolled, then `--depth-large` configs scanned."""
    runs = [(c, args.batch, scan) for scan in ("scan", "unroll") for c in ("tiny_mnist", "mnist")]
    runs += [(c, 1, "scan") for c in args.depth_large]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_nvae_") as d:
        for config, batch, scan in runs:
            info, done = _compile_only(_Worker(f"{config}-{scan}",
                                               _ours_argv(config, batch, args, scan=scan),
                                               pathlib.Path(d), threads=args.threads))
            rows.append({"config": config, "batch": batch, "scan_groups": scan, "remat_groups": args.remat_groups,
                         "donate": args.donate, "build_s": info["build_s"],
                         "compile_s": info["compile_s"], "peak_rss_mb": done["peak_rss_mb"],
                         "loadavg": [round(x, 2) for x in os.getloadavg()]})
            print(json.dumps(rows[-1]), flush=True)
    by = {(r["config"], r["scan_groups"]): r for r in rows}
    return {"depth": rows, "ratio_compile_mnist_over_tiny_scanned":
            by["mnist", "scan"]["compile_s"] / by["tiny_mnist", "scan"]["compile_s"],
            "ratio_compile_mnist_over_tiny_unrolled":
            by["mnist", "unroll"]["compile_s"] / by["tiny_mnist", "unroll"]["compile_s"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny_mnist", choices=CONFIGS)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per window")
    ap.add_argument("--repeats", type=int, default=5, help="timed windows per side (interleaved with the peer)")
    ap.add_argument("--peer-src", default=None, help="local NVlabs/NVAE checkout (read-only), enables the race")
    ap.add_argument("--peer-python", default="/work/venv-torch/bin/python", help="interpreter with torch")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="our step in fp32 and/or with Config.bf16 (bf16 convs/BN/activations); several: one "
                         "worker each, all in the race")
    ap.add_argument("--peer-precision", nargs="+", default=["fp32"], choices=["fp32", "amp"],
                    help="the official step in fp32 and/or AMP (train.py's autocast fp16 + GradScaler(2**10), "
                         "GPU only); several: one worker each")
    ap.add_argument("--start", default="sequential", choices=["sequential", "parallel"],
                    help="race workers start one at a time (sequential: compile and build times uncontended) or "
                         "all at once (parallel: on a GPU host, our compiles overlap; the timed windows are "
                         "interleaved either way)")
    ap.add_argument("--peer-device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="where the official code runs: auto = cuda when torch sees a GPU; on cuda it runs as "
                         "train.py does (fused sync-BN+Swish in a one-process group, --fast_adamax's Adamax)")
    ap.add_argument("--threads", type=int, default=0,
                    help="with --peer-src: pin both workers to this many CPUs (torch threads = this); 0 = defaults")
    ap.add_argument("--malloc", default="hugetlb", choices=["hugetlb", "default"],
                    help="hugetlb: re-execute with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (as the kexue command "
                         "does), inherited by both workers; default: the environment as given")
    ap.add_argument("--cache", default="cold", choices=["cold", "warm"],
                    help="with --peer-src: cold = our worker compiles its step (no compilation cache); warm = a "
                         "first worker compiles into a fresh persistent cache (reported as cold_*), the raced "
                         "worker loads the step from it, as a second `kexue` run does")
    ap.add_argument("--compiler-options", default="harness", choices=["harness", "none"],
                    help="harness: our step compiled with shared.workarounds.cpu_compiler_options() (as nvae_jax.train."
                         "build does); none: XLA:CPU's defaults (the MLIR fusion emitters), for an A/B")
    ap.add_argument("--scan-groups", default="auto", choices=["auto", "scan", "unroll"],
                    help="Config.scan_groups of our step: auto (the default config: scan on GPU/TPU, unroll on CPU), "
                         "scan (lax.scan over the stacked groups) or unroll (a Python loop over them)")
    ap.add_argument("--versus", default="peer", choices=["peer", "unrolled", "no-remat", "no-donate"],
                    help="the second side of the race: the official code (--peer-src), our unrolled step, our "
                         "step without --remat-groups, or our step without donating its state")
    ap.add_argument("--donate", default="auto", choices=["auto", "on", "off"],
                    help="our step donates its state: auto (shared.workarounds.donate_state_argnums), on or off")
    ap.add_argument("--remat-groups", action="store_true",
                    help="Config.remat_groups of our step: each latent group under jax.checkpoint")
    ap.add_argument("--depth", action="store_true",
                    help="compile time and peak RSS of tiny_mnist and mnist at --batch, scanned and unrolled")
    ap.add_argument("--depth-large", nargs="*", default=[], choices=["cifar10", "celeba64"],
                    help="with --depth: these configs too, scanned, at batch 1")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.malloc == "hugetlb" and not args.worker:
        workarounds.maybe_reexec()
    for name in ("batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.threads <= len(os.sched_getaffinity(0)):
        ap.error(f"--threads must be in [0, {len(os.sched_getaffinity(0))}], got {args.threads}")
    if args.worker:
        _serve_ours(args)
        return
    rec = {"bench": "nvae", "config": args.config, "batch": args.batch, "steps": args.steps,
           "repeats": args.repeats, "threads": args.threads or "default", "compiler_options": args.compiler_options,
           "scan_groups": args.scan_groups, "remat_groups": args.remat_groups, "donate": args.donate,
           "precision": args.precision, "peer_precision": args.peer_precision,
           "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}
    if args.depth:
        rec.update(_depth(args))
    elif args.peer_src or args.versus != "peer":
        rec.update(_race(args))
    else:
        _use_compiler_options(args.compiler_options)
        _use_donation(args.donate)
        ours = _Ours(args.config, args.batch, args.scan_groups, args.remat_groups, args.precision[0])
        windows = [ours.window(args.steps) for _ in range(args.repeats)]
        rec.update({**_summary(windows), **ours.info,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "loadavg": [round(x, 2) for x in os.getloadavg()]})
    line = json.dumps(rec)
    print(line)
    if "depth" in rec:
        print(f"compile mnist / tiny_mnist: scanned {rec['ratio_compile_mnist_over_tiny_scanned']:.2f}x, "
              f"unrolled {rec['ratio_compile_mnist_over_tiny_unrolled']:.2f}x")
    elif "ratios" in rec:
        for name, side in rec["sides"].items():
            device = f", device peak {side['peak_device_mb']:.0f} MiB" if "peak_device_mb" in side else ""
            print(f"{name}: {side['step_s_median'] * 1e3:.1f} ms/step, peak RSS {side['peak_rss_mb']:.0f} MB, "
                  f"end {side['rss_end_mb']:.0f} MB{device}")
        for pair, r in rec["ratios"].items():
            device = (f", device peak {r['peak_device_ours_over_other']:.2f}, end {r['device_end_ours_over_other']:.2f}"
                      if "peak_device_ours_over_other" in r else "")
            print(f"{pair}: time other/ours {r['time_other_over_ours']:.2f}x; ours/other peak RSS "
                  f"{r['peak_rss_ours_over_other']:.2f}, end {r['rss_end_ours_over_other']:.2f}{device}")
        if "cold_peak_rss_mb" in rec:
            print(f"cold start: compile {rec['cold_compile_s']:.1f} s, peak RSS {rec['cold_peak_rss_mb']:.0f} MB")
    out = pathlib.Path(__file__).parent / "results" / "nvae.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
