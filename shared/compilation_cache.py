"""A persistent compilation cache for the `kexue` command: JAX's own, on by default in a user directory.

Compiling a train step is the slow part of starting a run on CPU, and loading the same program from
the cache is much faster (`benchmarks/bench_nvae.py --cache warm`; figures in benchmarks/RESULTS.md,
nvae_jax). JAX keeps
compiled programs on disk, keyed by the program, the jax/jaxlib versions, the backend and the
compiler flags, once `jax_compilation_cache_dir` is set; the `kexue` command sets it, so a second run,
a `--resume` after a pre-emption or another seed of the same config skips the compile. Only programs
that took at least `jax_persistent_cache_min_compile_time_secs` (JAX's default, 1 s) are stored.

Directory: `$KEXUE_COMPILATION_CACHE` if set (`0` or empty turns the cache off), else
`$JAX_COMPILATION_CACHE_DIR` if set (JAX reads it itself), else `$XDG_CACHE_HOME/kexue/xla`
(`~/.cache/kexue/xla`). Delete the directory at any time to reclaim the space.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["ENV", "cache_dir", "enable"]

ENV = "KEXUE_COMPILATION_CACHE"


def cache_dir(environ: Mapping[str, str]) -> str | None:
    """The directory the `kexue` command should set, or None (cache off, or left to JAX's own variable)."""
    if ENV in environ:
        value = environ[ENV]
        return None if value in ("", "0") else value
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kexue", "xla")


def enable(environ: Mapping[str, str] | None = None) -> str | None:
    """Points JAX's persistent compilation cache at `cache_dir(environ)`; returns it (None: unchanged).

    Call it before the first compilation (the `kexue` command does, at start-up). Before jax is imported
    this only sets `JAX_COMPILATION_CACHE_DIR`, which jax reads at import (so it costs no jax import).
    """
    directory = cache_dir(os.environ if environ is None else environ)
    if directory is None:
        return None
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_compilation_cache_dir", directory)
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    return directory
