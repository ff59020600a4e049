"""Every backend workaround of the suite, each with its one-line reason and the benchmark that measured it.

Model and harness code call these functions and never branch on the backend themselves. Importing this
module does not import jax (the `kexue` command calls `maybe_reexec` before anything else, and `kexue
list` must stay fast): each function imports it when called. Figures live in
`benchmarks/RESULTS.md` (the section named after each item); the reasons:

- `depthwise_conv`: XLA:CPU's grouped convolution is several times slower than k² shifted multiply-adds,
  forward and backward (`benchmarks/bench_forward_mode.py`; nvae_jax item 2).
- `init_normal`, `init_uniform`, `init_math`: eager jax ops compile one XLA program per distinct shape,
  which dominated building a model; NumPy compiles nothing (`benchmarks/bench_nvae.py`, build time;
  nvae_jax item 6).
- `concatenate_norms`: XLA:CPU launches each per-leaf reduction of a global norm as its own kernel
  (`benchmarks/bench_nvae.py`, `benchmarks/bench_harness.py`; nvae_jax item 8, Harness).
- `donate_state_argnums`: on XLA:CPU in-place aliasing of donated buffers blocks fusions, so only a
  large state is donated there (`benchmarks/bench_harness.py`, `benchmarks/bench_nvae.py --versus no-donate`).
- `default_prefetch`: on the CPU backend grain's threads compete with the step for the same cores
  (`benchmarks/bench_harness.py --prefetch`; Harness).
- `cpu_compiler_options`: XLA:CPU's MLIR fusion emitters keep their state until the whole program is
  compiled (`benchmarks/bench_nvae.py --compiler-options`; nvae_jax item 13).
- `maybe_reexec` (huge-page malloc): glibc maps each step's temporary buffer afresh, one page fault per
  4 KiB page (`benchmarks/bench_nvae.py --malloc`; nvae_jax item 4).
- `release_free_memory`: a large compile leaves its peak freed but resident in malloc's arenas
  (`benchmarks/bench_nvae.py`; nvae_jax item 12).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import jax

__all__ = ["conv2d", "loop_body", "scan_layers_by_default", "depthwise_conv", "init_normal", "init_uniform",
           "init_math", "concatenate_norms", "donate_state_argnums", "DONATE_ON_CPU_MIN_BYTES",
           "default_prefetch", "cpu_compiler_options", "TUNABLE", "OPT_OUT", "hugepage_env", "maybe_reexec",
           "release_free_memory"]


def _on_cpu() -> bool:
    import jax

    return jax.default_backend() == "cpu"


# ------------------------------------------------------------------------ convolutions in loop bodies
_loop_body_depth = 0


@contextlib.contextmanager
def loop_body() -> Iterator[None]:
    """Marks the tracing of a loop body (`lax.scan`): `conv2d` on CPU then writes stride-1 convs as dots.

    XLA:CPU canonicalises only a program's top-level convolutions into the form its Eigen kernels take;
    inside a while loop the transposed convolutions of a gradient keep JAX's dimension labels and run
    as naive loops (benchmarks/RESULTS.md, nvae_jax, "Depth"). Dots and slices have no such limit. A
    trace-time switch: it holds while the body is traced, which `lax.scan` does once, at once.
    """
    global _loop_body_depth
    _loop_body_depth += 1
    try:
        yield
    finally:
        _loop_body_depth -= 1


def scan_layers_by_default() -> bool:
    """Whether identical layers should run under `lax.scan` when a config leaves it to the backend: not on CPU,
    where a scanned gradient stays slower than the unrolled one even with `conv2d`'s dot derivatives."""
    return not _on_cpu()


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, groups: int = 1) -> jax.Array:
    """2-D conv padded by ⌊(k−1)/2⌋ on each side: x [B, H, W, C_in], kernel [k, k, C_in/groups, C_out] (HWIO)
    → [B, H', W', C_out] (H' = H for stride 1), `lax.conv_general_dilated`.

    Inside `loop_body()` on CPU a stride-1 ungrouped conv of odd k keeps that forward but takes its
    derivatives from Σ_ij pad(x)[:, i:i+H, j:j+W] · kernel[i, j] (k² dots over the channels, a custom JVP
    linear in the tangents): their transposes, the gradient, are dots and pads, not loop-body convolutions.
    """
    k = kernel.shape[0]
    if _loop_body_depth and _on_cpu() and stride == 1 and groups == 1 and k % 2 == 1:
        return _conv_with_dot_derivatives()(x, kernel)
    return _lax_conv(x, kernel, stride, groups)


