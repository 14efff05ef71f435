"""Retention under 28 CFR 23.20(h): list reports due for review, purge those past it, record re-validations.

A purge reaches every copy the hub keeps. Sealed copies (``events.ingested.<ORI>``, canonical events, alerts, their
replicas, replays and archives) become unreadable at once: the report's record key is replaced on ``hub.keys``
by a marker holding no key, and every running stage drops the key at its next poll. Feed items are delivered
in the clear, so each feed item that carried the report (found in the audit log's routing decisions) gets a
tombstone with a purge notice for the unit, and compaction removes the item; so does each alert carrying it on
its parties' own ``agency.<ORI>`` topics. Every purge and extension is
audited first, under the authenticated principal, with the authorizing official named in the detail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from hub.auditing import audit_event, principal_of, write_audit
from hub.exceptions import ConfigError
from hub.kafka import make_producer, read_topic
from hub.settings import HubSettings
from hub.vault import KafkaKeyVault, UnknownKeyError
from schemas.codec import Codec
from schemas.models import (
    MAX_RETENTION, AuditEventType, RoutingDecisions, SharedRecordKind, ShareForm, routing_decisions,
)
from schemas.protection import event_id_of
from schemas.topics import AGENCY_FEED, AUDIT, FEED, PURGE_NOTICE_HEADER, PURGED_EVENTS_HEADER

Progress = Callable[[int], None]


@dataclass
class PurgeResult:
    """What a purge did: reports whose keys were destroyed, the feed items tombstoned by unit, and the alerts
    tombstoned on their parties' own topics, by ORI."""

    purged: list[str]
    tombstoned: dict[str, set[str]] = field(default_factory=dict)  # unit -> record ids
    withdrawn_alerts: dict[str, set[str]] = field(default_factory=dict)  # ORI -> alert ids

    @property
    def tombstones(self) -> int:
        return sum(len(records) for records in self.tombstoned.values())


def due_reports(settings: HubSettings, on: date) -> list[tuple[str, date]]:
    """Reports to review or purge by ``on``, by date then id."""
    vault = KafkaKeyVault(settings)
    try:
        return vault.due(on)
    finally:
        vault.close()


def purge(settings: HubSettings, event_ids: list[str], *, authorized_by: str, reason: str,
          progress: Progress | None = None) -> PurgeResult:
    """Audit, then destroy the reports' record keys, then tombstone every feed item that carried them."""
    if not authorized_by.strip():
        raise ConfigError("a purge needs the authorizing official: 28 CFR 23 allows no purge without authorization",
                          hint="Name the control official, e.g. --authorized-by 'J. Smith, HSI SAC San Diego'.")
    principal = principal_of(settings)
    vault = KafkaKeyVault(settings)
    try:
        # A report is named ORI/event-id (as `hub retention due` lists it) or by its bare event id.
        key_ids = sorted({k for report in event_ids for k in (vault.key_ids_of(report) or [report])})
        write_audit([audit_event("retention", AuditEventType.RECORD_PURGED, principal,
                                 f"report {key_id} purged, authorized by {authorized_by}: {reason}",
                                 subject_ids=[event_id_of(key_id)])
                     for key_id in key_ids], settings)
        for done, key_id in enumerate(key_ids, 1):
            vault.destroy(key_id, reason=f"{reason} (authorized by {authorized_by}; {principal})")
            if progress is not None:
                progress(done)
    finally:
        vault.close()
    purged = sorted({event_id_of(k) for k in key_ids})
    delivered, alerted = records_carrying(settings, set(purged))
    result = PurgeResult(purged, delivered, {ori: alert_ids & _live_keys(settings, AGENCY_FEED.name(ori=ori))
                                             for ori, alert_ids in alerted.items()})
    _tombstone(settings, result, reason)
    return result


def records_carrying(settings: HubSettings, event_ids: set[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From the audit log's routing decisions: unit -> ids of the records carrying any of ``event_ids`` that the
    router put on the unit's feed, and ORI -> ids of the alerts carrying any of them that the ORI is a party to."""
    codec, delivered, alerted = Codec(), {}, {}
    for record in read_topic(settings.topic(AUDIT.pattern), settings):
        audited = codec.decode(record.value)
        if isinstance(audited, RoutingDecisions) and audited.record_kind == SharedRecordKind.ALERT \
                and event_ids.intersection(audited.event_ids):
            for ori in audited.owner_oris:
                alerted.setdefault(ori, set()).add(audited.record_id)
        for decision in routing_decisions(audited):
            if decision.form != ShareForm.WITHHELD and event_ids.intersection(decision.event_ids):
                delivered.setdefault(decision.unit_id, set()).add(decision.record_id)
    return delivered, alerted


def _live_keys(settings: HubSettings, topic: str) -> set[str]:
    """The keys ``topic`` currently holds a value for: a party is sent a tombstone only for an alert it was told
    of (one hiding another's BLACK report never reached it, and its id must not either)."""
    live: set[str] = set()
    for record in read_topic(settings.topic(topic), settings):
        (live.add if record.value is not None else live.discard)(record.key.decode())
    return live


def _tombstone(settings: HubSettings, result: PurgeResult, reason: str) -> None:
    """A tombstone with the purge notice over every feed item and party's alert that carried a purged report."""
    headers = [(PURGED_EVENTS_HEADER, ",".join(sorted(result.purged)).encode()),
               (PURGE_NOTICE_HEADER, f"purged under 28 CFR 23.20(h): {reason}".encode())]
    withdrawn = [(FEED.name(settings.topic_prefix, unit=unit), ids) for unit, ids in result.tombstoned.items()]
    withdrawn += [(AGENCY_FEED.name(settings.topic_prefix, ori=ori), ids)
                  for ori, ids in result.withdrawn_alerts.items()]
    producer = make_producer(settings)
    try:
        for topic, record_ids in sorted(withdrawn, key=lambda pair: pair[0]):
            for record_id in sorted(record_ids):
                producer.send(topic, key=record_id.encode(), value=None, headers=headers)
        producer.flush(timeout=30)
    finally:
        producer.close()


def extend_review(settings: HubSettings, event_id: str, review_by: date, *, authorized_by: str) -> None:
    """Record a re-validation: the report is kept until ``review_by`` (at most five years from today)."""
    today = datetime.now(timezone.utc).date()
    if review_by > today + MAX_RETENTION:
        raise ConfigError(f"{review_by} is more than 5 years from today",
                          hint="28 CFR 23.20(h): a review keeps a report for at most five more years.")
    vault = KafkaKeyVault(settings)
    try:
        key_ids = vault.key_ids_of(event_id)
        if len(key_ids) != 1:
            raise UnknownKeyError(f"{event_id} names {len(key_ids)} reports" if key_ids else
                                  f"no report {event_id} in the key table",
                                  hint="Name the report as ORI/event-id, as `hub retention due` lists it.")
        vault.extend(key_ids[0], review_by)
    finally:
        vault.close()
    write_audit([audit_event("retention", AuditEventType.REVIEW_EXTENDED, principal_of(settings),
                             f"review of {key_ids[0]} re-validated by {authorized_by}: kept until {review_by}",
                             subject_ids=[event_id_of(key_ids[0])])], settings)


def review_horizon(within_days: int) -> tuple[date, date]:
    """(today, the last day counted as due) in UTC."""
    today = datetime.now(timezone.utc).date()
    return today, today + timedelta(days=within_days)
