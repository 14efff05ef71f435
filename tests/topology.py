"""Every party on its own host: a test harness where parties share nothing but Kafka (issue 10).

A :class:`Network` is a Linux bridge (``hubtbr0``, 10.213.77.1/24) in the root network namespace. Each
:class:`Host` on it is

- its own network namespace, joined to the bridge by a veth pair with its own address (10.213.77.N). The
  bridge ports are *isolated* (``bridge link set ... isolated on``), so hosts cannot reach each other, only the
  bridge address, where the broker listens (``LocalBroker.start(host=...)``, see :func:`secured_broker`);
  the namespace has no default route, and, when ``nft`` is installed, its own egress filter drops everything
  but TCP to the broker's ports on the bridge address (:meth:`Network.allow_tcp`);
- its own OS user (``useradd --system``, removed again), with its own HOME and ``HUB_RUNTIME_DIR`` (mode 0700,
  owned by that user), so no other party can read them;
- its own environment: commands run (:meth:`Host.run`, :meth:`Host.spawn`) inside the namespace as that user
  with exactly PATH, HOME, LANG and the ``HUB_*`` variables of its own Kafka login (:meth:`Host.login`: its
  principal, its password, SASL_SSL and a copy of the CA in its HOME), never anything of the test process.

The hosts run the repository's Python (the interpreter running the tests, normally ``<repo>/.venv``). When a
directory on the way to it cannot be entered by other users (say the interpreter lives under ``/root``, mode
0700), every command gets a private view in its own mount namespace: a tmpfs over that directory showing only
the paths the hosts need, bind-mounted read-only. Nothing outside the harness's own directories is chmod-ed.

Everything created is named ``hubt*`` (devices, namespaces, users, ``/tmp/hubt-hosts-*``): a run removes its
own on exit, and the next run removes what a killed run left. One run at a time holds ``/tmp/hubt-topology.lock``.

Needs root, ``ip`` (iproute2), ``setpriv``, ``useradd``/``userdel`` and ``mount``; :func:`available` says why not.
Traffic only ever goes to addresses of the devices created here.

Usage::

    with Network() as net:
        cbp, tf = net.host("cbp"), net.host("tf")
        with secured_broker(net, tmp_path / "broker") as broker:
            admin = broker.client_settings().model_copy(update={"topic_prefix": "t."})
            apply_access(admin, "t.", ["CACBP0100"], ["best-san-diego"])
            cbp.login(admin.model_copy(update=credentials_for("agency-cacbp0100", admin)))
            result = cbp.python("from hub.settings import HubSettings; print(HubSettings().sasl_username)")
            assert result.stdout.strip() == "agency-cacbp0100"
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import ipaddress
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hub.settings import REPO_ROOT, HubSettings

PREFIX = "hubt"  # every device, namespace, user and directory the harness creates starts with this
BRIDGE = f"{PREFIX}br0"
SUBNET = "10.213.77.0/24"
LOCK_FILE = Path(tempfile.gettempdir()) / f"{PREFIX}-topology.lock"
BASE_PREFIX = f"{PREFIX}-hosts-"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,15}$")
LANG = "C.UTF-8"
TOOLS = ("ip", "bridge", "setpriv", "useradd", "userdel", "mount", "umount")


class TopologyUnavailable(RuntimeError):
    """This machine cannot run the harness (not root, no network namespaces, an unreadable interpreter, ...)."""


# -- small helpers --------------------------------------------------------------------------------
def _sh(*args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{shlex.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def _kill(pids: Sequence[int]) -> None:
    """SIGKILL these processes (all of them started by this harness) and wait until they are gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.02)


def _delete_user(name: str) -> None:
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        uid = None
    if uid is not None:
        _kill(_pids_of_uid(uid))
        _sh("userdel", name, check=False)
    with contextlib.suppress(KeyError):
        grp.getgrnam(name)
        _sh("groupdel", name, check=False)


def _others_may_enter(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IXOTH)
    except OSError:
        return False


