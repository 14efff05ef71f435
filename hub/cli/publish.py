"""``hub publish`` and ``hub topics``: put an agency's records on the hub."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hub.cli import app, console, err_console
from hub.settings import get_settings
from hub.topics import ensure_topics, hub_topics
from consumers.registry import DEFAULT_REGISTRY
from producers.directory import DEFAULT_DIRECTORY, agency as find_agency, load_agencies
from producers.publisher import PublishReport, Publisher
from producers.readers import Accepted, Rejected, read_events
from schemas.exceptions import RecordInvalidError
from schemas.models import CaseEvent
from schemas.topics import ALERT_CONTROL, INGEST, INGESTED

EXIT_REJECTED = 2
EXIT_SPOOLED = 3
MAX_PRINTED_REJECTS = 20

AgenciesOption = typer.Option(DEFAULT_DIRECTORY, "--agencies", help="Agency directory (YAML).")

topics_app = typer.Typer(help="The hub's topics, as declared in schemas/topics.py.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@topics_app.command("init")
def topics_init(
    agency: Optional[list[str]] = typer.Option(None, "--agency", help="Only this agency's ingest and alert "
                                               "control topics (repeatable)."),
    agencies: Path = AgenciesOption,
    registry: Path = typer.Option(DEFAULT_REGISTRY, "--registry", help="Task-force registry: one feed topic per unit."),
) -> None:
    """Create missing topics and verify existing ones (exit 1 when a topic drifted from its declaration).

    Without --agency: every agency's ingest topic, the processing stages' topics and every task force's feed."""
    from consumers.registry import load_registry
    from consumers.stages import STAGES

    settings = get_settings()
    if agency:
        wanted = [(spec.name(settings.topic_prefix, ori=ori), spec) for ori in agency
                  for spec in (INGEST, INGESTED, ALERT_CONTROL)]
    else:
        units = sorted(unit.unit_id for unit in load_registry(registry).task_forces)
        wanted = hub_topics(settings.topic_prefix, sorted(load_agencies(agencies)), sorted(STAGES), units)
    statuses = ensure_topics(wanted, settings)
    table = Table("topic", "state", "details")
    colour = {"created": "green", "ok": "dim", "drift": "red"}
    for s in statuses:
        table.add_row(s.name, f"[{colour[s.action]}]{s.action}[/]", s.details)
    console.print(table)
    if any(s.action == "drift" for s in statuses):
        err_console.print("Some topics differ from schemas/topics.py; fix them by hand (partitions cannot shrink).")
        raise typer.Exit(1)


