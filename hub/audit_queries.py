"""Queries over the sealed audit chain (``audit.chain``): its integrity, who received a record, what a unit received
and every release of an agency's records. ``hub audit`` and the console's auditor pages both call these.

CJIS: any access to the audit log is itself audited. Each query is first recorded on ``audit.queries`` under the
connected principal (an ``auditor-<name>`` may write only that topic, which the seal stage chains too); a query
that cannot be recorded does not run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path
from typing import Any

from consumers.audit import ChainReport, verify_chain
from hub.auditing import record_query
from hub.checkpoints import PublishedCheckpoint, latest_checkpoint, read_checkpoint
from hub.kafka import read_topic
from hub.settings import HubSettings
from schemas.codec import Codec
from schemas.models import (
    AuditEvent, AuditEventType, AuditSeal, AvroModel, RoutingDecision, ShareForm, routing_decisions,
)
from schemas.topics import AUDIT_CHAIN

Delivery = tuple[AuditSeal, RoutingDecision]


@dataclass(frozen=True)
class ChainCheck:
    """Every partition's chain, verified from its start or from a signed checkpoint's head."""

    reports: list[ChainReport]
    from_checkpoint: dict[int, int]  # partition -> the checkpoint's offset it started after

    @property
    def intact(self) -> bool:
        return all(report.broken is None for report in self.reports)

    @property
    def records(self) -> int:
        return sum(report.records for report in self.reports)


def sealed_records(settings: HubSettings, query: str, component: str) -> Iterator[tuple[AuditSeal, AvroModel]]:
    """Every audit record as sealed into the chain, with its seal; ``query`` is recorded first, as ``component``
    under the connected principal."""
    record_query(component, query, settings)
    yield from _opened(read_topic(settings.topic(AUDIT_CHAIN.pattern), settings))


def _opened(records: Iterable[Any]) -> Iterator[tuple[AuditSeal, AvroModel]]:
    codec = Codec()
    for record in records:
        item = codec.decode(record.value)
        yield item, codec.decode(item.record)


def sealed_decisions(settings: HubSettings, query: str, component: str) -> Iterator[Delivery]:
    """Routing decisions as sealed into the chain (the record of what was actually sent)."""
    return _decisions(sealed_records(settings, query, component))


def _decisions(sealed: Iterable[tuple[AuditSeal, AvroModel]]) -> Iterator[Delivery]:
    for item, audited in sealed:
        for decision in routing_decisions(audited):
            yield item, decision


def replay_runs(settings: HubSettings, component: str) -> list[AuditEvent]:
    """Every replay run (``hub replay``) as sealed into the chain, newest first: what was replayed, by whom, and how
    many differences its comparison found (a FAILURE outcome when there were any)."""
    return _replay_runs(sealed_records(settings, "replays", component))


def _replay_runs(sealed: Iterable[tuple[AuditSeal, AvroModel]]) -> list[AuditEvent]:
    runs = [audited for _, audited in sealed
            if isinstance(audited, AuditEvent) and audited.event_type == AuditEventType.REPLAY_RUN]
    return sorted(runs, key=lambda run: run.recorded_at, reverse=True)


def last_checkpoint(settings: HubSettings, component: str, public_key: Path | None) -> PublishedCheckpoint | None:
    """The last signed checkpoint published on ``audit.checkpoints``, its signature checked with ``public_key``
    (the hub's, as the auditor holds it); the look is recorded first, like any access to the audit log."""
    record_query(component, "last checkpoint", settings)
    return latest_checkpoint(settings, public_key)


def verify_chains(settings: HubSettings, component: str, from_checkpoint: Path | None = None,
                  public_key: Path | None = None) -> ChainCheck:
    """Recompute every partition's hash chain (from the checkpoint's heads when given, after checking its
    signature); the check is recorded first, like any access to the audit log."""
    record_query(component, "verify" + (f" --from-checkpoint {from_checkpoint}" if from_checkpoint else ""), settings)
    topic = settings.topic(AUDIT_CHAIN.pattern)
    starts = {h.partition: h for h in read_checkpoint(from_checkpoint, topic, settings, public_key)} \
        if from_checkpoint else {}
    return _checked(read_topic(topic, settings), starts)


def _checked(records: Iterable[Any], starts: dict[int, Any]) -> ChainCheck:
    """Each partition's chain recomputed over ``records`` (read in partition order)."""
    codec = Codec()
    reports = [verify_chain(partition, ((r.offset, r.value) for r in group), codec, starts.get(partition))
               for partition, group in groupby(records, key=lambda r: r.partition)]
    reports += [verify_chain(partition, [], codec, start) for partition, start in starts.items()
                if partition not in {r.partition for r in reports}]
    return ChainCheck(sorted(reports, key=lambda r: r.partition), {p: h.offset for p, h in starts.items()})


def delivered(settings: HubSettings, query: str, component: str, since: datetime | None, until: datetime | None,
              wanted: Callable[[RoutingDecision], bool]) -> Iterator[Delivery]:
    """Records sent (full or pointer) that ``wanted`` selects, sealed in ``[since, until)``."""
    low = since.astimezone(timezone.utc) if since else datetime.min.replace(tzinfo=timezone.utc)
    high = until.astimezone(timezone.utc) if until else datetime.max.replace(tzinfo=timezone.utc)
    for sealed, decision in sealed_decisions(settings, f"{query} --from {low} --to {high}", component):
        if decision.form != ShareForm.WITHHELD and wanted(decision) and low <= sealed.recorded_at < high:
            yield sealed, decision


def who_saw(settings: HubSettings, record_id: str, component: str, *, withheld: bool = False) -> list[Delivery]:
    """Every decision to send the record (a report's event id, a canonical id or an alert id) to a unit, and with
    ``withheld`` every decision not to."""
    return _who_saw(sealed_decisions(settings, f"who-saw {record_id}", component), record_id, withheld)


def _who_saw(decisions: Iterable[Delivery], record_id: str, withheld: bool) -> list[Delivery]:
    return [(sealed, decision) for sealed, decision in decisions
            if (record_id in decision.event_ids or record_id == decision.record_id)
            and (withheld or decision.form != ShareForm.WITHHELD)]


def received(settings: HubSettings, unit_id: str, component: str, since: datetime | None = None,
             until: datetime | None = None) -> list[Delivery]:
    """What a unit received (full or pointer) in a period, by the time it was recorded in the audit log."""
    return list(delivered(settings, f"received --task-force {unit_id}", component, since, until,
                          lambda d: d.unit_id == unit_id))


def releases(settings: HubSettings, agency: str, component: str, since: datetime | None = None,
             until: datetime | None = None) -> list[Delivery]:
    """The owner's view (28 CFR 23.20(g)): every release of the agency's records outside it."""
    return list(delivered(settings, f"releases --agency {agency}", component, since, until,
                          lambda d: agency in d.owner_oris))


@dataclass(frozen=True)
class AuditorView:
    """What the console's audit page shows, from one read of the chain."""

    check: ChainCheck
    replays: list[AuditEvent]
    who_saw: list[Delivery] | None  # every decision about the record asked for, withheld ones too
    releases: list[Delivery] | None  # every release of the agency's records asked for


def auditor_view(settings: HubSettings, component: str, record_id: str = "", agency: str = "") -> AuditorView:
    """The chain's integrity, the replays run and, when asked, who saw a record and an agency's releases, all from
    one read of ``audit.chain``: each look is recorded first, as the separate queries record it."""
    looks = ["verify", "replays", *([f"who-saw {record_id}"] if record_id else []),
             *([f"releases --agency {agency}"] if agency else [])]
    for look in looks:
        record_query(component, look, settings)
    records = read_topic(settings.topic(AUDIT_CHAIN.pattern), settings)
    sealed = list(_opened(records))
    decisions = list(_decisions(sealed))
    released = [(s, d) for s, d in decisions if d.form != ShareForm.WITHHELD and agency in d.owner_oris]
    return AuditorView(_checked(records, {}), _replay_runs(sealed),
                       _who_saw(decisions, record_id, withheld=True) if record_id else None,
                       released if agency else None)
