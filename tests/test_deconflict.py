"""Deconfliction as pure functions over typed events: target and event alerts, scored on the labelled sample."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import pytest

from consumers.exceptions import StageError
from consumers.normalize import normalize_identifier
from consumers.stage import Message
from consumers.stages.alerts import AlertLifecycleStage
from consumers.stages.correlate import CorrelateStage, DeconflictStage, cites
from consumers.stages.dedup import DedupStage
from consumers.state import MemoryPartitionStore, State
from producers.sample import generate
from schemas.models import (
    AlertAction, AlertKind, AlertStatus, AuditEvent, AuditEventType, AuditOutcome, CanonicalEvent, ClockTick,
    DeconflictionAlert,
)
from tests.factories import PLANNED_RAID, event_dict, make_event
from tests.test_dedup import PartitionedRun

HSI = {"ori": "CAHSI0100", "name": "HSI San Diego", "level": "FEDERAL",
       "contact": {"name": "HSI San Diego BEST Desk", "telephone": "+16195550110"}}
SHERIFF = {"ori": "CA0370000", "name": "San Diego County Sheriff's Department", "level": "LOCAL"}


class Deconfliction:
    """dedup -> correlate -> deconflict, each key's state in its own store (as partitions would hold it)."""

    def __init__(self) -> None:
        self.dedup = PartitionedRun(DedupStage())
        self.correlate, self.deconflict = CorrelateStage(), DeconflictStage()
        self.stores: dict[bytes, MemoryPartitionStore] = defaultdict(MemoryPartitionStore)
        self.alerts: list[DeconflictionAlert] = []

    def feed(self, event) -> list[DeconflictionAlert]:
        raised = []
        for canonical in self.dedup.feed(event):
            for keyed in self.correlate.process(Message("canonical", 0, 0, None, canonical, 0), State(MemoryPartitionStore())):
                state = State(self.stores[keyed.key])
                outputs = self.deconflict.process(Message("by-key", 0, 0, keyed.key, keyed.value, 0), state)
                self.stores[keyed.key].apply(state.take_writes(), None)
                raised += [o.value for o in outputs]
        self.alerts += raised
        return raised


def test_shared_phone_in_two_agencies_records_raises_one_alert_with_both_contacts():
    hub = Deconfliction()
    assert hub.feed(make_event()) == []
    arrest = event_dict(event_type="ARREST", source_agency=HSI, source_system="ICM", source_record_id="A-1",
                        location={"state": "CA", "county_fips": "06073"},
                        payload={"booking_number": "B-7", "charges": []},
                        entities=[{"kind": "PHONE", "role": "SUBJECT",
                                   "identifiers": [{"scheme": "PHONE_E164", "value": "+16195550142"}]}])
    [alert] = hub.feed(make_event(arrest))
    assert alert.alert_kind == AlertKind.TARGET and alert.matched == "PHONE_E164:+16195550142"
    assert {p.agency.ori for p in alert.parties} == {"CACBP0100", "CAHSI0100"}
    assert any(p.contact and p.contact.telephone == "+16195550110" for p in alert.parties)
    again = make_event(arrest, source_record_id="A-2")
    assert hub.feed(again) == [], "the same two agencies are not alerted twice about one target"


def test_same_agency_touching_a_target_twice_is_not_a_conflict():
    hub = Deconfliction()
    hub.feed(make_event())
    assert hub.feed(make_event(source_record_id="OTHER", payload__seizure_number="OTHER",
                               event_time="2025-11-20T10:00:00Z")) == []


def _operation(agency, lat, lon, starts, ends, record):
    return make_event(PLANNED_RAID, source_agency=agency, source_record_id=record,
                      location={"latitude": lat, "longitude": lon, "state": "CA"},
                      payload__starts_at=starts, payload__ends_at=ends, entities=[])


