"""Crypto-shredding without a broker: sealing, purging by key destruction, the key vaults, interop."""

from __future__ import annotations

import io
import os
import uuid
from datetime import UTC, date, datetime, timedelta

import avro.io
import avro.schema
import pytest
from hypothesis import assume, given, settings, strategies as st

from hub.vault import (
    KeyVault, MemoryKeyVault, SpilledKeys, UnknownKeyError, VaultError, kek_fingerprint, wrap_entry,
)
from schemas.codec import HEADER_SIZE, MAGIC, Codec, to_avro_datum
from schemas.exceptions import DecodeError, RecordKeyUnknownError, RecordPurgedError, RecordSealedError, SchemaLoadError
from schemas.models import (
    AlertKind, AlertParty, AlertStatus, AuditEvent, AuditEventType, AuditOutcome, AvroModel, CanonicalEvent,
    CaseEvent, DeconflictionAlert, DedupDecision, DedupRule, FeedItem, RecordPointer, ReportCredit, ShareForm,
    SharedRecordKind,
)
from schemas.protection import ALGORITHM, record_key_ids, review_by_of, seal, unseal
from schemas.store import PROTECTED_RECORD, default_store
from tests.factories import key_id, make_event

INTELLIGENCE = {"criminal_predicate": "Subject supplies fentanyl pills to the Lopez DTO (CI report 2025-118)",
                "sensitivity": "HIGH", "confidence": "PROBABLE", "control_official": "ASAC J. Ortiz",
                "review_by": "2027-04-01"}
NOW = datetime(2025, 10, 3, 16, tzinfo=UTC)


def reports(count: int) -> list[CaseEvent]:
    """Seizure reports from distinct source records; the second carries an intelligence marking."""
    return [make_event(source_record_id=f"2026250400000{i:03d}",
                       **({"handling__intelligence": INTELLIGENCE} if i == 1 else {})) for i in range(count)]


def canonical(*events: CaseEvent) -> CanonicalEvent:
    credits = [ReportCredit(event_id=e.event_id, agency=e.source_agency, source_system=e.source_system,
                            source_record_id=e.source_record_id, record_version=e.record_version,
                            report_time=e.report_time, rule=DedupRule.CROSS_AGENCY_MATCH, score=0.9) for e in events]
    return CanonicalEvent(canonical_id=str(uuid.uuid4()), revision=len(events), event_type=events[0].event_type,
                          primary=events[0], reports=credits,
                          decision=DedupDecision(rule=DedupRule.CROSS_AGENCY_MATCH, score=0.9, explanation="test",
                                                 event_id=events[-1].event_id))


def alert(*events: CaseEvent) -> DeconflictionAlert:
    parties = [AlertParty(agency=e.source_agency, event_id=e.event_id, canonical_id=str(uuid.uuid4()))
               for e in events]
    return DeconflictionAlert(alert_id=str(uuid.uuid4()), alert_kind=AlertKind.TARGET, status=AlertStatus.OPEN,
                              urgent=False, matched="VIN:1M8GDM9AXKP042788", parties=parties, raised_at=NOW,
                              updated_at=NOW, explanation="both records touch the same vehicle")


def feed_item(body: CanonicalEvent | DeconflictionAlert | RecordPointer) -> FeedItem:
    kind = {CanonicalEvent: "event", DeconflictionAlert: "alert", RecordPointer: "pointer"}[type(body)]
    return FeedItem(item_id=str(uuid.uuid4()), unit_id="best-san-diego", rule="WHITE", registry_version=1,
                    form=ShareForm.POINTER if kind == "pointer" else ShareForm.FULL, routed_at=NOW, **{kind: body})


def sealed_codec(events: list[CaseEvent], vault: KeyVault | None = None) -> Codec:
    """A codec whose vault holds the keys of ``events`` (each report was written once)."""
    codec = Codec(vault=vault if vault is not None else MemoryKeyVault())
    for event in events:
        codec.encode(event)
    return codec


