"""Loading Ape210K JSON-lines files into normalised problems, with a count of what was dropped and why.

One line of the real files (https://github.com/Chenny0808/ape210k, `train.ape.json` etc.):

    {"id": "254761", "segmented_text": "用 白 纸 做 ...", "original_text": "用白纸做...",
     "ans": "(11/20)", "equation": "x=6000/(1+(3/5))"}

A line that is not a JSON object with the five string fields is *malformed*: it raises a
`ValueError` naming the file and line (or, with `on_error="skip"`, is skipped and counted as
"malformed"). A well-formed problem that fails the Ape210K rules (its equation does not evaluate or
does not equal its answer) is dropped as the baseline does and counted under its reason.
"""

from __future__ import annotations

import collections
import json
import pathlib

from mwp.expressions import ExpressionError, normalize_problem

FIELDS = ("id", "segmented_text", "original_text", "ans", "equation")


def load_ape210k(path: str | pathlib.Path, on_error: str = "raise", limit: int | None = None
                 ) -> tuple[list[dict], dict]:
    """Reads one Ape210K JSON-lines file.

    Args:
      path: the file (e.g. `train.ape.json`).
      on_error: "raise" (a malformed line raises ValueError naming file and line) or "skip".
      limit: read at most this many non-empty lines (None: all).
    Returns:
      (records, summary): records are `normalize_problem` outputs (question, equation, answer, value,
      id, segmented_text); summary is {"file", "lines", "kept", "dropped": {reason: count}}.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"path: no Ape210K file at {path}")
    records, lines = [], 0
    dropped: collections.Counter[str] = collections.Counter()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if limit is not None and lines >= limit:
                break
            lines += 1
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                for field in FIELDS:
                    if field == "id" and isinstance(record.get(field), int):
                        record[field] = str(record[field])
                    if not isinstance(record.get(field), str):
                        raise ValueError(f"field {field!r} missing or not a string")
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                if on_error == "raise":
                    raise ValueError(f"{path}:{lineno}: malformed Ape210K line: {e}") from e
                dropped["malformed"] += 1
                continue
            try:
                records.append(normalize_problem(record))
            except ExpressionError as e:
                dropped[e.reason] += 1
    summary = {"file": str(path), "lines": lines, "kept": len(records), "dropped": dict(sorted(dropped.items()))}
    return records, summary


def write_ape210k(path: str | pathlib.Path, problems: list[dict]) -> None:
    """Writes problems (dicts with the five `FIELDS`) as JSON lines in the real files' format."""
    with pathlib.Path(path).open("w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps({k: p[k] for k in FIELDS}, ensure_ascii=False) + "\n")
