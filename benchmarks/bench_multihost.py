"""The cost of going multi-host on one machine: `kexue run` as 2 processes x 4 CPU devices over gloo vs
1 process x 8 devices, on the same experiment and global batch.

Both sides are launched through the command a user runs; the step rate is read from the runs'
TensorBoard logs (`<desc>/steps_per_s`, the median of the logged windows after the first, which holds
the compilation). Repeats alternate the two layouts; the ratio of medians is printed and appended to
`benchmarks/results/multihost.jsonl`.

    python benchmarks/bench_multihost.py [--steps 400] [--repeats 3] [--experiment shared.digits_mlp]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]


def _launch(args: list[str], devices: int) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen([sys.executable, "-m", "shared.cli", "run", *args], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(err[-2000:])


def _steps_per_s(run_dir: pathlib.Path) -> float:
    """Median logged steps/s of a run, from its TensorBoard events (tensorboardX's protobufs)."""
    from tensorboardX.proto import event_pb2

    rates = []
    for path in sorted(run_dir.glob("tensorboard/events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + length])
            rates += [(event.step, v.simple_value) for v in event.summary.value if v.tag.endswith("/steps_per_s")]
            i += 12 + length + 4
    rates.sort()
    return statistics.median(r for _, r in rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="shared.digits_mlp")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = ["--config.num_steps", str(args.steps), "--config.log_every", str(args.steps // 8),
              "--config.checkpoint_every", "0"]
    rates = {"1x8": [], "2x4": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            single = pathlib.Path(tmp) / f"single{r}"
            _wait([_launch([args.experiment, "--out", str(single), *config], 8)])
            rates["1x8"].append(_steps_per_s(single))
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            multi = pathlib.Path(tmp) / f"multi{r}"
            _wait([_launch([args.experiment, "--out", str(multi), "--coordinator", f"127.0.0.1:{port}",
                            "--num-processes", "2", "--process-id", str(i), *config], 4) for i in range(2)])
            rates["2x4"].append(_steps_per_s(multi))
    result = {"benchmark": "multihost_gloo_2x4_vs_1x8", "experiment": args.experiment, "steps": args.steps,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "steps_per_s_1x8": statistics.median(rates["1x8"]), "steps_per_s_2x4": statistics.median(rates["2x4"]),
              "step_time_ratio_2x4_over_1x8": statistics.median(rates["1x8"]) / statistics.median(rates["2x4"]),
              "runs": rates}
    print(json.dumps(result))
    out = pathlib.Path(__file__).with_name("results") / "multihost.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
