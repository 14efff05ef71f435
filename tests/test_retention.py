"""Retention on the broker: a report past its review-by date is purged by `hub retention sweep --purge`, and is
unreadable afterwards from every sealed path (the ingested history, an archive written before, a replay), its feed
items are tombstoned with a notice to the unit, and the audit log keeps who purged it and what was disseminated."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from consumers.registry import load_registry
from consumers.replay import REPLAYED_STAGES, Replay
from consumers.runner import StageRunner
from consumers.stages import STAGES
from consumers.subscriber import Subscriber
from hub.auditing import principal_of
from hub.control import apply_registry
from hub.topics import ensure_topics, hub_topics
from hub.vault import hub_codec
from producers.directory import load_agencies
from schemas.archive import read_archive
from schemas.exceptions import RecordPurgedError
from schemas.models import AuditEvent, AuditEventType, FeedItem
from schemas.topics import FEED, INGESTED
from tests.conftest import hub_env, publish_events, topic_records
from tests.factories import SEIZURE, key_id, make_event

UNIT = "best-san-diego"  # CBP San Diego, the reporting agency, is a member: it receives its own reports in full


def _hub(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub", *args], env=hub_env(settings), capture_output=True, text=True,
                          timeout=300)


def _carries(item: FeedItem, event_id: str) -> bool:
    return item.event is not None and event_id in {r.event_id for r in item.event.reports}


@pytest.fixture
def routed(hub_settings):
    """Two reports routed to the San Diego unit: one whose review-by date passed yesterday, one kept to 2030."""
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    expired = make_event(SEIZURE, source_record_id="INTEL-1", payload__seizure_number="PURGE-ME-0001",
                         handling__intelligence={"criminal_predicate": "21 USC 841 distribution", "sensitivity": "HIGH",
                                                 "confidence": "PROBABLE", "control_official": "SAC San Diego",
                                                 "review_by": yesterday.isoformat()})
    kept = make_event(SEIZURE, source_record_id="KEEP-1", payload__seizure_number="KEEP-ME-0001",
                      event_time="2025-10-09T14:05:00Z")
    units = sorted(u.unit_id for u in load_registry().task_forces)
    ensure_topics(hub_topics(hub_settings.topic_prefix, sorted(load_agencies()), sorted(STAGES), units), hub_settings)
    apply_registry(settings=hub_settings, applied_by="test")
    publish_events(hub_settings, [expired, kept])
    for name in REPLAYED_STAGES:
        StageRunner(STAGES[name](), hub_settings, commit_interval_s=0.2).run_until_idle(idle_polls=8)
    return expired, kept


def test_a_purged_report_is_unreadable_from_every_path(routed, hub_settings, tmp_path: Path):
    expired, kept = routed
    codec = hub_codec(hub_settings)
    with Subscriber(UNIT, hub_settings, start="beginning") as subscriber:
        before = list(subscriber.items(idle_s=1))
    assert any(_carries(i, expired.event_id) for i in before) and any(_carries(i, kept.event_id) for i in before)
    ingested = topic_records(hub_settings, INGESTED.name(hub_settings.topic_prefix, ori=expired.agency_ori))
    assert not any(b"PURGE-ME-0001" in r.value for r in ingested), "the hub's history is sealed, never plain"
    archived = _hub(hub_settings, "archive", INGESTED.name(ori=expired.agency_ori), "--to", str(tmp_path / "archive"))
    assert archived.returncode == 0, archived.stderr

    dry = _hub(hub_settings, "retention", "sweep")
    assert dry.returncode == 0 and expired.event_id in dry.stdout and "nothing purged" in dry.stdout
    refused = _hub(hub_settings, "retention", "sweep", "--purge")
    assert refused.returncode == 1 and "--authorized-by" in refused.stderr
    swept = _hub(hub_settings, "retention", "sweep", "--purge", "--authorized-by", "Test Control Official")
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert "purged 1 reports" in swept.stdout and "withdrawn with a purge notice to" in swept.stdout

    # 1. the sealed history (what dedup and replays read)
    [sealed] = [r for r in ingested if codec.envelope_of(r.value).key_ids == [key_id(expired)]]
    with pytest.raises(RecordPurgedError, match=expired.event_id):
        hub_codec(hub_settings).decode(sealed.value)
    # 2. the feed: every item that carried it is tombstoned, with a notice naming the report
    with Subscriber(UNIT, hub_settings, start="beginning") as subscriber:
        list(subscriber.items(idle_s=1))
    carriers = {i.event.canonical_id for i in before if _carries(i, expired.event_id)}
    assert {n.record_id for n in subscriber.notices} == carriers
    assert all(n.event_ids == [expired.event_id] and "28 CFR 23.20(h)" in n.notice for n in subscriber.notices)
    # 3. an archive written before the purge: the purged record cannot be opened, the other one can
    unreadable, readable = [], []
    for path in sorted((tmp_path / "archive").glob("*.avro")):
        for record in read_archive(path, codec):
            try:
                readable.append(codec.decode(record.value).event_id)
            except RecordPurgedError as exc:
                unreadable += exc.key_ids
    assert unreadable == [key_id(expired)] and readable == [kept.event_id]
    # 4. a replay: the stages cannot read it, so nothing carrying it is routed again, and the compare says why
    job = Replay(hub_settings, "after-purge", datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
    job.run()
    comparison = job.compare()
    replayed_feed = [codec.decode(r.value) for r in topic_records(job.isolated, job.isolated.topic(FEED.name(unit=UNIT)))]
    assert replayed_feed and not any(_carries(i, expired.event_id) for i in replayed_feed)
    assert comparison.purged_decisions >= 1 and comparison.differences == []
    job.remove()
    # The audit log still says what was sent, and who purged the report: the authenticated principal, with the
    # authorizing official named in the detail.
    purges = [a for a in (codec.decode(r.value) for r in topic_records(hub_settings, hub_settings.topic("audit")))
              if isinstance(a, AuditEvent) and a.event_type == AuditEventType.RECORD_PURGED]
    assert [(p.subject_ids, p.principal) for p in purges] == [([expired.event_id], principal_of(hub_settings))]
    assert "authorized by Test Control Official" in purges[0].detail
    StageRunner(STAGES["seal"](), hub_settings, commit_interval_s=0.2).run_until_idle(idle_polls=8)
    who_saw = _hub(hub_settings, "audit", "who-saw", expired.event_id)
    assert UNIT in who_saw.stdout
