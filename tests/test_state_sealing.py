"""Purges reach stage state: changelog values carrying a report are sealed under its record key, identifiers in
state keys are hashed, and local stores drop a purged report's entries (issue 10: "purge still holds for
everything the hub keeps")."""

from __future__ import annotations

import json
import sqlite3
import stat
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from consumers.exceptions import StateError
from consumers.stage import Message
from consumers.stages.alerts import AlertLifecycleStage
from consumers.stages.correlate import CorrelateStage, DeconflictStage
from consumers.stages.dedup import DedupStage
from consumers.state import (
    UNKEYED_HASH, MemoryPartitionStore, SqlitePartitionStore, State, StateWrite, keyed_hash, without_purged,
)
from consumers.state.base import SEPARATOR
from hub.settings import HubSettings
from hub.vault import KafkaKeyVault, MemoryKeyVault, Tombstone, destroyed_entry, state_key_hash_key
from schemas.exceptions import RecordPurgedError
from schemas.models import DeconflictionAlert
from tests.factories import SEIZURE, event_dict, key_id, make_event
from tests.test_deconflict import HSI, SHERIFF

PHONE = "+16195550142"  # on every factory seizure
VIN = "1M8GDM9AXKP042788"
REVIEW_BY = date(2031, 1, 1)


def _vault(*event_ids: str) -> MemoryKeyVault:
    vault = MemoryKeyVault()
    for event_id in event_ids:
        vault.ensure(event_id, REVIEW_BY)
    return vault


def _events():
    """A CBP seizure to purge, an HSI arrest and a Sheriff seizure weeks later: all three share a phone number,
    none is the same seizure as another."""
    purged = make_event(SEIZURE, source_record_id="PURGE-REC-0001", payload__seizure_number="PURGE-ME-0001")
    arrest = make_event(event_dict(event_type="ARREST", source_agency=HSI, source_system="ICM",
                                   source_record_id="KEEP-ARREST-1", location={"state": "CA", "county_fips": "06073"},
                                   payload={"booking_number": "B-7", "charges": []},
                                   entities=[{"kind": "PHONE", "role": "SUBJECT",
                                              "identifiers": [{"scheme": "PHONE_E164", "value": PHONE}]}]))
    kept = make_event(SEIZURE, source_agency=SHERIFF, source_system="RMS", source_record_id="KEEP-REC-0002",
                      payload__seizure_number="KEEP-ME-0002", event_time="2025-10-20T14:05:00Z",
                      report_time="2025-10-20T16:00:00Z")
    return purged, arrest, kept


# -- sealing changelog values ------------------------------------------------------------------------
def test_a_value_naming_reports_is_sealed_and_opens_back():
    vault = _vault("e1", "e2")
    write = StateWrite("canonical", "c1", {"seizure_number": "PURGE-ME-0001"}, 1.7e9, ("e1", "e2"))
    data = write.encode(vault)
    assert b"PURGE-ME-0001" not in data and b"1700000000" not in data, "value and expiry are both sealed"
    body = json.loads(data)
    assert body["sealed"]["key_ids"] == ["e1", "e2"] and body["sealed"]["review_by"] == "2031-01-01"
    assert StateWrite.decode(write.store_key, data, vault) == write


def test_a_value_naming_no_report_stays_plain_json():
    write = StateWrite("event", "e1", True, 1.7e9)
    data = write.encode()
    assert json.loads(data) == {"v": True, "x": 1.7e9}
    assert StateWrite.decode(write.store_key, data) == write
    assert StateWrite("event", "e1", None, None).encode() is None, "a delete is a tombstone"


def test_a_purged_report_restores_as_a_delete_and_cannot_be_written_again():
    vault = _vault("e1", "e2")
    write = StateWrite("canonical", "c1", {"seizure_number": "PURGE-ME-0001"}, 1.7e9, ("e1", "e2"))
    data = write.encode(vault)
    vault.destroy("e2", reason="test")
    assert StateWrite.decode(write.store_key, data, vault) == StateWrite("canonical", "c1", None, None)
    with pytest.raises(RecordPurgedError) as raised:
        write.encode(vault)
    assert raised.value.key_ids == ["e2"]


