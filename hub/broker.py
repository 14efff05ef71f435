"""The local Apache Kafka cluster: jars from Maven Central, KRaft storage, JVM lifecycle.

``hub broker start|stop|status`` and the test fixtures drive this module. Everything an instance
needs lives under ``<runtime_dir>/<name>/``: one folder per node with its rendered config, pid file,
logs and data, plus ``cluster.json`` describing the layout (so ``stop`` and ``status`` need no flags).
The jars are shared by all instances under ``<runtime_dir>/kafka-<version>/libs``.

Clients connect to 127.0.0.1 unless ``--host`` names another local IPv4 address (say a bridge's, so that
processes in network namespaces reach the broker): the client listener then binds and advertises that address
alone, and a TLS certificate names it too. The controller listener always stays on 127.0.0.1.

Security (``--auth scram``, ``--tls``): the client listener ``CLIENT`` speaks SASL_PLAINTEXT (SASL_SSL with TLS)
with SCRAM-SHA-512, and ``StandardAuthorizer`` refuses whatever no ACL allows. ``User:admin`` is the only super
user; its password is generated at the first start, kept in ``<instance>/credentials.json`` (mode 0600) and
written into KRaft storage at format time (``StorageTool --add-scram``). That argument reaches the JVM through a
Java launcher argument file (``java @file``, 0600, deleted once the format is done), never through the command line,
which any local user can read in ``/proc/<pid>/cmdline``.

Everything under ``<runtime_dir>/<name>/`` is readable by its owner only: folders 0700, files 0600, and the JVMs
run with umask 077, so the segments they write (``changelog.*``, feeds, ingest: plain report data) are private.

Inter-broker traffic (3 nodes) goes over that same ``CLIENT`` listener, authenticated as admin with SCRAM: a
separate PLAINTEXT inter-broker listener would authenticate as ``User:ANONYMOUS``, which then needs
``CLUSTER_ACTION``, i.e. super user rights for any local process that connects to it. For the same reason the
controller listener uses SASL/PLAIN as admin (a static JAAS user, since SCRAM credentials live in the metadata
log the controllers serve and cannot authenticate the controllers themselves): on a PLAINTEXT controller
listener ANONYMOUS would have to be a super user, and controllers also answer admin requests such as CreateAcls.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

from hub.credentials import (
    PRIVATE_FILE, PRIVATE_UMASK, load_passwords, new_password, private_dir, save_passwords, write_private,
)
from hub.exceptions import BrokerStartError, PortInUseError, ToolMissingError
from hub.logging import get_logger
from hub.settings import KAFKA_VERSION, REPO_ROOT, BrokerAuth, HubSettings, get_settings
from hub.tls import TlsFiles, ensure_tls_files

DEPLOY_DIR = REPO_ROOT / "deploy" / "kafka"
READY_LINE = "Kafka Server started"
ADMIN = "admin"
SCRAM = "SCRAM-SHA-512"
LOOPBACK = "127.0.0.1"
log = get_logger(component="broker")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """Default progress sink: say nothing."""


@dataclass(frozen=True)
class Layout:
    """Which nodes an instance has and on which ports; saved as ``cluster.json``."""

    nodes: int
    port: int
    cluster_id: str
    auth: BrokerAuth = "none"
    tls: bool = False
    host: str = LOOPBACK  # where the client listener binds and what it advertises; controllers stay on 127.0.0.1

    def to_json(self) -> str:
        """``cluster.json``'s text; the default host is left out, so files of earlier versions stay the same."""
        fields = asdict(self)
        if self.host == LOOPBACK:
            del fields["host"]
        return json.dumps(fields)

    @property
    def secured(self) -> bool:
        return self.auth != "none" or self.tls

    @property
    def client_protocol(self) -> str:
        """The client listener's security protocol, as clients must set it."""
        return {("none", False): "PLAINTEXT", ("none", True): "SSL",
                ("scram", False): "SASL_PLAINTEXT", ("scram", True): "SASL_SSL"}[(self.auth, self.tls)]

    def broker_port(self, node_id: int) -> int:
        return self.port + (node_id - 1)

    def controller_port(self, node_id: int) -> int:
        return self.port + 100 + (node_id - 1)

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, self.nodes + 1))

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{self.broker_port(n)}" for n in self.node_ids)


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    pid: int | None
    running: bool
    broker_port: int
    controller_port: int
    log_file: Path


