"""Reading agency exports (JSON Lines, CSV) into validated events, each failure pinned to file, line and field.

CSV columns use dotted paths into the event (``location.port_of_entry``, ``payload.drugs.0.drug_type``);
empty cells are left out. Missing ``source_agency`` is filled from the agency directory, and a missing
``event_id`` is derived from the agency, system, record id and version, so re-publishing a file
re-sends the same ids.
"""

from __future__ import annotations

import csv
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from producers.exceptions import InputFormatError
from schemas.codec import parse_event
from schemas.exceptions import RecordInvalidError
from schemas.models import Agency, CaseEvent

InputFormat = Literal["auto", "jsonl", "csv"]
EVENT_ID_NAMESPACE = uuid.UUID("6f1c1d2e-3b9a-4c55-9a61-7c0e4d2b8f10")


@dataclass(frozen=True)
class Rejected:
    """One input record that was not accepted: every (field, reason) found wrong with it."""

    source: str
    line: int
    problems: list[tuple[str, str]]
    record: Any

    def lines(self) -> list[str]:
        return [f"{self.source}:{self.line}: {field}: {reason}" for field, reason in self.problems]

    def as_json(self) -> str:
        return json.dumps({"file": self.source, "line": self.line,
                           "problems": [{"field": f, "reason": r} for f, r in self.problems],
                           "record": self.record}, default=str)


def detect_format(name: str, fmt: InputFormat) -> Literal["jsonl", "csv"]:
    if fmt != "auto":
        return fmt
    if name.endswith((".jsonl", ".ndjson", ".json")) or name == "-":
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise InputFormatError(f"cannot tell the format of {name} from its name")


def _open(name: str) -> TextIO:
    if name == "-":
        return sys.stdin
    try:
        return open(name, newline="", encoding="utf-8")
    except OSError as exc:
        raise InputFormatError(f"cannot read {name}: {exc.strerror}") from exc


def _set_path(target: dict[str, Any], dotted: str, value: str) -> None:
    """Place a CSV cell at its dotted path, creating nested dicts and lists on the way."""
    parts = dotted.split(".")
    node: Any = target
    for part, following in zip(parts, [*parts[1:], None]):
        child_default: Any = [] if following is not None and following.isdigit() else {}
        if isinstance(node, list):
            index = int(part)
            while len(node) <= index:
                node.append(None)
            if following is None:
                node[index] = value
            else:
                node[index] = node[index] if node[index] is not None else child_default
                node = node[index]
        elif following is None:
            node[part] = value
        else:
            node = node.setdefault(part, child_default)


def raw_records(name: str, fmt: InputFormat = "auto") -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed record or None, parse error or None) for each record of a file ('-' = stdin)."""
    kind = detect_format(name, fmt)
    handle = _open(name)
    try:
        if kind == "jsonl":
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line), None
                except json.JSONDecodeError as exc:
                    yield number, line.rstrip("\n"), f"not valid JSON: {exc.msg} at column {exc.colno}"
        else:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise InputFormatError(f"{name} has no CSV header row")
            for row in reader:
                record: dict[str, Any] = {}
                for column, cell in row.items():
                    if column and cell not in (None, ""):
                        _set_path(record, column, cell)
                yield reader.line_num, record, None
    finally:
        if handle is not sys.stdin:
            handle.close()


def complete(record: dict[str, Any], agency: Agency) -> dict[str, Any]:
    """Fill what the hub can derive: the publishing agency and a deterministic event id."""
    record = dict(record)
    record.setdefault("source_agency", agency.model_dump())
    if "event_id" not in record:
        identity = "/".join(str(record.get(k)) for k in ("source_system", "source_record_id", "record_version"))
        record["event_id"] = str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{agency.ori}/{identity}"))
    return record


def read_events(name: str, agency: Agency, fmt: InputFormat = "auto") -> Iterator[CaseEvent | Rejected]:
    """Each record of a file as a validated event of ``agency``, or as a :class:`Rejected` saying why not."""
    source = "<stdin>" if name == "-" else str(Path(name))
    for line, record, parse_error in raw_records(name, fmt):
        if parse_error is not None:
            yield Rejected(source, line, [("(line)", parse_error)], record)
            continue
        if not isinstance(record, dict):
            yield Rejected(source, line, [("(record)", "a record must be a JSON object")], record)
            continue
        claimed_agency = record.get("source_agency")
        claimed = claimed_agency.get("ori") if isinstance(claimed_agency, dict) else None
        if claimed is not None and claimed != agency.ori:
            yield Rejected(source, line, [("source_agency.ori",
                                           f"record is from {claimed}, but you publish as {agency.ori}")], record)
            continue
        try:
            yield parse_event(complete(record, agency))
        except RecordInvalidError as exc:
            yield Rejected(source, line, exc.problems, record)
