"""``hub alerts``: see deconfliction alerts and act on them (acknowledge, resolve)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from hub.access import AGENCY, agency_principal
from hub.alerts import act_on_alert, latest_alerts, read_agency_feed
from hub.cli import app, console
from hub.settings import get_settings
from schemas.models import AlertActionKind

alerts_app = typer.Typer(help="Deconfliction alerts: list them, acknowledge or resolve them.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def list_alerts(agency: Optional[str] = typer.Option(None, "--agency", help="Only alerts this ORI is a party to."),
                status: Optional[str] = typer.Option(None, "--status", help="OPEN, ACKNOWLEDGED, RESOLVED or ESCALATED.")) -> None:
    """Current state of every alert. The hub reads the alerts topic; an agency (connected as agency-<ori>) reads its
    own agency.<ORI> topic, which holds the alerts it is a party to."""
    settings = get_settings()
    user = settings.sasl_username or ""
    if user.startswith(AGENCY):
        agency = agency or user.removeprefix(AGENCY).upper()
        alerts = read_agency_feed(settings, agency).alerts
    else:
        alerts = latest_alerts(settings)
    table = Table("alert", "kind", "status", "urgent", "matched", "parties", "explanation")
    for alert in alerts.values():
        parties = [p.agency.ori for p in alert.parties]
        if (agency and agency not in parties) or (status and alert.status != status.upper()):
            continue
        table.add_row(alert.alert_id, alert.alert_kind, alert.status, "yes" if alert.urgent else "",
                      alert.matched, " / ".join(f"{p.agency.ori} {p.contact.name if p.contact else ''}"
                                               for p in alert.parties), alert.explanation)
    console.print(table)


def _act(kind: AlertActionKind, alert_id: str, agency: str, actor: str, note: str | None) -> None:
    action = act_on_alert(get_settings(), kind, alert_id, agency, actor, note)
    console.print(f"{kind.lower()} sent for alert {alert_id} as {agency_principal(action.agency_ori)}; "
                  "`hub alerts list` shows the new state once the alerts stage has processed it (a refused action "
                  "changes nothing and is recorded in the audit log as a failure, with the reason)")


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
