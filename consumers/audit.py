"""The audit chain: each partition of ``audit.chain`` is a SHA-256 hash chain over the audited records.

``hash = SHA-256(bytes of the previous hash || record bytes)``, starting from 64 zeros; each seal also
carries its sequence number, so a changed, removed, reordered or inserted record breaks the chain at a
place :func:`verify_chain` names. Pure functions: the seal stage writes chains, ``hub audit verify`` reads them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from schemas.codec import Codec
from schemas.exceptions import SchemaError
from schemas.models import AuditSeal

GENESIS = "0" * 64


def link(prev_hash: str, record: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + record).hexdigest()


def seal(partition: int, sequence: int, prev_hash: str, record: bytes, recorded_at: datetime) -> AuditSeal:
    return AuditSeal(partition=partition, sequence=sequence, prev_hash=prev_hash, hash=link(prev_hash, record),
                     recorded_at=recorded_at, record=record)


@dataclass(frozen=True)
class ChainBreak:
    partition: int
    offset: int
    reason: str


@dataclass(frozen=True)
class ChainHead:
    """Where a verified chain ended: its last seal's offset, sequence number and hash (what a checkpoint signs)."""

    partition: int
    offset: int
    sequence: int
    hash: str


@dataclass(frozen=True)
class ChainReport:
    partition: int
    records: int  # seals verified (after the checkpoint, when starting from one)
    head: str
    broken: ChainBreak | None
    last: ChainHead | None = None  # the last verified seal (or the checkpoint's, when nothing followed it)


def verify_chain(partition: int, records: Iterable[tuple[int, bytes]], codec: Codec | None = None,
                 start: ChainHead | None = None) -> ChainReport:
    """Check one partition's seals (offset, bytes) from the start, or from a verified checkpoint's head (seals
    up to its offset are skipped); report the first break."""
    codec = codec or Codec()
    expected_prev, expected_sequence, count = (start.hash, start.sequence + 1, 0) if start else (GENESIS, 1, 0)
    last = start

    def broken(offset: int, reason: str) -> ChainReport:
        return ChainReport(partition, count, expected_prev, ChainBreak(partition, offset, reason), last)

    anchored = start is None  # the checkpointed seal must still be there, unchanged
    for offset, data in records:
        if start is not None and offset < start.offset:
            continue
        if start is not None and offset == start.offset:
            sealed = _seal_or_none(data, codec)
            if (sealed is None or (sealed.hash, sealed.sequence) != (start.hash, start.sequence)
                    or link(sealed.prev_hash, sealed.record) != sealed.hash):
                return broken(offset, "the seal this checkpoint signed has been changed")
            anchored = True
            continue
        if not anchored:
            return broken(offset, f"the seal this checkpoint signed (offset {start.offset}) is missing")
        try:
            item = codec.decode(data)
        except SchemaError as exc:
            return broken(offset, f"not a seal: {str(exc).splitlines()[0]}")
        if not isinstance(item, AuditSeal):
            return broken(offset, f"not a seal but a {type(item).__name__}")
        if item.partition != partition:
            return broken(offset, f"seal of partition {item.partition} found in partition {partition}")
        if item.sequence != expected_sequence:
            return broken(offset, f"sequence {item.sequence} where {expected_sequence} was due")
        if item.prev_hash != expected_prev:
            return broken(offset, "previous hash does not match the seal before it")
        if link(item.prev_hash, item.record) != item.hash:
            return broken(offset, "record does not match its hash (altered)")
        expected_prev, expected_sequence, count = item.hash, expected_sequence + 1, count + 1
        last = ChainHead(partition, offset, item.sequence, item.hash)
    if not anchored:
        return broken(start.offset, "the seal this checkpoint signed is missing (the chain is shorter)")
    return ChainReport(partition, count, expected_prev, None, last)


def _seal_or_none(data: bytes, codec: Codec) -> AuditSeal | None:
    try:
        item = codec.decode(data)
    except SchemaError:
        return None
    return item if isinstance(item, AuditSeal) else None
