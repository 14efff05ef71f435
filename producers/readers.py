"""Reading agency exports (JSON Lines, CSV) into validated events, each failure pinned to file, line and field.

Files are read as bytes, one line at a time, and each line is decoded and parsed on its own, so a bad line
(not UTF-8, too long, malformed, nested too deep, ambiguous) is reported and the next line is read as if it had
not been there. A line is one record in both formats: a CSV cell cannot hold a line break.

CSV columns use dotted paths into the event (``location.port_of_entry``, ``payload.drugs.0.drug_type``);
empty cells are left out. Missing ``source_agency`` is filled from the agency directory, and a missing
``event_id`` is derived from the agency, system, record id and version, so re-publishing a file
re-sends the same ids.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from producers.exceptions import InputFormatError
from schemas.codec import parse_event
from schemas.exceptions import RecordInvalidError
from schemas.limits import MAX_REPORT_BYTES, check_times
from schemas.models import Agency, CaseEvent

InputFormat = Literal["auto", "jsonl", "csv"]
EVENT_ID_NAMESPACE = uuid.UUID("6f1c1d2e-3b9a-4c55-9a61-7c0e4d2b8f10")

#: The longest line read: a report is at most MAX_REPORT_BYTES of Avro, far less than this as JSON or CSV.
MAX_LINE_BYTES = 16 * MAX_REPORT_BYTES
#: Digits of a JSON integer: none in the contract is longer than an Avro long (19 digits).
MAX_INT_DIGITS = 19
#: List indices in CSV column paths (no list of a report holds more than 100 items).
MAX_CSV_INDEX = 999
#: Problems listed per rejected record: enough to fix it, and a hostile line cannot flood the rejects file.
MAX_PROBLEMS = 20
#: Characters of an unreadable line kept in the rejects file.
PREVIEW_CHARS = 1000

BOM = "\ufeff"
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
Problems = list[tuple[str, str]]


@dataclass(frozen=True)
class Rejected:
    """One input record that was not accepted: every (field, reason) found wrong with it."""

    source: str
    line: int
    problems: Problems
    record: Any

    def lines(self) -> list[str]:
        return [f"{self.source}:{self.line}: {_printable(field, 200)}: {_printable(reason, 2000)}"
                for field, reason in self.problems]

    def as_json(self) -> str:
        return json.dumps({"file": self.source, "line": self.line,
                           "problems": [{"field": f, "reason": r} for f, r in self.problems],
                           "record": self.record}, default=str)


@dataclass(frozen=True)
class Accepted:
    """A valid event and where it was read, so that a refusal at publish can still name its line."""

    source: str
    line: int
    event: CaseEvent
    record: dict[str, Any]

    def rejected(self, problems: Problems) -> Rejected:
        return Rejected(self.source, self.line, _capped(problems), self.record)


def _printable(text: str, limit: int) -> str:
    """For a terminal: control characters escaped (a key in a hostile file may hold any), long text cut."""
    shown = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                             else f"\\u{ord(m.group()):04x}", text)
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(shown):,} characters)"


def _capped(problems: Problems) -> Problems:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], ("(record)", f"and {len(problems) - MAX_PROBLEMS:,} more problems")]


def detect_format(name: str, fmt: InputFormat) -> Literal["jsonl", "csv"]:
    if fmt != "auto":
        return fmt
    if name.endswith((".jsonl", ".ndjson", ".json")) or name == "-":
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise InputFormatError(f"cannot tell the format of {name} from its name")


def _open(name: str) -> BinaryIO:
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except OSError as exc:
        raise InputFormatError(f"cannot read {name}: {exc.strerror}") from exc


# -- lines --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Line:
    """One physical line: its text, or why it could not be read (then ``text`` is a preview for the rejects file)."""

    number: int
    text: str
    problem: str | None = None


def _lines(handle: BinaryIO) -> Iterator[_Line]:
    """Every line of ``handle``, each decoded on its own and never read beyond MAX_LINE_BYTES into memory.

    A UTF-8 byte-order mark starting a line is dropped (concatenated exports carry one per file)."""
    number = 0
    while chunk := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            size = len(chunk) + _skip_rest_of_line(handle)
            yield _Line(number, _preview(chunk), f"the line is {size:,} bytes; a record's line may be at most "
                                                 f"{MAX_LINE_BYTES:,} (shorten its free text or split the record)")
            continue
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _Line(number, _preview(chunk), f"not valid UTF-8: byte 0x{chunk[exc.start]:02x} at byte "
                                                 f"{exc.start + 1} of the line (save the file as UTF-8)")
            continue
        yield _Line(number, text.removeprefix(BOM))


def _skip_rest_of_line(handle: BinaryIO) -> int:
    skipped = 0
    while chunk := handle.readline(64 * 1024):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _preview(chunk: bytes) -> str:
    text = chunk[:PREVIEW_CHARS * 4].decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."


# -- JSON Lines -----------------------------------------------------------------------------------------
class _JsonObject(dict[str, Any]):
    """A JSON object that gave some keys more than once (``json`` alone would silently keep the last value)."""

    duplicates: tuple[str, ...] = ()


class _Unreadable:
    """A JSON value the contract cannot take, kept with its reason until the record's problems are listed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class _Marks(threading.local):
    """Whether the line being parsed (in this thread) had anything marked, so clean records are not walked."""

    suspect = False


