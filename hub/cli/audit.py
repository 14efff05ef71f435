"""``hub audit``: verify the tamper-evident audit chain and ask it who received what, when and why."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from itertools import groupby
from typing import Optional

import typer
from rich.table import Table

from consumers.audit import verify_chain
from hub.cli import app, console
from hub.kafka import read_topic
from hub.settings import get_settings
from schemas.codec import Codec
from schemas.models import AuditSeal, RoutingDecision, ShareForm
from schemas.topics import AUDIT_CHAIN

audit_app = typer.Typer(help="The audit log (audit.chain): verify its hash chains, query disseminations.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _sealed_decisions() -> Iterator[tuple[AuditSeal, RoutingDecision]]:
    """Routing decisions as sealed into the chain (the record of what was actually sent)."""
    settings = get_settings()
    codec = Codec()
    for record in read_topic(settings.topic(AUDIT_CHAIN.pattern), settings):
        item = codec.decode(record.value)
        audited = codec.decode(item.record)
        if isinstance(audited, RoutingDecision):
            yield item, audited


@audit_app.command("verify")
def verify() -> None:
    """Recompute every partition's hash chain from its first record; exit 1 and name the partition and offset
    of the first break (an altered, removed, reordered or forged record)."""
    settings = get_settings()
    codec = Codec()
    records = read_topic(settings.topic(AUDIT_CHAIN.pattern), settings)
    table = Table("partition", "sealed records", "head", "state")
    broken = []
    for partition, group in groupby(records, key=lambda r: r.partition):
        report = verify_chain(partition, ((r.offset, r.value) for r in group), codec)
        state = "ok" if report.broken is None else f"[red]broken at offset {report.broken.offset}[/]"
        table.add_row(str(partition), f"{report.records:,}", report.head[:16], state)
        if report.broken is not None:
            broken.append(report.broken)
    console.print(table)
    for chain_break in broken:
        console.print(f"[red]partition {chain_break.partition}, offset {chain_break.offset}: {chain_break.reason}[/]")
    if broken:
        raise typer.Exit(1)
    console.print(f"{len(records):,} audit records, every chain intact")


@audit_app.command("who-saw")
def who_saw(
    event_id: str = typer.Argument(..., help="A report's event id, or a canonical id / alert id."),
    withheld: bool = typer.Option(False, "--withheld", help="Also list the units it was withheld from, and why."),
) -> None:
    """Every task force that received the record: when, in what form, under which rule and registry version."""
    table = Table("unit", "form", "rule", "record", "revision", "event time", "recorded", "registry", "reason")
    for sealed, decision in _sealed_decisions():
        if event_id not in decision.event_ids and event_id != decision.record_id:
            continue
        if decision.form == ShareForm.WITHHELD and not withheld:
            continue
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
    low = since.astimezone(timezone.utc) if since else datetime.min.replace(tzinfo=timezone.utc)
    high = until.astimezone(timezone.utc) if until else datetime.max.replace(tzinfo=timezone.utc)
    table = Table("recorded", "form", "rule", "kind", "record", "revision", "owners")
    count = 0
    for sealed, decision in _sealed_decisions():
        if decision.unit_id != task_force or decision.form == ShareForm.WITHHELD:
            continue
        if not low <= sealed.recorded_at < high:
            continue
        count += 1
        table.add_row(f"{sealed.recorded_at:%Y-%m-%d %H:%M:%S}", decision.form, decision.rule, decision.record_kind,
                      decision.record_id[:8], decision.revision, " ".join(decision.owner_oris))
    console.print(table)
    console.print(f"{count:,} record(s) received by {task_force}")