def test_a_key_the_hub_never_had_is_an_error_naming_the_entry():
    data = StateWrite("canonical", "c1", {"x": 1}, None, ("e1",)).encode(_vault("e1"))
    with pytest.raises(StateError, match=r"canonical/c1 is sealed under record key\(s\) e1 that the hub never had"):
        StateWrite.decode(f"canonical{SEPARATOR}c1", data, MemoryKeyVault())
    with pytest.raises(StateError, match="canonical/c1.*needs the key vault"):
        StateWrite.decode(f"canonical{SEPARATOR}c1", data)
    with pytest.raises(StateError, match="canonical/c2 .*needs the key vault"):
        StateWrite("canonical", "c2", {"x": 1}, None, ("e1",)).encode()


def test_a_sealed_value_moved_to_another_entry_fails_authentication():
    vault = _vault("e1")
    data = StateWrite("canonical", "c1", {"x": 1}, None, ("e1",)).encode(vault)
    with pytest.raises(StateError, match="canonical/c2 cannot be opened"):
        StateWrite.decode(f"canonical{SEPARATOR}c2", data, vault)


def test_state_names_reports_of_its_writes_and_forgets_purged_pending_writes():
    store = MemoryPartitionStore()
    state = State(store)
    state.put("canonical", "c1", {"x": 1}, 10.0, reports=["e2", "e1", "e2"])
    state.put("event", "e1", True, 10.0)
    state.keep_last()
    state.put("candidate", "b|c1|e3", {"x": 3}, 10.0, reports=["e3"])
    assert state.forget_reports(["e1"]) == 1
    writes = {w.key: w for w in state.take_writes()}
    assert writes["c1"].value is None, "a pending write of a purged report becomes a delete"
    assert writes["e1"].value is True and writes["b|c1|e3"].reports == ("e3",)
    kept = StateWrite("canonical", "c2", {"x": 2}, None, ("e1", "e2"))
    assert without_purged([kept], {"e2"}) == [kept.deleted()] and without_purged([kept], set()) == [kept]


# -- local stores ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_stores_drop_every_entry_carrying_a_purged_report(backend, tmp_path: Path):
    store = MemoryPartitionStore() if backend == "memory" else SqlitePartitionStore(tmp_path / "p-0.sqlite")
    store.apply([StateWrite("canonical", "c1", {"n": "PURGE-ME-0001"}, None, ("e1", "e2")),
                 StateWrite("candidate", "b|c1|e1", {"n": "PURGE-ME-0001"}, None, ("e1",)),
                 StateWrite("canonical", "c3", {"n": "KEEP-ME-0003"}, None, ("e3",)),
                 StateWrite("event", "e1", True, None)], 7)
    assert store.reports() == {"e1", "e2", "e3"}
    assert store.purge(["e1"]) == 2
    assert [k for k, _ in store.scan("")] == [f"canonical{SEPARATOR}c3", f"event{SEPARATOR}e1"]
    assert store.reports() == {"e3"} and store.changelog_offset == 7
    # A later write of the entry without reports is not purged with them.
    store.apply([StateWrite("canonical", "c3", {"n": "plain"}, None)], None)
    assert store.purge(["e3"]) == 0 and store.get(f"canonical{SEPARATOR}c3") == {"n": "plain"}
    if backend == "sqlite":
        store.close()
        files = b"".join(p.read_bytes() for p in tmp_path.iterdir())
        assert b"PURGE-ME-0001" not in files and b"KEEP-ME-0003" not in files, "deleted content is overwritten"


