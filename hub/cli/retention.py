"""``hub retention``: 28 CFR 23.20(h) review dates, and purges that reach every copy of a record.

The work is done by ``consumers/retention.py``: see its docstring for what a purge reaches and how.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Optional

import typer
from rich.progress import Progress
from rich.table import Table

from consumers.retention import due_reports, extend_review, purge, review_horizon
from hub.cli import app, console
from hub.exceptions import ConfigError
from hub.settings import get_settings

retention_app = typer.Typer(help="Review-by dates of reports, and purging those past them (crypto-shredding).",
                            no_args_is_help=True)
app.add_typer(retention_app, name="retention")
SHOWN = 20


def _table(due: list[tuple[str, date]], today: date) -> Table:
    table = Table("event id", "review by", "state")
    for event_id, review_by in due[:SHOWN]:
        state = "[red]past: purge[/]" if review_by < today else "due: review"
        table.add_row(event_id, review_by.isoformat(), state)
    return table


@retention_app.command("sweep")
def sweep(
    within: int = typer.Option(30, "--within", min=0, help="Also list reports due for review within this many days."),
    purge_now: bool = typer.Option(False, "--purge", help="Purge every report past its review-by date (default: only "
                               "list them). Needs --authorized-by: nothing is purged without authorization."),
    authorized_by: Optional[str] = typer.Option(None, "--authorized-by", help="The control official authorizing "
                                                "the purge (recorded in the audit log)."),
    reason: str = typer.Option("review-by date passed without re-validation (28 CFR 23.20(h))", "--reason",
                               help="Why, as recorded in the audit log and the vault."),
) -> None:
    """List reports due for review, and with --purge destroy the record keys of those past their review-by date
    so that no copy of them can be read again: not from the feeds, a replay or an archive. Every purge is written
    to the audit log (who authorized it, which report, when) before its key is destroyed."""
    today, horizon = review_horizon(within)
    settings = get_settings()
    due = due_reports(settings, horizon)
    past = [(event_id, review_by) for event_id, review_by in due if review_by < today]
    console.print(f"{len(due):,} reports due for review by {horizon}, {len(past):,} past their review-by date",
                  highlight=False)
    if due:
        console.print(_table(due, today))
        if len(due) > SHOWN:
            console.print(f"... and {len(due) - SHOWN:,} more")
    if not purge_now:
        if past:
            console.print("dry run: nothing purged (add --purge --authorized-by NAME)")
        return
    if not authorized_by:
        raise ConfigError("--purge needs --authorized-by: 28 CFR 23 allows no purge without authorization",
                          hint="Name the control official, e.g. --authorized-by 'J. Smith, HSI SAC San Diego'.")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("destroying record keys", total=len(past))
        result = purge(settings, [event_id for event_id, _ in past], authorized_by=authorized_by, reason=reason,
                       progress=lambda done: progress.update(task, completed=done))
    console.print(f"purged {len(result.purged):,} reports (audited; authorized by {authorized_by}); "
                  f"{result.tombstones:,} feed items withdrawn with a purge notice to "
                  f"{len(result.tombstoned):,} task force(s); "
                  f"{sum(len(ids) for ids in result.withdrawn_alerts.values()):,} alerts withdrawn from "
                  f"{len(result.withdrawn_alerts):,} agencies' own topics", highlight=False)


@retention_app.command("extend")
def extend(
    event_id: str = typer.Argument(..., help="The report whose review was re-validated."),
    to: datetime = typer.Option(..., "--to", help="The new review-by date (at most 5 years from today)."),
    authorized_by: str = typer.Option(..., "--authorized-by", help="Who re-validated it (recorded in the audit log)."),
) -> None:
    """Record that a report was reviewed and still meets the submission criteria: keep it until --to."""
    extend_review(get_settings(), event_id, to.date(), authorized_by=authorized_by)
    console.print(f"{event_id} kept until {to.date()} (audited)", highlight=False)
