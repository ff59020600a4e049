"""The public API is fully annotated, and every run context is typed (issue 29; mypy checks the types).

mypy (basic mode, `.ci/run`) checks the annotations that exist but does not require them; these tests
require them where the API is public: every name a package's `__init__` exports and every public
function / class of shared's public modules has annotated parameters and return type (methods: those
defined in the class; `__init__` needs no return type). Every parameter named `ctx` in the packages
is annotated `RunContext` (or `RunContext | None`).
"""

import ast
import importlib
import inspect
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "nvae_jax", "longtail", "flooding", "weissi", "rnn_grad", "mwp", "spaces")
SHARED_PUBLIC = ("trainer", "train", "checkpoint", "data", "experiment", "cli", "overrides", "losses",
                 "transforms", "sparse_softmax", "hvae", "unilm", "decoding", "report", "models", "augment")


def _missing(fn, is_method: bool) -> list[str]:
    """Names of the unannotated parameters of `fn` (and "return" if its return type is missing)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if is_method and params and params[0].name in ("self", "cls"):
        params = params[1:]
    out = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    if fn.__name__ != "__init__" and sig.return_annotation is inspect.Signature.empty:
        out.append("return")
    return out


def _own_functions(obj, module: str):
    """(qualified name, function, is_method) for a public function, or a public class's own methods."""
    if inspect.isfunction(obj) and obj.__module__ == module:
        yield obj.__qualname__, obj, False
    elif inspect.isclass(obj) and obj.__module__ == module:
        for name, member in vars(obj).items():
            if name.startswith("_") and name not in ("__init__", "__call__"):
                continue
            if isinstance(member, (staticmethod, classmethod)):
                yield f"{obj.__qualname__}.{name}", member.__func__, isinstance(member, classmethod)
            elif inspect.isfunction(member) and member.__module__ == module:  # not flax.struct's `replace`
                yield f"{obj.__qualname__}.{name}", member, True


def _public_api():
    for package in PACKAGES[1:]:
        mod = importlib.import_module(package)
        for name in mod.__all__:
            obj = getattr(mod, name)
            yield from _own_functions(obj, getattr(obj, "__module__", ""))
    for short in SHARED_PUBLIC:
        mod = importlib.import_module(f"shared.{short}")
        names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for name in names:
            yield from _own_functions(getattr(mod, name), mod.__name__)


def test_public_api_is_fully_annotated():
    seen, missing = set(), []
    for qualname, fn, is_method in _public_api():
        if fn in seen or "<lambda>" in qualname or ".<locals>." in qualname:
            continue
        seen.add(fn)
        if gaps := _missing(fn, is_method):
            missing.append(f"{fn.__module__}.{qualname}: {', '.join(gaps)}")
    assert len(seen) > 200, len(seen)  # the walk found the API (not an empty __all__)
    assert not missing, "unannotated public API:\n" + "\n".join(missing)


def test_annotation_check_catches_a_missing_annotation():
    def typed(x: int, *, y: float = 1.0) -> float:
        return x + y

    def untyped(x, y: float = 1.0) -> float:
        return x + y

    class Model:
        def __init__(self, width: int):
            self.width = width

        def __call__(self, x):
            return x

    assert _missing(typed, False) == []
    assert _missing(untyped, False) == ["x"]
    assert _missing(Model.__init__, True) == []
    assert _missing(Model.__call__, True) == ["x", "return"]


def _ctx_parameters(source: str):
    """(function name, line, annotation source or None) of every parameter named `ctx`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            for arg in args.posonlyargs + args.args + args.kwonlyargs:
                if arg.arg == "ctx":
                    name = getattr(node, "name", "<lambda>")
                    yield name, node.lineno, None if arg.annotation is None else ast.unparse(arg.annotation)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_ctx_is_a_run_context(package):
    untyped = []
    for path in sorted((ROOT / package).glob("*.py")):
        for name, line, annotation in _ctx_parameters(path.read_text(encoding="utf-8")):
            if annotation not in ("RunContext", "RunContext | None"):
                untyped.append(f"{path.relative_to(ROOT)}:{line} {name}(ctx: {annotation})")
    assert not untyped, "ctx not typed RunContext:\n" + "\n".join(untyped)


def test_ctx_check_sees_every_kind_of_parameter():
    source = ("def a(config, ctx): ...\n"
              "def b(config, *, ctx: RunContext | None = None): ...\n"
              "f = lambda config, ctx: None\n")
    assert [(n, a) for n, _, a in _ctx_parameters(source)] == [("a", None), ("b", "RunContext | None"),
                                                               ("<lambda>", None)]
