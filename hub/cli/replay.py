"""``hub replay``: re-run a period of ingest history in an isolated namespace and compare it with the audit log."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consumers.registry import load_registry
from consumers.replay import REPLAYED_STAGES, Replay
from hub.auditing import audit_event, principal_of, write_audit
from hub.cli import app, console
from hub.settings import get_settings
from producers.directory import load_agencies
from schemas.models import AuditEventType, AuditOutcome

DIFFERENCES_SHOWN = 50


@app.command("replay")
def replay(
    since: Optional[datetime] = typer.Option(None, "--from", help="Reports the hub took in (intake's time) at or after "
                                             "this time (ISO 8601; default: the beginning)."),
    until: Optional[datetime] = typer.Option(None, "--to", help="...and before this time (default: now)."),
    agency: list[str] = typer.Option([], "--agency", help="Replay only this agency's reports (ORI; repeatable)."),
    task_force: list[str] = typer.Option([], "--task-force", help="Compare only this unit's deliveries (repeatable)."),
    registry: Optional[Path] = typer.Option(None, "--registry", exists=True, dir_okay=False,
                                            help="Route under this registry file instead of the one in effect "
                                                 "(what-if: which deliveries would change)."),
    compare: bool = typer.Option(False, "--compare", help="Compare the replayed decisions and feed items with the "
                                 "audit log and the live feeds; exit 1 on any difference."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Name of the isolated namespace (topics "
                                            "prefixed replay.NAME.); default: the current time."),
    why: bool = typer.Option(False, "--why", help="Show each difference's reasons (live and replayed)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the replay's topics (inspect them with "
                              "HUB_TOPIC_PREFIX=replay.NAME. hub subscribe ...); default: delete them afterwards."),
) -> None:
    """Re-read the ingest history up to --to (offsets for times), re-run dedup, correlate, deconflict, alerts and
    route on it in an isolated namespace (its own topics, consumer groups and state: nothing live is read as
    state or written), and with --compare report every difference between the decisions about records of the
    period [--from, --to) and what was actually disseminated (the audit log and the live feeds).

    History before --from is re-run too, to rebuild the state the period's decisions depended on, but not
    compared. With --agency, records that also hold other agencies' reports are counted as "boundary" and not
    compared. A registry change since the period (or --registry FILE) shows up as named differences: unit,
    record, revision, live form and rule, replayed form and rule."""
    settings = get_settings()
    start = (since or datetime(1970, 1, 1)).astimezone(timezone.utc)
    end = (until or datetime.now(timezone.utc)).astimezone(timezone.utc)
    name = namespace or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    proposed = load_registry(registry, agencies=load_agencies()) if registry else None
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bars:
        tasks = {step: bars.add_task(step, total=None, start=False) for step in ("copy", *REPLAYED_STAGES)}

        def progress(step: str, done: int, total: int | None) -> None:
            bars.start_task(tasks[step])
            bars.update(tasks[step], completed=done, total=total if total is not None else done)

        job = Replay(settings, name, start, end, agencies=agency, registry=proposed, progress=progress)
        result = job.run()
    console.print(f"replayed {result.replayed_events:,} ingest records ({result.period_events:,} in the period "
                  f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC) into namespace {job.isolated.topic_prefix} "
                  f"under registry version {result.registry_version} in "
                  f"{result.seconds:.1f} s ({result.events_per_s:,.0f} events/s; "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items()) + ")", highlight=False)
    differences = 0
    if compare:
        comparison = job.compare(set(task_force) or None)
        differences = len(comparison.differences)
        console.print(f"compared {comparison.live_decisions:,} live and {comparison.replayed_decisions:,} replayed "
                      f"dissemination decisions and {comparison.feed_items:,} feed items "
                      f"({comparison.boundary_decisions:,} boundary decisions involve reports not replayed; "
                      f"{comparison.purged_decisions:,} live decisions concern reports purged since)",
                      highlight=False)
        if differences:
            table = Table("difference", "unit", "record", "revision", "live", "replay",
                          *(("live reason", "replayed reason") if why else ()))
            for difference in comparison.differences[:DIFFERENCES_SHOWN]:
                reasons = (difference.live_reason, difference.replayed_reason) if why else ()
                table.add_row(difference.kind, difference.unit_id, difference.record_id, difference.revision,
                              difference.live, difference.replayed, *reasons)
            console.print(table)
            if differences > DIFFERENCES_SHOWN:
                console.print(f"... and {differences - DIFFERENCES_SHOWN:,} more")
        console.print(f"{differences:,} differences ({comparison.delivery_changes:,} in what was delivered, "
                      f"{differences - comparison.delivery_changes:,} only in the reason)",
                      style="red" if differences else "green")
    write_audit([audit_event("hub replay", AuditEventType.REPLAY_RUN, principal_of(settings),
                             f"replayed {result.replayed_events} ingest records up to {end.isoformat()} (period from "
                             f"{start.isoformat()}, agencies {', '.join(agency) or 'all'}) under registry version "
                             f"{result.registry_version} into {job.isolated.topic_prefix}"
                             + (f"; {differences} differences from the audit log" if compare else ""),
                             outcome=AuditOutcome.FAILURE if differences else AuditOutcome.SUCCESS)], settings)
    if keep:
        console.print(f"kept: HUB_TOPIC_PREFIX={job.isolated.topic_prefix} hub subscribe --task-force ID "
                      "--from-beginning", highlight=False)
    else:
        job.remove()
    if differences:
        raise typer.Exit(1)
