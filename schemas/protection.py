"""Per-record crypto-shredding: records are sealed under their reports' keys, so destroying a key purges them.

Kafka's log is append-only, so a record cannot be deleted when 28 CFR 23.20(h) says it must be purged.
Instead each report (``CaseEvent``) gets a random record key in a key vault, and every record carrying a
report's data is sealed under the keys of all the reports it carries. The sealing key is HKDF-SHA256 over
those keys concatenated in key-id order, so destroying any one of them makes the record unreadable.
Pure functions: the codec seals and unseals, the vault (``hub.vault``) keeps the keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas.exceptions import DecodeError, RecordPurgedError
from schemas.models import MAX_RETENTION, AvroModel, CanonicalEvent, CaseEvent, DeconflictionAlert, ProtectedRecord

ALGORITHM = "AES-256-GCM+HKDF-SHA256"
KEY_SIZE = 32
NONCE_SIZE = 12
_HKDF_INFO = b"gov.taskforce.hub.ProtectedRecord"


class RecordKeys(Protocol):
    """What the codec needs of a key vault (``hub.vault.KeyVault`` is one); keeps ``schemas`` free of ``hub``."""

    def ensure(self, key_id: str, review_by: date) -> bytes: ...

    def get_many(self, key_ids: Iterable[str]) -> dict[str, bytes]: ...

    def review_dates(self, key_ids: Iterable[str]) -> dict[str, date]: ...

    def destroyed(self, key_id: str) -> bool: ...


def report_key_id(ori: str, event_id: str) -> str:
    """The id of a report's record key: its event id within the publishing agency's ORI.

    Event ids are chosen by agencies; scoped by the ORI that published them (the ingest topic's), one agency's id
    can never name, share or pre-empt another agency's report, whatever ids it makes up."""
    return f"{ori}/{event_id}"


def event_id_of(key_id: str) -> str:
    """The agency's event id within a record key id (see :func:`report_key_id`)."""
    return key_id.rpartition("/")[2]


def record_key_ids(model: AvroModel) -> list[str]:
    """The ids of the record keys protecting ``model``, sorted; [] for records that carry no report's data."""
    if isinstance(model, CaseEvent):
        return [report_key_id(model.agency_ori, model.event_id)]
    if isinstance(model, CanonicalEvent):
        # The primary is always credited among the reports; counting it too keeps that an assumption, not a leak.
        return sorted({*record_key_ids(model.primary), *(report_key_id(r.agency.ori, r.event_id)
                                                          for r in model.reports)})
    if isinstance(model, DeconflictionAlert):
        return sorted({report_key_id(p.agency.ori, p.event_id) for p in model.parties})
    return []  # FeedItem: delivered in the clear to its unit (over TLS); a purge tombstones it on the feed


def review_by_of(event: CaseEvent) -> date:
    """When the report must be reviewed or purged: its intelligence marking's date, else the 5-year maximum."""
    marking = event.handling.intelligence
    if marking is not None:
        return marking.review_by
    return (event.report_time + MAX_RETENTION).date()


def associated_data(inner_type: str, key_ids: Iterable[str]) -> bytes:
    """Authenticated with the ciphertext, so a record cannot be relabelled or moved under other keys."""
    return f"{inner_type}|{','.join(sorted(key_ids))}".encode()


def _sealing_key(keys: dict[str, bytes], key_ids: list[str], nonce: bytes) -> bytes:
    material = b"".join(keys[k] for k in key_ids)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=nonce, info=_HKDF_INFO).derive(material)


def seal(inner: bytes, inner_type: str, keys: dict[str, bytes], review_by: date) -> ProtectedRecord:
    """Encrypt ``inner`` (a single-object message) under every key in ``keys``."""
    if not keys:
        raise ValueError("sealing needs at least one record key")
    short = [k for k, v in keys.items() if len(v) != KEY_SIZE]
    if short:
        raise ValueError(f"record keys must be {KEY_SIZE} bytes: {', '.join(sorted(short))}")
    key_ids = sorted(keys)
    nonce = os.urandom(NONCE_SIZE)
    ciphertext = AESGCM(_sealing_key(keys, key_ids, nonce)).encrypt(nonce, inner,
                                                                    associated_data(inner_type, key_ids))
    return ProtectedRecord(key_ids=key_ids, review_by=review_by, inner_type=inner_type, algorithm=ALGORITHM,
                           nonce=nonce, ciphertext=ciphertext)


def unseal(envelope: ProtectedRecord, keys: dict[str, bytes]) -> bytes:
    """The sealed single-object message; :class:`RecordPurgedError` when a key is gone."""
    missing = [k for k in envelope.key_ids if k not in keys]
    if missing:
        raise RecordPurgedError(f"{envelope.inner_type.rsplit('.', 1)[-1]} sealed under {len(envelope.key_ids)} "
                                f"record key(s) is unreadable: no key {', '.join(missing)} in the vault", missing)
    if envelope.algorithm != ALGORITHM or len(envelope.nonce) != NONCE_SIZE:
        raise DecodeError(f"protected record uses {envelope.algorithm!r} with a {len(envelope.nonce)}-byte nonce; "
                          f"this hub reads only {ALGORITHM} with {NONCE_SIZE}-byte nonces")
    try:
        return AESGCM(_sealing_key(keys, envelope.key_ids, envelope.nonce)).decrypt(
            envelope.nonce, envelope.ciphertext, associated_data(envelope.inner_type, envelope.key_ids))
    except InvalidTag:
        raise DecodeError(f"protected {envelope.inner_type} fails authentication: its ciphertext, nonce, type or "
                          f"key ids were altered, or a key in the vault is not the one it was sealed with") from None
