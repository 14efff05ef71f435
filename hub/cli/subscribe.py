"""``hub subscribe``: read a task force's feed as that task force."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import typer
from rich.table import Table

from consumers.subscriber import Subscriber
from hub.cli import app, console
from schemas.models import FeedItem, ShareForm


def describe(item: FeedItem) -> tuple[str, str, str, str]:
    """(kind, owners, place, summary) of a feed item, as much as its form reveals."""
    if item.pointer is not None:
        pointer = item.pointer
        kind = pointer.event_type or pointer.alert_kind or pointer.record_kind
        owners = " ".join(f"{o.ori} {o.contact.telephone if o.contact else ''}" for o in pointer.owners)
        return str(kind), owners, "-", "a record exists: contact the owner"
    if item.alert is not None:
        alert = item.alert
        return (f"ALERT {alert.alert_kind}", " ".join(p.agency.ori for p in alert.parties), "-",
                f"{alert.status}: {alert.matched}")
    event = item.event
    assert event is not None
    location = event.primary.location
    place = location.port_of_entry or location.county_fips or location.state or "-"
    if event.superseded_by is not None:
        return str(event.event_type), " ".join(event.agencies), place, f"goes on as {event.superseded_by}"
    return str(event.event_type), " ".join(event.agencies), place, event.decision.explanation[:60]


@app.command("subscribe")
def subscribe(
    task_force: str = typer.Option(..., "--task-force", help="Unit id, e.g. best-san-diego (`hub taskforces show`)."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Read the whole feed, not only what is new "
                                        "since this unit's group last committed."),
    since: Optional[datetime] = typer.Option(None, "--since", help="Start at this time (ISO 8601, e.g. 2026-11-01)."),
    follow: bool = typer.Option(False, "--follow", help="Keep waiting for new items (Ctrl-C stops)."),
    output: str = typer.Option("table", "--format", help="table or jsonl (one FeedItem as JSON per line)."),
) -> None:
    """Print a task force's feed: full records and pointers, exactly as the sharing rules let it see them.

    Offsets are committed under the unit's consumer group (feed.<unit>), so the next run continues after
    the last item shown. With broker authentication on, run it with the unit's credentials (HUB_SASL_*).
    """
    if output not in ("table", "jsonl"):
        raise typer.BadParameter("--format must be table or jsonl")
    start = "beginning" if from_beginning else (since.astimezone() if since else "committed")
    table = Table("form", "rule", "kind", "owners / parties", "place", "summary", title=f"feed of {task_force}")
    count = 0
    with Subscriber(task_force, start=start) as subscriber:
        try:
            for item in subscriber.items(follow=follow):
                count += 1
                if output == "jsonl":
                    print(item.model_dump_json())
                    continue
                kind, owners, place, summary = describe(item)
                style = "yellow" if item.form == ShareForm.POINTER else ""
                table.add_row(item.form, item.rule, kind, owners, place, summary, style=style)
        except KeyboardInterrupt:
            pass
    if output == "table":
        console.print(table)
        console.print(f"{count} item(s)")
    for notice in subscriber.notices:
        console.print(f"[red]purge notice[/red] {notice.record_id}: {notice.notice} (reports "
                      f"{', '.join(notice.event_ids)}): delete every copy you hold", highlight=False)
