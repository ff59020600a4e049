"""CAIL2020 judicial-summarisation data: loading, validation and clause splitting.

File format (one JSON object per line, UTF-8):
    {"id": str, "summary": str, "text": [{"sentence": str, "label": 0 | 1}, ...]}
9,484 training documents; input mean 2,568 characters (max 13,064), summary mean 283 (max 474).

Clauses (SPACES, kexue 8046): the text is cut after every run of `\\n 。 ； ： ，`; each clause keeps
its delimiters (so "。\\n" ends one clause rather than making a clause of "\\n"), and
`"".join(split_clauses(t, max_clauses=None)) == t`. Only the LAST `max_clauses` (256) clauses of a
long document are kept (the judgment, which the summary mostly restates, is at the end):
this truncation is documented and reported by `truncated_clauses`, never silent label shifting --
labels always index the returned clause list.

Bad input: a malformed line raises `ValueError("<file>:<line>: ...")`; bytes that are not UTF-8 raise
a ValueError with the file, line and byte offset (no replacement characters are ever inserted);
empty documents / summaries raise unless `allow_empty_summary=True` (for test sets without
summaries).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import NoReturn

__all__ = ["Document", "load_cail2020", "split_clauses", "truncated_clauses", "document_clauses",
           "CLAUSE_DELIMITERS", "MAX_CLAUSES"]

CLAUSE_DELIMITERS = "\n。；：，"
MAX_CLAUSES = 256
_SPLIT = re.compile(f"[^{re.escape(CLAUSE_DELIMITERS)}]*(?:[{re.escape(CLAUSE_DELIMITERS)}]+|$)")


@dataclasses.dataclass(frozen=True)
class Document:
    """One CAIL2020 sample. `sentences` and `labels` (the official sentence labels) have equal length."""

    id: str
    sentences: tuple[str, ...]
    labels: tuple[int, ...]
    summary: str

    @property
    def text(self) -> str:
        """The full source text: sentences joined by newlines (so sentences never merge into a clause)."""
        return "\n".join(self.sentences)


def split_clauses(text: str, max_clauses: int | None = MAX_CLAUSES) -> list[str]:
    """Splits `text` after each run of `\\n 。 ； ： ，`, keeping them; keeps the last `max_clauses`.

    Empty pieces are dropped, so no clause is empty; without truncation the clauses concatenate back to
    `text` exactly. Example: split_clauses("甲，乙。丙") == ["甲，", "乙。", "丙"].
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if max_clauses is not None and max_clauses < 1:
        raise ValueError(f"max_clauses must be >= 1 or None, got {max_clauses}")
    clauses = [m for m in _SPLIT.findall(text) if m]
    if max_clauses is not None and len(clauses) > max_clauses:
        clauses = clauses[-max_clauses:]
    return clauses


def truncated_clauses(text: str, max_clauses: int = MAX_CLAUSES) -> int:
    """How many leading clauses `split_clauses(text, max_clauses)` drops (0 if none)."""
    return max(0, len(split_clauses(text, None)) - max_clauses)


def document_clauses(doc: Document, max_clauses: int | None = MAX_CLAUSES) -> list[str]:
    """The clauses of a document's text (sentence boundaries are clause boundaries)."""
    return split_clauses(doc.text, max_clauses)


def _fail(where: str, message: str) -> NoReturn:
    raise ValueError(f"{where}: {message}")


def parse_record(record: object, where: str = "<record>", allow_empty_summary: bool = False) -> Document:
    """Validates one decoded JSON object and returns a `Document`; `where` prefixes error messages."""
    if not isinstance(record, dict):
        _fail(where, f"expected a JSON object, got {type(record).__name__}")
    for key in ("id", "summary", "text"):
        if key not in record:
            _fail(where, f"missing field {key!r}")
    doc_id = record["id"]
    if not isinstance(doc_id, (str, int)):
        _fail(where, f"field 'id' must be a string, got {type(doc_id).__name__}")
    summary = record["summary"]
    if not isinstance(summary, str):
        _fail(where, f"field 'summary' must be a string, got {type(summary).__name__}")
    if not summary.strip() and not allow_empty_summary:
        _fail(where, f"document {doc_id!r} has an empty 'summary'")
    text = record["text"]
    if not isinstance(text, list):
        _fail(where, f"field 'text' must be a list of {{sentence, label}}, got {type(text).__name__}")
    sentences, labels = [], []
    for i, item in enumerate(text):
        if not isinstance(item, dict) or "sentence" not in item:
            _fail(where, f"text[{i}] must be an object with a 'sentence' field")
        sentence = item["sentence"]
        if not isinstance(sentence, str):
            _fail(where, f"text[{i}].sentence must be a string, got {type(sentence).__name__}")
        label = item.get("label", 0)
        if isinstance(label, bool) or label not in (0, 1):
            _fail(where, f"text[{i}].label must be 0 or 1, got {label!r}")
        sentences.append(sentence)
        labels.append(int(label))
    if not "".join(sentences).strip():
        _fail(where, f"document {doc_id!r} has an empty 'text'")
    return Document(str(doc_id), tuple(sentences), tuple(labels), summary)


def load_cail2020(path: str | os.PathLike, *, allow_empty_summary: bool = False,
                  limit: int | None = None) -> list[Document]:
    """Reads a CAIL2020 JSON-lines file into `Document`s (blank lines skipped, a UTF-8 BOM allowed).

    Raises ValueError naming the file and line for: bytes that are not UTF-8 (with the byte offset),
    invalid JSON, missing or mistyped fields, labels outside {0, 1}, empty text or summary.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"CAIL2020 file {path!r} does not exist")
    docs: list[Document] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not valid UTF-8 at byte {e.start} of the line "
                                 f"({raw[e.start:e.start + 4]!r})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            docs.append(parse_record(record, where, allow_empty_summary))
            if limit is not None and len(docs) >= limit:
                break
    if not docs:
        raise ValueError(f"{path}: no documents found")
    return docs


def write_cail2020(path: str | os.PathLike, docs: Iterable[Document]) -> None:
    """Writes documents in the CAIL2020 JSON-lines format (used for the synthetic set and in tests)."""
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            record = {"id": d.id, "summary": d.summary,
                      "text": [{"sentence": s, "label": l} for s, l in zip(d.sentences, d.labels)]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def check_clauses(clauses: Sequence[str], name: str) -> None:
    """ValueError unless `clauses` is a non-empty list of non-empty strings."""
    if isinstance(clauses, str):
        raise ValueError(f"{name} must be a list of clauses, got a single string (use split_clauses)")
    if len(clauses) == 0:
        raise ValueError(f"{name} is empty")
    for i, c in enumerate(clauses):
        if not isinstance(c, str) or not c:
            raise ValueError(f"{name}[{i}] must be a non-empty string, got {c!r}")
