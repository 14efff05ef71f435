"""``hub access``: SCRAM users and ACLs for the hub service, each publishing agency, task force and auditor."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hub.access import DEFAULT_AUDITORS, apply_access, load_auditors, passwords_file, show_acls
from hub.broker import LocalBroker
from hub.auditing import principal_of, write_audit
from hub.cli import app, console
from hub.credentials import load_passwords
from hub.settings import HubSettings, get_settings
from hub.topics import ensure_topics
from consumers.registry import DEFAULT_REGISTRY, load_registry
from producers.directory import DEFAULT_DIRECTORY, load_agencies
from schemas.topics import AUDIT

access_app = typer.Typer(help="Broker-enforced access: one SCRAM user per agency, task force and auditor, "
                         "least-privilege ACLs (see hub/access.py).", no_args_is_help=True)
app.add_typer(access_app, name="access")


def admin_settings() -> HubSettings:
    """HUB_* settings if they name a user; else the local broker's admin, so a fresh checkout needs no exports."""
    settings = get_settings()
    if settings.sasl_username is None:
        broker = LocalBroker(settings)
        layout = broker.layout
        if layout is not None and layout.auth == "scram":
            return broker.client_settings()
    return settings


@access_app.command("apply")
def apply(
    agencies: Path = typer.Option(DEFAULT_DIRECTORY, "--agencies", help="Agency directory: one principal per ORI."),
    registry: Path = typer.Option(DEFAULT_REGISTRY, "--registry", help="Task-force registry: one principal per unit."),
    auditors: Path = typer.Option(DEFAULT_AUDITORS, "--auditors", help="Auditors: one principal per name."),
    task_forces: list[str] = typer.Option([], "--task-forces", help="Only these unit ids (best-san-diego) instead of "
                                          "the registry's: repeat the option or separate them with commas."),
    show_passwords: bool = typer.Option(False, "--show-passwords", help="Also print every principal's password."),
) -> None:
    """Create missing users and make the ACLs of hub, agency-*, tf-* and auditor-* principals exactly the model's.

    Principals come from the agency directory, the task-force registry and the auditors file: agency-<ORI> may
    write its ingest topic (and read it back) and its alerts.control.<ORI>, tf-<unit> may read only feed.<unit>
    with consumer groups feed.<unit>[.*], auditor-<name> may read audit and audit.chain and write only
    audit.queries, hub does the rest. Every change is audited under the principal that made it."""
    settings = admin_settings()
    units = [unit for value in task_forces for unit in value.split(",") if unit] or \
        sorted(unit.unit_id for unit in load_registry(registry).task_forces)
    names = load_auditors(auditors)
    ensure_topics([(settings.topic(AUDIT.pattern), AUDIT)], settings)  # no change may go unaudited
    report = apply_access(settings, settings.topic_prefix, sorted(load_agencies(agencies)), units, auditors=names)
    write_audit(report.audit_events(principal_of(settings)), settings)
    known = load_passwords(passwords_file(settings)) if show_passwords else {}
    table = Table("principal", "credential", "ACLs", *(["password"] if show_passwords else []))
    for p in report.principals:
        table.add_row(p.principal, p.credential, str(p.rules), *([known.get(p.principal, "?")] if show_passwords else []))
    console.print(table)
    console.print(f"ACLs created: {len(report.created)}, deleted: {len(report.deleted)}; "
                  f"passwords in {passwords_file(settings)}")


@access_app.command("show")
def show() -> None:
    """List every ACL the broker holds."""
    table = Table("principal", "resource", "pattern", "name", "operation", "permission", "host")
    for rule in show_acls(admin_settings()):
        table.add_row(rule.principal, rule.resource_type, rule.pattern, rule.name, rule.operation, rule.permission,
                      rule.host)
    console.print(table)