# -- sealing through the codec -----------------------------------------------------------------------
EVENTS = reports(3)
POOL = reports(5)
PROTECTED = {
    "CaseEvent": EVENTS[0],
    "CanonicalEvent": canonical(*EVENTS),
    "DeconflictionAlert": alert(EVENTS[0], EVENTS[2]),
}


@pytest.mark.parametrize("name", PROTECTED)
def test_each_protected_type_round_trips_sealed(name):
    record = PROTECTED[name]
    codec = sealed_codec(EVENTS)
    data = codec.encode(record)
    assert data[2:HEADER_SIZE] == default_store().latest.type(PROTECTED_RECORD).fingerprint
    envelope = codec.envelope_of(data)
    assert envelope.key_ids == record_key_ids(record) and envelope.inner_type == type(record).avro_name
    assert envelope.algorithm == ALGORITHM and len(envelope.nonce) == 12
    assert envelope.review_by == min(review_by_of(e) for e in EVENTS if key_id(e) in envelope.key_ids)
    assert codec.decode(data) == record
    assert codec.decode_datum(data)[0] == type(record).avro_name
    plain = Codec().encode(record)
    assert plain[HEADER_SIZE:] not in data, "the body is not in clear text"


def test_key_ids_name_the_reports_each_record_carries():
    a, b, c = EVENTS
    assert record_key_ids(a) == [key_id(a)]
    assert record_key_ids(canonical(c, a, b)) == sorted(key_id(e) for e in EVENTS)
    assert record_key_ids(alert(b, a)) == sorted([key_id(a), key_id(b)])
    pointer = RecordPointer(record_id=str(uuid.uuid4()), record_kind=SharedRecordKind.CANONICAL_EVENT,
                            owners=[a.source_agency])
    # Feed items go to their unit in the clear (the unit holds no hub key); a purge tombstones them instead.
    for item in (feed_item(canonical(b)), feed_item(alert(c, a)), feed_item(pointer)):
        assert record_key_ids(item) == []


def test_records_without_report_data_and_feed_items_are_written_in_the_clear():
    pointer = feed_item(RecordPointer(record_id=str(uuid.uuid4()), record_kind=SharedRecordKind.ALERT,
                                      alert_kind=AlertKind.TARGET, owners=[EVENTS[0].source_agency]))
    audit = AuditEvent(audit_id=str(uuid.uuid4()), recorded_at=datetime(2025, 10, 3, 16, 5, 1, 123000, tzinfo=UTC),
                       component="hub retention sweep", event_type=AuditEventType.RECORD_PURGED,
                       principal="User:records-officer", outcome=AuditOutcome.SUCCESS,
                       subject_ids=[EVENTS[0].event_id], detail="review date passed")
    codec = Codec(vault=MemoryKeyVault())
    full = feed_item(canonical(*EVENTS))
    for record in (pointer, audit, full):
        data = codec.encode(record)
        assert data == Codec().encode(record) and codec.envelope_of(data) is None
        assert Codec().decode(data) == record


def test_destroying_one_key_purges_every_record_carrying_that_report_only():
    codec = sealed_codec(EVENTS)
    merged = codec.encode(canonical(*EVENTS))
    others = [codec.encode(e) for e in EVENTS]
    assert codec.vault.destroy(key_id(EVENTS[1]), reason="review date passed") is True
    with pytest.raises(RecordPurgedError, match=key_id(EVENTS[1])) as info:
        codec.decode(merged)
    assert info.value.key_ids == [key_id(EVENTS[1])]
    assert "nothing can recover it" in str(info.value)
    with pytest.raises(RecordPurgedError):
        codec.decode(others[1])
    assert codec.decode(others[0]) == EVENTS[0] and codec.decode(others[2]) == EVENTS[2]


def test_a_derived_record_cannot_be_written_once_a_report_was_purged():
    codec = sealed_codec(EVENTS)
    codec.vault.destroy(key_id(EVENTS[2]), reason="purged at review")
    for record in (canonical(*EVENTS), alert(EVENTS[0], EVENTS[2])):
        with pytest.raises(RecordPurgedError, match=f"purged report.*{key_id(EVENTS[2])}") as info:
            codec.encode(record)
        assert info.value.key_ids == [key_id(EVENTS[2])]
    with pytest.raises(RecordPurgedError, match="destroyed"):
        codec.encode(EVENTS[2])  # nor may the report itself come back under a new key


