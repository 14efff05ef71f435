"""The parties of a deployment on one machine, each a separate process with its own login and directory.

The README's "Deployment" says every party runs on its own host and shares nothing with the others but Kafka.
``hub demo`` shows that topology for real: every agency, hub host, task force and auditor is a ``python -m hub``
process started with a clean environment holding only that party's own login (a hub host also the KEK) and a
runtime directory of its own, ``<runtime_dir>/demo/parties/<name>/`` (mode 0700) with its copy of the CA. So
any of them could be moved to another host as it is; ``tests/test_topology.py`` goes further and gives each its
own network namespace and OS user.

The cluster operator (the broker's ``admin``) creates the topics and the logins, and the parties are built from
its settings: the address and TLS CA are the same for everyone, the login is each party's own. Passwords go to
the child processes through their environment, never on a command line (``ps`` would show it to every user).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import urllib.request
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


from consumers.runner import stage_lag
from consumers.stages import STAGES
from hub.access import (AccessReport, agency_principal, apply_access, auditor_principal, credentials_for,
                        task_force_principal, HUB)
from hub.broker import LocalBroker
from hub.credentials import write_private
from hub.exceptions import HubError
from hub.settings import HubSettings
from hub.topics import TopicStatus, ensure_topics, hub_topics
from hub.vault import KEY_SIZE

DEMO_DIR = "demo"
PARTIES_DIR = "parties"
CLUSTER_FILE = "cluster-id"
KEK_FILE = "kek"
CA_FILE = "ca.pem"
OPERATOR = "operator"
DEFAULT_PORT = 9092
LANG = "C.UTF-8"
#: The stages in pipeline order (each one's inputs are the outputs of those before it).
PIPELINE = tuple(STAGES)
#: Where the demo's console listens (the next free port if taken).
CONSOLE_PORT = 8400


class DeploymentError(HubError):
    """A party's process failed, or the cluster cannot host the deployment."""

    hint = "Read the party's output above; each party's files and logs are in its own directory."


@dataclass(frozen=True)
class Party:
    """One party of the deployment: who it is on Kafka, where its files live and what secrets it holds.

    ``settings`` is its complete login (address, principal, password, CA copy, runtime directory, KEK for hub
    hosts): :meth:`environment` is built from it and from nothing else, so a party cannot pick up another's."""

    name: str
    principal: str
    directory: Path
    holds: tuple[str, ...]
    settings: HubSettings

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The complete environment of this party's processes: its own login and directory, a minimal PATH,
        HOME and LANG, and ``extra`` (log settings and the like); nothing is inherited from this process."""
        s = self.settings
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(self.directory), "LANG": LANG,
            "HUB_BOOTSTRAP_SERVERS": s.bootstrap_servers, "HUB_SECURITY_PROTOCOL": s.security_protocol,
            "HUB_SASL_MECHANISM": s.sasl_mechanism, "HUB_SASL_USERNAME": s.sasl_username or "",
            "HUB_SASL_PASSWORD": s.sasl_password or "", "HUB_SSL_CAFILE": str(s.ssl_cafile or ""),
            "HUB_RUNTIME_DIR": str(s.runtime_dir), "HUB_TOPIC_PREFIX": s.topic_prefix,
            "HUB_LOG_FORMAT": s.log_format, "HUB_LOG_LEVEL": s.log_level,
            # Parties stand in for hosts on one machine, where every `hub run` would want the same metrics port.
            "HUB_METRICS_PORT": "0",
        }
        if s.kek_file is not None:
            env["HUB_KEK_FILE"] = str(s.kek_file)
        return env | dict(extra or {})


@dataclass(frozen=True)
class Deployment:
    """The standard parties: every publishing agency, the hub host(s), the task forces, the auditors, and
    the operator's view (hub login and KEK), which the process showing the deployment uses to read sealed topics."""

    agencies: dict[str, Party]
    hubs: list[Party]
    task_forces: dict[str, Party]
    auditors: dict[str, Party]
    operator: Party

    @property
    def hub(self) -> Party:
        return self.hubs[0]

    def parties(self) -> list[Party]:
        """Everyone, in the order data flows: agencies, hub hosts, task forces, auditors, the operator."""
        return [*self.agencies.values(), *self.hubs, *self.task_forces.values(), *self.auditors.values(),
                self.operator]


# -- the cluster ---------------------------------------------------------------------------------------
def start_secured_broker(progress: Callable[[str], None]) -> LocalBroker:
    """The local broker with SASL/SCRAM and TLS, started if needed (on the port of an earlier start).

    A running broker without that security (an older ``hub demo``'s) is refused rather than replaced: its
    security is fixed in its storage, so switching means deleting its data, which is the user's call."""
    broker = LocalBroker()
    layout = broker.layout
    if broker.running and layout is not None and (layout.auth, layout.tls) != ("scram", True):
        raise DeploymentError(
            f"the broker at {layout.bootstrap_servers} runs with auth={layout.auth}, tls={layout.tls} (an older "
            "`hub demo`'s?), but the demo gives every party its own SCRAM login over TLS",
            hint="Stop it and delete its data with `hub broker stop --wipe`, then run the demo again.")
    broker.start(port=layout.port if layout else DEFAULT_PORT, auth="scram", tls=True, progress=progress)
    return broker


