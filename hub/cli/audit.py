"""``hub audit``: verify the tamper-evident audit chain and ask it who received what, when and why."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from consumers.audit import ChainReport
from hub import audit_queries
from hub.checkpoints import public_key_path, publish_checkpoint, write_checkpoint
from hub.cli import app, console
from hub.settings import get_settings
from schemas.topics import AUDIT_CHAIN, AUDIT_CHECKPOINTS

audit_app = typer.Typer(help="The audit log (audit.chain): verify its hash chains, query disseminations.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


COMPONENT = "hub audit"


def _verify_chains(from_checkpoint: Path | None, public_key: Path | None) -> list[ChainReport]:
    """Verify every partition's chain (from the checkpoint's heads when given), print the table and the breaks."""
    check = audit_queries.verify_chains(get_settings(), COMPONENT, from_checkpoint, public_key)
    table = Table("partition", "from", "sealed records verified", "head", "state")
    for report in check.reports:
        origin = f"checkpoint @{check.from_checkpoint[report.partition]}" \
            if report.partition in check.from_checkpoint else "start"
        state = "ok" if report.broken is None else f"[red]broken at offset {report.broken.offset}[/]"
        table.add_row(str(report.partition), origin, f"{report.records:,}", report.head[:16], state)
    console.print(table)
    for report in check.reports:
        if report.broken is not None:
            console.print(f"[red]partition {report.broken.partition}, offset {report.broken.offset}: "
                          f"{report.broken.reason}[/]")
    return check.reports


@audit_app.command("verify")
def verify(
    from_checkpoint: Optional[Path] = typer.Option(None, "--from-checkpoint", exists=True, dir_okay=False,
                                                   help="Start from a signed checkpoint (`hub audit checkpoint`)."),
    public_key: Optional[Path] = typer.Option(None, "--public-key", exists=True, dir_okay=False,
                                              help="The key that signed the checkpoint (default: this hub's)."),
) -> None:
    """Recompute every partition's hash chain from its first record, or from a signed checkpoint (after checking
    its signature and that the seals it signed are unchanged); exit 1 and name the partition and offset of the
    first break (an altered, removed, reordered or forged record)."""
    reports = _verify_chains(from_checkpoint, public_key)
    if any(r.broken for r in reports):
        raise typer.Exit(1)
    console.print(f"{sum(r.records for r in reports):,} audit records verified, every chain intact")


@audit_app.command("checkpoint")
def checkpoint(
    from_checkpoint: Optional[Path] = typer.Option(None, "--from-checkpoint", exists=True, dir_okay=False,
                                                   help="Verify only what came after this earlier checkpoint."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write it (default: "
                                       "<runtime dir>/audit/checkpoints/checkpoint-TIME.json)."),
) -> None:
    """Verify every chain, then write a checkpoint of their heads signed with the hub's Ed25519 key (created on
    first use; the public key is next to it). Later verifications can start there. Exit 1 if a chain is broken
    (no checkpoint is written)."""
    settings = get_settings()
    reports = _verify_chains(from_checkpoint, None)
    if any(r.broken for r in reports):
        raise typer.Exit(1)
    heads = [r.last for r in reports if r.last is not None]
    path = write_checkpoint(heads, settings.topic(AUDIT_CHAIN.pattern), settings, out)
    publish_checkpoint(path, settings)
    console.print(f"checkpoint of {len(heads)} chains written to {path} and published on "
                  f"{settings.topic(AUDIT_CHECKPOINTS.pattern)} (public key: {public_key_path(settings)})",
                  highlight=False)


@audit_app.command("who-saw")
def who_saw(
    event_id: str = typer.Argument(..., help="A report's event id, or a canonical id / alert id."),
    withheld: bool = typer.Option(False, "--withheld", help="Also list the units it was withheld from, and why."),
) -> None:
    """Every task force that received the record: when, in what form, under which rule and registry version."""
    table = Table("unit", "form", "rule", "record", "revision", "event time", "recorded", "registry", "reason")
    for sealed, decision in audit_queries.who_saw(get_settings(), event_id, COMPONENT, withheld=withheld):
        table.add_row(decision.unit_id, decision.form, decision.rule, decision.record_id[:8], decision.revision,
                      f"{decision.decided_at:%Y-%m-%d %H:%M}", f"{sealed.recorded_at:%Y-%m-%d %H:%M:%S}",
                      f"v{decision.registry_version}", decision.reason)
    console.print(table)


@audit_app.command("received")
def received(
    task_force: str = typer.Option(..., "--task-force", help="Unit id, e.g. best-san-diego."),
    since: Optional[datetime] = typer.Option(None, "--from", help="Recorded at or after (ISO 8601)."),
    until: Optional[datetime] = typer.Option(None, "--to", help="Recorded before (ISO 8601)."),
) -> None:
    """What a unit received (full or pointer) in a period, by the time it was recorded in the audit log."""
    table = Table("recorded", "form", "rule", "kind", "record", "revision", "owners")
    count = 0
    for sealed, decision in audit_queries.received(get_settings(), task_force, COMPONENT, since, until):
        count += 1
        table.add_row(f"{sealed.recorded_at:%Y-%m-%d %H:%M:%S}", decision.form, decision.rule, decision.record_kind,
                      decision.record_id[:8], decision.revision, " ".join(decision.owner_oris))
    console.print(table)
    console.print(f"{count:,} record(s) received by {task_force}")


@audit_app.command("releases")
def releases(
    agency: str = typer.Option(..., "--agency", help="The owning agency's ORI."),
    since: Optional[datetime] = typer.Option(None, "--from", help="Recorded at or after (ISO 8601)."),
    until: Optional[datetime] = typer.Option(None, "--to", help="Recorded before (ISO 8601)."),
) -> None:
    """The owner's view (28 CFR 23.20(g)): every release of the agency's records outside it, to which unit, when,
    in what form and under which rule."""
    table = Table("recorded", "unit", "form", "rule", "kind", "record", "revision", "reason")
    count = 0
    for sealed, decision in audit_queries.releases(get_settings(), agency, COMPONENT, since, until):
        count += 1
        table.add_row(f"{sealed.recorded_at:%Y-%m-%d %H:%M:%S}", decision.unit_id, decision.form, decision.rule,
                      decision.record_kind, decision.record_id[:8], decision.revision, decision.reason)
    console.print(table)
    console.print(f"{count:,} release(s) of {agency}'s records")
