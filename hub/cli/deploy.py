"""``hub deploy``: Kubernetes manifests for the hub on a Strimzi-managed Kafka cluster (see hub/manifests.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from consumers.registry import DEFAULT_REGISTRY, load_registry
from hub.access import DEFAULT_AUDITORS, load_auditors
from hub.cli import app, console
from hub.manifests import (
    DEFAULT_BROKERS, DEFAULT_CLUSTER, DEFAULT_IMAGE, DEFAULT_NAMESPACE, DEFAULT_REPLICAS, DEFAULT_STORAGE, KEK_SECRET,
    STRIMZI_KAFKA_VERSION, STRIMZI_VERSION, processes, render as render_manifests, render_files,
)
from hub.settings import get_settings
from producers.directory import DEFAULT_DIRECTORY, load_agencies

deploy_app = typer.Typer(
    help=f"Run the hub on Kubernetes with Strimzi {STRIMZI_VERSION} managing Kafka. The local broker "
    "(`hub broker start`) is for development and tests; production runs on a cluster like this one.",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")


def _replica_counts(values: list[str]) -> dict[str, int]:
    """``STAGE=N`` options, repeated or comma-separated, as a mapping."""
    counts = {}
    for item in (item.strip() for value in values for item in value.split(",")):
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise typer.BadParameter(f"expected STAGE=N, got {item!r}", param_hint="--replicas")
        counts[name.strip()] = int(count)
    return counts


@deploy_app.command("render")
def render(
    out: Path = typer.Option(..., "--out", help="Directory to write the files into (created if missing)."),
    namespace: str = typer.Option(DEFAULT_NAMESPACE, "--namespace", help="Namespace of every resource; Strimzi's "
                                  "cluster operator must watch it."),
    cluster: str = typer.Option(DEFAULT_CLUSTER, "--cluster", help="Name of the Kafka resource (its bootstrap "
                                "service is <cluster>-kafka-bootstrap)."),
    image: str = typer.Option(DEFAULT_IMAGE, "--image", help="Image the stages run, built from the Containerfile."),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="Topic prefix (default: HUB_TOPIC_PREFIX)."),
    brokers: int = typer.Option(DEFAULT_BROKERS, "--brokers", min=1, help="Kafka nodes (controller and broker "
                                "each); topics get min(3, N) replicas."),
    storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="Persistent volume size per Kafka node."),
    kafka_version: str = typer.Option(STRIMZI_KAFKA_VERSION, "--kafka-version", help=f"Kafka version; one Strimzi "
                                      f"{STRIMZI_VERSION} supports."),
    replicas: list[str] = typer.Option([], "--replicas", help=f"STAGE=N instances of a stage or the clock (default "
                                       f"{DEFAULT_REPLICAS} each); repeat the option or separate with commas."),
    agencies: Path = typer.Option(DEFAULT_DIRECTORY, "--agencies", help="Agency directory: topics and a user per ORI."),
    registry: Path = typer.Option(DEFAULT_REGISTRY, "--registry", help="Task-force registry: a feed and a user per "
                                  "unit."),
    auditors: Path = typer.Option(DEFAULT_AUDITORS, "--auditors", help="Auditors: a user per name."),
) -> None:
    """Write the manifests of a production deployment, rendered from the hub's own declarations.

    \b
    kafka.yaml    Strimzi Kafka and KafkaNodePool: KRaft, SASL/SCRAM-SHA-512 over TLS (port 9093), ACLs enforced
    topics.yaml   a KafkaTopic per topic of schemas/topics.py (what `hub topics init` creates elsewhere)
    users.yaml    a KafkaUser per principal with the ACLs of hub/access.py (what `hub access apply` sets elsewhere);
                  Strimzi keeps each password in a Secret named after the user
    stages.yaml   a StatefulSet (and headless Service) per stage and for the clock: `hub run NAME --instance
                  <pod ordinal>`, probes on /healthz and /readyz, Prometheus annotations for /metrics
    Containerfile the image they run: `podman build -f OUT/Containerfile -t IMAGE .` from the repository root

    Apply kafka.yaml, then topics.yaml and users.yaml, then stages.yaml, after creating the KEK secret:
    kubectl create secret generic hub-kek --from-file=kek=<file holding `head -c32 /dev/urandom | base64`>.
    Every hub host needs the same KEK: copy the one your hub hosts already use, if any.

    The local broker (`hub broker start`) is for development and tests, not for this."""
    units = sorted(unit.unit_id for unit in load_registry(registry).task_forces)
    documents = render_manifests(
        sorted(load_agencies(agencies)), units, load_auditors(auditors),
        prefix=get_settings().topic_prefix if prefix is None else prefix, namespace=namespace, cluster=cluster,
        image=image, replicas=_replica_counts(replicas), kafka_version=kafka_version, brokers=brokers, storage=storage)
    out.mkdir(parents=True, exist_ok=True)
    table = Table("file", "contents")
    for name, text in render_files(documents).items():
        (out / name).write_text(text)
        kinds = Counter(document["kind"] for document in documents.get(name, []))
        table.add_row(str(out / name), ", ".join(f"{count} {kind}" for kind, count in kinds.items()) or "image build")
    console.print(table)
    console.print(f"processes: {', '.join(processes())}; before stages.yaml, create the Secret {KEK_SECRET!r} "
                  "(key `kek`) holding the hub's KEK")
