"""``hub alerts``: see deconfliction alerts and act on them (acknowledge, resolve)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer
from kafka.errors import AuthorizationError, KafkaTimeoutError
from rich.table import Table

from hub.access import AGENCY, agency_principal
from hub.cli import app, console
from hub.exceptions import AccessError, TopicMissingError
from hub.kafka import make_consumer, make_producer
from hub.settings import get_settings
from hub.vault import hub_codec
from schemas.codec import Codec
from schemas.models import ORI_PATTERN, AlertAction, AlertActionKind, DeconflictionAlert
from schemas.topics import ALERT_CONTROL, ALERTS

alerts_app = typer.Typer(help="Deconfliction alerts: list them, acknowledge or resolve them.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


def _latest_alerts() -> dict[str, DeconflictionAlert]:
    settings = get_settings()
    consumer = make_consumer(settings.topic(ALERTS.pattern), settings=settings, group_id=None,
                             consumer_timeout_ms=3000)
    codec, latest = hub_codec(settings), {}
    for message in consumer:
        alert = codec.decode(message.value)
        latest[alert.alert_id] = alert
    consumer.close()
    return latest


@alerts_app.command("list")
def list_alerts(agency: Optional[str] = typer.Option(None, "--agency", help="Only alerts this ORI is a party to."),
                status: Optional[str] = typer.Option(None, "--status", help="OPEN, ACKNOWLEDGED, RESOLVED or ESCALATED.")) -> None:
    """Current state of every alert (from the alerts topic)."""
    table = Table("alert", "kind", "status", "urgent", "matched", "parties", "explanation")
    for alert in _latest_alerts().values():
        parties = [p.agency.ori for p in alert.parties]
        if (agency and agency not in parties) or (status and alert.status != status.upper()):
            continue
        table.add_row(alert.alert_id, alert.alert_kind, alert.status, "yes" if alert.urgent else "",
                      alert.matched, " / ".join(f"{p.agency.ori} {p.contact.name if p.contact else ''}"
                                               for p in alert.parties), alert.explanation)
    console.print(table)


def _act(kind: AlertActionKind, alert_id: str, agency: str, actor: str, note: str | None) -> None:
    """Write the action to the agency's own control topic: the broker lets only agency-<ORI> write it, which is
    how the alerts stage knows who acted (an action holds no report data, so no hub key is needed)."""
    settings = get_settings()
    if not ORI_PATTERN.match(agency):
        raise typer.BadParameter(f"{agency!r} is not an ORI (9 characters, e.g. CACBP0100)", param_hint="--agency")
    user = settings.sasl_username
    if user and user.startswith(AGENCY) and user != agency_principal(agency):
        raise AccessError(f"connected as {user}, which may act only for its own agency, not {agency}",
                          hint=f"Pass --agency {user.removeprefix(AGENCY).upper()}, or connect as {agency_principal(agency)}.")
    topic = settings.topic(ALERT_CONTROL.name(ori=agency))
    action = AlertAction(alert_id=alert_id, action=kind, agency_ori=agency, actor=actor,
                         at=datetime.now(timezone.utc), note=note)
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
    console.print(f"{kind.lower()} sent for alert {alert_id} as {agency_principal(agency)}; `hub alerts list` shows "
                  "the new state once the alerts stage has processed it (a refused action changes nothing and is "
                  "recorded in the audit log as a failure, with the reason)")


ActorOption = typer.Option(..., "--by", help="Name of the person acting (recorded in the alert).")
AgencyOption = typer.Option(..., "--agency", help="ORI of the acting agency; it must be a party to the alert, and "
                            "the connection must be its principal agency-<ORI> when the broker enforces access.")


@alerts_app.command("ack")
def ack(alert_id: str, agency: str = AgencyOption, by: str = ActorOption,
        note: Optional[str] = typer.Option(None, "--note")) -> None:
    """Acknowledge an alert: your unit has seen it and is in contact with the other party."""
    _act(AlertActionKind.ACKNOWLEDGE, alert_id, agency, by, note)


@alerts_app.command("resolve")
def resolve(alert_id: str, agency: str = AgencyOption, by: str = ActorOption,
            note: Optional[str] = typer.Option(None, "--note")) -> None:
    """Resolve an alert: the conflict is settled (e.g. operations re-timed, cases joined)."""
    _act(AlertActionKind.RESOLVE, alert_id, agency, by, note)