def test_a_derived_record_of_a_report_never_sealed_is_refused_with_its_reason():
    codec = sealed_codec(EVENTS[:2])
    with pytest.raises(RecordKeyUnknownError, match="no record key") as info:
        codec.encode(canonical(*EVENTS))
    assert info.value.key_ids == [key_id(EVENTS[2])] and "intake stage" in str(info.value)


def _reencoded(codec: Codec, data: bytes, **changes: object) -> bytes:
    envelope = codec.envelope_of(data).model_copy(update=changes)
    return codec.encode_datum(PROTECTED_RECORD, to_avro_datum(envelope))


def test_a_tampered_envelope_fails_authentication():
    codec = sealed_codec(EVENTS)
    data = codec.encode(canonical(*EVENTS))
    envelope = codec.envelope_of(data)
    flipped = bytes([envelope.ciphertext[0] ^ 1]) + envelope.ciphertext[1:]
    tampered = [
        _reencoded(codec, data, ciphertext=flipped),
        _reencoded(codec, data, nonce=bytes(12)),
        _reencoded(codec, data, inner_type="gov.taskforce.hub.DeconflictionAlert"),
        _reencoded(codec, data, key_ids=envelope.key_ids[:2]),
    ]
    for bad in tampered:
        with pytest.raises(DecodeError, match="fails authentication") as info:
            codec.decode(bad)
        assert not isinstance(info.value, RecordPurgedError)


def test_a_sealed_record_needs_a_vault_but_its_envelope_does_not():
    data = sealed_codec(EVENTS).encode(EVENTS[0])
    with pytest.raises(RecordSealedError, match="needs the key vault") as info:
        Codec().decode(data)
    assert isinstance(info.value, DecodeError) and "hub_codec(settings)" in str(info.value)
    envelope = Codec().envelope_of(data)
    assert envelope.key_ids == [key_id(EVENTS[0])] and envelope.review_by == review_by_of(EVENTS[0])
    assert Codec().envelope_of(Codec().encode(EVENTS[0])) is None


def test_a_codec_pinned_before_v5_refuses_to_write_report_data_unsealed():
    old = Codec(version=4, vault=MemoryKeyVault())
    with pytest.raises(SchemaLoadError, match="cannot seal a CaseEvent: schema version v4 has no ProtectedRecord"):
        old.encode(EVENTS[0])
    pointer = feed_item(RecordPointer(record_id="c1", record_kind=SharedRecordKind.CANONICAL_EVENT))
    assert old.decode(old.encode(pointer)) == pointer
    pinned = Codec(version=5, vault=MemoryKeyVault())
    assert pinned.decode(pinned.encode(EVENTS[0])) == EVENTS[0]


def test_a_reader_pinned_to_an_older_version_reads_the_sealed_record_with_it():
    vault = MemoryKeyVault()
    data = Codec(vault=vault).encode(EVENTS[0])
    assert Codec(version=1, vault=vault).decode(data) == EVENTS[0]


@settings(max_examples=80, deadline=None)
@given(kind=st.sampled_from(["event", "canonical", "alert"]),
       members=st.lists(st.integers(0, 4), min_size=1, max_size=5, unique=True),
       destroyed=st.sets(st.integers(0, 4)))
def test_a_record_is_readable_iff_none_of_its_reports_was_purged(kind, members, destroyed):
    assume(kind != "alert" or len(members) >= 2)
    carried = [POOL[i] for i in members]
    record: AvroModel = {"event": lambda: carried[0], "canonical": lambda: canonical(*carried),
                         "alert": lambda: alert(*carried)}[kind]()
    codec = sealed_codec(POOL)
    data = codec.encode(record)
    for i in destroyed:
        codec.vault.destroy(key_id(POOL[i]), reason="hypothesis")
    gone = sorted(key_id(POOL[i]) for i in destroyed if i in (members[:1] if kind == "event" else members))
    if not gone:
        assert codec.decode(data) == record
    else:
        with pytest.raises(RecordPurgedError) as info:
            codec.decode(data)
        assert info.value.key_ids == gone