def _count_lines(name: str) -> int | None:
    """Line breaks in the file, counted in chunks (a file may be one huge line)."""
    if name == "-":
        return None
    with open(name, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


@app.command("publish")
def publish(
    files: Optional[list[str]] = typer.Argument(None, help="JSON Lines (.jsonl) or CSV (.csv) files; '-' reads stdin."),
    agency: str = typer.Option(..., "--agency", help="ORI of the publishing agency; every record must be its own."),
    fmt: str = typer.Option("auto", "--format", help="auto (by file name), jsonl or csv."),
    rejects: Path = typer.Option(Path("hub-rejects.jsonl"), "--rejects",
                                 help="Where rejected records go, one JSON object each with file, line and problems."),
    all_or_nothing: bool = typer.Option(False, "--all-or-nothing", help="Publish nothing if any record is invalid."),
    drain: bool = typer.Option(False, "--drain", help="First send what an earlier run left in the spool."),
    batch_size: int = typer.Option(2000, "--batch-size", help="Records per spool-and-send batch."),
    delivery_timeout: float = typer.Option(30.0, "--delivery-timeout",
                                           help="Seconds without broker confirmation before spooling the rest."),
    agencies: Path = AgenciesOption,
) -> None:
    """Validate, spool and publish an agency's records to its ingest topic.

    Each line is read on its own: one that is not UTF-8, not valid JSON or CSV, longer than 1 MiB, ambiguous
    (a key given twice) or outside the contract's bounds (schemas/limits.py: sizes, ranges, dates within 30 years
    of now) is rejected as file:line: field: reason, and every other record is published.

    Every accepted record is written to a local spool (HUB_RUNTIME_DIR/spool) before it is sent and leaves it
    only when the broker confirms it, so nothing accepted is lost. If the broker is unreachable, records stay
    spooled: run `hub publish --agency ORI --drain` when it is back; records that reached the broker before
    it went away are recognised and not sent twice.

    Exit status: 0 all published; 1 error; 2 some records rejected (see --rejects); 3 some accepted records
    are still spooled.
    """
    if fmt not in ("auto", "jsonl", "csv"):
        raise typer.BadParameter("must be auto, jsonl or csv", param_hint="--format")
    if not files and not drain:
        raise typer.BadParameter("give FILE arguments, or --drain", param_hint="FILES")
    publisher_agency = find_agency(agency, agencies)
    rejected: list[Rejected] = []
    with ExitStack() as stack:
        publisher = stack.enter_context(Publisher(agency, batch_size=batch_size,
                                                               delivery_timeout_s=delivery_timeout))
        if drain:
            report = publisher.drain()
            console.print(f"drained the spool: {report.published} sent, {report.recovered} were already on the broker")
        elif publisher.spool.count():
            err_console.print(f"note: {publisher.spool.count()} record(s) from an earlier run are in the spool; "
                              f"`hub publish --agency {agency} --drain` sends them")
        rejects_out = None
        held_back: list[CaseEvent] = []  # --all-or-nothing: published only once every file proved valid
        progress = stack.enter_context(Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=err_console, transient=True, disable=not err_console.is_terminal))
        for name in files or []:
            task = progress.add_task(f"publishing {name}", total=_count_lines(name))
            for item in read_events(name, publisher_agency, fmt):  # type: ignore[arg-type]
                progress.advance(task)
                if isinstance(item, Accepted):
                    try:  # publishing checks what a file cannot: the encoded size, the clock
                        if all_or_nothing:
                            publisher.prepare(item.event)
                            held_back.append(item.event)
                        else:
                            publisher.publish(item.event)
                        continue
                    except RecordInvalidError as exc:
                        item = item.rejected(exc.problems)
                rejected.append(item)
                if rejects_out is None:
                    rejects_out = stack.enter_context(open(rejects, "w"))
                rejects_out.write(item.as_json() + "\n")
                for line in item.lines() if len(rejected) <= MAX_PRINTED_REJECTS else []:
                    err_console.print(f"[red]rejected[/] {escape(line)}", highlight=False)
        if not rejected:
            for event in held_back:
                publisher.publish(event)
        report = publisher.flush()
    _print_summary(report, rejected, rejects, all_or_nothing)
    if rejected:
        raise typer.Exit(EXIT_REJECTED)
    if report.spooled:
        raise typer.Exit(EXIT_SPOOLED)


def _print_summary(report: PublishReport, rejected: list[Rejected], rejects: Path, all_or_nothing: bool) -> None:
    if len(rejected) > MAX_PRINTED_REJECTS:
        err_console.print(f"... and {len(rejected) - MAX_PRINTED_REJECTS} more rejected records")
    table = Table("published", "already on broker", "rejected", "spooled", "seconds", "events/s")
    table.add_row(str(report.published), str(report.recovered), str(len(rejected)), str(report.spooled),
                  f"{report.seconds:.1f}", f"{report.rate:,.0f}")
    console.print(table)
    if rejected:
        console.print(f"rejected records are in {rejects}" + (" (nothing was published: --all-or-nothing)"
                                                              if all_or_nothing else ""))
    if report.spooled:
        console.print(f"[yellow]{report.spooled} accepted record(s) wait in the spool[/] ({report.offline_reason}); "
                      "run `hub publish --agency ORI --drain` when the broker is back")
