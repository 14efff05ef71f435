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
from schemas.models import MODELS_BY_NAME, AvroModel, CaseEvent
from schemas.store import SchemaStore, TypeSchema, default_store

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


def to_avro_datum(model: AvroModel) -> dict[str, Any]:
    """The model as fastavro expects it: each record union's branch named explicitly (``payload``)."""
    datum = model.model_dump()
    _name_union_branches(model, datum)
    return datum


def _name_union_branches(model: AvroModel, datum: dict[str, Any]) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, AvroModel):
            _name_union_branches(value, datum[name])
            if name in type(model).record_unions:
                datum[name] = (value.avro_name, datum[name])
        elif isinstance(value, list):
            for item, item_datum in zip(value, datum[name]):
                if isinstance(item, AvroModel):
                    _name_union_branches(item, item_datum)


def _unname_union_branches(datum: Any) -> Any:
    """Undo ``return_record_name``: ("gov...ItemSeizure", {...}) becomes {...}."""
    if isinstance(datum, tuple) and len(datum) == 2 and isinstance(datum[0], str):
        return _unname_union_branches(datum[1])
    if isinstance(datum, dict):
        return {k: _unname_union_branches(v) for k, v in datum.items()}
    if isinstance(datum, list):
        return [_unname_union_branches(v) for v in datum]
    return datum


class Codec:
    """Encode models with one schema version (default: each type's newest) and decode any known version."""

    def __init__(self, store: SchemaStore | None = None, version: int | None = None) -> None:
        self.store = store or default_store()
        self._pinned = None if version is None else self.store.version(version)

    def schema_for(self, name: str) -> TypeSchema:
        """The schema this codec writes and reads ``name`` with."""
        return self._pinned.type(name) if self._pinned is not None else self.store.history(name)[-1]

    def encode(self, model: AvroModel) -> bytes:
        return self.encode_datum(type(model).avro_name, to_avro_datum(model))

    def encode_datum(self, name: str, datum: dict[str, Any]) -> bytes:
        schema = self.schema_for(name)
        buffer = io.BytesIO()
        buffer.write(MAGIC + schema.fingerprint)
        try:
            fastavro.schemaless_writer(buffer, schema.parsed, datum)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RecordInvalidError(f"record does not fit {name} v{schema.version}: {exc}",
                                     [("(record)", str(exc))]) from exc
        return buffer.getvalue()

    def writer_of(self, data: bytes) -> TypeSchema:
        """The type and version a message was written with (raises on bytes that are not hub messages)."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError(f"not an Avro single-object message: expected marker c301, got {data[:2].hex() or 'nothing'}"
                              f" ({len(data)} bytes)")
        return self.store.by_fingerprint(data[2:HEADER_SIZE])

    def decode_datum(self, data: bytes) -> tuple[str, dict[str, Any]]:
        writer = self.writer_of(data)
        reader = self.schema_for(writer.name)
        try:
            datum = fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), writer.parsed, reader.parsed,
                                               return_record_name=True, return_record_name_override=True)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError... on corrupt bodies
            raise DecodeError(f"corrupt Avro body ({writer.name} v{writer.version}): {type(exc).__name__}: {exc}") from exc
        return writer.name, _unname_union_branches(datum)

    def decode(self, data: bytes) -> AvroModel:
        name, datum = self.decode_datum(data)
        model = MODELS_BY_NAME[name]
        if model is CaseEvent:
            return parse_event(datum)
        try:
            return model.model_validate(datum)
        except ValidationError as exc:
            problems = problems_of(exc)
            raise RecordInvalidError(f"invalid {name}: {problems[0][0]}: {problems[0][1]}", problems) from None
