"""The README's documented API and commands cannot drift: its notebook example runs here."""

import pathlib
import re

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
CI = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_commands():
    bash = _blocks("bash")
    assert bash[0].strip() == "pip install -e . && kexue reproduce --quick"
    assert bash[1].strip() == 'pip install -e ".[test]" && python -m pytest'
    assert README.index(bash[0]) < README.index(bash[1]) < README.index("## What this is")


def test_ci_runs_exactly_the_readme_test_command():
    assert _blocks("bash")[1].strip() in CI.splitlines()


def test_notebook_example_runs(capsys):
    (example,) = [block for block in _blocks("python") if "jax.grad" in block]
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102  (our own documentation)
    grads, state = namespace["grads"], namespace["state"]
    import jax

    assert jax.tree.structure(grads) == jax.tree.structure(state.params)
    loss = float(namespace["metrics"]["loss"])
    assert loss < 1.0, f"the example's model did not train: loss {loss}"
    assert "loss" in capsys.readouterr().out
