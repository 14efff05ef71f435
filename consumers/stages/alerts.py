"""Alert lifecycle: open, acknowledged, resolved, and escalated when nobody acknowledges in time.

Existing deconfliction systems notify both parties but do not track the conflict to resolution; this
stage does. Actions arrive on each agency's own control topic ``alerts.control.<ORI>`` (``hub alerts
ack|resolve``), co-partitioned with the raised alerts by alert id. Only ``agency-<ORI>`` may write that topic,
so the topic, not the action's content, says which agency acted: an action naming another agency, or from an
agency that is not a party, is refused. A refusal changes nothing (its time escalates nothing either) and is
audited as a FAILURE of that agency's principal.

Deadlines run on the hub's clock, read from the log and never from the system clock, so a replay escalates exactly
the same alerts at the same times. An alert is due its acknowledgement window after the hub took in the report that
raised it (its record's timestamp, which intake stamped and every stage carries), not after the report's own time
(an agency's backlog from last week is news to the other party now). The stream time moves on with the timestamps of alerts and of
the wall-clock ticks ``hub run clock`` writes to ``hub.clock`` every second (HUB_CLOCK_TICK_S), so an urgent conflict
escalates within seconds of its deadline on a night with no other traffic; ``hub replay`` copies the ticks with the
rest of the history. An action's timestamp is its agency's to set, so it moves no clock.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consumers.exceptions import StageError
from consumers.stage import Message, Output, Stage, StageConfig
from consumers.state import State
from hub.access import agency_principal
from hub.auditing import audit_event
from schemas.protection import record_key_ids
from schemas.models import (
    AlertAction, AlertActionKind, AlertStatus, AuditEventType, AuditOutcome, ClockTick, DeconflictionAlert,
)
from schemas.topics import ALERTS, AUDIT, CLOCK

#: Who changes an alert when no person does (raising it, escalating it).
HUB_PRINCIPAL = "hub"

ALLOWED = {
    AlertActionKind.ACKNOWLEDGE: {AlertStatus.OPEN, AlertStatus.ESCALATED},
    AlertActionKind.RESOLVE: {AlertStatus.OPEN, AlertStatus.ESCALATED, AlertStatus.ACKNOWLEDGED},
}
RESULT = {AlertActionKind.ACKNOWLEDGE: AlertStatus.ACKNOWLEDGED, AlertActionKind.RESOLVE: AlertStatus.RESOLVED}
#: The acting agency's ORI, at the end of a (prefixed) control topic's name.
CONTROL_TOPIC = re.compile(r"alerts\.control\.([A-Z0-9]+)$")


class AlertLifecycleConfig(StageConfig):
    """How fast alerts must be acknowledged before they escalate (HUB_ALERTS_*)."""

    model_config = SettingsConfigDict(env_prefix="HUB_ALERTS_")

    urgent_ack_minutes: float = Field(15, gt=0, description="Operations conflicts must be acknowledged this fast.")
    ack_hours: float = Field(24, gt=0, description="Target conflicts must be acknowledged within this.")
    retention_days: int = Field(400, gt=0, description="Days (hub clock) an alert's state is kept after it changed.")


class AlertLifecycleStage(Stage):
    name = "alerts"
    input_pattern = r"alerts\.raised|alerts\.control\.[A-Z0-9]+|" + re.escape(CLOCK.pattern)
    outputs = (ALERTS.pattern, AUDIT.pattern)
    input_types = (DeconflictionAlert, AlertAction, ClockTick)

    def __init__(self, config: AlertLifecycleConfig | None = None) -> None:
        self.config = config or AlertLifecycleConfig.from_env()
        self.retention = timedelta(days=self.config.retention_days)

    def event_time(self, message: Message) -> float:
        """The hub's time of the input: when intake took in the report behind an alert, or a tick's. An action's
        timestamp is its agency's to set: it moves no clock (nor, through the runner's watermark, any expiry)."""
        return 0.0 if isinstance(message.value, AlertAction) else message.timestamp_ms / 1000

    def process(self, message: Message, state: State) -> list[Output]:
        value = message.value
        if isinstance(value, AlertAction):
            refused = self._refusal(value, _acting_ori(message), state)
            if refused is not None:
                return [refused]
        elif not isinstance(value, DeconflictionAlert | ClockTick):
            raise StageError(f"unexpected {type(value).__name__} on the alerts stage's inputs")
        now = self._stream_time(message, state)
        outputs = self._escalate_due(now, state) if not isinstance(value, AlertAction) else []
        if isinstance(value, DeconflictionAlert):
            if state.get("alert", value.alert_id) is None:
                outputs += self._store(value, state, now, principal=HUB_PRINCIPAL)
                # From the alert's own time (the hub took its report in), not the stream time, which live ticks may
                # have moved past it by the time the alert is written, while a replay reads the alert first.
                taken_in = datetime.fromtimestamp(message.timestamp_ms / 1000, tz=timezone.utc)
                deadline = taken_in + (timedelta(minutes=self.config.urgent_ack_minutes) if value.urgent
                                       else timedelta(hours=self.config.ack_hours))
                # Whole seconds, rounded up: the keys sort by deadline, and an alert never escalates early.
                state.put("due", f"{math.ceil(deadline.timestamp()):014d}|{value.alert_id}", value.alert_id,
                          deadline + self.retention, reports=record_key_ids(value))
                outputs += self._escalate_due(now, state)  # already past its deadline (a backlog): escalate now
        elif isinstance(value, AlertAction):
            outputs += self._act(value, state, now)
        return outputs

    def _stream_time(self, message: Message, state: State) -> datetime:
        """The newest hub time this partition has seen (Kafka Streams' stream time): an alert is due once it
        passes the deadline, whatever order upstream instances happened to interleave their writes in."""
        seen = state.get("clock", "stream-time") or 0.0
        now = max(seen, self.event_time(message))
        if now > seen:
            state.put("clock", "stream-time", now)
        return datetime.fromtimestamp(now, tz=timezone.utc)

    def _refusal(self, action: AlertAction, ori: str, state: State) -> Output | None:
        """The audit record refusing an action the agency ``ori`` may not take (None: it may)."""
        stored = state.get("alert", action.alert_id)
        alert = DeconflictionAlert.model_validate(stored) if stored is not None else None
        if action.agency_ori != ori:
            reason = f"it names agency {action.agency_ori} but was written by {agency_principal(ori)}"
        elif alert is None:
            reason = "there is no such alert"
        elif ori not in {p.agency.ori for p in alert.parties}:
            reason = f"{ori} is not a party to the alert"
        elif alert.status not in ALLOWED[action.action]:
            reason = f"the alert is {alert.status}"
        else:
            return None
        record = audit_event(self.name, AuditEventType.ALERT_STATUS_CHANGED, agency_principal(ori),
                             f"{action.action.lower()} of alert {action.alert_id} by {action.actor} refused: {reason}",
                             subject_ids=[action.alert_id], outcome=AuditOutcome.FAILURE, at=action.at,
                             identity=f"refused|{ori}|{action.alert_id}|{action.action}|{action.actor}|"
                                      f"{action.at.isoformat()}")
        return Output(AUDIT.pattern, action.alert_id.encode(), record)

    def _act(self, action: AlertAction, state: State, now: datetime) -> list[Output]:
        """Apply an action :meth:`_refusal` let through (its ORI is the acting topic's)."""
        alert = DeconflictionAlert.model_validate(state.get("alert", action.alert_id))
        note = f": {action.note}" if action.note else ""
        status = RESULT[action.action]
        return self._store(alert.model_copy(update={
            "status": status, "updated_at": action.at,
            "explanation": f"{action.action.lower()}d by {action.actor} ({action.agency_ori}){note}"}), state, now,
            principal=agency_principal(action.agency_ori), by=action.actor, counted_as=status.lower())

    def _escalate_due(self, now: datetime, state: State) -> list[Output]:
        outputs = []
        for key, alert_id in list(state.scan("due")):
            if float(key.split("|", 1)[0]) > now.timestamp():
                break
            state.delete("due", key)
            stored = state.get("alert", alert_id)
            if stored is None:
                continue  # purged: a report it names was destroyed
            alert = DeconflictionAlert.model_validate(stored)
            if alert.status == AlertStatus.OPEN:
                # Stamped with the deadline, not with the input that noticed it: which input comes first after the
                # deadline depends on how upstream instances interleaved their writes, the deadline does not.
                deadline = datetime.fromtimestamp(float(key.split("|", 1)[0]), tz=timezone.utc)
                outputs += self._store(alert.model_copy(update={
                    "status": AlertStatus.ESCALATED, "updated_at": max(deadline, alert.updated_at),
                    "explanation": f"not acknowledged by {deadline.isoformat()}; escalated to both units' "
                                   f"supervisors"}),
                    state, now, principal=HUB_PRINCIPAL, counted_as="escalated-urgent" if alert.urgent else "escalated")
        return outputs

    def _store(self, alert: DeconflictionAlert, state: State, now: datetime, *, principal: str, by: str = "",
               counted_as: str = "") -> list[Output]:
        """The alert's new state, and its audit record (CJIS: who changed it, when, to what); ``by`` is the
        officer's free-text name, kept in the detail next to the authenticated principal. Kept ``retention`` on
        the hub's clock from ``now``."""
        state.put("alert", alert.alert_id, alert.model_dump(mode="json"), now + self.retention,
                  reports=record_key_ids(alert))
        record = audit_event(self.name, AuditEventType.ALERT_STATUS_CHANGED, principal,
                             f"{alert.alert_kind} alert {alert.alert_id} is now {alert.status}"
                             + (f" (by {by})" if by else ""),
                             subject_ids=[alert.alert_id, *(p.event_id for p in alert.parties)], at=alert.updated_at,
                             identity=f"alert|{alert.alert_id}|{alert.status}|{alert.updated_at.isoformat()}")
        return [Output(ALERTS.pattern, alert.alert_id.encode(), alert, counted_as=counted_as),
                Output(AUDIT.pattern, alert.alert_id.encode(), record)]


def _acting_ori(message: Message) -> str:
    """The agency whose control topic an action came from: the only principal allowed to write it."""
    found = CONTROL_TOPIC.search(message.topic)
    if found is None:
        raise StageError(f"an alert action on {message.topic}, not on an agency's alerts.control.<ORI> topic")
    return found.group(1)