def test_sqlite_state_is_private_and_older_stores_still_open(tmp_path: Path):
    old = tmp_path / "state" / "partition-0.sqlite"
    old.parent.mkdir(mode=0o755)
    db = sqlite3.connect(old)
    db.executescript("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);"
                     "CREATE TABLE checkpoint (id INTEGER PRIMARY KEY CHECK (id = 0), "
                     "changelog_offset INTEGER NOT NULL);"
                     "INSERT INTO entries VALUES ('event\x1fe1', 'true', NULL); INSERT INTO checkpoint VALUES (0, 5);")
    db.close()
    old.chmod(0o644)
    store = SqlitePartitionStore(old)
    assert store.get(f"event{SEPARATOR}e1") is True and store.changelog_offset == 5 and store.reports() == set()
    store.apply([StateWrite("canonical", "c1", {"x": 1}, None, ("e1",))], 6)
    assert store.purge(["e1"]) == 1
    store.close()
    new = SqlitePartitionStore(tmp_path / "fresh" / "partition-1.sqlite")
    new.close()
    for path in (old, tmp_path / "fresh" / "partition-1.sqlite"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for journal in path.parent.glob(path.name + "-*"):
            assert stat.S_IMODE(journal.stat().st_mode) == 0o600


# -- hashed keys ---------------------------------------------------------------------------------------
def test_hashed_keys_are_stable_keyed_and_name_no_one(tmp_path: Path):
    kek = bytes(range(32))
    derived = state_key_hash_key(kek)
    assert len(derived) == 32 and derived != kek and derived == state_key_hash_key(kek)
    vault = KafkaKeyVault(HubSettings(runtime_dir=tmp_path), kek=kek)  # no broker needed to derive it
    assert vault.state_key_hash_key() == derived
    hashed = keyed_hash(derived)
    key = f"PHONE_E164:{PHONE}"
    assert hashed(key) == keyed_hash(state_key_hash_key(kek))(key), "the same on every hub host"
    assert hashed(key) != keyed_hash(state_key_hash_key(bytes(32)))(key) != UNKEYED_HASH(key), "keyed"
    assert PHONE not in hashed(key) and "6195550142" not in hashed(key) and len(hashed(key)) == 64
    assert State(MemoryPartitionStore(), hasher=hashed).hashed(key) == hashed(key)


def test_stage_state_keys_hold_no_identifier_and_alerts_still_name_the_match():
    from tests.test_deconflict import Deconfliction

    hub = Deconfliction()
    for event in _events():
        hub.feed(event)
    assert {a.matched for a in hub.alerts} >= {f"PHONE_E164:{PHONE}", f"VIN:{VIN}"}, "alerts name the entity"
    keys = [k for store in [*hub.stores.values(), *hub.dedup.stores.values()] for k, _ in store.scan("")]
    assert keys and not [k for k in keys if any(s in k for s in ("6195550142", VIN, "8ABC123", "PURGE-", "KEEP-"))]


def test_only_flags_stay_plain_in_dedup_and_deconflict_state():
    vault = MemoryKeyVault()
    changelog: dict[str, bytes | None] = {}  # what the runner would write, compacted
    stores = {"dedup": MemoryPartitionStore(), "deconflict": MemoryPartitionStore()}
    dedup, correlate, deconflict = DedupStage(), CorrelateStage(), DeconflictStage()
    events = _events()
    for event in events:
        vault.ensure(key_id(event), REVIEW_BY)
        state = State(stores["dedup"])
        canonicals = [o.value for o in dedup.process(Message("ingested", 0, 0, b"k", event, 0), state)]
        writes = state.take_writes()
        for canonical in canonicals:
            keyed_outputs = correlate.process(Message("canonical", 0, 0, None, canonical, 0),
                                              State(MemoryPartitionStore()))
            for keyed in keyed_outputs:
                state = State(stores["deconflict"])
                deconflict.process(Message("by-key", 0, 0, keyed.key, keyed.value, 0), state)
                writes += state.take_writes()
        for write in writes:
            changelog[write.store_key] = write.encode(vault)
            assert write.reports or write.namespace == "event", f"only 'event seen' flags stay plain: {write}"
    blob = b"".join(k.encode() + (v or b"") for k, v in changelog.items())
    for secret in (b"PURGE-ME-0001", b"PURGE-REC-0001", b"6195550142", VIN.encode(), b"8ABC123", b"KEEP-"):
        assert secret not in blob
    # A restore after the CBP report's purge: its entries are deletes, the others' open as they were written.
    vault.destroy(key_id(events[0]), reason="test")
    restored = MemoryPartitionStore()
    restored.apply([StateWrite.decode(k, v, vault) for k, v in changelog.items()], None)
    assert key_id(events[0]) not in restored.reports()
    assert {key_id(events[1]), key_id(events[2])} <= restored.reports()
    assert b"PURGE-ME-0001" not in json.dumps([v for _, v in restored.scan("")]).encode()


@pytest.mark.parametrize("gone", ["purged", "alert entry only"])
def test_a_purged_alert_leaves_the_lifecycle_and_escalates_nothing(gone):
    stage, store = AlertLifecycleStage(), MemoryPartitionStore()
    alert = _deconfliction_alert()
    state = State(store)
    stage.process(Message("t.alerts.raised", 0, 0, None, alert, int(alert.updated_at.timestamp() * 1000)), state)
    store.apply(state.take_writes(), None)
    if gone == "purged":
        assert store.purge([f"{alert.parties[0].agency.ori}/{alert.parties[0].event_id}"]) == 2, "the alert and its deadline"
    else:  # its deadline still due, e.g. written before deadlines named their reports
        store.apply([StateWrite("alert", alert.alert_id, None, None)], None)
    later = alert.model_copy(update={"alert_id": "other", "raised_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
                                     "updated_at": datetime(2026, 1, 1, tzinfo=timezone.utc)})
    # taken in by the hub long after the purged alert's deadline: only its own opening comes out
    outputs = stage.process(Message("t.alerts.raised", 0, 0, None, later, int(later.updated_at.timestamp() * 1000)),
                            State(store))
    assert [o.value.alert_id for o in outputs if isinstance(o.value, DeconflictionAlert)] == ["other"]


def _deconfliction_alert() -> DeconflictionAlert:
    from tests.test_deconflict import Deconfliction

    hub = Deconfliction()
    purged, arrest, _ = _events()
    hub.feed(purged)
    [alert] = hub.feed(arrest)
    return alert


def test_the_vault_tells_listeners_once_of_each_destroyed_key(tmp_path: Path):
    vault, heard = _vault("e1"), []
    vault.on_destroyed(heard.append)
    vault.destroy("e1", reason="test")
    vault.destroy("e1", reason="again")
    assert heard == ["e1"]
    kafka_vault, heard = KafkaKeyVault(HubSettings(runtime_dir=tmp_path), kek=bytes(range(32))), []
    kafka_vault.on_destroyed(heard.append)
    marker = destroyed_entry(Tombstone("e9", datetime.now(timezone.utc), "purged elsewhere"))
    kafka_vault._take("e9", marker)  # read from hub.keys: another process destroyed it
    kafka_vault._take("e9", marker)
    assert heard == ["e9"] and MemoryKeyVault.tombstone(kafka_vault, "e9").reason == "purged elsewhere"


# -- on the broker -------------------------------------------------------------------------------------
def _entries(state_dir: Path) -> dict[str, tuple]:
    """Store key -> (value, reports) of every partition store under ``state_dir``."""
    found = {}
    for path in sorted(state_dir.glob("partition-*.sqlite")):
        db = sqlite3.connect(path)
        reports: dict[str, set] = {}
        for report, key in db.execute("SELECT report, key FROM entry_reports"):
            reports.setdefault(key, set()).add(report)
        for key, value in db.execute("SELECT key, value FROM entries"):
            found[key] = (json.loads(value), reports.get(key, set()))
        db.close()
    return found


def _files_hold(state_dir: Path, needle: bytes) -> bool:
    return any(needle in p.read_bytes() for p in state_dir.iterdir() if p.is_file())


@pytest.mark.kafka
def test_purge_reaches_changelogs_and_local_state_on_the_broker(hub_settings, tmp_path: Path):
    from consumers.retention import purge
    from consumers.runner import StageRunner
    from hub.kafka import read_topic
    from hub.topics import ensure_topics, hub_topics
    from hub.vault import hub_codec
    from producers.directory import load_agencies
    from schemas.topics import ALERTS_RAISED, changelog_topic
    from tests.conftest import publish_events

    settings = hub_settings
    ensure_topics(hub_topics(settings.topic_prefix, sorted(load_agencies()),
                             ["intake", "dedup", "correlate", "deconflict"]), settings)
    purged, arrest, kept = events = _events()
    publish_events(settings, list(events))
    stages = {"dedup": DedupStage, "correlate": CorrelateStage, "deconflict": DeconflictStage}
    for stage in stages.values():
        StageRunner(stage(), settings, commit_interval_s=0.2).run_until_caught_up()
    state_dirs = {name: settings.runtime_dir / "state" / f"{settings.topic_prefix}{name}"
                  for name in ("dedup", "deconflict")}

    # The changelogs name no identifier and hold no report's data in the clear; local files are private.
    for name in ("dedup", "deconflict"):
        records = read_topic(settings.topic(changelog_topic(name)), settings)
        assert any(r.value and b'"sealed"' in r.value for r in records)
        for record in records:
            raw = record.key + (record.value or b"")
            for secret in (b"PURGE-ME-0001", b"PURGE-REC-0001", b"6195550142", VIN.encode(), b"KEEP-ME-0002"):
                assert secret not in raw, f"{secret!r} in changelog.{name}"
        assert _files_hold(state_dirs[name], b"PURGE-ME-0001"), "the local store holds plain values until purged"
        assert stat.S_IMODE(state_dirs[name].stat().st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in state_dirs[name].iterdir())
    codec = hub_codec(settings)
    alerts = [codec.decode(r.value) for r in read_topic(settings.topic(ALERTS_RAISED.pattern), settings)]
    assert f"PHONE_E164:{PHONE}" in {a.matched for a in alerts}, "alerts still name the matched entity"
    codec.vault.close()

    # Purged while dedup runs: the key vault tells the runner, which drops the entries from its local store.
    runner, polls = StageRunner(DedupStage(), settings, commit_interval_s=0.2), 0

    def purge_then_wait(handled: int) -> bool:
        nonlocal polls
        if not runner.ready:
            return False
        polls += 1
        if polls == 1:
            purge(settings, [purged.event_id], authorized_by="x", reason="test")
        return polls > 150 or not _files_hold(state_dirs["dedup"], b"PURGE-ME-0001")

    runner.run(until=purge_then_wait)
    assert not _files_hold(state_dirs["dedup"], b"PURGE-ME-0001"), "a running stage drops a purged report"
    # Purged while deconflict was stopped: dropped when its store is opened again.
    StageRunner(DeconflictStage(), settings, commit_interval_s=0.2).run_until_caught_up()
    # And a new host restoring from the changelogs alone reads the purged entries as deletes.
    for name in ("dedup", "deconflict"):
        fresh = tmp_path / "fresh" / name
        StageRunner(stages[name](), settings, commit_interval_s=0.2, state_dir=fresh).run_until_caught_up()
        for state_dir in (state_dirs[name], fresh):
            entries = _entries(state_dir)
            assert not [k for k, (_, reports) in entries.items() if key_id(purged) in reports]
            assert not _files_hold(state_dir, b"PURGE-ME-0001") and not _files_hold(state_dir, b"PURGE-REC-0001")
            assert any(key_id(kept) in reports for _, reports in entries.values()), "the other reports stay"
            canonicals = [v for k, (v, _) in entries.items() if k.startswith(f"canonical{SEPARATOR}")]
            assert canonicals and purged.event_id not in {c["primary"]["event_id"] for c in canonicals}
        assert _entries(state_dirs[name]) == _entries(fresh), "restored from the changelog: the same state"
