"""Metrics and health over HTTP for every long-running hub process: ``/metrics``, ``/healthz``, ``/readyz``.

prometheus-client's own WSGI exposition serves ``/metrics``; the two probes answer from callables the process
passes in (a stage runner: its main loop turning, and its partitions assigned and restored), so a service manager
or Kubernetes restarts a stuck process and routes nothing to one that is not ready. The server runs on daemon
threads: it never holds a process up at exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from hub.exceptions import ConfigError

#: A probe's answer: healthy or not, and why (shown in the response body and the log).
ProbeResult = tuple[bool, str]
Probe = Callable[[], ProbeResult]


def always_ok() -> ProbeResult:
    return True, "ok"


class _QuietHandler(WSGIRequestHandler):
    """Scrapes every second would flood the log with access lines."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@dataclass
class HealthServer:
    """A running metrics-and-probes server; ``port`` is the one bound (useful when 0 asked for any free port)."""

    host: str
    port: int
    _server: ThreadingWSGIServer

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def probes_app(alive: Probe = always_ok, ready: Probe = always_ok) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: ``/healthz`` asks ``alive``, ``/readyz`` asks ``ready``, anything else is the metrics."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = {"/healthz": alive, "/readyz": ready}.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics(environ, start_response)
        ok, reason = probe()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{reason}\n".encode()]

    return app


def serve_health(host: str, port: int, *, alive: Probe = always_ok, ready: Probe = always_ok) -> HealthServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` from a daemon thread."""
    try:
        server = make_server(host, port, probes_app(alive, ready), ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                          hint="Choose a free port with HUB_METRICS_PORT (0 turns the server off), or stop the "
                               "process already using it.") from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return HealthServer(host, server.server_port, server)
