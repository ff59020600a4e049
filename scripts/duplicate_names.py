"""Lists the public functions and classes defined in more than one module of the suite (one name per thing).

    python scripts/duplicate_names.py            # exit code 1 if any name is defined twice

A name is public when it does not start with "_"; the modules are every package's `.py` files (tests,
benchmarks and scripts excluded). Not listed: the names in `SAME_JOB`, which do the same job wherever
they are defined, and the config dataclasses of `configs` modules (each package's config of its
experiment, named after the experiment).
"""

from __future__ import annotations

import ast
import collections
import pathlib
import sys

PACKAGES = ("shared", "nvae_jax", "longtail", "flooding", "weissi", "rnn_grad", "mwp", "spaces")
SAME_JOB = {
    "run", "evaluate_run", "predict_run",  # the `Experiment` contract: run, `kexue eval`, `kexue predict`
    "make_trainer", "build",  # the experiment's `shared.trainer.Trainer`, also what `kexue eval` restores into
    "main",  # a command-line entry point
    "method_parts",  # weissi: (optax transform, penalty) of a method, for the digits and the CIFAR config
    "num_steps",  # flooding / weissi CIFAR: total steps of a config
    "load_split",  # one CIFAR split in memory (longtail's adds its mock data and the label check)
}


def public_definitions(root: pathlib.Path) -> dict[str, list[str]]:
    """{name: [module, ...]} for every top-level public `def` / `class` of the packages under `root`."""
    where = collections.defaultdict(list)
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and path.stem == "configs":
                    continue
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                        and not node.name.startswith("_"):
                    where[node.name].append(module)
    return {name: modules for name, modules in where.items() if len(modules) > 1 and name not in SAME_JOB}


def main() -> int:
    duplicates = public_definitions(pathlib.Path(__file__).resolve().parent.parent)
    for name, modules in sorted(duplicates.items()):
        print(f"{name}: {', '.join(modules)}")
    return 1 if duplicates else 0


if __name__ == "__main__":
    sys.exit(main())
