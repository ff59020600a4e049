"""The report writer, the experiment contract and `kexue reproduce`."""

import dataclasses
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from shared.experiment import Experiment, RunContext
from shared.report import Report, markdown_table, to_jsonable, write_index
from tests.test_shared_cli import kexue


@dataclasses.dataclass(frozen=True)
class Cfg:
    seed: int = 0
    widths: tuple[int, ...] = (1, 2)


def test_markdown_table_formats_and_checks_widths():
    table = markdown_table(["a", "b"], [["x", 0.123456], ["y", None]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x | 0.1235 |", "| y | — |"]
    with pytest.raises(ValueError, match="cells"):
        markdown_table(["a", "b"], [["only one"]])


def test_report_writes_markdown_png_json(tmp_path):
    report = Report("pkg.exp", tmp_path / "pkg" / "exp")
    report.text("hello")
    report.table(["method", "ours", "published"], [["erm", 0.18, 0.181]])
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    report.figure(fig, "curve", "A curve")
    report.write({"acc": np.float32(0.5), "arr": np.arange(3), "nan": float("nan")}, Cfg(), wall_time_s=1.5)
    run_dir = tmp_path / "pkg" / "exp"
    md = (run_dir / "report.md").read_text()
    assert "# pkg.exp" in md and "| erm | 0.18 | 0.181 |" in md and "![A curve](curve.png)" in md
    assert (run_dir / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run_dir / "metrics.json").read_text()) == {"acc": 0.5, "arr": [0, 1, 2], "nan": "nan"}
    # `_experiment` names whose config it is (`kexue run --config-file` and `kexue eval` check it)
    assert json.loads((run_dir / "config.json").read_text()) == {"_experiment": "pkg.exp", "seed": 0, "widths": [1, 2]}
    index = write_index(tmp_path, {"pkg.exp": "what it shows"})
    assert "[pkg.exp](pkg/exp/report.md) | what it shows" in index.read_text()


def test_to_jsonable_handles_nested_dataclasses_and_arrays():
    assert to_jsonable({"c": Cfg(), "t": (np.int64(3),)}) == {"c": {"seed": 0, "widths": [1, 2]}, "t": [3]}


def test_experiment_requires_quick_preset(tmp_path):
    def run(config, ctx: RunContext):
        return {}

    with pytest.raises(ValueError, match="quick"):
        Experiment("pkg.exp", run, {"full": Cfg()}, "no quick preset")
    exp = Experiment("pkg.exp", run, {"quick": Cfg()}, "ok")
    assert (exp.package, exp.short_name) == ("pkg", "exp")


def test_reproduce_quick_writes_reports_index_and_timings(tmp_path):
    result = kexue("reproduce", "--quick", "--only", "shared", "--reports", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "shared.digits_mlp" in result.stdout and "total" in result.stdout
    metrics = json.loads((tmp_path / "shared" / "digits_mlp" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.95  # the foundation's first experiment reaches its target
    assert "shared/digits_mlp/report.md" in (tmp_path / "index.md").read_text()
    timings = json.loads((tmp_path / "timings_quick.json").read_text())
    assert timings[0]["experiment"] == "shared.digits_mlp" and timings[0]["wall_time_s"] < 60
    assert list((tmp_path / "shared" / "digits_mlp" / "tensorboard").glob("events.out.tfevents.*"))
