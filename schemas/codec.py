"""Avro single-object encoding of hub events: the only code that reads or writes Avro bytes.

Frame: ``C3 01`` marker, the writer schema's 8-byte CRC-64-AVRO fingerprint (little-endian), then the
fastavro schemaless body. Decoding resolves the writer schema by fingerprint and reads it into the
codec's reader schema, so a newer consumer reads older data and an older one reads newer data where
the change is compatible.

With a key vault, records that carry a report's data are written as a ``ProtectedRecord`` sealing their
single-object encoding (see ``schemas.protection``), and such envelopes are opened transparently on read.
"""

from __future__ import annotations

import functools
import io
import typing
from datetime import date
from typing import Any

import fastavro
from pydantic import ValidationError

from schemas.exceptions import (DecodeError, RecordInvalidError, RecordKeyUnknownError, RecordPurgedError,
                                RecordSealedError, SchemaLoadError)
from schemas.limits import check_report_size
from schemas.models import MODELS_BY_NAME, AvroModel, CaseEvent, ProtectedRecord
from schemas.protection import RecordKeys, record_key_ids, review_by_of, seal, unseal
from schemas.store import PROTECTED_RECORD, SchemaStore, TypeSchema, default_store

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


def _models_in(annotation: Any) -> tuple[type[AvroModel], ...]:
    """The hub models a field's annotation names (``list[Drug]``, ``Agency | None``, a union of payloads)."""
    if isinstance(annotation, type) and issubclass(annotation, AvroModel):
        return (annotation,)
    return tuple(model for argument in typing.get_args(annotation) for model in _models_in(argument))


def _is_union_of_record(model: type[AvroModel], name: str) -> bool:
    """A field written as an Avro union holding a record: several records (``record_unions``), or an optional one."""
    annotation = model.model_fields[name].annotation
    return name in model.record_unions or (type(None) in typing.get_args(annotation)
                                           and bool(_models_in(annotation)))


@functools.cache
def _fields_holding_unions(model: type[AvroModel]) -> tuple[tuple[str, tuple[type[AvroModel], ...]], ...]:
    """The fields of ``model`` that are, or hold, a union holding a record, with the models each may hold: the only
    ones the codec names on write and unnames on read (walking every field cost more than the Avro itself)."""
    return tuple((name, models) for name, field in model.model_fields.items()
                 if (models := _models_in(field.annotation))
                 and (_is_union_of_record(model, name) or any(_fields_holding_unions(m) for m in models)))


@functools.cache
def _named_on_write(model: type[AvroModel]) -> frozenset[str]:
    return frozenset(name for name, _ in _fields_holding_unions(model) if _is_union_of_record(model, name))


def _name_union_branches(model: AvroModel, datum: dict[str, Any]) -> None:
    """Name the branch of every union holding a record: fastavro otherwise finds it by validating the value against
    each branch, the whole nested record each time (a feed item's event was validated, then written)."""
    for name, _ in _fields_holding_unions(type(model)):
        value = getattr(model, name)
        if isinstance(value, AvroModel):
            _name_union_branches(value, datum[name])
            if name in _named_on_write(type(model)):
                datum[name] = (value.avro_name, datum[name])
        elif isinstance(value, list):
            for item, item_datum in zip(value, datum[name]):
                if isinstance(item, AvroModel):
                    _name_union_branches(item, item_datum)


def _unname_union_branches(model: type[AvroModel], datum: dict[str, Any]) -> dict[str, Any]:
    """Undo ``return_record_name`` in a datum of ``model``: ("gov...ItemSeizure", {...}) becomes {...}."""
    for name, models in _fields_holding_unions(model):
        value = datum.get(name)
        if isinstance(value, list):
            datum[name] = [_unnamed(models, item) for item in value]
        elif value is not None:
            datum[name] = _unnamed(models, value)
    return datum


def _unnamed(models: tuple[type[AvroModel], ...], value: Any) -> Any:
    """One value of a field that may hold ``models``: a named union branch, or a record of the field's one model."""
    if isinstance(value, tuple):
        branch, value = value
        return _unname_union_branches(MODELS_BY_NAME[branch], value)
    (model,) = models  # only a union of several records holds more than one, and fastavro names its branches
    return _unname_union_branches(model, value) if isinstance(value, dict) else value