def new_cluster_id() -> str:
    """22 characters of base64url over 16 random bytes, as KRaft expects."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_listen_host(host: str) -> None:
    """Refuse a client listener address that is no IPv4 literal or that no interface of this machine has."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if not isinstance(address, ipaddress.IPv4Address) or address.is_unspecified:
        raise BrokerStartError(
            f"--host must be one IPv4 address of this machine, not {host!r}",
            hint="Use 127.0.0.1 (the default) or the address of a local interface, e.g. a bridge's (`ip -4 addr`).",
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
            raise BrokerStartError(
                f"{host} is not an address of this machine, so the broker cannot listen on it",
                hint="Pick an address `ip -4 addr` shows, or create the interface first.",
            ) from exc


def free_port_block(nodes: int = 3) -> int:
    """A base port whose listeners for up to ``nodes`` nodes (``base + i`` and ``base + 100 + i``) are all free.

    It is taken below Linux's ephemeral range (32768 and up), where outgoing connections never take a port: a port
    found free there stays free until the broker binds it (one picked by binding port 0 was sometimes taken by a
    client connection in the meantime)."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - 100 - nodes)
        if all(port_is_free(port) for i in range(nodes) for port in (base + i, base + 100 + i)):
            return base
    raise PortInUseError("could not find free local ports for a test broker")


def require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(
            f"`{name}` is not on PATH; it is needed {why}",
            hint=f"Install it (Debian: `apt-get install {'maven' if name == 'mvn' else 'openjdk-17-jre-headless'}`).",
        )
    return path


class KafkaJars:
    """The broker's runtime classpath, copied from Maven Central by ``deploy/kafka/pom.xml``."""

    def __init__(self, settings: HubSettings | None = None) -> None:
        self.home = (settings or get_settings()).kafka_home
        self.libs = self.home / "libs"
        self._complete_marker = self.home / ".complete"

    @property
    def present(self) -> bool:
        return self._complete_marker.exists() and any(self.libs.glob("kafka_2.13-*.jar"))

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")

    def fetch(self, progress: Progress = _quiet) -> None:
        """Resolve and copy the jars (idempotent: does nothing when a complete copy exists)."""
        if self.present:
            progress(f"Kafka {KAFKA_VERSION} jars already in {self.libs}")
            return
        mvn = require_tool("mvn", "to fetch the Kafka jars from Maven Central")
        shutil.rmtree(self.libs, ignore_errors=True)
        self.libs.mkdir(parents=True, exist_ok=True)
        cmd = [
            mvn, "-B", "-f", str(DEPLOY_DIR / "pom.xml"), f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={self.libs}",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        downloaded = copied = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-30:]
            if "Downloaded from" in line:
                downloaded += 1
                progress(f"downloading Kafka {KAFKA_VERSION} from Maven Central: {downloaded} artifacts")
            elif line.startswith("[INFO] Copying"):
                copied += 1
                progress(f"copying jars into {self.libs}: {copied}")
        if proc.wait() != 0:
            raise BrokerStartError(
                "Maven could not fetch the Kafka jars:\n" + "\n".join(tail),
                hint="Check that Maven Central is reachable (`mvn -v`, proxy settings) and run `hub broker fetch` again.",
            )
        self._complete_marker.write_text(KAFKA_VERSION)
        progress(f"Kafka {KAFKA_VERSION}: {len(list(self.libs.glob('*.jar')))} jars in {self.libs}")


class LocalBroker:
    """One local KRaft cluster of 1 or 3 nodes on 127.0.0.1 (clients: or another local address), managed through
    files under its directory."""

    def __init__(self, settings: HubSettings | None = None, name: str = "broker") -> None:
        self.settings = settings or get_settings()
        self.dir = self.settings.runtime_dir / name
        self.jars = KafkaJars(self.settings)
        self._layout_file = self.dir / "cluster.json"
        self.credentials_file = self.dir / "credentials.json"
        self._launched: dict[int, subprocess.Popen[bytes]] = {}

    # -- layout and per-node files ---------------------------------------------------------------
    @property
    def layout(self) -> Layout | None:
        if not self._layout_file.exists():
            return None
        return Layout(**json.loads(self._layout_file.read_text()))

    def node_dir(self, node_id: int) -> Path:
        return self.dir / f"node-{node_id}"

    def _pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.pid"

    def log_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "logs" / "server.log"

    def _config_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def _live_pid(self, node_id: int) -> int | None:
        """The node's JVM pid if it is alive and really is this node's broker; stale pid files are removed."""
        pid_file = self._pid_file(node_id)
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            return None
        if "kafka.Kafka" not in cmdline or str(self._config_file(node_id)) not in cmdline or not _alive(pid):
            pid_file.unlink(missing_ok=True)
            return None
        return pid

    def status(self) -> list[NodeStatus]:
        layout = self.layout
        if layout is None:
            return []
        result = []
        for node_id in layout.node_ids:
            pid = self._live_pid(node_id)
            result.append(
                NodeStatus(node_id, pid, pid is not None, layout.broker_port(node_id),
                           layout.controller_port(node_id), self.log_file(node_id))
            )
        return result

    @property
    def running(self) -> bool:
        nodes = self.status()
        return bool(nodes) and all(n.running for n in nodes)

    @property
    def bootstrap_servers(self) -> str | None:
        layout = self.layout
        return layout.bootstrap_servers if layout else None

    @property
    def tls_files(self) -> TlsFiles:
        return TlsFiles(self.dir / "tls" / "ca.pem", self.dir / "tls" / "server.pem")

    def admin_password(self) -> str | None:
        return load_passwords(self.credentials_file).get(ADMIN)

    def client_overrides(self) -> dict[str, object]:
        """HubSettings fields that connect to this cluster as its super user (just the address without auth)."""
        layout = self.layout
        if layout is None:
            raise BrokerStartError("no local broker has been started here", hint="Run `hub broker start` first.")
        overrides: dict[str, object] = {"bootstrap_servers": layout.bootstrap_servers,
                                        "security_protocol": layout.client_protocol}
        if layout.auth == "scram":
            overrides |= {"sasl_mechanism": SCRAM, "sasl_username": ADMIN, "sasl_password": self.admin_password()}
        if layout.tls:
            overrides["ssl_cafile"] = self.tls_files.ca_file
        return overrides

    def client_settings(self) -> HubSettings:
        """This instance's settings pointed at the cluster, as admin when it has authentication."""
        return self.settings.model_copy(update=self.client_overrides())

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, nodes: int = 1, port: int = 9092, heap: str = "512m", timeout: float = 120.0,
              progress: Progress = _quiet, auth: BrokerAuth = "none", tls: bool = False,
              host: str = LOOPBACK) -> Layout:
        """Start the cluster and wait until it answers a metadata request; a running cluster is left as is, and of a
        cluster with some nodes down only those are started (with the same layout).

        ``host``: the local IPv4 address the client listener binds and advertises (the controllers stay on
        127.0.0.1); with TLS the certificate names it too."""
        if nodes not in (1, 3):
            raise BrokerStartError(f"--nodes must be 1 or 3, not {nodes}", hint="Use `--nodes 1` or `--nodes 3`.")
        if auth not in ("none", "scram"):
            raise BrokerStartError(f"--auth must be none or scram, not {auth}", hint="Use `--auth none` or `--auth scram`.")
        if host != LOOPBACK:
            check_listen_host(host)
        current = self.layout
        if current and self.running:
            if (current.auth, current.tls) != (auth, tls):
                raise BrokerStartError(
                    f"the broker at {current.bootstrap_servers} is running with auth={current.auth}, "
                    f"tls={current.tls}, not auth={auth}, tls={tls}",
                    hint="Stop it first (`hub broker stop --wipe`: security is set when storage is formatted).",
                )
            if current.host != host:
                raise BrokerStartError(
                    f"the broker at {current.bootstrap_servers} is running on {current.host}, not {host}",
                    hint="Stop it first (`hub broker stop --wipe`), then start it with the new --host.",
                )
            progress(f"broker already running at {current.bootstrap_servers}")
            return current
        nodes_now = self.status()
        if current and any(n.running for n in nodes_now):
            if (current.nodes, current.port, current.auth, current.tls, current.host) == (nodes, port, auth, tls, host):
                down = [n.node_id for n in nodes_now if not n.running]
                progress(f"node(s) {', '.join(map(str, down))} down; starting only them (the others keep running)")
                self.restart_nodes(down, heap=heap, timeout=timeout)
                return current
            progress("some nodes of a previous start are still up with another layout; stopping them first")
            self.stop(progress=progress)
        require_tool("java", "to run the Kafka broker")
        self.jars.fetch(progress)

        if current and (current.nodes, current.port, current.auth, current.tls, current.host) != (
                nodes, port, auth, tls, host):
            moved = f" on {current.host} -> {host}" if current.host != host else ""
            progress(f"layout changed ({current.nodes} node(s) on {current.port}, auth={current.auth}, tls={current.tls}"
                     f" -> {nodes} on {port}, auth={auth}, tls={tls}{moved}): wiping old data")
            shutil.rmtree(self.dir)
            current = None
        layout = current or Layout(nodes=nodes, port=port, cluster_id=new_cluster_id(), auth=auth, tls=tls, host=host)
        taken = [(h, p) for n in layout.node_ids
                 for h, p in ((layout.host, layout.broker_port(n)), (LOOPBACK, layout.controller_port(n)))
                 if not port_is_free(p, h)]
        if taken:
            raise PortInUseError(
                f"port(s) {', '.join(str(p) for _, p in taken)} on {', '.join(sorted({h for h, _ in taken}))} "
                "are already in use",
                hint="Stop whatever holds them (`ss -ltnp`), or start on other ports with `hub broker start --port N`.",
            )
        private_dir(self.dir)
        write_private(self._layout_file, layout.to_json().encode())
        if layout.auth == "scram" and self.admin_password() is None:
            save_passwords(self.credentials_file, {ADMIN: new_password()})
        if layout.tls:
            ensure_tls_files(self.tls_files.ca_file.parent, [layout.host] if layout.host != LOOPBACK else [])

        started = time.monotonic()
        for node_id in layout.node_ids:
            self._render_config(layout, node_id)
            self._format_storage(layout, node_id)
        for node_id in layout.node_ids:
            self._launch(node_id, heap)
        progress(f"started {nodes} JVM(s); waiting for the broker to answer at {layout.bootstrap_servers}")
        self._wait_ready(layout, timeout)
        log.info("broker ready", bootstrap=layout.bootstrap_servers, seconds=round(time.monotonic() - started, 2))
        return layout

    def _render_config(self, layout: Layout, node_id: int) -> None:
        template = Template((DEPLOY_DIR / "node.properties.template").read_text())
        replication = 1 if layout.nodes == 1 else 3
        text = template.substitute(
            node_id=node_id,
            quorum_voters=",".join(f"{n}@127.0.0.1:{layout.controller_port(n)}" for n in layout.node_ids),
            data_dir=self.node_dir(node_id) / "data",
            replication=replication,
            min_isr=1 if layout.nodes == 1 else 2,
            **(self._secured_listeners(layout, node_id) if layout.secured else self._plaintext_listeners(layout, node_id)),
        )
        for folder in (self.node_dir(node_id), self.node_dir(node_id) / "logs", self.node_dir(node_id) / "data"):
            private_dir(folder)
        write_private(self._config_file(node_id), text.encode())  # with --auth scram it holds the admin password

    @staticmethod
    def _plaintext_listeners(layout: Layout, node_id: int) -> dict[str, str]:
        return {
            "listeners": f"PLAINTEXT://{layout.host}:{layout.broker_port(node_id)},"
                         f"CONTROLLER://127.0.0.1:{layout.controller_port(node_id)}",
            "advertised_listeners": f"PLAINTEXT://{layout.host}:{layout.broker_port(node_id)}",
            "protocol_map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter_broker_listener": "PLAINTEXT",
            "extra": "",
        }

    def _secured_listeners(self, layout: Layout, node_id: int) -> dict[str, str]:
        """Listener ``CLIENT`` for clients and brokers, ``CONTROLLER`` for the quorum (see the module docstring)."""
        scram = layout.auth == "scram"
        lines: list[str] = []
        if layout.tls:
            tls = self.tls_files
            lines += ["# TLS on the client listener: PEM files written by hub/tls.py.",
                      "ssl.keystore.type=PEM", f"ssl.keystore.location={tls.keystore}",
                      "ssl.truststore.type=PEM", f"ssl.truststore.location={tls.ca_file}"]
        if scram:
            password = self.admin_password()
            lines += [
                "# SASL/SCRAM for clients and brokers; SASL/PLAIN between controllers; admin is the only super user.",
                f"sasl.enabled.mechanisms={SCRAM}",
                f"sasl.mechanism.inter.broker.protocol={SCRAM}",
                f"listener.name.client.{SCRAM.lower()}.sasl.jaas.config=org.apache.kafka.common.security.scram."
                f'ScramLoginModule required username="{ADMIN}" password="{password}";',
                "sasl.mechanism.controller.protocol=PLAIN",
                "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain."
                f'PlainLoginModule required username="{ADMIN}" password="{password}" user_{ADMIN}="{password}";',
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found=false",
                f"super.users=User:{ADMIN}",
            ]
        return {
            "listeners": f"CLIENT://{layout.host}:{layout.broker_port(node_id)},"
                         f"CONTROLLER://127.0.0.1:{layout.controller_port(node_id)}",
            "advertised_listeners": f"CLIENT://{layout.host}:{layout.broker_port(node_id)}",
            "protocol_map": f"CLIENT:{layout.client_protocol},CONTROLLER:{'SASL_PLAINTEXT' if scram else 'PLAINTEXT'}",
            "inter_broker_listener": "CLIENT",
            "extra": "\n".join(lines) + "\n",
        }

    def _jvm(self, heap: str, node_id: int) -> list[str]:
        """``java`` and its options, up to (not including) the main class."""
        return [
            "java", f"-Xmx{heap}", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.node_dir(node_id) / 'logs'}",
            f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
            "-cp", self.jars.classpath,
        ]

    def _format_command(self, layout: Layout, node_id: int, argfile: Path) -> tuple[list[str], list[str]]:
        """The StorageTool command line and the arguments it reads from ``argfile``: the main class and its
        arguments, among them the admin's SCRAM password, which must not appear on a command line."""
        # `--cluster-id=` form: a base64url id may start with '-', which argparse would take for an option.
        scram = ["--add-scram", f"{SCRAM}=[name={ADMIN},password={self.admin_password()}]"] if layout.auth == "scram" else []
        arguments = ["kafka.tools.StorageTool", "format", f"--cluster-id={layout.cluster_id}",
                     "-c", str(self._config_file(node_id)), "--ignore-formatted", *scram]
        return [*self._jvm("256m", node_id), f"@{argfile}"], arguments

    def _format_storage(self, layout: Layout, node_id: int) -> None:
        argfile = self.node_dir(node_id) / "storage-format.args"
        cmd, arguments = self._format_command(layout, node_id, argfile)
        write_private(argfile, java_argfile(arguments).encode())
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, umask=PRIVATE_UMASK)
        finally:
            argfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise BrokerStartError(
                f"formatting KRaft storage of node {node_id} failed:\n{result.stdout}{result.stderr}",
                hint=f"Remove {self.dir} (`hub broker stop --wipe`) and start again.",
            )

    def _launch(self, node_id: int, heap: str) -> None:
        cmd = [*self._jvm(heap, node_id), "kafka.Kafka", str(self._config_file(node_id))]
        stdout = self.node_dir(node_id) / "logs" / "stdout.log"
        out = os.fdopen(os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE), "ab")
        os.chmod(stdout, PRIVATE_FILE)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.node_dir(node_id), umask=PRIVATE_UMASK)
        out.close()
        write_private(self._pid_file(node_id), str(proc.pid).encode())
        self._launched[node_id] = proc

    def _wait_ready(self, layout: Layout, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(layout.node_ids)
        while pending and time.monotonic() < deadline:
            for node_id in sorted(pending):
                launched = self._launched.get(node_id)
                if launched is not None and launched.poll() is not None:
                    self._fail(node_id, f"exited during start-up (exit code {launched.returncode})")
                log_file = self.log_file(node_id)
                if log_file.exists() and READY_LINE in log_file.read_text(errors="replace"):
                    pending.discard(node_id)
            time.sleep(0.2)
        if pending:
            self._fail(min(pending), f"did not log '{READY_LINE}' within {timeout:.0f}s")
        while time.monotonic() < deadline:
            if self._metadata_brokers(layout) >= layout.nodes:
                return
            time.sleep(0.3)
        self._fail(1, f"did not answer a metadata request with {layout.nodes} broker(s) within {timeout:.0f}s")

    def _metadata_brokers(self, layout: Layout) -> int:
        """How many brokers the cluster reports in a metadata response (0 when nothing answers)."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        from hub.kafka import connection_config

        try:
            admin = KafkaAdminClient(**connection_config(self.client_settings()) | {
                "request_timeout_ms": 5000, "bootstrap_timeout_ms": 2000, "client_id": "hub-broker-probe"})
        except (KafkaError, OSError):
            return 0
        try:
            return len(admin.describe_cluster().get("brokers", []))
        except (KafkaError, OSError):
            return 0
        finally:
            admin.close()

    def _fail(self, node_id: int, what: str) -> None:
        tail = self.log_tail(node_id)
        self.stop()
        raise BrokerStartError(
            f"Kafka node {node_id} {what}. Last lines of its logs in {self.log_file(node_id).parent}:\n{tail}",
            hint="Read the log above; `hub broker stop --wipe` clears a corrupt data directory.",
        )

    def log_tail(self, node_id: int, lines: int = 25) -> str:
        texts = []
        for path in (self.log_file(node_id), self.node_dir(node_id) / "logs" / "stdout.log"):
            if path.exists():
                texts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(texts[-lines:]) or "(no log output)"

    def stop(self, timeout: float = 30.0, wipe: bool = False, progress: Progress = _quiet) -> int:
        """SIGTERM every node together, SIGKILL whatever is left after ``timeout``; returns how many were up."""
        layout = self.layout
        pids = {n: p for n in (layout.node_ids if layout else []) if (p := self._live_pid(n)) is not None}
        for pid in pids.values():
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
            time.sleep(0.2)
        for node_id, pid in pids.items():
            if _alive(pid):
                progress(f"node {node_id} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
                _signal(pid, signal.SIGKILL)
            _wait_gone(pid)
            self._pid_file(node_id).unlink(missing_ok=True)
        if wipe and self.dir.exists():
            shutil.rmtree(self.dir)
        return len(pids)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (for failure tests): no controlled shutdown."""
        pid = self._live_pid(node_id)
        if pid is not None:
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid)

    def restart_nodes(self, node_ids: list[int], heap: str = "512m", timeout: float = 120.0) -> None:
        """Start the stopped ones of ``node_ids`` (of an existing layout) again and wait for the cluster."""
        layout = self.layout
        if layout is None:
            raise BrokerStartError("no broker layout to restart", hint="Run `hub broker start` first.")
        for node_id in node_ids:
            if self._live_pid(node_id) is None:
                self.log_file(node_id).unlink(missing_ok=True)
                self._launch(node_id, heap)
        self._wait_ready(layout, timeout)


def java_argfile(arguments: list[str]) -> str:
    """A Java launcher argument file (``java @file``) holding ``arguments``: each one double-quoted, with
    backslashes and quotes escaped as the launcher expects."""
    quoted = ('"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"' for argument in arguments)
    return "\n".join(quoted) + "\n"


def _alive(pid: int) -> bool:
    """True until every thread of ``pid`` has exited (a JVM's main thread turns zombie before the rest)."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reaps our own children once they are done
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (OSError, IndexError):
        return False
    return not (state == "Z" and threads <= 1)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
