"""Avro single-object encoding of hub events: the only code that reads or writes Avro bytes.

Frame: ``C3 01`` marker, the writer schema's 8-byte CRC-64-AVRO fingerprint (little-endian), then the
fastavro schemaless body. Decoding resolves the writer schema by fingerprint and reads it into the
codec's reader schema, so a newer consumer reads older data and an older one reads newer data where
the change is compatible.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
from pydantic import ValidationError

from schemas.exceptions import DecodeError, RecordInvalidError
from schemas.models import CaseEvent
from schemas.store import SchemaStore, SchemaVersion, default_store

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


def problems_of(error: ValidationError) -> list[tuple[str, str]]:
    """(dotted field path, reason) for each problem pydantic found."""
    return [(".".join(str(p) for p in e["loc"]) or "(record)", e["msg"]) for e in error.errors()]


def parse_event(data: dict[str, Any]) -> CaseEvent:
    """Validate a plain dict as a :class:`CaseEvent`, raising :class:`RecordInvalidError` with every field path."""
    try:
        return CaseEvent.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc)
    summary = "; ".join(f"{field}: {reason}" for field, reason in problems[:5])
    raise RecordInvalidError(f"invalid event: {summary}", problems)


def to_avro_datum(event: CaseEvent) -> dict[str, Any]:
    """The event as fastavro expects it: the payload union branch named explicitly."""
    datum = event.model_dump()
    datum["payload"] = (type(event.payload).avro_name, datum["payload"])
    return datum


class Codec:
    """Encode events with one schema version (default: the latest) and decode any known version into it."""

    def __init__(self, store: SchemaStore | None = None, version: int | None = None) -> None:
        self.store = store or default_store()
        self.schema: SchemaVersion = self.store.latest if version is None else self.store.version(version)
        self._header = MAGIC + self.schema.fingerprint

    def encode(self, event: CaseEvent) -> bytes:
        return self.encode_datum(to_avro_datum(event))

    def encode_datum(self, datum: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self._header)
        try:
            fastavro.schemaless_writer(buffer, self.schema.parsed, datum)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RecordInvalidError(f"record does not fit schema v{self.schema.version}: {exc}",
                                     [("(record)", str(exc))]) from exc
        return buffer.getvalue()

    def writer_of(self, data: bytes) -> SchemaVersion:
        """The schema version a message was written with (raises on bytes that are not hub messages)."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError(f"not an Avro single-object message: expected marker c301, got {data[:2].hex() or 'nothing'}"
                              f" ({len(data)} bytes)")
        return self.store.by_fingerprint(data[2:HEADER_SIZE])

    def decode_datum(self, data: bytes) -> dict[str, Any]:
        writer = self.writer_of(data)
        try:
            datum = fastavro.schemaless_reader(
                io.BytesIO(data[HEADER_SIZE:]), writer.parsed, self.schema.parsed,
                return_record_name=True, return_record_name_override=True,
            )
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError... on corrupt bodies
            raise DecodeError(f"corrupt Avro body (writer schema v{writer.version}): {type(exc).__name__}: {exc}") from exc
        payload = datum.get("payload")
        if isinstance(payload, tuple):
            datum["payload"] = payload[1]
        return datum

    def decode(self, data: bytes) -> CaseEvent:
        return parse_event(self.decode_datum(data))
