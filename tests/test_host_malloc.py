"""shared.host_malloc: when the kexue command re-executes with huge-page malloc, and what it buys."""

import os
import subprocess
import sys

import pytest

from shared import host_malloc

NEW_GLIBC, THP = (2, 36), "madvise"


def test_hugepage_env_appends_the_tunable_and_keeps_the_rest():
    env = host_malloc.hugepage_env({"PATH": "/bin"}, NEW_GLIBC, THP)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": host_malloc.TUNABLE}
    env = host_malloc.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, NEW_GLIBC, "always")
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{host_malloc.TUNABLE}"


@pytest.mark.parametrize("environ, glibc, thp", [
    ({host_malloc.OPT_OUT: "0"}, NEW_GLIBC, THP),  # opted out
    ({}, (2, 34), THP),  # glibc without the tunable
    ({}, None, THP),  # musl or unknown C library
    ({}, NEW_GLIBC, "never"),  # no transparent huge pages
    ({}, NEW_GLIBC, None),  # no THP file (not Linux, or an old kernel)
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, NEW_GLIBC, THP),  # the user's own choice wins
])
def test_hugepage_env_leaves_the_environment_alone(environ, glibc, thp):
    assert host_malloc.hugepage_env(environ, glibc, thp) is None


def _applies_here() -> bool:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_malloc.OPT_OUT)}
    return sys.platform == "linux" and host_malloc.hugepage_env(
        env, host_malloc._glibc_version(), host_malloc._thp_mode()) is not None


needs_hugepages = pytest.mark.skipif(not _applies_here(), reason="needs Linux, glibc >= 2.35 and THP not 'never'")

# re-executes (maybe), then counts the minor page faults of one jitted call producing a 64 MB array
PROBE = """
import os, resource
from shared import host_malloc
host_malloc.maybe_reexec()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 4096))
f = jax.jit(lambda x: x * 2.0)
for _ in range(3):
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    f(x).block_until_ready()
print(os.environ.get("GLIBC_TUNABLES"), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _probe(**env_overrides) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_malloc.OPT_OUT)}
    env.update(env_overrides, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    tunables, faults = out.stdout.split()[-2:]
    return tunables, float(faults)


@needs_hugepages
def test_reexec_sets_the_tunable_and_cuts_page_faults_per_call():
    tunables, faults = _probe()
    plain_tunables, plain_faults = _probe(**{host_malloc.OPT_OUT: "0"})
    assert tunables == host_malloc.TUNABLE and plain_tunables == "None"
    # 64 MB in 4 KiB pages is 16,384 faults per call without huge pages; 2 MiB pages need 32
    assert plain_faults > 10_000
    assert faults < plain_faults / 10


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.skipif(host_malloc._malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_release_free_memory_returns_freed_heap_to_the_kernel():
    # 1 KiB buffers come from malloc's heap (not pymalloc, not mmap): freeing them leaves the pages resident
    chunks = [bytearray(1024) for _ in range(150_000)]
    for c in chunks:
        c[::512] = b"x" * len(c[::512])  # touch every page
    del chunks
    before = _rss_mb()
    assert host_malloc.release_free_memory() is True
    assert _rss_mb() < before - 50  # ~150 MB were free but resident
    assert isinstance(host_malloc.release_free_memory(), bool)  # nothing left: fine to call again
