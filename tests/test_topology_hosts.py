"""Every party on its own host (issue 10): two agencies and a task force, each in its own network namespace as
its own OS user with only its own Kafka login, reach a SCRAM+TLS broker on a bridge address and nothing else.
The harness is tests/topology.py. First, without Kafka, the broker option that makes this possible: a client
listener on another local address (``hub broker start --host``) with a certificate naming it."""

from __future__ import annotations

import json
import socket
import ssl
import stat
import subprocess
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import NewTopic

from hub.access import apply_access, credentials_for
from hub.broker import Layout, LocalBroker
from hub.exceptions import BrokerStartError
from hub.kafka import make_admin, make_producer, read_topic
from hub.settings import HubSettings
from hub.tls import certificate_ips, ensure_tls_files
from tests import topology

PREFIX = "t."
CBP, HSI, UNIT = "CACBP0100", "AZHSI0100", "best-san-diego"
BRIDGE_IP = "10.213.77.1"
UNAVAILABLE = topology.available()


def needs_hosts(test: Callable[..., Any]) -> Callable[..., Any]:
    """Kafka, slow, and skipped where the harness cannot run (not root, no network namespaces, ...)."""
    for mark in (pytest.mark.kafka, pytest.mark.slow,
                 pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")):
        test = mark(test)
    return test


# -- the broker option, no Kafka --------------------------------------------------------------------
def _handshake(tls_dir: Path, server_hostname: str) -> str:
    """A TLS handshake over a socket pair with the broker's keystore, the client checking ``server_hostname``
    against the certificate the way Kafka clients do; returns "ok" or the client's error."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tls_dir / "server.pem")
    client_context = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)

    def serve() -> None:
        try:
            with server_context.wrap_socket(left, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(right, server_hostname=server_hostname):
            return "ok"
    except ssl.SSLCertVerificationError as exc:
        return exc.verify_message
    finally:
        right.close()
        thread.join(10)
        left.close()


def test_certificate_names_the_extra_address_and_is_issued_again_when_it_lacks_one(tmp_path):
    files = ensure_tls_files(tmp_path)
    first = files.keystore.read_bytes(), files.ca_file.read_bytes()
    assert {str(ip) for ip in certificate_ips(files.keystore)} == {"127.0.0.1"}
    assert ensure_tls_files(tmp_path) == files and (files.keystore.read_bytes(), files.ca_file.read_bytes()) == first
    assert _handshake(tmp_path, "127.0.0.1") == "ok"
    assert "mismatch" in _handshake(tmp_path, BRIDGE_IP)  # hostname verification is on

    ensure_tls_files(tmp_path, [BRIDGE_IP])
    second = files.keystore.read_bytes(), files.ca_file.read_bytes()
    assert second[0] != first[0] and second[1] != first[1]  # the CA's key is never kept: a new CA
    assert {str(ip) for ip in certificate_ips(files.keystore)} == {"127.0.0.1", BRIDGE_IP}
    assert stat.S_IMODE(files.keystore.stat().st_mode) == 0o600
    assert _handshake(tmp_path, BRIDGE_IP) == _handshake(tmp_path, "127.0.0.1") == "ok"
    assert "mismatch" in _handshake(tmp_path, "10.213.77.9")
    ensure_tls_files(tmp_path, [BRIDGE_IP])
    ensure_tls_files(tmp_path)
    assert (files.keystore.read_bytes(), files.ca_file.read_bytes()) == second  # covered: reused as it is


def test_layout_json_of_the_default_host_is_unchanged():
    default = Layout(nodes=1, port=9092, cluster_id="c", auth="scram", tls=True)
    assert json.loads(default.to_json()) == {"nodes": 1, "port": 9092, "cluster_id": "c", "auth": "scram", "tls": True}
    assert default.bootstrap_servers == "127.0.0.1:9092"
    bridged = Layout(nodes=3, port=9092, cluster_id="c", host=BRIDGE_IP)
    assert Layout(**json.loads(bridged.to_json())) == bridged
    assert bridged.bootstrap_servers == f"{BRIDGE_IP}:9092,{BRIDGE_IP}:9093,{BRIDGE_IP}:9094"


@pytest.mark.parametrize("host, says", [("localhost", "IPv4"), ("::1", "IPv4"), ("0.0.0.0", "IPv4"),
                                        ("192.0.2.1", "not an address of this machine")])
def test_broker_listens_only_on_an_ipv4_address_of_this_machine(tmp_path, host, says):
    with pytest.raises(BrokerStartError, match=says):
        LocalBroker(HubSettings(runtime_dir=tmp_path)).start(host=host)
    assert not (tmp_path / "broker").exists()


# -- parties on their own hosts ---------------------------------------------------------------------


@dataclass
class World:
    net: topology.Network
    broker: LocalBroker
    admin: HubSettings
    cbp: topology.Host  # agency-cacbp0100
    tf: topology.Host  # tf-best-san-diego
    hsi: topology.Host  # agency-azhsi0100
    passwords: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with topology.Network() as net:
        cbp, tf, hsi = net.host("cbp"), net.host("tf"), net.host("hsi")
        with topology.secured_broker(net, tmp_path_factory.mktemp("hosts-broker")) as broker:
            admin = broker.client_settings().model_copy(update={"topic_prefix": PREFIX, "connect_timeout_s": 5.0})
            apply_access(admin, PREFIX, [CBP, HSI], [UNIT])
            topics = [f"{PREFIX}ingest.{CBP}", f"{PREFIX}ingest.{HSI}", f"{PREFIX}feed.{UNIT}"]
            hub_admin = make_admin(admin)
            hub_admin.create_topics([NewTopic(t, 1, 1) for t in topics])
            hub_admin.close()
            producer = make_producer(admin)
            producer.send(f"{PREFIX}ingest.{HSI}", value=b"hsi-report").get(30)
            producer.send(f"{PREFIX}feed.{UNIT}", key=UNIT.encode(), value=b"routed").get(30)
            producer.close()
            logins = {cbp: f"agency-{CBP.lower()}", tf: f"tf-{UNIT}", hsi: f"agency-{HSI.lower()}"}
            passwords = {}
            for host, principal in logins.items():
                party = admin.model_copy(update=credentials_for(principal, admin))
                passwords[principal] = party.sasl_password or ""
                host.login(party)
            yield World(net, broker, admin, cbp, tf, hsi, passwords)


def _python(host: topology.Host, code: str, timeout: float = 60.0) -> Any:
    """Run ``code`` on ``host``; it prints one JSON value as its last line."""
    result = host.python(textwrap.dedent(code), timeout=timeout)
    assert result.returncode == 0, f"{host}: exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_hosts
def test_the_broker_listens_on_the_bridge_with_a_certificate_naming_it(world):
    layout = world.broker.layout
    assert layout is not None and layout.host == world.net.gateway
    assert world.broker.bootstrap_servers == f"{world.net.gateway}:{layout.port}"
    assert {str(ip) for ip in certificate_ips(world.broker.tls_files.keystore)} == {"127.0.0.1", world.net.gateway}
    config = (world.broker.node_dir(1) / "server.properties").read_text()
    assert f"CLIENT://{world.net.gateway}:{layout.port}," in config
    assert f"CONTROLLER://127.0.0.1:{layout.controller_port(1)}" in config


@needs_hosts
def test_each_host_runs_as_its_own_user_with_only_its_own_login(world):
    for host in (world.cbp, world.tf, world.hsi):
        result = host.run(["/usr/bin/env"])
        env = dict(line.split("=", 1) for line in result.stdout.splitlines())
        assert set(env) == {"PATH", "HOME", "LANG", "HUB_RUNTIME_DIR", "HUB_BOOTSTRAP_SERVERS",
                            "HUB_SECURITY_PROTOCOL", "HUB_SASL_MECHANISM", "HUB_SASL_USERNAME", "HUB_SASL_PASSWORD",
                            "HUB_SSL_CAFILE", "HUB_TOPIC_PREFIX"}
        assert env["HUB_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["HUB_SASL_PASSWORD"] == world.passwords[host.principal]
        others = [p for name, p in world.passwords.items() if name != host.principal]
        assert not any(p in result.stdout for p in others)
        assert env["HOME"] == str(host.home) and env["HUB_RUNTIME_DIR"] == str(host.runtime_dir)
        assert env["HUB_SSL_CAFILE"].startswith(str(host.home) + "/")
        ids = host.run(["id", "-u"]).stdout.split()
        assert ids == [str(host.uid)] and host.uid != 0
        for directory in (host.home, host.runtime_dir):
            info = directory.stat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (host.uid, 0o700)


@needs_hosts
def test_agency_publishes_to_its_own_ingest_topic_from_its_host(world):
    got = _python(world.cbp, f"""
        import json
        from hub.kafka import make_producer
        from hub.settings import HubSettings
        settings = HubSettings()
        producer = make_producer(settings)
        meta = producer.send(settings.topic("ingest.{CBP}"), value=b"cbp-report").get(30)
        producer.close()
        print(json.dumps({{"offset": meta.offset, "user": settings.sasl_username}}))
    """)
    assert got == {"offset": 0, "user": f"agency-{CBP.lower()}"}
    assert [r.value for r in read_topic(f"{PREFIX}ingest.{CBP}", world.admin, 30)] == [b"cbp-report"]


READ_PROBE = """
    import json
    from kafka import TopicPartition
    from kafka.errors import KafkaError
    from hub.kafka import make_consumer
    from hub.settings import HubSettings
    settings = HubSettings()
    consumer = make_consumer(settings=settings, group_id=None)
    partition = TopicPartition(settings.topic("{topic}"), 0)
    result = {{}}
    try:
        try:
            result["end"] = consumer.end_offsets([partition])[partition]
        except KafkaError as exc:
            result["end"] = type(exc).__name__
        consumer.assign([partition])
        consumer.seek(partition, 0)
        values = []
        for _ in range(6):
            values += [r.value.decode() for batch in consumer.poll(timeout_ms=500).values() for r in batch]
            if values:
                break
        result["values"] = values
    except KafkaError as exc:
        result["values"] = type(exc).__name__
    finally:
        consumer.close()
    print(json.dumps(result))
"""


@needs_hosts
def test_agency_host_cannot_read_another_agencys_topic(world):
    # the broker refuses it (and kafka-python then never fetches from a topic it may not see)
    assert _python(world.cbp, READ_PROBE.format(topic=f"ingest.{HSI}")) == {
        "end": "TopicAuthorizationFailedError", "values": []}
    # the control: the task force reads its own feed from its host
    assert _python(world.tf, READ_PROBE.format(topic=f"feed.{UNIT}")) == {"end": 1, "values": ["routed"]}


@needs_hosts
def test_hosts_cannot_reach_each_other(world):
    assert all(world.net.isolated_ports().values()) and len(world.net.isolated_ports()) == 3
    port = 47_001
    listener = world.hsi.spawn([str(topology._python()), "-c", textwrap.dedent(f"""
        import socket, time
        server = socket.socket()
        server.bind(("{world.hsi.ip}", {port}))
        server.listen()
        print("listening", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
    connect = """
        import json, socket
        try:
            socket.create_connection(("{ip}", {port}), timeout=2).close()
            print(json.dumps("connected"))
        except OSError as exc:
            print(json.dumps(type(exc).__name__))
    """
    # the listener answers on its own host, so the refusals below come from the network, not a dead listener
    assert _python(world.hsi, connect.format(ip=world.hsi.ip, port=port)) == "connected"
    for other in (world.cbp, world.tf):
        assert _python(other, connect.format(ip=world.hsi.ip, port=port)) != "connected"
    # the broker's port on the bridge is reachable; another port there is not (when nft filters egress)
    assert _python(world.cbp, connect.format(ip=world.net.gateway, port=world.broker.layout.port)) == "connected"
    if world.net.egress_filter:
        with socket.socket() as decoy:
            decoy.bind((world.net.gateway, 0))
            decoy.listen()
            assert _python(world.cbp, connect.format(ip=world.net.gateway, port=decoy.getsockname()[1])) != "connected"


@needs_hosts
def test_a_host_cannot_read_another_hosts_files(world):
    probe = """
        import json, os
        result = {{}}
        for name, action in [("list", lambda: os.listdir("{runtime}")), ("home", lambda: os.listdir("{home}")),
                             ("ca", lambda: open("{home}/ca.pem").read()), ("base", lambda: os.listdir("{base}"))]:
            try:
                action()
                result[name] = "read"
            except OSError as exc:
                result[name] = type(exc).__name__
        with open(os.path.join(os.environ["HUB_RUNTIME_DIR"], "mine"), "w") as out:
            out.write("x")
        print(json.dumps(result))
    """
    other = world.hsi
    got = _python(world.cbp, probe.format(runtime=other.runtime_dir, home=other.home, base=world.net.base))
    assert got == {"list": "PermissionError", "home": "PermissionError", "ca": "PermissionError",
                   "base": "PermissionError"}
    assert (world.cbp.runtime_dir / "mine").stat().st_uid == world.cbp.uid
