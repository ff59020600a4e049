"""The READMEs cannot drift from the code: their python blocks run, their commands parse.

Covers the top README (the map) and the README beside each package: every ```python block is executed,
every `kexue ...` command (in code blocks and in inline code) must name a registered experiment, one of
its presets and valid config keys with well-typed values (`shared.cli.registry` and
`shared.overrides.apply_overrides`), every `python path.py` must name a file of the repository, and no
document may link or cite a file the repository does not hold.
"""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "nvae_jax", "longtail", "flooding", "weissi", "rnn_grad", "mwp", "spaces")
DOCS = {name: (ROOT / name).read_text() for name in ["README.md", *(f"{pkg}/README.md" for pkg in PACKAGES)]}
README = DOCS["README.md"]
CI = (ROOT / ".ci" / "run").read_text()
# `kexue run` options that take a value; any other option is treated as a switch, so new switches
# (`--overwrite`, `--allow-config-change`, ...) need no change here.
VALUE_OPTIONS = {"--preset", "--out", "--reports", "--coordinator", "--num-processes", "--process-id",
                 "--config-file", "--run", "--step", "--model", "--temperature", "--num", "--seed", "--input",
                 "--bn-iterations", "--steps", "--fold"}
MULTI_VALUE_OPTIONS = {"--interpolate"}  # options of the use commands that take several values


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _python_blocks() -> list[tuple[str, int, str]]:
    return [(doc, i, block) for doc, text in DOCS.items() for i, block in enumerate(_blocks(text, "python"))]


def _kexue_commands(text: str) -> list[str]:
    """Every `kexue ...` command: lines of fenced blocks (joining `\\` continuations) and inline code."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip().startswith("kexue ")]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    commands += [span.strip() for span in re.findall(r"`(kexue [^`]+)`", prose)]
    # a command with an elision (`kexue run … --coordinator ...`) or a usage summary (`[--flag]`) is
    # a pattern, not a command to check
    return [c for c in commands if not any(mark in c for mark in ("…", "...", "["))]


def _check_kexue(command: str, experiments: dict) -> None:
    from shared.overrides import apply_overrides

    tokens = shlex.split(command)[1:]
    assert tokens, command
    sub, args = tokens[0], tokens[1:]
    if sub == "list":
        assert not args, f"{command!r}: `kexue list` takes no arguments"
        return
    if sub == "reproduce":
        packages = {name.split(".")[0] for name in experiments}
        only = args[args.index("--only") + 1:] if "--only" in args else []
        unknown = [pkg for pkg in only if not pkg.startswith("--") and pkg not in packages]
        assert not unknown, f"{command!r}: no package {unknown} (packages: {sorted(packages)})"
        return
    assert sub in ("run", "eval", "sample", "predict"), f"{command!r}: unknown subcommand {sub!r}"
    if not args:  # prose naming the subcommand (`kexue run`), not a command line
        return
    name, rest = args[0], args[1:]
    assert name in experiments, f"{command!r}: no experiment {name!r} (registered: {sorted(experiments)})"
    if sub != "run":  # the use commands: the experiment must offer the command; predict takes free text
        hook = getattr(experiments[name], "evaluate" if sub == "eval" else sub)
        assert hook is not None, f"{command!r}: {name} offers no `kexue {sub}`"
        if sub == "predict":
            rest = [t for t in rest if t.startswith("--") or any(f"{o} {t}" in command for o in VALUE_OPTIONS)]
    preset, overrides, i = "quick", [], 0
    while i < len(rest):
        token = rest[i]
        if token.startswith("--config."):
            overrides.append(token)
            while i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                i += 1
                overrides.append(rest[i])
        elif token in MULTI_VALUE_OPTIONS:
            while i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                i += 1
        elif token in VALUE_OPTIONS:
            i += 1
            if token == "--preset":
                preset = rest[i]
        else:
            assert token.startswith("--"), f"{command!r}: stray argument {token!r}"
        i += 1
    presets = experiments[name].presets
    assert preset in presets, f"{command!r}: {name} has no preset {preset!r} (presets: {sorted(presets)})"
    apply_overrides(presets[preset], overrides)  # raises UsageError naming a bad key or value


def test_readme_starts_with_the_two_commands():
    bash = _blocks(README, "bash")
    assert bash[0].strip() == "pip install -e . && kexue reproduce --quick"
    assert bash[1].strip() == 'pip install -e ".[test]" && python -m pytest'
    assert README.index(bash[0]) < README.index(bash[1]) < README.index("## What this is")


def test_ci_runs_exactly_the_readme_test_command():
    assert _blocks(README, "bash")[1].strip() in CI.splitlines()


def test_top_readme_is_the_map_and_links_every_package_readme():
    assert len(README.splitlines()) <= 250, "the top README is the map; details go to the package READMEs"
    for pkg in PACKAGES:
        assert f"]({pkg}/README.md)" in README, f"the map does not link {pkg}/README.md"
    assert "<!-- TIMINGS -->" in README and "<!-- /TIMINGS -->" in README


def test_links_and_cited_files_exist():
    """Relative links, and backticked paths (`*.py`, `*.md`) under our top-level folders, name files that exist."""
    missing = []
    for doc, text in DOCS.items():
        base = (ROOT / doc).parent
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target and not (base / target).exists():
                missing.append(f"{doc}: link {target}")
        for path in re.findall(r"`([\w./-]+\.(?:py|md))`", text):
            ours = (ROOT / path.split("/")[0]).is_dir()  # not a path in an official repository
            if "/" in path and ours and not (ROOT / path).exists():
                missing.append(f"{doc}: `{path}`")
        if "REFERENCES.md" in text and not (ROOT / "REFERENCES.md").exists():
            missing.append(f"{doc}: cites REFERENCES.md")
    assert not missing, "documents cite files that are not in the repository:\n" + "\n".join(missing)


def test_no_source_cites_a_missing_references_file():
    """Code, tests and benchmark notes cite the package READMEs, not the project's external notes."""
    if (ROOT / "REFERENCES.md").exists():
        return
    folders = [*PACKAGES, "tests", "benchmarks", "scripts"]
    files = [path for folder in folders for pattern in ("*.py", "*.md") for path in (ROOT / folder).rglob(pattern)]
    assert len(files) > 50, "the scan found too few files: the folder list is wrong"
    this = pathlib.Path(__file__).resolve()
    citing = sorted(str(path.relative_to(ROOT)) for path in files
                    if path.resolve() != this and "REFERENCES.md" in path.read_text(errors="replace"))
    assert not citing, f"these files cite REFERENCES.md, which is not in the repository: {citing}"


