"""How operator commands print: a table for people, JSON lines for scripts.

With ``--json`` every command prints JSON lines: one object per record for a
listing, one object for a single result, nothing else on stdout. So ``jq``
and line tools treat every command alike, and ``audit export`` (JSON lines by
nature) is no exception. Errors and warnings go to stderr in both modes.

A secret appears only in the output of the command that created it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import orjson


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    field: str


class Output:
    def __init__(self, *, is_json: bool, stream: TextIO | None = None) -> None:
        self.is_json = is_json
        self._stream = stream or sys.stdout

    def json_line(self, record: Mapping[str, Any]) -> None:
        self._stream.write(orjson.dumps(record).decode() + "\n")

    def record(self, record: Mapping[str, Any], columns: Sequence[Column]) -> None:
        """One result: a JSON line, or ``title  value`` lines (titles in lower case)."""
        if self.is_json:
            self.json_line(record)
            return
        width = max(len(c.title) for c in columns)
        for column in columns:
            title = column.title.lower()
            self._stream.write(f"{title:<{width}}  {_text(record.get(column.field))}\n")

    def records(self, records: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> None:
        """A listing: JSON lines, or a table with a header row."""
        if self.is_json:
            for record in records:
                self.json_line(record)
            return
        rows = [[c.title for c in columns]]
        rows.extend([_text(r.get(c.field)) for c in columns] for r in records)
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        for row in rows:
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self._stream.write(line.rstrip() + "\n")

    def secret(self, heading: str, key: str) -> None:
        """A key shown once (people only; JSON carries it in the record)."""
        if not self.is_json:
            self._stream.write(f"{heading}\n\n    {key}\n\n")

    def summary(self, record: Mapping[str, Any], line: str) -> None:
        """A result that reads best as a sentence: the sentence, or the record as JSON."""
        if self.is_json:
            self.json_line(record)
        else:
            self._stream.write(line + "\n")

    def text(self, line: str) -> None:
        """A sentence for people; JSON output says the same in its record."""
        if not self.is_json:
            self._stream.write(line + "\n")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):  # tags, limits: key=value pairs
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
