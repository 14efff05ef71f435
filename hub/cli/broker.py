"""``hub broker``: fetch, start, stop and inspect the local Apache Kafka cluster."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from hub.broker import LOOPBACK, LocalBroker
from hub.cli import app, console
from hub.settings import KAFKA_VERSION, get_settings

broker_app = typer.Typer(
    help=f"Run a local Apache Kafka {KAFKA_VERSION} cluster (KRaft, jars from Maven Central) under the runtime "
    "directory (HUB_RUNTIME_DIR, default .hub/).",
    no_args_is_help=True,
)
app.add_typer(broker_app, name="broker")


def _say(message: str) -> None:
    console.print(f"[dim]·[/] {message}")


@broker_app.command("fetch")
def fetch() -> None:
    """Download the Kafka jars into the runtime directory (done automatically by `start`)."""
    with console.status("resolving Kafka jars") as status:
        LocalBroker().jars.fetch(progress=lambda m: status.update(m))
    console.print(f"Kafka {KAFKA_VERSION} jars ready in {LocalBroker().jars.libs}")


@broker_app.command("start")
def start(
    nodes: int = typer.Option(1, "--nodes", help="1 combined node, or 3 nodes with replication factor 3."),
    port: int = typer.Option(9092, "--port", help="Client port of node 1; node N listens on PORT+N-1, "
                             "its controller on PORT+100+N-1."),
    heap: str = typer.Option("512m", "--heap", help="JVM maximum heap per node."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for the cluster to answer."),
    auth: str = typer.Option(get_settings().broker_auth, "--auth",
                             help="none, or scram: SASL/SCRAM-SHA-512 and ACLs, admin the only super user "
                             "(default HUB_BROKER_AUTH)."),
    tls: bool = typer.Option(get_settings().broker_tls, "--tls/--no-tls",
                             help="TLS on the client listener with a generated CA (default HUB_BROKER_TLS)."),
    host: str = typer.Option(LOOPBACK, "--host",
                             help="Local IPv4 address the client listener binds and advertises (e.g. a bridge's, "
                             "for clients in network namespaces); the TLS certificate names it too. Controllers "
                             "stay on 127.0.0.1."),
) -> None:
    """Start the cluster and wait until it answers; starting a running cluster just reports it."""
    broker = LocalBroker()
    layout = broker.layout
    if broker.running and layout is not None and (layout.auth, layout.tls, layout.host) == (auth, tls, host):
        console.print(f"Kafka is already running at [bold]{broker.bootstrap_servers}[/]")
        return
    began = time.monotonic()
    with console.status("starting Kafka") as status:
        layout = broker.start(nodes=nodes, port=port, heap=heap, timeout=timeout,
                              progress=lambda m: status.update(m), auth=auth, tls=tls,  # type: ignore[arg-type]
                              host=host)
    console.print(f"Kafka is up at [bold]{layout.bootstrap_servers}[/] ({time.monotonic() - began:.1f}s)")
    if layout.secured:
        _print_exports(broker)
    elif layout.bootstrap_servers != get_settings().bootstrap_servers:
        console.print(f"  export HUB_BOOTSTRAP_SERVERS={layout.bootstrap_servers}")


def _print_exports(broker: LocalBroker) -> None:
    """The HUB_* settings that connect as admin (with its password: only the local user can read it anyway)."""
    for key, value in broker.client_overrides().items():
        console.print(f"  export HUB_{key.upper()}={value}", highlight=False, soft_wrap=True)


@broker_app.command("stop")
def stop(
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait after SIGTERM before SIGKILL."),
    wipe: bool = typer.Option(False, "--wipe", help="Also delete the cluster's data, logs and layout."),
) -> None:
    """Stop every node (SIGTERM, then SIGKILL after the timeout); no JVM is left behind."""
    stopped = LocalBroker().stop(timeout=timeout, wipe=wipe, progress=_say)
    console.print(f"stopped {stopped} node(s)" if stopped else "no broker was running")


@broker_app.command("status")
def status() -> None:
    """Print the bootstrap address and the state of each node; exits 1 when any node is down."""
    broker = LocalBroker()
    nodes = broker.status()
    if not nodes:
        console.print("no local broker has been started here (run `hub broker start`)")
        raise typer.Exit(1)
    console.print(f"bootstrap servers: [bold]{broker.bootstrap_servers}[/]")
    layout = broker.layout
    if layout is not None and layout.secured:
        acls = ", ACLs on, super user admin" if layout.auth == "scram" else ""
        console.print(f"security: {layout.client_protocol}{acls}")
        _print_exports(broker)
    table = Table("node", "state", "pid", "broker port", "controller port", "log")
    for n in nodes:
        table.add_row(str(n.node_id), "[green]running[/]" if n.running else "[red]stopped[/]",
                      str(n.pid or "-"), str(n.broker_port), str(n.controller_port), str(n.log_file))
    console.print(table)
    if not all(n.running for n in nodes):
        raise typer.Exit(1)