def test_benchmarks_named_in_the_code_exist():
    """A docstring gives a speed choice's reason and names its benchmark; that benchmark must exist."""
    named = {name for pkg in PACKAGES for path in (ROOT / pkg).rglob("*.py")
             for name in re.findall(r"\b(bench_[a-z_]+)(?:\.py)?\b", path.read_text())}
    assert named, "no benchmark is named in the code: the pattern is wrong"
    missing = sorted(name for name in named if not (ROOT / "benchmarks" / f"{name}.py").is_file())
    assert not missing, f"the code names benchmarks that do not exist: {missing}"


def test_python_commands_name_scripts_that_exist():
    scripts = {path for text in DOCS.values() for path in re.findall(r"\bpython3? ([\w./-]+\.py)\b", text)}
    assert scripts, "no `python script.py` commands found: the pattern is wrong"
    missing = sorted(path for path in scripts if not (ROOT / path).is_file())
    assert not missing, f"READMEs name scripts that do not exist: {missing}"


def test_every_kexue_command_names_an_experiment_preset_and_config_keys():
    from shared.cli import registry

    experiments = registry()
    commands = {(doc, command) for doc, text in DOCS.items() for command in _kexue_commands(text)}
    assert {doc for doc, _ in commands} >= {"README.md", *(f"{pkg}/README.md" for pkg in PACKAGES)}
    for doc, command in sorted(commands):
        try:
            _check_kexue(command, experiments)
        except Exception as error:
            raise AssertionError(f"{doc}: {command!r}: {error}") from error


def test_command_check_rejects_bad_commands():
    """The checker itself: an unknown experiment, preset or config key, or a badly typed value, fails."""
    from shared.cli import registry
    from shared.overrides import UsageError

    experiments = registry()
    _check_kexue("kexue run longtail.synthetic --preset quick --config.trials 20 --overwrite", experiments)
    for bad in ("kexue run longtail.nonexistent", "kexue run longtail.synthetic --preset huge",
                "kexue run longtail.synthetic --config.no_such_key 1",
                "kexue run longtail.synthetic --config.trials many", "kexue reproduce --only nopackage"):
        with pytest.raises((AssertionError, UsageError)):
            _check_kexue(bad, experiments)


@pytest.mark.parametrize(("doc", "index", "block"), _python_blocks(),
                         ids=[f"{doc}#{i}" for doc, i, _ in _python_blocks()])
def test_python_block_runs(doc, index, block, capsys):
    namespace: dict = {"__name__": f"readme_block_{index}"}
    exec(compile(block, doc, "exec"), namespace)  # our own documentation
    if "train_step" in namespace:  # the notebook example: it must actually train
        import jax

        grads, state = namespace["grads"], namespace["state"]
        assert jax.tree.structure(grads) == jax.tree.structure(state.params)
        loss = float(namespace["metrics"]["loss"])
        assert loss < 1.0, f"the example's model did not train: loss {loss}"
        assert "loss" in capsys.readouterr().out


def test_every_package_readme_has_an_example_and_its_sources():
    """Each package README runs a python example and states the facts and published numbers it compares with."""
    with_examples = {doc for doc, _, _ in _python_blocks()}
    for pkg in PACKAGES:
        doc = f"{pkg}/README.md"
        assert doc in with_examples, f"{doc} has no ```python example"
        heading = "## Formulas and sources" if pkg == "shared" else "## Sources and published numbers"
        assert heading in DOCS[doc], f"{doc} lacks the section {heading!r}"
