"""Config dataclasses from the command line: `--config.KEY VALUE` overrides, `--config-file`, and field help.

Every config field is one of: `bool`, `int`, `float`, `str`, or a tuple of one of those
(`tuple[int, ...]`). A value is parsed by the field's type:

- bool: `true` / `false` in any case, or `1` / `0`;
- int, float, str: one value (an int field refuses `1.5`);
- tuple: any number of values, space- or comma-separated (`--config.hidden 64 64` or `64,64`; `""` is
  the empty tuple).

The config's own `__post_init__` checks run on the result; its ValueError becomes a usage error that
names the field. Imports nothing heavy (the `kexue` command reads configs before any jax import).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import pathlib
import re
import typing
from collections.abc import Sequence
from typing import Any

SCALARS = (bool, int, float, str)
TRUE, FALSE = ("true", "1"), ("false", "0")


class UsageError(Exception):
    """A bad command line: reported in one paragraph, exit code 2."""


class ConfigError(ValueError):
    """A config value that the run cannot use, found once the run knows its mesh (e.g. a batch that does
    not divide over the devices); `kexue` reports it like a usage error (one line, exit code 2)."""


def field_types(config_type: type) -> dict[str, Any]:
    """{field: type} of a config dataclass, with string annotations resolved."""
    hints = typing.get_type_hints(config_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_type)}


def _element_type(tp: Any) -> type | None:
    """T for `tuple[T, ...]` (T a scalar type), else None."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in SCALARS:
            return args[0]
    return None


def type_name(tp: Any) -> str:
    element = _element_type(tp)
    return f"{element.__name__} ..." if element is not None else getattr(tp, "__name__", str(tp))


def _scalar(tp: type, text: str, key: str) -> Any:
    if tp is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise UsageError(f"bad value {text!r} for config key {key!r} (expected bool: true/false or 1/0)")
    try:
        return tp(text)
    except ValueError:
        raise UsageError(f"bad value {text!r} for config key {key!r} (expected {tp.__name__})") from None


def parse_value(tp: Any, values: Sequence[str], key: str) -> Any:
    """The value of field `key` of type `tp` from its command-line words."""
    element = _element_type(tp)
    if element is not None:
        words = [w for value in values for w in value.split(",") if w != ""]
        return tuple(_scalar(element, w, key) for w in words)
    if tp not in SCALARS:
        raise UsageError(f"config key {key!r} has type {tp} and cannot be set from the command line")
    if len(values) != 1:
        raise UsageError(f"config key {key!r} takes one value ({tp.__name__}), got {len(values)}: {' '.join(values)!r}")
    return _scalar(tp, values[0], key)


def from_json(tp: Any, value: Any, key: str) -> Any:
    """The value of field `key` of type `tp` from its JSON form (lists become tuples)."""
    element = _element_type(tp)
    if element is not None:
        if not isinstance(value, list):
            raise UsageError(f"config key {key!r}: expected a list of {element.__name__}, got {value!r}")
        return tuple(from_json(element, v, key) for v in value)
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, (int, float)) and not isinstance(value, bool) if tp is float else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else isinstance(value, tp))
    if not ok:
        raise UsageError(f"config key {key!r}: expected {tp.__name__}, got {value!r}")
    return float(value) if tp is float else value


def _replace(config: Any, updates: dict[str, Any]) -> Any:
    try:
        return dataclasses.replace(config, **updates)
    except (ValueError, TypeError) as error:  # the config's own validation (__post_init__)
        raise UsageError(f"config {', '.join(f'{k}={v!r}' for k, v in updates.items())}: {error}") from None


def split_overrides(args: Sequence[str]) -> list[tuple[str, list[str]]]:
    """["--config.a", "1", "--config.b=2", "--config.c", "3", "4"]
    -> [("a", ["1"]), ("b", ["2"]), ("c", ["3", "4"])]."""
    overrides: list[tuple[str, list[str]]] = []
    for arg in args:
        if arg.startswith("--"):
            if not arg.startswith("--config."):
                raise UsageError(f"unknown option {arg!r}; config overrides are written --config.KEY VALUE")
            key, eq, value = arg[len("--config."):].partition("=")
            overrides.append((key, [value] if eq else []))
        elif overrides:
            overrides[-1][1].append(arg)
        else:
            raise UsageError(f"unexpected argument {arg!r}; config overrides are written --config.KEY VALUE")
    return overrides


def apply_overrides(config: Any, args: Sequence[str]) -> Any:
    """`config` with `--config.KEY VALUE ...` overrides applied (typed by the fields, then validated)."""
    overrides = split_overrides(args)
    if not overrides:
        return config
    types = field_types(type(config))
    valid = ", ".join(sorted(types))
    updates = {}
    for key, values in overrides:
        if key not in types:
            raise UsageError(f"unknown config key {key!r} for {type(config).__name__}. Valid keys: {valid}")
        if not values:
            raise UsageError(f"config key {key!r} needs a value")
        try:
            updates[key] = parse_value(types[key], values, key)
        except UsageError as error:
            raise UsageError(f"{error}. Valid keys: {valid}") from None
    return _replace(config, updates)


def load_config_file(path: str | pathlib.Path, config: Any, experiment: str) -> Any:
    """`config` updated from a saved `config.json` (a run directory's, or any JSON object of fields).

    A `_experiment` entry (written by `kexue run`) must name `experiment`; every other key must be a
    field of the config. Errors name the file and the problem.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"--config-file {path}: no such file") from None
    except OSError as error:
        raise UsageError(f"--config-file {path}: cannot read it ({error.strerror or error})") from None
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"--config-file {path} is not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--config-file {path} must hold a JSON object of config fields")
    saved = dict(saved)
    owner = saved.pop("_experiment", experiment)
    if owner != experiment:
        raise UsageError(f"--config-file {path} is the config of {owner}, not of {experiment}")
    types = field_types(type(config))
    unknown = sorted(set(saved) - set(types))
    if unknown:
        raise UsageError(f"--config-file {path} has keys that {type(config).__name__} does not have: "
                         f"{', '.join(unknown)}")
    return _replace(config, {k: from_json(types[k], v, k) for k, v in saved.items()})


@functools.cache
def field_comments(config_type: type) -> dict[str, str]:
    """{field: its trailing `# comment` in the class source} (empty where there is none)."""
    try:
        source = inspect.getsource(config_type)
    except (OSError, TypeError):
        return {}
    found = {}
    for line in source.splitlines():
        match = re.match(r"\s+(\w+)\s*:[^=#]+=[^#]*#\s*(.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def describe_fields(config: Any) -> list[tuple[str, str, str, str]]:
    """(key, type, default, comment) of every field of `config` (defaults are the preset's values)."""
    config_type: type = type(config)
    comments = field_comments(config_type)
    rows = []
    for key, tp in field_types(type(config)).items():
        value = getattr(config, key)
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value).lower() if isinstance(
            value, bool) else str(value)
        rows.append((key, type_name(tp), shown, comments.get(key, "")))
    return rows


def format_value(value: Any) -> list[str]:
    """The command-line words that `parse_value` turns back into `value` (an empty tuple is `""`)."""
    if isinstance(value, tuple):
        return [format_value(v)[0] for v in value] or [""]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    return [repr(value) if isinstance(value, float) else str(value)]