def _lax_conv(x: jax.Array, kernel: jax.Array, stride: int, groups: int) -> jax.Array:
    import jax

    pad = (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def _conv_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The stride-1 conv of `conv2d` as Σ over the k² taps of pad(x)[:, i:i+H, j:j+W] · kernel[i, j] (dots)."""
    import jax.numpy as jnp

    k = kernel.shape[0]
    pad = (k - 1) // 2
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    h, w = x.shape[1:3]
    taps = [jnp.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + w, :], kernel[i, j]) for i in range(k) for j in range(k)]
    return functools.reduce(jnp.add, taps)


@functools.cache
def _conv_with_dot_derivatives():
    import jax

    @jax.custom_jvp
    def conv(x, kernel):
        return _lax_conv(x, kernel, 1, 1)

    @conv.defjvp
    def conv_jvp(primals, tangents):
        (x, kernel), (dx, dkernel) = primals, tangents
        return conv(x, kernel), _conv_taps(dx, kernel) + _conv_taps(x, dkernel)

    return conv


# ------------------------------------------------------------------------ depthwise convolution
def depthwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'same' depthwise conv: y[b,h,w,c] = Σ_ij x[b,h+i−p,w+j−p,c] · kernel[i,j,0,c], p = ⌊(k−1)/2⌋.

    x [B, H, W, C], kernel [k, k, 1, C] (HWIO with one input channel per group) → [B, H, W, C].
    On CPU it is `_depthwise_taps` (k² shifted multiply-adds with a custom JVP), because XLA:CPU's
    grouped convolution is several times slower there (`benchmarks/bench_forward_mode.py`). GPU and TPU
    use the native grouped convolution. Both support every JAX transformation: grad / vjp / jacrev, and
    forward mode (jvp, linearize, jacfwd, Hessians).
    """
    import jax

    if not _on_cpu():
        pad = _same_padding(kernel.shape[0])
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), [pad, pad],
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=x.shape[-1])
    return _depthwise_taps()(x, kernel)


def _same_padding(k: int) -> tuple[int, int]:
    """(before, after) padding of a stride-1 'same' conv with a k-wide kernel: (⌊(k−1)/2⌋, ⌈(k−1)/2⌉)."""
    return (k - 1) // 2, k - 1 - (k - 1) // 2


def _shifted_sum(x: jax.Array, kernel: jax.Array, lo: int, hi: int) -> jax.Array:
    """Σ_ij pad(x)[b, h+i, w+j, c] · kernel[i, j, 0, c], x padded by (lo, hi) on H and W: one XLA loop fusion."""
    import jax.numpy as jnp

    k = kernel.shape[0]
    xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    h, w = x.shape[1:3]
    taps = [xp[:, i:i + h, j:j + w, :] * kernel[i, j, 0][None, None, None, :] for i in range(k) for j in range(k)]
    return functools.reduce(jnp.add, taps)


def _scattered_sum(dx: jax.Array, kernel: jax.Array) -> jax.Array:
    """`_shifted_sum(dx, kernel, lo, hi)` as crop(Σ_ij pad(dx · kernel[i,j,0], (k−1−i, i), (k−1−j, j))), crop from hi.

    Same values, other form: each tap's product is padded into place rather than read from a padded
    input, so JAX's transpose of this linear map in dx is the correlation of the cotangent with the
    flipped kernel as k² slices of one padded buffer; the slice form's transpose pads k² copies of the
    cotangent instead, which is slower (benchmarks/bench_forward_mode.py).
    """
    import jax.numpy as jnp

    k = kernel.shape[0]
    _lo, hi = _same_padding(k)
    h, w = dx.shape[1:3]
    terms = [jnp.pad(dx * kernel[i, j, 0][None, None, None, :], ((0, 0), (k - 1 - i, i), (k - 1 - j, j), (0, 0)))
             for i in range(k) for j in range(k)]
    return functools.reduce(jnp.add, terms)[:, hi:hi + h, hi:hi + w, :]