class Codec:
    """Encode models with one schema version (default: each type's newest) and decode any known version.

    With a ``vault``, records carrying a report's data are sealed on write and opened on read.
    """

    def __init__(self, store: SchemaStore | None = None, version: int | None = None,
                 vault: RecordKeys | None = None) -> None:
        self.store = store or default_store()
        self._pinned = None if version is None else self.store.version(version)
        self.vault = vault

    def schema_for(self, name: str) -> TypeSchema:
        """The schema this codec writes and reads ``name`` with."""
        return self._pinned.type(name) if self._pinned is not None else self.store.history(name)[-1]

    def encode(self, model: AvroModel) -> bytes:
        """The model's message, sealed when the codec has a vault; RecordOutOfBoundsError for a report over
        ``MAX_REPORT_BYTES``."""
        inner = self.encode_datum(type(model).avro_name, to_avro_datum(model))
        if isinstance(model, CaseEvent):
            check_report_size(inner)
        key_ids = record_key_ids(model) if self.vault is not None else []
        if self.vault is None or not key_ids:
            return inner
        if self._pinned is not None and PROTECTED_RECORD not in self._pinned.types:
            raise SchemaLoadError(f"cannot seal a {type(model).__name__}: schema version v{self._pinned.version} "
                                  f"has no ProtectedRecord", hint="Pin a version that defines ProtectedRecord "
                                  "(v5 or later) to write with a key vault; never write report data unsealed.")
        return self.encode_datum(PROTECTED_RECORD, to_avro_datum(self._seal(model, inner, key_ids, self.vault)))

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

    def envelope_of(self, data: bytes) -> ProtectedRecord | None:
        """The clear-text envelope (key ids, review date, inner type) of a protected message, without decrypting."""
        writer = self.writer_of(data)
        return self._envelope(data, writer) if writer.name == PROTECTED_RECORD else None

    def decode_datum(self, data: bytes) -> tuple[str, dict[str, Any]]:
        writer = self.writer_of(data)
        if writer.name == PROTECTED_RECORD:
            data = self._open(self._envelope(data, writer))
            writer = self.writer_of(data)
        if writer.name == CaseEvent.avro_name:
            check_report_size(data)  # before reading it: no report is bigger, however it was written
        return writer.name, _unname_union_branches(MODELS_BY_NAME[writer.name],
                                                   self._read(data, writer, self.schema_for(writer.name)))

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

    # -- protection ------------------------------------------------------------------------------
    def _seal(self, model: AvroModel, inner: bytes, key_ids: list[str], vault: RecordKeys) -> ProtectedRecord:
        """A report gets its key here; a derived record only uses its reports' keys and never recreates one."""
        if isinstance(model, CaseEvent):
            keys = {key_ids[0]: vault.ensure(key_ids[0], review_by_of(model))}
            dates = vault.review_dates(key_ids)
        else:
            keys, dates = self._keys(key_ids, vault)
            _refuse_missing(model, key_ids, keys, vault)
        _refuse_missing(model, key_ids, dates, vault)  # destroyed since its key was read
        return seal(inner, type(model).avro_name, keys, min(dates.values()))

    @staticmethod
    def _keys(key_ids: list[str], vault: RecordKeys) -> tuple[dict[str, bytes], dict[str, date]]:
        return vault.get_many(key_ids), vault.review_dates(key_ids)

    def _envelope(self, data: bytes, writer: TypeSchema) -> ProtectedRecord:
        datum = self._read(data, writer, self.store.history(PROTECTED_RECORD)[-1])
        try:
            return ProtectedRecord.model_validate(datum)
        except ValidationError as exc:
            problems = problems_of(exc)
            raise DecodeError(f"malformed ProtectedRecord: {problems[0][0]}: {problems[0][1]}") from None

    def _open(self, envelope: ProtectedRecord) -> bytes:
        """The sealed message, checked to be the type the envelope names (and not another envelope)."""
        if self.vault is None:
            raise RecordSealedError(f"the message is a {envelope.inner_type} sealed under record key(s) "
                                    f"{', '.join(envelope.key_ids)}; reading it needs the key vault")
        keys = self.vault.get_many(envelope.key_ids)
        unknown = [k for k in envelope.key_ids if k not in keys and not self.vault.destroyed(k)]
        if unknown:
            raise RecordKeyUnknownError(f"{envelope.inner_type.rsplit('.', 1)[-1]} is sealed under record key(s) "
                                        f"{', '.join(unknown)} that the hub never had", unknown)
        inner = unseal(envelope, keys)
        found = self.writer_of(inner).name
        if found != envelope.inner_type or found == PROTECTED_RECORD:
            raise DecodeError(f"protected record says it seals a {envelope.inner_type} but holds a {found}")
        return inner

    @staticmethod
    def _read(data: bytes, writer: TypeSchema, reader: TypeSchema) -> Any:
        try:
            return fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), writer.parsed, reader.parsed,
                                              return_record_name=True, return_record_name_override=True)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError... on corrupt bodies
            raise DecodeError(f"corrupt Avro body ({writer.name} v{writer.version}): {type(exc).__name__}: {exc}") from exc


def _refuse_missing(model: AvroModel, key_ids: list[str], found: dict[str, Any], vault: RecordKeys) -> None:
    """A derived record must not be written once any report it carries was purged, nor carry a report that the
    intake stage never sealed."""
    missing = [k for k in key_ids if k not in found]
    if not missing:
        return
    purged = [k for k in missing if vault.destroyed(k)]
    name = type(model).__name__
    if purged:
        raise RecordPurgedError(f"cannot write a {name} carrying purged report(s) {', '.join(purged)}", purged)
    raise RecordKeyUnknownError(f"cannot write a {name} carrying report(s) {', '.join(missing)} that have no record "
                                f"key", missing, hint="A derived record may only carry reports the intake stage "
                                                      "sealed; reports that did not pass through it have no key.")