_MARKS = _Marks()


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    _MARKS.suspect = True
    marked = _JsonObject(value)
    marked.duplicates = tuple(key for key, count in Counter(k for k, _ in pairs).items() if count > 1)
    return marked


def _integer(digits: str) -> int | _Unreadable:
    # Longer integers fit no field, and int() raises on more than 4,300 digits (and is slow below that).
    if len(digits.lstrip("-")) <= MAX_INT_DIGITS:
        return int(digits)
    _MARKS.suspect = True
    return _Unreadable(f"a {len(digits.lstrip('-')):,}-digit integer is out of range for every field")


def _constant(name: str) -> _Unreadable:
    _MARKS.suspect = True
    return _Unreadable(f"{name} is not a JSON number, and the hub takes finite numbers only")


#: Marks what plain ``json`` lets pass: duplicate keys, integers too long to convert, NaN and Infinity.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_int=_integer, parse_constant=_constant)


def _json_record(text: str) -> tuple[Any, Problems]:
    """The line's JSON value, or the problems that make it unusable (each with the path where it was found)."""
    _MARKS.suspect = False
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        return None, [("(line)", "JSON nested too deeply to read (a record nests a few levels, not thousands)")]
    except json.JSONDecodeError as exc:
        return None, [("(line)", f"not valid JSON: {exc.msg} at column {exc.colno}")]
    return value, _marked(value) if _MARKS.suspect else []


def _marked(value: Any) -> Problems:
    """Where the decoder's hooks marked duplicate keys and unreadable numbers, in document order."""
    problems: Problems = []
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # not recursive: the value may nest as deep as json could parse
        path, node = stack.pop()
        if isinstance(node, dict):
            problems += [(_join(path, key), "given more than once in one object: ambiguous, keep one")
                         for key in getattr(node, "duplicates", ())]
            stack += reversed([(_join(path, key), item) for key, item in node.items()])
        elif isinstance(node, list):
            stack += reversed([(_join(path, str(i)), item) for i, item in enumerate(node)])
        elif isinstance(node, _Unreadable):
            problems.append((path or "(record)", node.reason))
    return problems


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _jsonl_records(lines: Iterator[_Line]) -> Iterator[tuple[int, Any, Problems]]:
    for line in lines:
        if line.problem is not None:
            yield line.number, line.text, [("(line)", line.problem)]
        elif line.text.strip():
            value, problems = _json_record(line.text)
            # a line with problems goes to the rejects file as written: its parsed value would hide them
            yield line.number, line.text.rstrip("\r\n") if problems else value, problems


# -- CSV ------------------------------------------------------------------------------------------------
def _set_path(target: dict[str, Any], dotted: str, value: str) -> None:
    """Place a CSV cell at its dotted path, creating nested dicts and lists on the way (the header was checked by
    :func:`_header_problem`, so paths never conflict and indices are small)."""
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


