"""``hub console``: the analysts' console in a browser."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from waitress import serve

from hub.cli import app, console
from hub.console import create_app
from hub.settings import get_settings


@app.command("console")
def console_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; put TLS "
                             "in front of it, sign-in sends a password)."),
    port: int = typer.Option(8400, "--port", help="Port to listen on."),
    checkpoint_key: Optional[Path] = typer.Option(None, "--checkpoint-key", exists=True, dir_okay=False,
                                                  help="The hub's checkpoint public key (PEM): the auditor's page "
                                                  "checks the last published checkpoint's signature with it."),
) -> None:
    """Serve the console until Ctrl-C. Each user signs in with a hub principal and its Kafka password. A task force
    (tf-<unit>) sees its feed (live, filtered by type, drug, port and time, with whom to call for pointers), its
    alerts, and its seizures and planned operations on an offline map of the border states with charts of weights,
    doses and the drug mix. An agency (agency-<ori>) sees the alerts it is a party to, acknowledges or resolves them
    (as `hub alerts ack|resolve` does, audited), and who received each of its records. An auditor (auditor-<name>)
    sees the audit chains verified, the last signed checkpoint, the replays run, who saw a record and an
    agency's releases. The console reads Kafka with the
    signed-in principal's login only: the broker's ACLs decide what it shows. HUB_BOOTSTRAP_SERVERS and
    HUB_SSL_CAFILE name the cluster; no login of the console's own is needed.
    """
    console.print(f"console on http://{host}:{port}/ (Ctrl-C stops it)")
    serve(create_app(get_settings(), checkpoint_key), host=host, port=port, threads=8, ident="task-force-hub")
