"""``hub deadletters``: what each stage set aside, and why."""

from __future__ import annotations

from collections import Counter

import typer
from rich.table import Table

from consumers.stages import STAGES
from hub.cli import app, console
from hub.deadletters import dead_letters
from hub.settings import get_settings


@app.command("deadletters")
def deadletters(
    stage: list[str] = typer.Argument(None, help="Stages to show (default: all, in pipeline order)."),
    full: bool = typer.Option(False, "--full", help="Print each whole reason (with what to do next), not its first "
                              "line."),
) -> None:
    """List the records each stage dead-lettered: where each came from (topic/partition/offset), when it came in,
    and why the stage could not take it. The stage went on after each; fix the cause at its source and publish the
    record again."""
    names = stage or list(STAGES)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise typer.BadParameter(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    letters = dead_letters(get_settings(), names)
    if not letters:
        console.print(f"no dead-lettered records ({', '.join(names)})")
        return
    table = Table("input time (UTC)", "stage")
    table.add_column("source (topic/partition/offset)", no_wrap=True)
    table.add_column("reason")
    for letter in letters:
        table.add_row(letter.input_time.strftime("%Y-%m-%d %H:%M:%S"), letter.stage, letter.source,
                      letter.reason if full else letter.summary)
    console.print(table)
    per_stage = Counter(letter.stage for letter in letters)
    console.print(f"{len(letters)} dead-lettered: " + ", ".join(f"{name} {per_stage[name]}" for name in names
                                                               if per_stage[name]), highlight=False)
