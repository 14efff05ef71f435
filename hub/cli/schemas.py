"""``hub schemas``: inspect the contract's versions and check that changes stay compatible."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hub.cli import app, console, err_console
from schemas.compatibility import breaking, check_store
from schemas.store import AVSC_DIR, SchemaStore

schemas_app = typer.Typer(help="The Avro contract in schemas/avsc/vN: versions, fingerprints, compatibility.",
                          no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

DirOption = typer.Option(AVSC_DIR, "--dir", help="Folder holding v1/, v2/, ... (default: the installed contract).")


@schemas_app.command("list")
def list_versions(directory: Path = DirOption) -> None:
    """Show each version with its single-object fingerprint."""
    store = SchemaStore(directory)
    table = Table("version", "top-level type", "fingerprint (CRC-64-AVRO)", "folder")
    for v in store.versions:
        for t in v.types.values():
            table.add_row(f"v{v.version}", t.name.rsplit(".", 1)[-1], t.fingerprint.hex(), str(v.path))
    console.print(table)


@schemas_app.command("check")
def check(directory: Path = DirOption) -> None:
    """Fail (exit 1) when a version cannot read data written with any earlier version.

    Backward compatibility (newer reader, older data) is required. Forward compatibility (older reader,
    newer data) is reported: when it is missing, upgrade consumers before producers.
    """
    store = SchemaStore(directory)
    results = check_store(store)
    table = Table("type", "reader", "writer", "direction", "result", "problems")
    for r in results:
        verdict = "[green]compatible[/]" if r.compatible else (
            "[red]BREAKING[/]" if r.direction == "backward" else "[yellow]consumers first[/]")
        table.add_row(r.type_name.rsplit(".", 1)[-1], f"v{r.reader}", f"v{r.writer}", r.direction, verdict,
                      "\n".join(r.problems))
    if results:
        console.print(table)
    bad = breaking(results)
    if bad:
        for r in bad:
            err_console.print(f"[bold red]{r.type_name}: v{r.reader} cannot read v{r.writer} data:[/] {'; '.join(r.problems)}",
                              highlight=False)
        err_console.print("Give new fields defaults; never remove enum symbols or change a field's type.")
        raise typer.Exit(1)
    console.print(f"{len(store.versions)} schema version(s); every version reads all earlier data.")