def test_overlapping_operations_nearby_raise_one_urgent_alert():
    hub = Deconfliction()
    hub.feed(_operation(HSI, 32.7157, -117.1611, "2025-10-05T05:00:00Z", "2025-10-05T08:00:00Z", "OP-A"))
    [alert] = hub.feed(_operation(SHERIFF, 32.7162, -117.1605, "2025-10-05T07:00:00Z", "2025-10-05T09:00:00Z", "OP-B"))
    assert alert.alert_kind == AlertKind.EVENT and alert.urgent
    assert "overlapping 1.0 h" in alert.explanation
    assert {p.contact.name for p in alert.parties} == {"SA Rivera"}
    later = _operation(SHERIFF, 32.7157, -117.1611, "2025-10-06T05:00:00Z", "2025-10-06T06:00:00Z", "OP-C")
    far = _operation(SHERIFF, 32.80, -117.16, "2025-10-05T05:00:00Z", "2025-10-05T08:00:00Z", "OP-D")
    assert hub.feed(later) == [] and hub.feed(far) == []


def shared_targets(sample, hub: Deconfliction) -> tuple[set[str], set[str]]:
    """The target keys an alert is required on, and those it may be on, given the events ``hub``'s dedup formed."""
    # Correlate sees every report each revision credits (the primary whole, the others' entity keys).
    by_id = {e.event_id: e for e in sample.events}
    primaries: dict[str, CanonicalEvent] = {}  # report event id -> the current event crediting it
    for canonical in hub.dedup.outputs:
        for report in canonical.reports:
            primaries[report.event_id] = hub.dedup.current(canonical.canonical_id)
    # Two events touching a target raise an alert when neither's agency is credited in the other. An event kept
    # apart from a BLACK report's event (see dedup) is credited there, so that pair alerts in one arrival order only:
    # it must not be missed when it would alert either way, and is no false alert when it alerts one way.
    expected, possible = set(), set()
    for label in sample.labels.target_correlations:
        key = normalize_identifier(label["scheme"], label["value"], label.get("issuer"))
        # (the agency of the report touching the target, the event crediting it)
        touches = [(by_id[e].agency_ori, primaries[e]) for e in label["event_ids"] if e in primaries]
        pairs = [(a, b) for a in touches for b in touches if a[1].canonical_id != b[1].canonical_id]
        # Nor when one record cites the other's: they share it. A record cited may join its event after the alert
        # was due, so such a pair may alert in one arrival order: never required, not false.
        uncited = [(a, b) for a, b in pairs if not cites(a[1], b[1]) and not cites(b[1], a[1])]
        if key is not None and any(a[0] not in b[1].agencies and b[0] not in a[1].agencies for a, b in uncited):
            expected.add(str(key))
        if key is not None and any(a[0] not in b[1].agencies for a, b in pairs):
            possible.add(str(key))
    return expected, possible


def test_planted_conflicts_and_shared_targets_are_found_without_false_alerts():
    sample = generate(20_000, seed=31)
    hub = Deconfliction()
    for event in sorted(sample.events, key=lambda e: e.report_time):
        hub.feed(event)
    event_alerts = {frozenset(p.event_id for p in a.parties) for a in hub.alerts if a.alert_kind == AlertKind.EVENT}
    planted = {frozenset(c["event_ids"]) for c in sample.labels.event_conflicts}
    print(f"event deconfliction: {len(planted)} planted, {len(event_alerts)} alerts, {len(planted & event_alerts)} match")
    assert event_alerts == planted

    expected, possible = shared_targets(sample, hub)
    alerted = {a.matched for a in hub.alerts if a.alert_kind == AlertKind.TARGET}
    recall = len(expected & alerted) / len(expected)
    precision = len(possible & alerted) / len(alerted)
    print(f"target deconfliction: {len(expected)} shared targets, {len(alerted)} alerted; "
          f"precision {precision:.3f}, recall {recall:.3f}")
    assert recall == 1.0 and precision == 1.0


# -- alert lifecycle -------------------------------------------------------------------------------
def _raised_alert():
    hub = Deconfliction()
    hub.feed(_operation(HSI, 32.7157, -117.1611, "2025-10-05T05:00:00Z", "2025-10-05T08:00:00Z", "OP-A"))
    [alert] = hub.feed(_operation(SHERIFF, 32.7162, -117.1605, "2025-10-05T07:00:00Z", "2025-10-05T09:00:00Z", "OP-B"))
    return alert


