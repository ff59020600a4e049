"""Huge-page host allocations for XLA:CPU, set up by re-executing the process once.

XLA:CPU allocates one temporary buffer for each execution of a compiled program (all the
intermediates of a train step: hundreds of MB for NVAE's `tiny_mnist` step) and frees it at the end.
glibc serves allocations above its mmap threshold (at most 32 MB) with a fresh `mmap`, so each step
touches every page of that buffer again, one minor page fault per 4 KiB page, which costs an NVAE step
a large share of its time on CPU. glibc ≥ 2.35 has a tunable, `glibc.malloc.hugetlb=1`, that advises
transparent huge pages for those mappings (2 MiB pages, 512 times fewer faults; `benchmarks/bench_nvae.py
--malloc`, figures in benchmarks/RESULTS.md, nvae_jax). Tunables are read at
process start, so a running interpreter cannot switch it on; the `kexue` command re-executes itself
once with it set (`maybe_reexec`). Opt out with `KEXUE_HUGEPAGE_MALLOC=0`; notebook users can start
Jupyter with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` for the same effect.

Compiling a large program leaves much of the compiler's memory freed but kept by malloc (for NVAE's
step, most of the compile's peak: benchmarks/RESULTS.md, nvae_jax); `release_free_memory` hands it
back to the kernel (`shared.trainer.Trainer.fit` calls it after the first step).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
from collections.abc import Mapping

__all__ = ["TUNABLE", "OPT_OUT", "hugepage_env", "maybe_reexec", "release_free_memory"]

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
    """The environment to re-execute with, or None when nothing would change.

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

    Nothing is freed that is still in use, so it is always safe; it costs a walk over the heaps
    (milliseconds). True if glibc released something, False if nothing or not on glibc.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