# -- the pure envelope ---------------------------------------------------------------------------------
def test_review_date_is_the_marking_else_five_years_after_reporting():
    plain, marked = EVENTS[0], EVENTS[1]
    assert review_by_of(marked) == date(2027, 4, 1)
    assert review_by_of(plain) == date(2030, 10, 3)  # reported 2025-10-03; 5 x 365 + 1 days spans one Feb 29


def test_seal_needs_every_key_in_any_order():
    keys = {"b": bytes(range(32)), "a": bytes(32), "c": b"\xff" * 32}
    envelope = seal(b"inner message", "gov.taskforce.hub.CanonicalEvent", keys, date(2030, 1, 1))
    assert envelope.key_ids == ["a", "b", "c"]
    assert unseal(envelope, dict(reversed(list(keys.items())))) == b"inner message"
    for missing in keys:
        with pytest.raises(RecordPurgedError, match=f"no key {missing}"):
            unseal(envelope, {k: v for k, v in keys.items() if k != missing})
    with pytest.raises(DecodeError, match="fails authentication"):
        unseal(envelope, {**keys, "b": bytes(32)})
    with pytest.raises(ValueError, match="32 bytes"):
        seal(b"x", "gov.taskforce.hub.CaseEvent", {"a": b"short"}, date(2030, 1, 1))


# -- key vaults ----------------------------------------------------------------------------------------
@pytest.fixture
def vault() -> KeyVault:
    return MemoryKeyVault()  # KafkaKeyVault is this table plus the topic: tests/test_key_table.py


def test_ensure_creates_once_and_never_shortens_the_review(vault):
    key = vault.ensure("e1", date(2030, 1, 1))
    assert len(key) == 32 and vault.get("e1") == key
    assert vault.ensure("e1", date(2028, 1, 1)) == key
    assert vault.review_dates(["e1", "nope"]) == {"e1": date(2030, 1, 1)}
    assert vault.ensure("e1", date(2031, 1, 1)) == key
    assert vault.review_dates(["e1"]) == {"e1": date(2031, 1, 1)}
    assert vault.ensure("e2", date(2030, 1, 1)) != key
    assert vault.get("nope") is None
    assert vault.get_many(["e2", "nope", "e1"]) == {"e1": key, "e2": vault.get("e2")}


def test_due_extend_and_destroy(vault):
    for report, review in [("b", date(2026, 1, 2)), ("a", date(2026, 1, 2)), ("c", date(2026, 1, 1)),
                           ("d", date(2027, 1, 1))]:
        vault.ensure(report, review)
    assert vault.due(date(2026, 1, 2)) == [("c", date(2026, 1, 1)), ("a", date(2026, 1, 2)), ("b", date(2026, 1, 2))]
    assert vault.due(date(2025, 12, 31)) == []
    vault.extend("a", date(2030, 1, 1))
    assert [k for k, _ in vault.due(date(2026, 1, 2))] == ["c", "b"]
    with pytest.raises(VaultError, match="back to 2026-01-01"):
        vault.extend("a", date(2026, 1, 1))
    with pytest.raises(UnknownKeyError, match="no record key zz"):
        vault.extend("zz", date(2030, 1, 1))

    assert vault.destroy("c", reason="review date passed, not re-validated") is True
    assert vault.destroy("c", reason="again") is False
    assert vault.get("c") is None and vault.destroyed("c") and not vault.destroyed("b")
    tombstone = vault.tombstone("c")
    assert tombstone.reason == "review date passed, not re-validated"
    assert abs(tombstone.destroyed_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert [k for k, _ in vault.due(date(2026, 1, 2))] == ["b"]
    with pytest.raises(RecordPurgedError, match="cannot extend the review of record key c"):
        vault.extend("c", date(2030, 1, 1))
    with pytest.raises(RecordPurgedError, match="cannot recreate record key c"):
        vault.ensure("c", date(2030, 1, 1))
    assert vault.destroy("never-created", reason="purge order") is False
    with pytest.raises(RecordPurgedError):
        vault.ensure("never-created", date(2030, 1, 1))  # a purge order holds for a copy arriving later


# -- interoperability ------------------------------------------------------------------------------------
def test_official_avro_reads_the_envelope_and_it_opens_with_the_vaults_keys():
    codec = sealed_codec(EVENTS)
    data = codec.encode(EVENTS[1])
    assert data[:2] == MAGIC
    writer = avro.schema.parse(default_store().latest.type(PROTECTED_RECORD).schema_json)
    decoded = avro.io.DatumReader(writer).read(avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:])))
    assert decoded["key_ids"] == [key_id(EVENTS[1])]
    assert decoded["review_by"] == date(2027, 4, 1)
    assert decoded["inner_type"] == "gov.taskforce.hub.CaseEvent" and decoded["algorithm"] == ALGORITHM
    assert len(decoded["nonce"]) == 12
    envelope = codec.envelope_of(data)
    assert envelope.model_dump() == decoded
    inner = unseal(envelope, codec.vault.get_many(decoded["key_ids"]))
    assert Codec().decode(inner) == EVENTS[1]