class Lifecycle:
    def __init__(self) -> None:
        self.stage, self.store = AlertLifecycleStage(), MemoryPartitionStore()
        self.audited: list[AuditEvent] = []
        self.writes = 0  # state changes made so far

    def feed(self, value, topic: str | None = None) -> list[DeconflictionAlert]:
        """The alert states the input produced (their audit records are kept in ``audited``). An action arrives on
        the control topic of the agency it names unless ``topic`` (a physical name, prefixed) says otherwise."""
        if topic is None:
            topic = f"t.alerts.control.{value.agency_ori}" if isinstance(value, AlertAction) else "t.alerts.raised"
        state = State(self.store)
        # The hub takes each record in at the time it names (an action's timestamp is its agency's: it counts for
        # nothing, so the tests give it the time the action names too).
        at = value.at if isinstance(value, AlertAction | ClockTick) else value.updated_at
        outputs = self.stage.process(Message(topic, 0, 0, None, value, int(at.timestamp() * 1000)), state)
        writes = state.take_writes()
        self.writes += len(writes)
        self.store.apply(writes, None)
        self.audited += [o.value for o in outputs if isinstance(o.value, AuditEvent)]
        return [o.value for o in outputs if isinstance(o.value, DeconflictionAlert)]

    def refused(self, value, topic: str | None = None) -> AuditEvent:
        """Feed an action that must be refused: no alert state, no state change, one FAILURE audit record."""
        writes, audited = self.writes, len(self.audited)
        assert self.feed(value, topic) == []
        assert self.writes == writes, "a refused action changes no state"
        [record] = self.audited[audited:]
        assert (record.event_type, record.outcome) == (AuditEventType.ALERT_STATUS_CHANGED, AuditOutcome.FAILURE)
        return record


def _action(alert, kind, ori, at):
    return AlertAction(alert_id=alert.alert_id, action=kind, agency_ori=ori, actor="Sgt. Ramos", at=at)


def test_alert_is_acknowledged_then_resolved_by_a_party():
    alert, life = _raised_alert(), Lifecycle()
    [opened] = life.feed(alert)
    assert opened.status == AlertStatus.OPEN
    [acked] = life.feed(_action(alert, "ACKNOWLEDGE", "CA0370000", alert.raised_at))
    assert acked.status == AlertStatus.ACKNOWLEDGED and "Sgt. Ramos" in acked.explanation
    [resolved] = life.feed(_action(alert, "RESOLVE", "CAHSI0100", alert.raised_at))
    assert resolved.status == AlertStatus.RESOLVED
    # the principal is the agency whose topic the action came from; the officer's name is only in the detail
    assert [(a.event_type, a.principal, a.subject_ids[0], a.detail) for a in life.audited] == [
        (AuditEventType.ALERT_STATUS_CHANGED, "hub", alert.alert_id, f"EVENT alert {alert.alert_id} is now OPEN"),
        (AuditEventType.ALERT_STATUS_CHANGED, "agency-ca0370000", alert.alert_id,
         f"EVENT alert {alert.alert_id} is now ACKNOWLEDGED (by Sgt. Ramos)"),
        (AuditEventType.ALERT_STATUS_CHANGED, "agency-cahsi0100", alert.alert_id,
         f"EVENT alert {alert.alert_id} is now RESOLVED (by Sgt. Ramos)")]
    again = life.refused(_action(alert, "ACKNOWLEDGE", "CAHSI0100", alert.raised_at))
    assert again.principal == "agency-cahsi0100" and again.detail.endswith("refused: the alert is RESOLVED")


def test_only_parties_may_act_and_unknown_alerts_are_refused():
    alert, life = _raised_alert(), Lifecycle()
    life.feed(alert)
    outsider = life.refused(_action(alert, "ACKNOWLEDGE", "TXDPS0000", alert.raised_at))
    assert outsider.principal == "agency-txdps0000" and "TXDPS0000 is not a party" in outsider.detail
    assert "Sgt. Ramos" in outsider.detail and outsider.subject_ids == [alert.alert_id]
    unknown = life.refused(_action(alert.model_copy(update={"alert_id": "missing"}), "RESOLVE", "CAHSI0100",
                                   alert.raised_at))
    assert unknown.principal == "agency-cahsi0100" and "no such alert" in unknown.detail
    [still] = life.feed(_action(alert, "ACKNOWLEDGE", "CAHSI0100", alert.raised_at))
    assert still.status == AlertStatus.ACKNOWLEDGED, "the refusals left the alert as it was"