def _others_may_read(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IROTH) and (not stat.S_ISDIR(mode) or bool(mode & stat.S_IXOTH))


def available() -> str | None:
    """None when this machine can run the harness, else the reason it cannot (for ``pytest.skip``)."""
    if sys.platform != "linux":
        return "host topology tests need Linux network namespaces"
    if os.geteuid() != 0:
        return "host topology tests need root (network namespaces, bridges, OS users)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"host topology tests need {', '.join(missing)} on PATH"
    probe = f"{PREFIX}-probe{os.getpid()}"
    try:
        created = _sh("ip", "netns", "add", probe, check=False)
        if created.returncode != 0:
            return f"cannot create a network namespace (`ip netns add`): {created.stderr.strip()}"
        _sh("ip", "netns", "del", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _exposed_paths()
    except TopologyUnavailable as exc:
        return str(exc)
    return None


def cleanup_leftovers() -> None:
    """Remove every namespace, device, user and base directory a previous run left (by the ``hubt`` prefix)."""
    for line in _sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{PREFIX}-"):
            pids = _sh("ip", "netns", "pids", name, check=False).stdout.split()
            _kill([int(p) for p in pids if p.isdigit()])
            _sh("ip", "netns", "del", name, check=False)
    for line in _sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        fields = line.split(":", 2)
        if len(fields) > 1:
            device = fields[1].strip().split("@")[0]
            if device.startswith(PREFIX):
                _sh("ip", "link", "del", device, check=False)
    for user in pwd.getpwall():
        if user.pw_name.startswith(f"{PREFIX}-"):
            _delete_user(user.pw_name)
    for group in grp.getgrall():
        if group.gr_name.startswith(f"{PREFIX}-"):
            _sh("groupdel", group.gr_name, check=False)
    for leftover in Path(tempfile.gettempdir()).glob(f"{BASE_PREFIX}*"):
        if leftover.is_dir() and not leftover.is_symlink() and leftover.stat().st_uid == 0:
            shutil.rmtree(leftover, ignore_errors=True)


# -- what the hosts must be able to read ----------------------------------------------------------
def _python() -> Path:
    """The interpreter hosts run: the one running the tests (normally ``<repo>/.venv/bin/python``)."""
    return Path(sys.prefix) / "bin" / "python"


def _needed_paths() -> list[Path]:
    """Directories a host must read: the repository, the venv and the base interpreter's installation."""
    paths = {REPO_ROOT.resolve(), Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
             _python().resolve().parent.parent}
    for entry in sys.path:  # editable installs and .pth files may add more
        p = Path(entry).resolve() if entry else None
        if p is not None and p.is_dir() and not str(p).startswith(tempfile.gettempdir()):
            paths.add(p)
    # keep only the outermost of nested paths
    return sorted(p for p in paths if not any(q != p and q in p.parents for q in paths))


def _exposed_paths() -> dict[Path, list[Path]]:
    """Blocked directory (others may not enter it) -> the needed paths beneath it that hosts get to see.

    Raises TopologyUnavailable when a needed path itself is not readable by other users: the harness does not
    chmod anything outside its own directories.
    """
    blocked: dict[Path, list[Path]] = {}
    for path in _needed_paths():
        if not _others_may_read(path):
            raise TopologyUnavailable(
                f"{path} is not readable by other users (mode {stat.filemode(path.stat().st_mode)}), so the test "
                "hosts' users cannot run the hub's Python; clone or install where others can read (chmod o+rx)")
        top = next((a for a in reversed(path.parents) if not _others_may_enter(a)), None)
        if top is not None:
            blocked.setdefault(top, []).append(path)
    temp = Path(tempfile.gettempdir()).resolve()
    for top in blocked:
        if top == temp or top in temp.parents:
            raise TopologyUnavailable(f"{top} is not traversable by other users and holds the temp directory")
    return blocked


def _view_script(staging: Path, blocked: dict[Path, list[Path]]) -> str:
    """Shell lines that give the current (private) mount namespace a tmpfs over each blocked directory,
    showing only the needed paths beneath it, read-only."""
    lines = []
    index = 0
    for top, paths in blocked.items():
        moves = []
        for path in paths:
            stage = staging / str(index)
            index += 1
            lines.append(f"mount --bind {shlex.quote(str(path))} {shlex.quote(str(stage))}")
            moves.append((stage, path))
        lines.append(f"mount -t tmpfs -o mode=0755,size=64k,nosuid,nodev {PREFIX}view {shlex.quote(str(top))}")
        for stage, path in moves:
            lines += [f"mkdir -p {shlex.quote(str(path))}",
                      f"mount --bind {shlex.quote(str(stage))} {shlex.quote(str(path))}",
                      f"mount -o remount,bind,ro {shlex.quote(str(path))}",
                      f"umount {shlex.quote(str(stage))}"]
    return "\n".join(lines)


# -- the network ----------------------------------------------------------------------------------
class Network:
    """A bridge in the root namespace whose isolated ports lead to the hosts' namespaces (module docstring)."""

    def __init__(self, subnet: str = SUBNET, bridge: str = BRIDGE, egress_filter: bool = True) -> None:
        self.subnet = ipaddress.ip_network(subnet)
        self.bridge = bridge
        self.gateway = str(next(self.subnet.hosts()))
        self.egress_filter = egress_filter and shutil.which("nft") is not None
        self.hosts: list[Host] = []
        self.ports: set[int] = set()
        self.base: Path | None = None
        self._lock: int | None = None
        self._view = ""

    # lifecycle
    def __enter__(self) -> Network:
        reason = available()
        if reason:
            raise TopologyUnavailable(reason)
        self._lock = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            cleanup_leftovers()
            self._check_subnet_is_free()
            self.base = Path(tempfile.mkdtemp(prefix=BASE_PREFIX))
            self.base.chmod(0o711)  # hosts may pass through to their own directory, not list the others
            staging = self.base / ".view"
            staging.mkdir(mode=0o700)
            blocked = _exposed_paths()
            for i in range(sum(map(len, blocked.values()))):
                (staging / str(i)).mkdir()
            self._view = _view_script(staging, blocked)
            _sh("ip", "link", "add", self.bridge, "type", "bridge")
            _disable_ipv6(self.bridge)
            _sh("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _sh("ip", "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Tear everything down (idempotent): hosts, bridge, base directory, lock."""
        for host in reversed(self.hosts):
            host.close()
        self.hosts.clear()
        _sh("ip", "link", "del", self.bridge, check=False)
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _check_subnet_is_free(self) -> None:
        for line in _sh("ip", "-4", "route", "show").stdout.splitlines():
            target = line.split()[0]
            if target == "default":
                continue
            with contextlib.suppress(ValueError):
                if ipaddress.ip_network(target, strict=False).overlaps(self.subnet):
                    raise TopologyUnavailable(f"{self.subnet} is already routed here ({line.strip()})")

    # hosts and ports
    def host(self, name: str) -> Host:
        """A new host called ``name`` (lower-case letters and digits, at most 16)."""
        if self.base is None:
            raise RuntimeError("enter the Network (`with Network() as net`) before adding hosts")
        if not NAME_PATTERN.match(name) or any(h.name == name for h in self.hosts):
            raise ValueError(f"host name {name!r} is not a fresh lower-case slug of letters and digits")
        index = len(self.hosts) + 2
        address = self.subnet.network_address + index
        if address not in self.subnet or address == self.subnet.broadcast_address:
            raise ValueError(f"no address left in {self.subnet}")
        host = Host(self, name, index, str(address))
        self.hosts.append(host)
        host.create()
        return host

    def allow_tcp(self, *ports: int) -> None:
        """Let every host (present and future) connect to these TCP ports on the bridge address."""
        self.ports |= set(ports)
        for host in self.hosts:
            host.allow_tcp(*ports)

    def isolated_ports(self) -> dict[str, bool]:
        """Bridge port -> whether it is isolated (as the kernel reports it)."""
        out = _sh("bridge", "-d", "link", "show").stdout
        ports: dict[str, bool] = {}
        for block in re.split(r"\n(?=\d+: )", out):
            match = re.match(r"\d+: ([^@:\s]+)", block)
            if match and f"master {self.bridge}" in block:
                ports[match.group(1)] = " isolated on" in block
        return ports


def _disable_ipv6(device: str, netns: str | None = None) -> None:
    """No IPv6 on the harness's devices: no link-local paths around the IPv4 rules."""
    command = f"echo 1 > /proc/sys/net/ipv6/conf/{device}/disable_ipv6"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    if Path("/proc/sys/net/ipv6").exists():
        _sh(*prefix, "sh", "-c", command, check=False)


# -- a host -----------------------------------------------------------------------------------------
class Host:
    """One party's machine: network namespace, OS user, HOME and runtime dir, environment (module docstring)."""

    def __init__(self, network: Network, name: str, index: int, ip: str) -> None:
        assert network.base is not None
        self.network = network
        self.name = name
        self.ip = ip
        self.netns = f"{PREFIX}-{name}"
        self.user = f"{PREFIX}-{name}"
        self.veth = f"{PREFIX}v{index}"
        self.home = network.base / name
        self.runtime_dir = self.home / "runtime"
        self.uid = self.gid = -1
        self.kafka_env: dict[str, str] = {}
        self._spawned: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ip={self.ip}, user={self.user})"

    def create(self) -> None:
        prefix = f"{self.network.subnet.prefixlen}"
        _sh("useradd", "--system", "--no-create-home", "--user-group", "--home-dir", str(self.home),
            "--shell", "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false", self.user)
        entry = pwd.getpwnam(self.user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        for directory in (self.home, self.runtime_dir):
            directory.mkdir(mode=0o700)
            os.chown(directory, self.uid, self.gid)
            directory.chmod(0o700)
        _sh("ip", "netns", "add", self.netns)
        _sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _disable_ipv6(self.veth)
        _sh("ip", "link", "set", self.veth, "master", self.network.bridge)
        _sh("bridge", "link", "set", "dev", self.veth, "isolated", "on")
        _sh("ip", "link", "set", self.veth, "up")
        _disable_ipv6("all", self.netns)
        _sh("ip", "-n", self.netns, "addr", "add", f"{self.ip}/{prefix}", "dev", "eth0")
        _sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        _sh("ip", "-n", self.netns, "link", "set", "eth0", "up")
        if self.network.egress_filter:
            rules = (f"table inet {PREFIX} {{\n"
                     "  set broker_ports { type inet_service; }\n"
                     "  chain output { type filter hook output priority 0; policy drop;\n"
                     '    oifname "lo" accept\n'
                     "    ct state established,related accept\n"
                     f"    ip daddr {self.network.gateway} tcp dport @broker_ports accept\n"
                     "  }\n}\n")
            result = subprocess.run(["ip", "netns", "exec", self.netns, "nft", "-f", "-"], input=rules,
                                    capture_output=True, text=True, timeout=30)
            if result.returncode != 0:
                raise RuntimeError(f"nft in {self.netns} failed: {result.stderr.strip()}")
            if self.network.ports:
                self.allow_tcp(*self.network.ports)

    def allow_tcp(self, *ports: int) -> None:
        if self.network.egress_filter and ports:
            _sh("ip", "netns", "exec", self.netns, "nft", "add", "element", "inet", PREFIX, "broker_ports",
                "{ " + ", ".join(map(str, sorted(ports))) + " }")

    def close(self) -> None:
        """Kill what ran as this host, remove its namespace, device, user and directories (idempotent)."""
        for proc in self._spawned:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        self._spawned.clear()
        if self.uid >= 0:
            _kill(_pids_of_uid(self.uid))
        pids = _sh("ip", "netns", "pids", self.netns, check=False).stdout.split()
        _kill([int(p) for p in pids if p.isdigit()])
        _sh("ip", "netns", "del", self.netns, check=False)
        _sh("ip", "link", "del", self.veth, check=False)
        _delete_user(self.user)
        shutil.rmtree(self.home, ignore_errors=True)

    # -- identity and environment --------------------------------------------------------------------
    def login(self, settings: HubSettings) -> None:
        """Make this host's environment connect to Kafka as ``settings`` does (its principal, its password),
        trusting a copy of the CA kept in its own HOME."""
        env = {"HUB_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
               "HUB_SECURITY_PROTOCOL": settings.security_protocol}
        if settings.security_protocol.startswith("SASL"):
            env |= {"HUB_SASL_MECHANISM": settings.sasl_mechanism, "HUB_SASL_USERNAME": settings.sasl_username or "",
                    "HUB_SASL_PASSWORD": settings.sasl_password or ""}
        if settings.ssl_cafile is not None:
            ca_copy = self.home / "ca.pem"
            shutil.copyfile(settings.ssl_cafile, ca_copy)
            os.chown(ca_copy, self.uid, self.gid)
            ca_copy.chmod(0o600)
            env["HUB_SSL_CAFILE"] = str(ca_copy)
        if settings.topic_prefix:
            env["HUB_TOPIC_PREFIX"] = settings.topic_prefix
        self.kafka_env = env

    @property
    def principal(self) -> str | None:
        return self.kafka_env.get("HUB_SASL_USERNAME")

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The complete environment of a command on this host: nothing else reaches it."""
        path = ":".join([str(_python().parent), "/usr/local/bin", "/usr/bin", "/bin"])
        return {"PATH": path, "HOME": str(self.home), "LANG": LANG, "HUB_RUNTIME_DIR": str(self.runtime_dir),
                **self.kafka_env, **(extra or {})}

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` wrapped to run in this host's namespace as its user (the environment is Popen's)."""
        script = "\n".join(filter(None, [
            "set -e",
            self.network._view,
            "unset PWD OLDPWD",
            f"exec setpriv --reuid={self.uid} --regid={self.gid} --init-groups --no-new-privs "
            '--bounding-set=-all --inh-caps=-all -- "$@"',
        ]))
        return ["ip", "netns", "exec", self.netns, "/bin/sh", "-c", script, f"{PREFIX}-{self.name}", *args]

    def run(self, args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``args`` on this host and wait (text output captured; never raises on a non-zero exit)."""
        return subprocess.run(self.command(args), env=self.environment(env), cwd=self.home, input=input,
                              capture_output=True, text=True, timeout=timeout)

    def spawn(self, args: Sequence[str], env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[Any]:
        """Start ``args`` on this host in its own session; killed at the latest when the host is torn down."""
        popen.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self.command(args), env=self.environment(env), cwd=self.home,
                                start_new_session=True, **popen)
        self._spawned.append(proc)
        return proc

    def python(self, code: str, env: dict[str, str] | None = None,
               timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run Python code with the hub's interpreter on this host."""
        return self.run([str(_python()), "-c", code], env=env, timeout=timeout)


# -- a broker the hosts can reach -------------------------------------------------------------------
@contextmanager
def secured_broker(network: Network, runtime_dir: Path, name: str = "hosts-broker", **start: Any) -> Iterator[Any]:
    """A SASL_SSL (SCRAM + TLS) LocalBroker whose client listener is on the bridge address, its certificate
    naming that address; its state (admin password, principals' passwords) stays in ``runtime_dir``, which the
    hosts cannot read. Hosts may connect to its client port(s)."""
    from tests.conftest import running_local_broker

    with running_local_broker(name, runtime_dir, auth="scram", tls=True, host=network.gateway, **start) as broker:
        layout = broker.layout
        assert layout is not None
        network.allow_tcp(*(layout.broker_port(n) for n in layout.node_ids))
        yield broker
