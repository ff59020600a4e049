"""Multi-host data parallelism: two processes x 4 CPU devices equal one process x 8 devices."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
REPO = WORKER.parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(addr, num_processes, process_id, devices):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, str(WORKER), addr, str(num_processes), str(process_id), str(devices)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _result(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_match_one_process_with_eight_devices():
    addr = f"127.0.0.1:{_free_port()}"
    workers = [_launch(addr, 2, i, 4) for i in range(2)]
    single = _result(_launch("", 1, 0, 8))
    results = [_result(w) for w in workers]
    for result in results:
        assert result["global_devices"] == 8
        assert result["local_batch"] == [32]  # each process loads only its half of the global batch of 64
    assert single["local_batch"] == [64]
    np.testing.assert_allclose(results[0]["losses"], results[1]["losses"], rtol=1e-6)
    np.testing.assert_allclose(results[0]["losses"], single["losses"], rtol=1e-5)
    assert single["losses"][-1] < single["losses"][0] * 0.85  # it trains
