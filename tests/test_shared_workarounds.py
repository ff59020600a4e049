"""shared.workarounds: the CPU depthwise conv against XLA's grouped convolution, host-drawn initial values,
when the kexue command re-executes with huge-page malloc, and what it buys."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import workarounds

NEW_GLIBC, THP = (2, 36), "madvise"


def test_hugepage_env_appends_the_tunable_and_keeps_the_rest():
    env = workarounds.hugepage_env({"PATH": "/bin"}, NEW_GLIBC, THP)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": workarounds.TUNABLE}
    env = workarounds.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, NEW_GLIBC, "always")
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{workarounds.TUNABLE}"


@pytest.mark.parametrize("environ, glibc, thp", [
    ({workarounds.OPT_OUT: "0"}, NEW_GLIBC, THP),  # opted out
    ({}, (2, 34), THP),  # glibc without the tunable
    ({}, None, THP),  # musl or unknown C library
    ({}, NEW_GLIBC, "never"),  # no transparent huge pages
    ({}, NEW_GLIBC, None),  # no THP file (not Linux, or an old kernel)
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, NEW_GLIBC, THP),  # the user's own choice wins
])
def test_hugepage_env_leaves_the_environment_alone(environ, glibc, thp):
    assert workarounds.hugepage_env(environ, glibc, thp) is None


@pytest.mark.parametrize("k", [3, 4, 5])
def test_depthwise_conv_and_its_vjp_match_grouped_convolution(k):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 5))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, 1, 5))
    cot = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 6, 5))
    lo = (k - 1) // 2

    def ref(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(lo, k - 1 - lo)] * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=5)

    y, vjp = jax.vjp(workarounds.depthwise_conv, x, kernel)
    y_ref, vjp_ref = jax.vjp(ref, x, kernel)
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    for got, want in zip(jax.jit(vjp)(cot), vjp_ref(cot)):  # hand-written VJP: ∂x and ∂kernel
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_initial_values_are_keyed_host_draws_and_trace_under_eval_shape():
    key = jax.random.PRNGKey(3)
    a, b = workarounds.init_normal(key, (4, 5), scale=2.0), workarounds.init_normal(key, (4, 5), scale=2.0)
    np.testing.assert_array_equal(a, b)  # same key, same numbers
    assert a.dtype == np.float32 and not np.array_equal(a, workarounds.init_normal(jax.random.PRNGKey(4), (4, 5)))
    u = workarounds.init_uniform(key, (1000,), -0.5, 0.25)
    assert float(u.min()) >= -0.5 and float(u.max()) < 0.25 and abs(float(u.mean()) + 0.125) < 0.02
    traced = jax.eval_shape(lambda k: workarounds.init_uniform(k, (3, 2), 0.0, 1.0), key)
    assert traced.shape == (3, 2) and traced.dtype == np.float32
    assert workarounds.init_math(np.ones(2)) is np
    assert jax.eval_shape(lambda x: workarounds.init_math(x).sum(x), np.ones(2, np.float32)).shape == ()


def test_cpu_compiler_options_compile_the_same_maths():
    """On CPU the large-program options are known to this jaxlib and change no result (elemental emitters)."""
    options = workarounds.cpu_compiler_options()
    assert options == {"xla_cpu_use_fusion_emitters": False}  # the suite runs on the CPU backend

    def f(x, w):  # loop fusions of the kinds NVAE's step is made of: elementwise, reductions, a conv
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.logsumexp(jnp.tanh(y) * jax.nn.sigmoid(y), axis=(1, 2)), jnp.max(jnp.abs(y), axis=-1)

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 5))
    chex.assert_trees_all_close(jax.jit(f, compiler_options=options)(x, w), jax.jit(f)(x, w), rtol=1e-5, atol=1e-6)


def _applies_here() -> bool:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", workarounds.OPT_OUT)}
    return sys.platform == "linux" and workarounds.hugepage_env(
        env, workarounds._glibc_version(), workarounds._thp_mode()) is not None


needs_hugepages = pytest.mark.skipif(not _applies_here(), reason="needs Linux, glibc >= 2.35 and THP not 'never'")

# re-executes (maybe), then counts the minor page faults of one jitted call producing a 64 MB array
PROBE = """
import os, resource
from shared import workarounds
workarounds.maybe_reexec()
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
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", workarounds.OPT_OUT)}
    env.update(env_overrides, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    tunables, faults = out.stdout.split()[-2:]
    return tunables, float(faults)


@needs_hugepages
def test_reexec_sets_the_tunable_and_cuts_page_faults_per_call():
    tunables, faults = _probe()
    plain_tunables, plain_faults = _probe(**{workarounds.OPT_OUT: "0"})
    assert tunables == workarounds.TUNABLE and plain_tunables == "None"
    # 64 MB in 4 KiB pages is 16,384 faults per call without huge pages; 2 MiB pages need 32
    assert plain_faults > 10_000
    assert faults < plain_faults / 10


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.skipif(workarounds._malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_release_free_memory_returns_freed_heap_to_the_kernel():
    # 1 KiB buffers come from malloc's heap (not pymalloc, not mmap): freeing them leaves the pages resident
    chunks = [bytearray(1024) for _ in range(150_000)]
    for c in chunks:
        c[::512] = b"x" * len(c[::512])  # touch every page
    del chunks
    before = _rss_mb()
    assert workarounds.release_free_memory() is True
    assert _rss_mb() < before - 50  # 150,000 freed 1 KiB buffers were resident
    assert isinstance(workarounds.release_free_memory(), bool)  # nothing left: fine to call again
