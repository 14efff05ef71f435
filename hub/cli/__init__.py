"""The ``hub`` command: one entry point with a sub-command per job.

Every sub-command module registers itself on :data:`app`; :func:`main` turns any :class:`HubError`
into a short message with what to do next and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from hub.credentials import PRIVATE_UMASK
from hub.exceptions import HubError
from hub.logging import configure_logging
from hub.settings import HubSettings, get_settings

# Piped output (CI logs, `| less`) gets wide tables instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True, soft_wrap=True)


def _env_help() -> str:
    rows = [f"HUB_{name.upper():<22} {field.description}" for name, field in HubSettings.model_fields.items()]
    return "Settings come from environment variables:\n\n\b\n" + "\n".join(rows)


app = typer.Typer(
    name="hub",
    help="Task Force Hub: share counter-drug case and seizure events between agencies over Apache Kafka.\n\n"
    "Quick start: `hub broker start`, then `hub demo`.\n\n" + _env_help(),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _configure() -> None:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)


def _register() -> None:
    from hub.cli import (  # noqa: F401  (each module adds its commands to `app`)
        access, alerts, archive, audit, bench, broker, deadletters, demo, deploy, publish, replay, retention, run,
        sample, schemas, subscribe, taskforces, webconsole,
    )


def main() -> None:
    # Whatever a command writes locally (spools, state stores, broker data, keys, exports) may hold report data
    # or secrets: readable by this user only, also where a library or child process picks its own modes.
    os.umask(PRIVATE_UMASK)
    _register()
    try:
        app()
    except HubError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            err_console.print(f"[yellow]next:[/] {exc.hint}", highlight=False)
        sys.exit(1)
