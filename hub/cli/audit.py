"""``hub audit``: verify the tamper-evident audit chain and ask it who received what, when and why."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from consumers.audit import ChainReport, verify_chain
from hub.auditing import record_query
from hub.checkpoints import public_key_path, read_checkpoint, write_checkpoint
from hub.cli import app, console
from hub.kafka import read_topic
from hub.settings import get_settings
from schemas.codec import Codec
from schemas.models import AuditSeal, RoutingDecision, ShareForm, routing_decisions
from schemas.topics import AUDIT_CHAIN

audit_app = typer.Typer(help="The audit log (audit.chain): verify its hash chains, query disseminations.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _audit_access(query: str) -> None:
    """CJIS: any access to the audit log is itself audited, under the connected principal (an auditor-<name> may
    write only audit.queries, which the seal stage chains too); a query that cannot be recorded does not run."""
    record_query("hub audit", query, get_settings())


def _sealed_decisions(query: str) -> Iterator[tuple[AuditSeal, RoutingDecision]]:
    """Routing decisions as sealed into the chain (the record of what was actually sent); the query itself is
    audited first."""
    settings = get_settings()
    _audit_access(query)
    codec = Codec()
    for record in read_topic(settings.topic(AUDIT_CHAIN.pattern), settings):
        item = codec.decode(record.value)
        for decision in routing_decisions(codec.decode(item.record)):
            yield item, decision


def _verify_chains(from_checkpoint: Path | None, public_key: Path | None) -> list[ChainReport]:
    """Verify every partition's chain (from the checkpoint's heads when given), print the table and the breaks."""
    settings = get_settings()
    _audit_access("verify" + (f" --from-checkpoint {from_checkpoint}" if from_checkpoint else ""))
    topic = settings.topic(AUDIT_CHAIN.pattern)
    starts = {h.partition: h for h in read_checkpoint(from_checkpoint, topic, settings, public_key)} \
        if from_checkpoint else {}
    codec = Codec()
    records = read_topic(topic, settings)
    reports = [verify_chain(partition, ((r.offset, r.value) for r in group), codec, starts.get(partition))
               for partition, group in groupby(records, key=lambda r: r.partition)]
    reports += [verify_chain(partition, [], codec, start) for partition, start in starts.items()
                if partition not in {r.partition for r in reports}]
    table = Table("partition", "from", "sealed records verified", "head", "state")
    for report in sorted(reports, key=lambda r: r.partition):
        origin = f"checkpoint @{starts[report.partition].offset}" if report.partition in starts else "start"
        state = "ok" if report.broken is None else f"[red]broken at offset {report.broken.offset}[/]"
        table.add_row(str(report.partition), origin, f"{report.records:,}", report.head[:16], state)
    console.print(table)
    for report in reports:
        if report.broken is not None:
            console.print(f"[red]partition {report.broken.partition}, offset {report.broken.offset}: "
                          f"{report.broken.reason}[/]")
    return reports


def _delivered(query: str, since: datetime | None, until: datetime | None,
               wanted: Callable[[RoutingDecision], bool]) -> Iterator[tuple[AuditSeal, RoutingDecision]]:
    """Records sent (full or pointer) that ``wanted`` selects, sealed in ``[since, until)``."""
    low = since.astimezone(timezone.utc) if since else datetime.min.replace(tzinfo=timezone.utc)
    high = until.astimezone(timezone.utc) if until else datetime.max.replace(tzinfo=timezone.utc)
    for sealed, decision in _sealed_decisions(f"{query} --from {low} --to {high}"):
        if decision.form != ShareForm.WITHHELD and wanted(decision) and low <= sealed.recorded_at < high:
            yield sealed, decision


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
    console.print(f"checkpoint of {len(heads)} chains written to {path} (public key: {public_key_path(settings)})",
                  highlight=False)


@audit_app.command("who-saw")
def who_saw(
    event_id: str = typer.Argument(..., help="A report's event id, or a canonical id / alert id."),
    withheld: bool = typer.Option(False, "--withheld", help="Also list the units it was withheld from, and why."),
) -> None:
    """Every task force that received the record: when, in what form, under which rule and registry version."""
    table = Table("unit", "form", "rule", "record", "revision", "event time", "recorded", "registry", "reason")
    for sealed, decision in _sealed_decisions(f"who-saw {event_id}"):
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
    table = Table("recorded", "form", "rule", "kind", "record", "revision", "owners")
    count = 0
    for sealed, decision in _delivered(f"received --task-force {task_force}", since, until,
                                       lambda d: d.unit_id == task_force):
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
    for sealed, decision in _delivered(f"releases --agency {agency}", since, until,
                                       lambda d: agency in d.owner_oris):
        count += 1
        table.add_row(f"{sealed.recorded_at:%Y-%m-%d %H:%M:%S}", decision.unit_id, decision.form, decision.rule,
                      decision.record_kind, decision.record_id[:8], decision.revision, decision.reason)
    console.print(table)
    console.print(f"{count:,} release(s) of {agency}'s records")