def test_the_topic_not_the_action_says_which_agency_acted():
    """alerts.control.<ORI> is writable only by agency-<ORI>: an action naming another agency is refused, even
    when that agency is a party, and the refusal is attributed to the topic's agency."""
    alert, life = _raised_alert(), Lifecycle()
    life.feed(alert)
    impersonated = _action(alert, "RESOLVE", "CAHSI0100", alert.raised_at)
    for writer in ("CA0370000", "TXDPS0000"):  # the other party, and an outsider
        record = life.refused(impersonated, topic=f"t.alerts.control.{writer}")
        assert record.principal == f"agency-{writer.lower()}"
        assert f"names agency CAHSI0100 but was written by agency-{writer.lower()}" in record.detail
    late = _action(alert, "ACKNOWLEDGE", "TXDPS0000", alert.raised_at + timedelta(days=2))
    life.refused(late)  # its time does not escalate the (urgent, unacknowledged) alert either
    [acked] = life.feed(_action(alert, "ACKNOWLEDGE", "CAHSI0100", alert.raised_at))
    assert acked.status == AlertStatus.ACKNOWLEDGED
    with pytest.raises(StageError, match="not on an agency's alerts.control"):
        life.feed(impersonated, topic="t.alerts.raised")


def test_unacknowledged_urgent_alert_escalates_when_the_hub_clock_passes_its_deadline():
    alert, life = _raised_alert(), Lifecycle()
    life.feed(alert)
    later_alert = _raised_alert().model_copy(update={
        "alert_id": "another", "raised_at": alert.raised_at + timedelta(minutes=20),
        "updated_at": alert.raised_at + timedelta(minutes=20)})
    escalated, opened = life.feed(later_alert)  # the hub's clock passes the 15-minute deadline
    assert escalated.alert_id == alert.alert_id and escalated.status == AlertStatus.ESCALATED
    assert opened.alert_id == "another" and opened.status == AlertStatus.OPEN
    [acked] = life.feed(_action(alert, "ACKNOWLEDGE", "CAHSI0100", later_alert.raised_at))
    assert acked.status == AlertStatus.ACKNOWLEDGED


def _tick(at):
    return ClockTick(at=at, source="test/clock")


def test_a_clock_tick_escalates_an_urgent_alert_with_no_other_traffic():
    """The deadline runs from when the hub took the alert in (its record's timestamp), on the ticks' clock: a tick
    just before it changes nothing, the first one after it escalates, stamped with the deadline; later ticks and
    a late action's time escalate nothing again."""
    alert, life = _raised_alert(), Lifecycle()
    life.feed(alert)
    deadline = alert.updated_at + timedelta(minutes=15)
    assert life.feed(_tick(deadline - timedelta(seconds=1))) == []
    [escalated] = life.feed(_tick(deadline + timedelta(seconds=1)))
    assert escalated.status == AlertStatus.ESCALATED and escalated.updated_at == deadline
    assert life.feed(_tick(deadline + timedelta(minutes=5))) == []
    [acked] = life.feed(_action(alert, "ACKNOWLEDGE", "CAHSI0100", deadline + timedelta(minutes=6)))
    assert acked.status == AlertStatus.ACKNOWLEDGED


def test_an_actions_own_time_moves_no_clock():
    """An agency sets its action's timestamp: a year-ahead one must not escalate (or expire) anyone's alerts."""
    alert, life = _raised_alert(), Lifecycle()
    life.feed(alert)
    other = _raised_alert().model_copy(update={"alert_id": "other"})
    life.feed(other)
    far = _action(alert, "ACKNOWLEDGE", "CAHSI0100", alert.raised_at + timedelta(days=365))
    stage_state = State(life.store)
    outputs = life.stage.process(Message("t.alerts.control.CAHSI0100", 0, 0, None, far,
                                         int(far.at.timestamp() * 1000)), stage_state)
    assert [o.value.status for o in outputs if isinstance(o.value, DeconflictionAlert)] == [AlertStatus.ACKNOWLEDGED]
    assert life.stage.event_time(Message("t.alerts.control.CAHSI0100", 0, 0, None, far, 10**13)) == 0.0