def set_up_cluster(admin: HubSettings, agencies: Sequence[str], units: Sequence[str],
                   auditors: Sequence[str]) -> tuple[list[TopicStatus], AccessReport]:
    """What the cluster operator does before any party can work: create every topic (each agency's, each
    stage's, each unit's feed) and give each principal its login and ACLs. ``admin`` must be the super user."""
    statuses = ensure_topics(hub_topics(admin.topic_prefix, sorted(agencies), list(PIPELINE), sorted(units)), admin)
    report = apply_access(admin, admin.topic_prefix, sorted(agencies), sorted(units), auditors=sorted(auditors))
    return statuses, report


# -- the parties' directories ----------------------------------------------------------------------------
def demo_dir(admin: HubSettings) -> Path:
    return admin.runtime_dir / DEMO_DIR


def claim_for_cluster(directory: Path, cluster_id: str) -> bool:
    """Make ``directory`` belong to this cluster; True when it was emptied for a new one.

    Parties keep state that only means something on the cluster it came from (stage stores and their changelog
    positions, publish spools, the KEK the key table names): kept across a new cluster, a stage would skip the
    new changelog as already applied. So the directory is started afresh when the cluster id changes."""
    marker = directory / CLUSTER_FILE
    if marker.exists() and marker.read_text().strip() == cluster_id:
        return False
    emptied = directory.exists()
    if emptied:
        shutil.rmtree(directory)
    private_dir(directory)
    marker.write_text(cluster_id + "\n")
    return emptied


def private_dir(path: Path) -> Path:
    """A directory only its owner may enter (0700), as a party's home on its own host would be."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def give(party: Party, name: str, data: bytes) -> Path:
    """A file in the party's own directory, readable by its owner only."""
    path = party.directory / name
    write_private(path, data)
    return path


def ensure_kek(path: Path) -> Path:
    """The deployment's key-encryption key, created once (32 random bytes in base64, mode 0600): every hub host
    gets a copy of this one file, since a host with another KEK cannot open the keys on ``hub.keys``."""
    if not path.exists():
        write_private(path, base64.b64encode(os.urandom(KEY_SIZE)) + b"\n")
    return path


def _copy_private(source: Path, target: Path) -> Path:
    write_private(target, source.read_bytes())
    return target


def make_party(root: Path, name: str, principal: str, admin: HubSettings, kek: Path | None = None) -> Party:
    """A party called ``name`` logging in as ``principal``: its directory, its copy of the CA (and of the KEK),
    and its settings, which keep the cluster's address from ``admin`` and nothing of admin's login."""
    if admin.ssl_cafile is None or not admin.security_protocol.startswith("SASL"):
        raise DeploymentError(f"the cluster at {admin.bootstrap_servers} has no SASL/TLS listener "
                              f"({admin.security_protocol}): parties could not have logins of their own",
                              hint="Start the broker with `hub broker start --auth scram --tls`.")
    directory = private_dir(root / name)
    update: dict[str, object] = {**credentials_for(principal, admin), "runtime_dir": directory, "kek_file": None,
                                 "ssl_cafile": _copy_private(admin.ssl_cafile, directory / CA_FILE)}
    holds = [f"password of {principal}", "CA certificate"]
    if kek is not None:
        update["kek_file"] = _copy_private(kek, directory / KEK_FILE)
        holds.append("KEK")
    return Party(name, principal, directory, tuple(holds), admin.model_copy(update=update))


def standard_parties(admin: HubSettings, cluster_id: str, agencies: Iterable[str], task_forces: Iterable[str],
                     auditors: Iterable[str], hub_hosts: int = 1) -> Deployment:
    """The parties of the deployment under ``<runtime_dir>/demo/parties/``, built from the super user's settings
    once :func:`set_up_cluster` gave every principal its password. With several hub hosts they are ``hub1``,
    ``hub2``, ..., all holding the same KEK."""
    base = demo_dir(admin)
    claim_for_cluster(base, cluster_id)
    root = private_dir(base / PARTIES_DIR)
    kek = ensure_kek(base / KEK_FILE)
    hub_names = [HUB] if hub_hosts == 1 else [f"{HUB}{n}" for n in range(1, hub_hosts + 1)]
    return Deployment(
        agencies={ori: make_party(root, agency_principal(ori), agency_principal(ori), admin) for ori in agencies},
        hubs=[make_party(root, name, HUB, admin, kek) for name in hub_names],
        task_forces={unit: make_party(root, task_force_principal(unit), task_force_principal(unit), admin)
                     for unit in task_forces},
        auditors={name: make_party(root, auditor_principal(name), auditor_principal(name), admin)
                  for name in auditors},
        operator=make_party(root, OPERATOR, HUB, admin, kek),
    )


