"""The demo's parties (hub/deployment.py): each holds its own login and directory and nothing of anyone else's.

Pure: no broker. Passwords come from a principals file written here, as `hub access apply` would write it."""

from __future__ import annotations

import base64
import stat
import subprocess

import pytest

from hub import deployment
from hub.credentials import save_passwords
from hub.settings import HubSettings

PASSWORDS = {"hub": "hub-secret", "agency-cacbp0100": "agency-secret", "tf-best-tucson": "tf-secret",
             "auditor-oig": "auditor-secret"}


@pytest.fixture
def admin(tmp_path) -> HubSettings:
    runtime = tmp_path / "runtime"
    save_passwords(runtime / "principals.json", PASSWORDS)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    return HubSettings(bootstrap_servers="127.0.0.1:19092", security_protocol="SASL_SSL", sasl_username="admin",
                       sasl_password="admin-secret", ssl_cafile=ca, runtime_dir=runtime, topic_prefix="t.",
                       kek_file=tmp_path / "admins-own-kek")


@pytest.fixture
def parties(admin) -> deployment.Deployment:
    return deployment.standard_parties(admin, "cluster-1", ["CACBP0100"], ["best-tucson"], ["oig"])


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_each_party_has_its_own_private_directory_and_copy_of_the_ca(parties, admin):
    root = admin.runtime_dir / "demo" / "parties"
    assert [p.name for p in parties.parties()] == ["agency-cacbp0100", "hub", "tf-best-tucson", "auditor-oig",
                                                   "operator"]
    for party in parties.parties():
        assert party.directory == root / party.name and _mode(party.directory) == 0o700
        ca = party.directory / "ca.pem"
        assert ca.read_text() == admin.ssl_cafile.read_text() and _mode(ca) == 0o600
        assert party.settings.ssl_cafile == ca and party.settings.runtime_dir == party.directory


def test_the_environment_holds_only_the_partys_own_login(parties, monkeypatch):
    monkeypatch.setenv("HUB_SASL_PASSWORD", "leaked")
    monkeypatch.setenv("HUB_KEK_FILE", "/leaked/kek")
    agency = parties.agencies["CACBP0100"]
    env = agency.environment()
    assert env["HUB_SASL_USERNAME"] == "agency-cacbp0100" and env["HUB_SASL_PASSWORD"] == "agency-secret"
    assert env["HUB_SECURITY_PROTOCOL"] == "SASL_SSL" and env["HUB_SSL_CAFILE"] == str(agency.directory / "ca.pem")
    assert env["HUB_RUNTIME_DIR"] == env["HOME"] == str(agency.directory) and env["HUB_TOPIC_PREFIX"] == "t."
    assert "HUB_KEK_FILE" not in env and "leaked" not in "".join(env.values())
    others = set(PASSWORDS.values()) - {"agency-secret"} | {"admin-secret"}
    assert not others & set(env.values())
    assert set(env) - {k for k in env if k.startswith("HUB_")} == {"PATH", "HOME", "LANG"}
    assert agency.holds == ("password of agency-cacbp0100", "CA certificate")


def test_hub_hosts_and_the_operator_hold_one_kek_created_once(parties, admin):
    kek = admin.runtime_dir / "demo" / "kek"
    assert _mode(kek) == 0o600 and len(base64.b64decode(kek.read_bytes().strip(), validate=True)) == 32
    for party in (parties.hub, parties.operator):
        assert party.principal == "hub" and "KEK" in party.holds
        copy = party.directory / "kek"
        assert copy.read_bytes() == kek.read_bytes() and _mode(copy) == 0o600
        assert party.environment()["HUB_KEK_FILE"] == str(copy)
    again = deployment.standard_parties(admin, "cluster-1", ["CACBP0100"], [], [], hub_hosts=2)
    assert [h.name for h in again.hubs] == ["hub1", "hub2"]
    assert all((h.directory / "kek").read_bytes() == kek.read_bytes() for h in again.hubs)


def test_a_new_cluster_starts_the_parties_afresh(parties, admin):
    leftover = deployment.give(parties.hub, "state.sqlite", b"of the old cluster")
    old_kek = (admin.runtime_dir / "demo" / "kek").read_bytes()
    deployment.standard_parties(admin, "cluster-1", ["CACBP0100"], [], [])
    assert leftover.exists(), "the same cluster keeps the parties' state"
    deployment.standard_parties(admin, "cluster-2", ["CACBP0100"], [], [])
    assert not leftover.exists() and (admin.runtime_dir / "demo" / "kek").read_bytes() != old_kek


def test_commands_run_in_the_partys_directory_with_its_environment_only(parties, monkeypatch):
    seen = {}

    def fake_run(args, **kwargs):
        seen.update(kwargs, args=args)
        return subprocess.CompletedProcess(args, 0, "ok", "")

    monkeypatch.setattr(deployment.subprocess, "run", fake_run)
    tf = parties.task_forces["best-tucson"]
    deployment.run(tf, "subscribe", "--task-force", "best-tucson", env={"HUB_LOG_LEVEL": "warning"})
    assert seen["args"][1:] == ["-m", "hub", "subscribe", "--task-force", "best-tucson"]
    assert "tf-secret" not in " ".join(seen["args"]), "a password never goes on a command line"
    assert seen["env"] == tf.environment() | {"HUB_LOG_LEVEL": "warning"} and seen["cwd"] == tf.directory


def test_a_failed_command_says_who_ran_what(parties, monkeypatch):
    monkeypatch.setattr(deployment.subprocess, "run",
                        lambda args, **_: subprocess.CompletedProcess(args, 2, "", "error: refused"))
    with pytest.raises(deployment.DeploymentError,
                       match=r"`hub audit verify` as auditor-oig exited 2:\s+error: refused"):
        deployment.run(parties.auditors["oig"], "audit", "verify")


def test_parties_need_a_sasl_tls_cluster(admin, tmp_path):
    plain = admin.model_copy(update={"security_protocol": "PLAINTEXT", "ssl_cafile": None})
    with pytest.raises(deployment.DeploymentError, match="no SASL/TLS listener"):
        deployment.make_party(tmp_path, "hub", "hub", plain)
