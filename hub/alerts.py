"""Deconfliction alerts as their parties see and act on them: the hub's view of every alert, an agency's own topic
(its alerts and its records' releases), and acknowledging or resolving an alert. ``hub alerts`` and the console's
agency pages both call these.

An agency holds no hub key: it reads what the route stage writes it in the clear on ``agency.<ORI>``, which only its
principal may read, and acts by writing its own ``alerts.control.<ORI>``, which only its principal may write, so the
broker itself binds every action to the authenticated agency (the alerts stage audits it under that principal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from kafka.errors import AuthorizationError, KafkaTimeoutError

from hub.access import AGENCY, agency_principal
from hub.exceptions import AccessError, ConfigError, TopicMissingError
from hub.kafka import make_producer, read_topic
from hub.settings import HubSettings
from hub.vault import hub_codec
from schemas.codec import Codec
from schemas.models import ORI_PATTERN, AlertAction, AlertActionKind, DeconflictionAlert, RoutingDecisions
from schemas.topics import AGENCY_FEED, ALERT_CONTROL, ALERTS


def latest_alerts(settings: HubSettings) -> dict[str, DeconflictionAlert]:
    """Every alert's current state, from the sealed ``alerts`` topic (the hub's principal: it needs the hub key)."""
    codec, latest = hub_codec(settings), {}
    for record in read_topic(settings.topic(ALERTS.pattern), settings):  # keyed by alert: one partition each
        alert = codec.decode(record.value)
        latest[alert.alert_id] = alert
    return latest


@dataclass
class AgencyFeed:
    """What the hub has told one agency: its alerts' current states, and the release record of each revision of its
    records (newest first)."""

    ori: str
    alerts: dict[str, DeconflictionAlert] = field(default_factory=dict)
    releases: list[RoutingDecisions] = field(default_factory=list)

    def released(self, record_id: str) -> list[RoutingDecisions]:
        """The releases of one record, named by canonical id, alert id or one of the agency's own event ids."""
        return [r for r in self.releases if record_id == r.record_id or record_id in r.event_ids]


def read_agency_feed(settings: HubSettings, ori: str) -> AgencyFeed:
    """The agency's own topic as of now, read with ``settings``' login (the agency's, or the hub's)."""
    _check_ori(ori)
    codec, feed = Codec(), AgencyFeed(ori)
    # An alert's states share its key, so one partition holds them in the order they were written.
    for record in read_topic(settings.topic(AGENCY_FEED.name(ori=ori)), settings):
        if record.value is None:  # a purge's tombstone: the alert's reports were destroyed
            feed.alerts.pop(record.key.decode(), None)
            continue
        value = codec.decode(record.value)
        if isinstance(value, DeconflictionAlert):
            feed.alerts[value.alert_id] = value
        elif isinstance(value, RoutingDecisions):
            feed.releases.append(value)
    feed.releases.sort(key=lambda r: r.decided_at, reverse=True)
    return feed


def act_on_alert(settings: HubSettings, kind: AlertActionKind, alert_id: str, agency: str, actor: str,
                 note: str | None = None) -> AlertAction:
    """Write the action to the agency's own control topic and return it. The alerts stage applies it (or refuses
    it, auditing the refusal) within seconds; it holds no report data, so no hub key is needed."""
    _check_ori(agency)
    user = settings.sasl_username
    if user and user.startswith(AGENCY) and user != agency_principal(agency):
        raise AccessError(f"connected as {user}, which may act only for its own agency, not {agency}",
                          hint=f"Act for {user.removeprefix(AGENCY).upper()}, or connect as "
                               f"{agency_principal(agency)}.")
    topic = settings.topic(ALERT_CONTROL.name(ori=agency))
    action = AlertAction(alert_id=alert_id, action=kind, agency_ori=agency, actor=actor,
                         at=datetime.now(timezone.utc), note=note or None)
    producer = make_producer(settings, max_block_ms=15_000)
    try:
        producer.send(topic, key=alert_id.encode(), value=Codec().encode(action)).get(30)
    except AuthorizationError as exc:
        raise AccessError(f"the broker refused {user or 'this client'} writing {topic}",
                          hint=f"Connect as {agency_principal(agency)} (`hub access apply` grants it that topic).") \
            from exc
    except KafkaTimeoutError as exc:
        raise TopicMissingError(f"{topic} did not answer: it does not exist, or the broker is unreachable") from exc
    finally:
        producer.close()
    return action


def _check_ori(ori: str) -> None:
    if not ORI_PATTERN.match(ori):
        raise ConfigError(f"{ori!r} is not an ORI", hint="An ORI is 9 characters, e.g. CACBP0100.")