def _tap_scan(x: jax.Array, dkernel: jax.Array) -> jax.Array:
    """Σ_t pad(x)[b, h+i_t, w+j_t, c] · dkernel[i_t, j_t, 0, c] over the k² taps t = (i_t, j_t), linear in dkernel.

    A `lax.scan` over taps reading dynamic slices of the padded x, its body rematerialised
    (`jax.checkpoint`): JAX's transpose is then one scan of per-tap reductions Σ_bhw slice_t(x)·g and
    stores no shifted copy of x; without the remat it stacks k² of them, and unrolled static slices
    are as slow (benchmarks/bench_forward_mode.py).
    """
    import jax
    import jax.numpy as jnp

    k = dkernel.shape[0]
    lo, hi = _same_padding(k)
    xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))

    @functools.partial(jax.checkpoint, prevent_cse=False)  # CSE is already blocked inside scan
    def tap(acc, t_and_row):
        t, row = t_and_row
        window = jax.lax.dynamic_slice(xp, (0, t // k, t % k, 0), x.shape)
        return acc + window * row[None, None, None, :], None

    acc, _ = jax.lax.scan(tap, jnp.zeros_like(x), (jnp.arange(k * k), dkernel.reshape(k * k, -1)))
    return acc


@functools.cache
def _depthwise_taps() -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The CPU path, `_shifted_sum` with a custom JVP (built on first use, so importing this module does not
    import jax).

    Its JVP is ẏ = dw(ẋ, kernel) + dw(x, k̇), bilinearity of the conv; linear in (ẋ, k̇), so JAX transposes it
    for the VJP. The two terms are written (`_scattered_sum`, `_tap_scan`) so that their transposes are the
    fast backward: ∂x = g correlated with the flipped kernel, and
    ∂kernel[i,j,0,c] = Σ_bhw pad(x)[b,h+i,w+j,c]·g[b,h,w,c].
    Autodiff of the forward instead materialises every shifted copy of x.
    """
    import jax

    @jax.custom_jvp
    def taps(x, kernel):
        return _shifted_sum(x, kernel, *_same_padding(kernel.shape[0]))

    @taps.defjvp
    def taps_jvp(primals, tangents):
        x, kernel = primals
        dx, dkernel = tangents
        y = taps(x, kernel)
        return y, (_scattered_sum(dx, kernel) + _tap_scan(x, dkernel)).astype(y.dtype)

    return taps


# ------------------------------------------------------------------------- initial values
def _host_generator(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from a concrete JAX key (same key, same numbers)."""
    import jax
    import jax.numpy as jnp

    seed = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return np.random.default_rng(seed.astype(np.uint64).tolist())


def init_normal(key: jax.Array, shape: tuple[int, ...], scale: float = 1.0) -> jax.Array:
    """scale · N(0, 1) of `shape` for an initial value, drawn on the host by NumPy seeded from `key`.

    Eager `jax.random.normal` compiles one XLA program per distinct shape, which dominated building a
    model (`benchmarks/bench_nvae.py`, build time); NumPy compiles nothing. Under tracing (eval_shape,
    jit) it is `jax.random.normal`, which only traces.
    """
    import jax

    if isinstance(key, jax.core.Tracer):
        return scale * jax.random.normal(key, shape)
    values = scale * _host_generator(key).standard_normal(shape)
    return jax.device_put(values.astype(np.float32))  # float32 on the host: no XLA cast


def init_uniform(key: jax.Array, shape: tuple[int, ...], low: float, high: float) -> jax.Array:
    """U[low, high) of `shape` for an initial value, drawn on the host like `init_normal`
    (`jax.random.uniform` under tracing)."""
    import jax

    if isinstance(key, jax.core.Tracer):
        return jax.random.uniform(key, shape, minval=low, maxval=high)
    return jax.device_put(_host_generator(key).uniform(low, high, shape).astype(np.float32))


def init_math(x: Any) -> types.ModuleType:
    """The array module for arithmetic on an initial value `x`: NumPy for a concrete `x`, `jax.numpy`
    for a tracer (a model built under eval_shape or jit).

    Eager `jax.numpy` ops compile one XLA program per distinct shape (`benchmarks/bench_nvae.py`,
    build time); NumPy compiles nothing and gives the same float32 values.
    """
    import jax
    import jax.numpy as jnp

    return jnp if isinstance(x, jax.core.Tracer) else np


# ----------------------------------------------------------------------- the training step
def concatenate_norms() -> bool:
    """Whether `shared.train.global_norm` ravels the small leaves into one vector before reducing: on
    CPU, since XLA:CPU has no horizontal fusion and launches each per-leaf reduction as its own
    kernel (`benchmarks/bench_nvae.py`, `benchmarks/bench_harness.py`). Accelerators fuse them."""
    return _on_cpu()


DONATE_ON_CPU_MIN_BYTES = 256 * 2 ** 20


def donate_state_argnums(state_bytes: int = 0) -> tuple[int, ...]:
    """(0,) on accelerators, where donating the state halves its memory. On CPU only for a state of at least
    `DONATE_ON_CPU_MIN_BYTES`: XLA's in-place aliasing of donated buffers blocks fusions, which slows a small
    step (benchmarks/bench_harness.py), while a large state's second copy costs more memory than the blocked
    fusions cost time (`benchmarks/bench_nvae.py --versus no-donate`)."""
    return () if _on_cpu() and state_bytes < DONATE_ON_CPU_MIN_BYTES else (0,)


def default_prefetch() -> int:
    """Grain threads reading ahead of the train step: 2 on an accelerator, none on the CPU backend,
    where the threads compete with the step for the same cores (`benchmarks/bench_harness.py --prefetch`)."""
    return 0 if _on_cpu() else 2


@functools.cache
def cpu_compiler_options() -> dict[str, Any] | None:
    """XLA options for compiling a large program on the CPU backend; None elsewhere.

    `xla_cpu_use_fusion_emitters=False`: XLA:CPU emits its loop fusions with the elemental IR emitters
    instead of the MLIR fusion emitters, whose per-kernel state stays alive until the whole program is
    compiled; for NVAE's train step the compile peak drops to about a third, with compile and step
    time unchanged (`benchmarks/bench_nvae.py --compiler-options`). Passed per program
    (`jax.jit(compiler_options=...)`), so nothing else in the process changes; None if this jaxlib
    does not know the option (probed once with a tiny program).
    """
    import jax

    if not _on_cpu():
        return None
    options = {"xla_cpu_use_fusion_emitters": False}
    try:
        jax.block_until_ready(jax.jit(lambda x: x + 1, compiler_options=options)(np.float32(0)))
    except (jax.errors.JaxRuntimeError, ValueError, TypeError):
        return None
    return options


# --------------------------------------------------------------------------- host memory
# XLA:CPU allocates one temporary buffer for each execution of a compiled program (all the
# intermediates of a train step; NVAE's sizes are in benchmarks/RESULTS.md) and frees it at the end.
# glibc serves allocations above its mmap threshold with a fresh `mmap`, so each step touches every page
# of that buffer again, one minor page fault per small page. glibc ≥ 2.35's tunable
# `glibc.malloc.hugetlb=1` advises transparent huge pages for those mappings, so a step takes far fewer
# faults (measured in benchmarks/RESULTS.md, nvae_jax, item 4). Tunables are read at process start, so
# the `kexue` command re-executes itself once with it set (`maybe_reexec`); `KEXUE_HUGEPAGE_MALLOC=0`
# opts out; notebook users can start Jupyter with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` for the same
# effect.
TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "KEXUE_HUGEPAGE_MALLOC"  # "0" disables the re-exec
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version() -> tuple[int, int] | None:
    lib, version = platform.libc_ver()
    if lib != "glibc" or not version:
        return None
    major, minor = (int(p) for p in version.split(".")[:2])
    return major, minor


def _thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode: the bracketed word of `enabled`, e.g. "madvise"."""
    try:
        with open(_THP_MODE_FILE) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def hugepage_env(environ: Mapping[str, str], glibc: tuple[int, int] | None,
                 thp_mode: str | None) -> dict[str, str] | None:
    """The environment to re-execute with for huge-page malloc, or None when nothing would change.

    None when: the user opted out (`KEXUE_HUGEPAGE_MALLOC=0`), the C library is not glibc ≥ 2.35, the
    kernel has no transparent huge pages (mode missing or "never"), or GLIBC_TUNABLES already sets
    `glibc.malloc.hugetlb` (the user's value wins). Otherwise `environ` with TUNABLE appended to
    GLIBC_TUNABLES (colon-separated, existing tunables kept).
    """
    if environ.get(OPT_OUT, "1") == "0" or glibc is None or glibc < (2, 35):
        return None
    if thp_mode in (None, "never"):
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" in current:
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}" if current else TUNABLE
    return env


def maybe_reexec() -> None:
    """Re-executes this interpreter with the same command line and huge-page malloc, when it helps.

    Call it first thing in a command-line entry point (it does not return when it re-executes). Uses
    `sys.orig_argv`, so `python -m pkg ...`, `python script.py ...` and console scripts all come back
    the same. If the exec itself fails the process simply continues with the default allocator.
    """
    if sys.platform != "linux":
        return
    env = hugepage_env(os.environ, _glibc_version(), _thp_mode())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this process already uses
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None


def release_free_memory() -> bool:
    """Returns the free memory of every malloc arena to the kernel: glibc `malloc_trim(0)`.

    Compiling a large program leaves much of the compiler's memory freed but kept by malloc (for NVAE's
    step, most of the compile's peak); `shared.trainer.Trainer.fit` calls this after the first step.
    Nothing is freed that is still in use, so it is always safe; it costs a walk over the heaps
    (milliseconds). True if glibc released something, False if nothing or not on glibc.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
