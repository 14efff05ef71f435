"""``hub taskforces``: the BEST task-force registry (units, areas, clearances, subscriptions)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from consumers.registry import DEFAULT_REGISTRY, Registry
from hub.cli import app, console
from hub.control import applied_revision, apply_registry

taskforces_app = typer.Typer(help="The task-force registry every router reads from the control topic.",
                             no_args_is_help=True)
app.add_typer(taskforces_app, name="taskforces")


@taskforces_app.command("apply")
def apply(
    path: Path = typer.Argument(DEFAULT_REGISTRY, exists=True, dir_okay=False, help="Registry YAML file."),
    by: str = typer.Option(None, "--by", help="Your name, kept in the audit record's detail (the record names the "
                           "authenticated principal: HUB_SASL_USERNAME, else the login name)."),
) -> None:
    """Validate a registry file and put it in effect for every router, without restarting them.

    The file's `version:` must be higher than the applied one unless the content is unchanged (then nothing
    happens). The change is written to the control topic and the audit topic in one transaction.
    Subscriptions are part of the registry: edit them in the file and apply it again.
    """
    result = apply_registry(path, applied_by=by)
    revision = result.revision
    if not result.applied:
        console.print(f"registry version {revision.version} (sha256 {revision.sha256[:12]}) is already in effect; "
                      "nothing to do")
        return
    console.print(f"applied registry version {revision.version} (was {result.previous_version or 'none'}), "
                  f"sha256 {revision.sha256[:12]}, by {revision.applied_by}:")
    for change in revision.changes:
        console.print(f"  - {change}")


@taskforces_app.command("show")
def show() -> None:
    """The registry in effect: each unit, its members, area, clearances and subscriptions."""
    revision = applied_revision()
    if revision is None:
        console.print("no registry applied yet: `hub taskforces apply deploy/taskforces.yaml`")
        raise typer.Exit(1)
    registry = Registry.model_validate(json.loads(revision.document))
    console.print(f"registry version {revision.version}, applied {revision.applied_at:%Y-%m-%d %H:%M} UTC "
                  f"by {revision.applied_by}")
    table = Table("unit", "name", "members", "area", "clearances", "subscriptions")
    for unit in sorted(registry.task_forces, key=lambda u: u.unit_id):
        area = unit.area
        clearances = unit.clearances
        table.add_row(
            unit.unit_id, unit.name, " ".join(sorted(unit.agencies)),
            " ".join(sorted(area.states)) + f" / {len(area.county_fips)} counties / {len(area.ports_of_entry)} ports",
            f"TLP<={clearances.max_tlp} CUI {','.join(sorted(clearances.cui_categories)) or '-'}"
            + (" 28CFR23" if clearances.criminal_intelligence else "")
            + (" foreign" if clearances.foreign_partner else ""),
            "; ".join(s.subscription_id for s in unit.subscriptions))
    console.print(table)
