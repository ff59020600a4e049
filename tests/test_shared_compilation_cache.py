"""shared.compilation_cache: where the kexue command keeps compiled programs, and that a rerun loads them."""

import os
import pathlib
import subprocess
import sys

import pytest

from shared import compilation_cache


@pytest.mark.parametrize("environ, expected", [
    ({"HOME": "/h"}, "/h/.cache/kexue/xla"),
    ({"HOME": "/h", "XDG_CACHE_HOME": "/c"}, "/c/kexue/xla"),
    ({"HOME": "/h", compilation_cache.ENV: "/mine"}, "/mine"),
    ({"HOME": "/h", compilation_cache.ENV: "0"}, None),  # off
    ({"HOME": "/h", compilation_cache.ENV: ""}, None),
    ({"HOME": "/h", "JAX_COMPILATION_CACHE_DIR": "/jax"}, None),  # JAX reads its own variable
    ({"HOME": "/h", "JAX_COMPILATION_CACHE_DIR": "/jax", compilation_cache.ENV: "/mine"}, "/mine"),
])
def test_cache_dir(environ, expected, monkeypatch):
    monkeypatch.setenv("HOME", environ["HOME"])
    assert compilation_cache.cache_dir(environ) == expected


PROBE = """
import jax, jax.numpy as jnp
from jax import monitoring
from shared import compilation_cache
hits = []
monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
print("dir", compilation_cache.enable())
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(axis=0) * 3.0)
print("value", float(f(jnp.arange(12.0).reshape(3, 4) / 10).sum()), "hits", len(hits))
"""


def test_a_second_process_loads_the_compiled_program(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update({compilation_cache.ENV: str(tmp_path / "xla"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""})
    root = pathlib.Path(__file__).resolve().parents[1]
    runs = [subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=root, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    outs = [dict(zip(r.stdout.split()[::2], r.stdout.split()[1::2])) for r in runs]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    assert outs[0]["dir"] == str(tmp_path / "xla") and any((tmp_path / "xla").iterdir())
    assert outs[0]["hits"] == "0" and int(outs[1]["hits"]) >= 1  # the rerun compiled nothing it had stored
    assert outs[0]["value"] == outs[1]["value"]
