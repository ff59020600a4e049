"""Lazy public APIs for package `__init__` modules (PEP 562), so that naming a package's API costs nothing.

`kexue list` imports every package's experiment registry, and through it the package's `__init__`; if
that imported the models it would load jax and flax just to print a table. A package lists its public
names by module instead, and each module is imported on the first access to one of its names.

Example (a package `__init__.py`):
    >>> from shared.lazy import lazy_exports
    >>> __getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ...     "model": ("NVAE", "PairedFlow"), "layers": ("WNConv", "power_iteration")})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, Sequence[str]],
                 eager: Sequence[str] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(`__getattr__`, `__dir__`, `__all__`) for `package`'s `__init__`.

    Args:
      package: the package's `__name__`.
      modules: submodule name (relative to `package`) -> the public names it defines.
      eager: names the `__init__` already binds itself (listed in `__all__` too).
    """
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    names = [*eager, *where]

    def __dir__() -> list[str]:
        return sorted(set(names) | set(vars(sys.modules[package])))

    return __getattr__, __dir__, names
