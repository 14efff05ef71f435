"""Route: canonical events and alerts to each BEST task force's feed, after the sharing rules.

The sharing policy itself is :mod:`consumers.sharing` (pure); this stage applies it with the registry every
router reads from the control topic, writes FULL and POINTER items to ``feed.<unit>`` and one audit record per
record listing every unit's decision (sent, sent as pointer, or withheld, and why) in the same transaction. A
withheld record leaves no trace in the unit's feed: its absence looks exactly like "no record".

Each owner of the record (each party to an alert) is told on its own topic ``agency.<ORI>`` too: the release record
of each revision (who received it, in what form, and why: 28 CFR 23.20(g)'s "who saw my record" without an auditor),
and for an alert its current state, which the party acknowledges or resolves. An owner learns nothing through a
record holding another agency's BLACK report (:func:`consumers.sharing.told_owners`).

It keeps no state, so it runs inside the transactions of the stages that write what it routes (dedup's canonical
events, the alerts stage's alerts; see :mod:`consumers.stages`), not as a hop of its own.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from consumers.exceptions import StageError
from consumers.registry import Registry
from consumers.sharing import Decision, owners, pointer_of, route, told_owners, visible_record
from consumers.stage import Message, Output, Stage
from consumers.state import State
from hub.access import task_force_principal
from schemas.models import (
    CanonicalEvent, DeconflictionAlert, FeedItem, RegistryRevision, RoutingDecisions, ShareForm, SharedRecordKind,
    UnitDecision,
)
from schemas.topics import AGENCY_FEED, AUDIT, FEED, REGISTRY

ROUTING_NAMESPACE = uuid.UUID("5d0f3c7e-9a51-4f0b-8f7c-3b1e2a9d6c44")


def registry_of(revision: RegistryRevision) -> Registry:
    """The registry a revision carries (validated again: the topic is shared, the document must still hold)."""
    return Registry.model_validate(json.loads(revision.document))


class RouteStage(Stage):
    name = "route"
    input_pattern = r"(events\.canonical|alerts)"
    outputs = (FEED.pattern, AUDIT.pattern, AGENCY_FEED.pattern)
    input_types = (CanonicalEvent, DeconflictionAlert)
    global_inputs = (REGISTRY.pattern,)
    stateless = True  # so it runs inside dedup's and the alerts stage's transactions (see consumers.stages)

    def __init__(self, registry: RegistryRevision | None = None) -> None:
        self.revision = registry
        self.registry = registry_of(registry) if registry is not None else None

    def on_global(self, message: Message) -> None:
        revision = message.value
        if not isinstance(revision, RegistryRevision):
            raise StageError(f"unexpected {type(revision).__name__} on the registry topic")
        if self.revision is None or revision.version > self.revision.version:
            self.registry, self.revision = registry_of(revision), revision

    def waiting_for(self) -> str | None:
        return None if self.registry else "no task-force registry applied yet: run `hub taskforces apply FILE`"

    def event_time(self, message: Message) -> float:
        return _record_time(message.value).timestamp()

    def process(self, message: Message, state: State) -> list[Output]:
        record = message.value
        if not isinstance(record, CanonicalEvent | DeconflictionAlert):
            raise StageError(f"unexpected {type(record).__name__} on the route stage's inputs")
        assert self.registry is not None and self.revision is not None  # the runner waits for waiting_for()
        decisions = [(d, _delivery_id(record, d.unit_id)) for d in route(record, self.registry)]
        key, audit = _record_id(record).encode(), self._audit(record, decisions)
        told = told_owners(record)
        release_key = f"{_record_id(record)}@{_revision(record)}".encode()
        return [Output(AUDIT.name(), key, audit),
                *(Output(FEED.name(unit=d.unit_id), key, self._feed_item(record, d, item_id))
                  for d, item_id in decisions if d.form != ShareForm.WITHHELD),
                *(Output(AGENCY_FEED.name(ori=ori), release_key, audit) for ori in told),
                *(Output(AGENCY_FEED.name(ori=ori), key, record, in_clear=True)
                  for ori in told if isinstance(record, DeconflictionAlert))]

    def _feed_item(self, record: CanonicalEvent | DeconflictionAlert, decision: Decision, item_id: str) -> FeedItem:
        full = decision.form == ShareForm.FULL
        is_event = isinstance(record, CanonicalEvent)
        return FeedItem(
            item_id=item_id, unit_id=decision.unit_id, form=ShareForm(decision.form),
            rule=decision.rule, subscription_id=decision.subscription_id, registry_version=self.revision.version,
            routed_at=_record_time(record),
            event=visible_record(record, self.registry.unit(decision.unit_id)) if full and is_event else None,
            alert=record if full and not is_event else None,
            pointer=None if full else pointer_of(record))

    def _audit(self, record: CanonicalEvent | DeconflictionAlert,
               decisions: list[tuple[Decision, str]]) -> RoutingDecisions:
        is_event = isinstance(record, CanonicalEvent)
        return RoutingDecisions(
            record_id=_record_id(record),
            record_kind=SharedRecordKind.CANONICAL_EVENT if is_event else SharedRecordKind.ALERT,
            revision=_revision(record),
            event_ids=[r.event_id for r in record.reports] if is_event else [p.event_id for p in record.parties],
            owner_oris=sorted(owners(record)) if is_event else sorted({p.agency.ori for p in record.parties}),
            registry_version=self.revision.version, decided_at=_record_time(record), component=self.name,
            decisions=[UnitDecision(decision_id=decision_id, unit_id=d.unit_id,
                                    principal=task_force_principal(d.unit_id), form=ShareForm(d.form), rule=d.rule,
                                    reason=d.reason, subscription_id=d.subscription_id)
                       for d, decision_id in decisions])


def _record_id(record: CanonicalEvent | DeconflictionAlert) -> str:
    return record.canonical_id if isinstance(record, CanonicalEvent) else record.alert_id


def _revision(record: CanonicalEvent | DeconflictionAlert) -> str:
    return str(record.revision) if isinstance(record, CanonicalEvent) else str(record.status)


def _delivery_id(record: CanonicalEvent | DeconflictionAlert, unit_id: str) -> str:
    """The same record revision to the same unit always has the same id, so replays compare one to one."""
    return str(uuid.uuid5(ROUTING_NAMESPACE, f"{unit_id}|{_record_id(record)}|{_revision(record)}"))


def _record_time(record: CanonicalEvent | DeconflictionAlert) -> datetime:
    """Event time: when the latest report of the event arrived, or the alert's last change."""
    if isinstance(record, CanonicalEvent):
        return max(r.report_time for r in record.reports).astimezone(timezone.utc)
    return record.updated_at