def _cells(text: str) -> tuple[list[str], str | None]:
    """The cells of one CSV line, or why they cannot be read."""
    try:
        cells = next(csv.reader([text if text.endswith("\n") else text + "\n"]), [])
    except csv.Error as exc:
        return [], f"not valid CSV: {exc}"
    if any("\n" in cell for cell in cells):  # a quote left open swallows the line's end
        return [], "a quoted cell is not closed on this line (a CSV record is one line: replace line breaks in cells)"
    return cells, None


def _header_problem(columns: list[str]) -> str | None:
    """Why a header row cannot map cells into records: duplicate, conflicting or malformed column paths."""
    repeated = [column for column, count in Counter(filter(None, columns)).items() if count > 1]
    if repeated:
        return f"column {repeated[0]!r} appears more than once: ambiguous"
    kinds: dict[str, str] = {}  # path prefix -> what the columns make it: "value", "object" or "list"
    for column in filter(None, columns):
        parts = column.split(".")
        if not all(parts):
            return f"column {column!r} has an empty part in its dotted path"
        big = [p for p in parts if p.isdigit() and (len(p) > 3 or int(p) > MAX_CSV_INDEX)]
        if big:
            return f"column {column!r} has list index {big[0][:12]}; indices go up to {MAX_CSV_INDEX}"
        for depth in range(len(parts)):
            prefix = ".".join(parts[:depth + 1])
            kind = "value" if depth == len(parts) - 1 else "list" if parts[depth + 1].isdigit() else "object"
            if kinds.setdefault(prefix, kind) != kind:
                return f"column {column!r} uses {prefix!r} as a {kind}, another column as a {kinds[prefix]}"
    return None


def _csv_records(lines: Iterator[_Line]) -> Iterator[tuple[int, Any, Problems]]:
    header: list[str] | None = None
    for line in lines:
        if line.problem is not None:
            yield line.number, line.text, [("(header)" if header is None else "(line)", line.problem)]
            if header is None:
                return  # no column names, no records
            continue
        if not line.text.strip():
            continue
        cells, problem = _cells(line.text)
        if header is None:
            problem = problem or _header_problem(cells)
            if problem is not None:
                yield line.number, line.text.rstrip("\r\n"), [("(header)", problem)]
                return
            header = cells
            continue
        extra = [cell for cell in cells[len(header):] if cell]
        if problem is None and extra:
            problem = (f"{len(cells)} cells, but the header names {len(header)} columns "
                       f"(quote cells that contain commas)")
        if problem is not None:
            yield line.number, line.text.rstrip("\r\n"), [("(line)", problem)]
            continue
        record: dict[str, Any] = {}
        for column, cell in zip(header, cells):
            if column and cell:
                _set_path(record, column, cell)
        yield line.number, record, []


def raw_records(name: str, fmt: InputFormat = "auto") -> Iterator[tuple[int, Any, Problems]]:
    """(line number, parsed record, problems) for each record of a file ('-' = stdin); a record with problems is
    given as the line's text."""
    kind = detect_format(name, fmt)
    handle = _open(name)
    try:
        yield from (_jsonl_records if kind == "jsonl" else _csv_records)(_lines(handle))
    finally:
        if name != "-":
            handle.close()


def complete(record: dict[str, Any], agency: Agency) -> dict[str, Any]:
    """Fill what the hub can derive: the publishing agency and a deterministic event id."""
    record = dict(record)
    record.setdefault("source_agency", agency.model_dump())
    if "event_id" not in record:
        identity = "/".join(str(record.get(k)) for k in ("source_system", "source_record_id", "record_version"))
        record["event_id"] = str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{agency.ori}/{identity}"))
    return record


def read_events(name: str, agency: Agency, fmt: InputFormat = "auto", *,
                now: datetime | None = None) -> Iterator[Accepted | Rejected]:
    """Each record of a file as a validated event of ``agency`` (dated within the contract's bounds of ``now``,
    default the wall clock), or as a :class:`Rejected` saying why not."""
    source = "<stdin>" if name == "-" else str(Path(name))
    now = now or datetime.now(UTC)
    for line, record, problems in raw_records(name, fmt):
        if problems:
            yield Rejected(source, line, _capped(problems), record)
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
            event = parse_event(complete(record, agency))
            check_times(event, now)
        except RecordInvalidError as exc:
            yield Rejected(source, line, _capped(exc.problems), record)
            continue
        yield Accepted(source, line, event, record)
