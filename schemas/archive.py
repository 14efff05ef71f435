"""Archives: topic records as Avro object container files, readable by any standard Avro tool.

One file per writer schema (type and version), so each file embeds exactly the schema its records were
written with. Each record keeps its Kafka coordinates (topic, partition, offset, timestamp, key) around the
value, so :func:`read_archive` gives back the exact single-object bytes for ``hub archive restore``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from schemas.codec import HEADER_SIZE, MAGIC, Codec
from schemas.exceptions import DecodeError
from schemas.store import TypeSchema

ARCHIVE_NAMESPACE = "gov.taskforce.hub.archive"


@dataclass(frozen=True)
class ArchivedRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes  # Avro single-object encoding, exactly as it was on the topic


def envelope_schema(writer: TypeSchema) -> dict[str, Any]:
    """The archive record for values written with ``writer``: Kafka coordinates around the value."""
    return {"type": "record", "name": "ArchivedRecord", "namespace": ARCHIVE_NAMESPACE,
            "doc": f"A Kafka record whose value is a {writer.name} written with schema v{writer.version}.",
            "fields": [{"name": "topic", "type": "string"}, {"name": "partition", "type": "int"},
                       {"name": "offset", "type": "long"}, {"name": "timestamp_ms", "type": "long"},
                       {"name": "key", "type": ["null", "bytes"], "default": None},
                       {"name": "value", "type": writer.schema}]}


def write_archive(records: Iterable[ArchivedRecord], directory: Path, codec: Codec | None = None) -> dict[Path, int]:
    """Write ``records`` under ``directory``, one container file per writer schema; returns records per file."""
    codec = codec or Codec()
    groups: dict[bytes, tuple[TypeSchema, list[dict[str, Any]]]] = {}
    for record in records:
        writer = codec.writer_of(record.value)
        datum = fastavro.schemaless_reader(io.BytesIO(record.value[HEADER_SIZE:]), writer.parsed, None,
                                           return_record_name=True, return_record_name_override=True)
        groups.setdefault(writer.fingerprint, (writer, []))[1].append(
            {"topic": record.topic, "partition": record.partition, "offset": record.offset,
             "timestamp_ms": record.timestamp_ms, "key": record.key, "value": datum})
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for writer, data in groups.values():
        path = directory / f"{writer.name.rsplit('.', 1)[-1]}.v{writer.version}.avro"
        with path.open("wb") as out:
            fastavro.writer(out, fastavro.parse_schema(envelope_schema(writer)), data, codec="deflate",
                            metadata={"hub.writer_fingerprint": writer.fingerprint.hex()})
        written[path] = len(data)
    return written


def read_archive(path: Path, codec: Codec | None = None) -> Iterator[ArchivedRecord]:
    """The records of one archive file, values re-encoded byte for byte as they were on the topic."""
    codec = codec or Codec()
    with path.open("rb") as source:
        reader = fastavro.reader(source, return_record_name=True, return_record_name_override=True)
        fingerprint = bytes.fromhex(reader.metadata.get("hub.writer_fingerprint", ""))
        if not fingerprint:
            raise DecodeError(f"{path} is not a hub archive (no hub.writer_fingerprint in its metadata)")
        writer = codec.store.by_fingerprint(fingerprint)
        for item in reader:
            body = io.BytesIO()
            fastavro.schemaless_writer(body, writer.parsed, item["value"])
            yield ArchivedRecord(item["topic"], item["partition"], item["offset"], item["timestamp_ms"], item["key"],
                                 MAGIC + fingerprint + body.getvalue())