def test_a_purge_reaches_a_codec_at_once_and_an_unknown_key_is_not_a_purge():
    vault = MemoryKeyVault()
    event, stranger = make_event(), make_event(source_record_id="20262504000099")
    codec = Codec(vault=vault)
    sealed = codec.encode(event)
    assert codec.decode(sealed) == event
    vault.destroy(key_id(event), reason="test")
    with pytest.raises(RecordPurgedError):
        codec.decode(sealed)
    forged = Codec(vault=MemoryKeyVault()).encode(stranger)  # sealed under a key this hub never had
    with pytest.raises(RecordKeyUnknownError, match="never had") as raised:
        codec.decode(forged)
    assert not isinstance(raised.value, RecordPurgedError) and raised.value.key_ids == [key_id(stranger)]


def test_a_key_table_entry_holds_the_key_only_wrapped_under_the_kek():
    kek, key = bytes(range(32)), bytes(range(100, 132))
    entry = wrap_entry(kek, "e1", key, date(2030, 1, 1))
    assert key not in entry and kek not in entry and b"2030-01-01" in entry
    assert kek_fingerprint(kek).encode() in entry and kek_fingerprint(kek) != kek_fingerprint(bytes(32))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "delete", "pop"]), st.integers(0, 20), st.binary(min_size=32,
                                                                                                    max_size=32)),
                max_size=60))
def test_the_spilled_key_table_behaves_as_the_dict_it_replaces(operations):
    spilled, expected = SpilledKeys(recent=2), {}  # most lookups miss the in-memory part
    for operation, number, key in operations:
        key_id = f"AZDPS0000/{number}"
        if operation == "set":
            spilled[key_id] = expected[key_id] = (key, date(2030, 1, 1 + number))
        elif operation == "delete" and key_id in expected:
            del spilled[key_id], expected[key_id]
        else:
            assert spilled.pop(key_id, None) == expected.pop(key_id, None)
    assert dict(spilled.items()) == expected and len(spilled) == len(expected)
    assert all((k in spilled) == (k in expected) for k in (f"AZDPS0000/{n}" for n in range(21)))


def test_the_spilled_key_table_holds_no_key_in_the_clear_and_stays_small():
    spilled, key = SpilledKeys(cache_kib=1024), b"\x5a" * 32
    spilled["AZDPS0000/kept"] = (key, date(2030, 1, 1))
    rows = spilled._db.execute("SELECT sealed FROM keys").fetchall()
    assert rows and all(key not in sealed for (sealed,) in rows)
    assert spilled["AZDPS0000/kept"] == (key, date(2030, 1, 1))
    pages_before = spilled._db.execute("PRAGMA page_count").fetchone()[0]
    for number in range(20_000):
        spilled[f"AZDPS0000/{number}"] = (os.urandom(32), date(2030, 1, 1))
    assert spilled._db.execute("PRAGMA page_count").fetchone()[0] > pages_before + 100  # on disk, not in the cache
    assert spilled._db.execute("PRAGMA cache_size").fetchone()[0] == -1024
