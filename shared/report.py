"""Report writer: markdown with tables and inline PNG figures, plus JSON metrics.

A run fills a `Report` (text, tables, figures); `Report.write(metrics, config)` then writes
`report.md`, `metrics.json` and `config.json` into the run directory. `write_index` links every
run under `reports/` from `reports/index.md`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import numbers
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def to_jsonable(value: Any) -> Any:
    """Converts numpy / jax scalars and arrays, tuples and dataclasses into JSON-able values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, pathlib.Path):
        return str(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy or jax array / scalar
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def format_cell(value: Any, floatfmt: str = ".4g") -> str:
    if value is None:
        return "—"
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # float, np.float32, ...
        return format(float(value), floatfmt)
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".4g") -> str:
    """A GitHub markdown table; floats formatted with `floatfmt`, `None` shown as a dash."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row {row!r} has {len(row)} cells, header has {len(header)}")
        lines.append("| " + " | ".join(format_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines)


class Report:
    """Accumulates the body of a `report.md`.

    Example:
        >>> report = Report("longtail.synthetic", out_dir)
        >>> report.text("Balanced error over 100 trials.")
        >>> report.table(["method", "ours", "published"], [["ERM", 0.18, 0.181]])
        >>> report.figure(fig, "boundaries", "Decision boundaries")   # writes boundaries.png
        >>> report.write(metrics={"erm": 0.18}, config=config)
    """

    def __init__(self, title: str, out_dir: pathlib.Path | str):
        self.title = title
        self.out_dir = pathlib.Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._blocks: list[str] = []

    def text(self, markdown: str) -> None:
        self._blocks.append(markdown.strip())

    def section(self, heading: str) -> None:
        self._blocks.append(f"## {heading}")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None,
              floatfmt: str = ".4g") -> None:
        block = markdown_table(header, rows, floatfmt)
        self._blocks.append(f"{block}\n\n*{caption}*" if caption else block)

    def figure(self, fig: Figure, name: str, caption: str = "") -> pathlib.Path:
        """Saves a matplotlib figure as `<name>.png` in the run directory and links it inline."""
        import matplotlib.pyplot as plt

        path = self.out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self._blocks.append(f"![{caption or name}]({path.name})" + (f"\n\n*{caption}*" if caption else ""))
        return path

    def markdown(self, metrics: Mapping[str, Any] | None = None, config: Any = None,
                 wall_time_s: float | None = None) -> str:
        head = [f"# {self.title}", "", f"_Written {datetime.datetime.now():%Y-%m-%d %H:%M}"
                + (f", wall time {wall_time_s:.1f} s_" if wall_time_s is not None else "_")]
        body = "\n\n".join(self._blocks)
        tail = []
        if config is not None:
            tail += ["## Configuration", "```json", json.dumps(to_jsonable(config), indent=2), "```"]
        if metrics:
            tail += ["## Metrics", "See `metrics.json`."]
        return "\n".join(head) + "\n\n" + body + "\n\n" + "\n".join(tail) + "\n"

    def write(self, metrics: Mapping[str, Any], config: Any = None,
              wall_time_s: float | None = None) -> None:
        (self.out_dir / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
        if config is not None:  # `kexue run --config-file` reads it back; `_experiment` names whose it is
            (self.out_dir / "config.json").write_text(json.dumps({"_experiment": self.title, **to_jsonable(config)},
                                                                 indent=2))
        (self.out_dir / "report.md").write_text(self.markdown(metrics, config, wall_time_s))


def write_index(reports_root: pathlib.Path | str, descriptions: Mapping[str, str] | None = None) -> pathlib.Path:
    """Writes `reports/index.md` linking every `report.md` below `reports_root`."""
    root = pathlib.Path(reports_root)
    descriptions = descriptions or {}
    rows = []
    for report_md in sorted(root.glob("*/*/report.md")):
        package, experiment = report_md.parent.parent.name, report_md.parent.name
        name = f"{package}.{experiment}"
        rows.append([f"[{name}]({report_md.relative_to(root).as_posix()})", descriptions.get(name, "")])
    index = root / "index.md"
    index.write_text("# kexue-jax reports\n\n" + markdown_table(["experiment", "what it shows"], rows) + "\n")
    return index