# -- running commands as a party -------------------------------------------------------------------------
def hub_command(*args: str) -> list[str]:
    """``python -m hub ARGS`` with this interpreter (the one whose environment has the hub installed)."""
    return [sys.executable, "-m", "hub", *args]


def run(party: Party, *args: str, env: Mapping[str, str] | None = None, check: bool = True,
        timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
    """Run ``hub ARGS`` as ``party`` in its directory and wait; output is captured. With ``check`` a non-zero
    exit raises :class:`DeploymentError` with the command's output."""
    done = subprocess.run(hub_command(*args), env=party.environment(env), cwd=party.directory,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise DeploymentError(f"`hub {' '.join(args)}` as {party.name} exited {done.returncode}:\n"
                              f"{done.stdout.rstrip()}\n{done.stderr.rstrip()}".rstrip())
    return done


def run_together(calls: Sequence[tuple[Party, Sequence[str]]], **options: object,
                 ) -> list[subprocess.CompletedProcess[str]]:
    """:func:`run` several parties' commands at the same time (as separate hosts would); results in order."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        return list(pool.map(lambda call: run(call[0], *call[1], **options), calls))


def start(party: Party, *args: str, log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``hub ARGS`` as ``party`` (a long-running service such as ``hub run STAGE``), its output appended to
    ``log``. It gets a session of its own, so a Ctrl-C meant for the caller reaches it only through :func:`stop`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(hub_command(*args), env=party.environment(env), cwd=party.directory,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """SIGTERM every process (a stage finishes its current transaction), then wait; SIGKILL what is left after
    ``timeout``. Nothing started by :func:`start` outlives the caller."""
    processes = [p for p in processes if p.poll() is None]
    for process in processes:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def keep_running(party: Party, name: str, *args: str,
                 env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``hub ARGS`` as ``party`` to outlive the caller (logged to ``logs/<name>.log``), in place of the one an
    earlier demo left running under ``name``."""
    pid_file = party.directory / f"{name}.pid"
    _stop_earlier(pid_file, args[0])
    process = start(party, *args, log=party.directory / "logs" / f"{name}.log", env=env)
    pid_file.write_text(str(process.pid))
    return process


def start_console(web: Party, checkpoint_key: Path | None = None,
                  timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``hub console`` as ``web`` with its copy of the CA (and of the hub's checkpoint public key, when given)
    and no login of its own (the console signs each user in with theirs), in place of one an earlier demo left
    running; returns it and its address once it answers."""
    port = _free_port(CONSOLE_PORT)
    log = web.directory / "logs" / "console.log"
    key_args: list[str] = []
    if checkpoint_key is not None and checkpoint_key.exists():
        copy = web.directory / "hub-checkpoint.pub"
        shutil.copyfile(checkpoint_key, copy)
        key_args = ["--checkpoint-key", str(copy)]
    process = keep_running(web, "console", "console", "--port", str(port), *key_args,
                           env={"HUB_SASL_USERNAME": "", "HUB_SASL_PASSWORD": ""})
    address = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{address}signin", timeout=2):
                return process, address
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise DeploymentError(f"hub console did not answer at {address} within {timeout_s:.0f} s:\n"
                                      f"{log_tail(log)}") from None
            time.sleep(0.3)


def _stop_earlier(pid_file: Path, command: str) -> None:
    """SIGTERM the process ``pid_file`` names, if it still runs ``hub COMMAND`` (a pid may have been reused)."""
    try:
        pid = int(pid_file.read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if command.encode() in cmdline.read():
                os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass  # none, or already gone


def _free_port(first: int) -> int:
    for port in range(first, first + 100):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise DeploymentError(f"no free port from {first} to {first + 99} for the console")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_caught_up(stage: str, settings: HubSettings, process: subprocess.Popen[bytes] | None = None,
                   log: Path | None = None, progress: Callable[[int], None] | None = None,
                   timeout_s: float = 600.0, poll_s: float = 0.5) -> int:
    """Wait until ``stage``'s consumer group has processed every committed input record, as read with
    ``settings`` (a hub login); returns the largest lag seen, i.e. the backlog it worked off.

    Waiting per stage, in pipeline order, means each stage starts on its upstream's complete output, so a run
    makes the same decisions as one stage after another in a single process (the runner commits past trailing
    transaction markers, so a caught-up stage has lag zero). A stage process that exits while waited on fails
    with its log's last lines."""
    backlog = 0
    deadline = time.monotonic() + timeout_s
    while True:
        behind = sum(stage_lag(STAGES[stage](), settings).values())
        backlog = max(backlog, behind)
        if not behind:
            return backlog
        if process is not None and process.poll() is not None:
            raise DeploymentError(f"the {stage} stage exited ({process.returncode}) with {behind:,} records left; "
                                  f"its log ({log}) ends:\n{log_tail(log) if log else ''}")
        if time.monotonic() > deadline:
            raise DeploymentError(f"the {stage} stage is still {behind:,} records behind after {timeout_s:.0f} s",
                                  hint=f"Look at its log{f' ({log})' if log else ''} and at `hub lag`.")
        if progress is not None:
            progress(behind)
        time.sleep(poll_s)
