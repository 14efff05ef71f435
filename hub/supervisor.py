"""Long-running hub processes: one stage (or the clock) with its metrics and probes, and ``hub run all``'s
supervisor of them.

The supervisor is what a service manager talks to: SIGTERM or SIGINT goes to every stage, each commits its last
batch and leaves, and the supervisor exits once they all have (a stage that outlives ``STOP_GRACE_S`` is killed: its
open batch is processed again on restart, nothing is lost). A stage that dies is restarted with a growing backoff;
one that dies ``max_restarts`` times within ``restart_window_s`` makes the supervisor stop the others and exit
non-zero, naming the stage and its last reason. Children ask the kernel for SIGTERM if the supervisor itself is
killed, so no stage outlives it.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import Counter, Gauge

from consumers.clock import WallClock
from consumers.runner import StageRunner
from consumers.stages import STAGES
from hub.exceptions import SupervisorError
from hub.logging import configure_logging, get_logger
from hub.observability import HealthServer, serve_health
from hub.settings import HubSettings, get_settings

#: What `hub run` runs besides the stages: the wall clock that escalates alerts on a quiet night.
CLOCK = "clock"
#: After SIGTERM, how long the supervisor waits for its stages (each commits within the runner's 30 s bound).
STOP_GRACE_S = 40.0
#: Restart backoff: the first restart after this, doubling per recent crash, at most ``MAX_BACKOFF_S``.
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
#: Exit code of a stage process that stopped on an error (the reason goes to the supervisor first).
STAGE_FAILED = 70
PR_SET_PDEATHSIG = 1

RESTARTS = Counter("hub_stage_restarts_total", "Stage processes the supervisor restarted after a crash", ["stage"])
UP = Gauge("hub_stage_up", "1 while the supervisor's stage process is running", ["stage"])


@dataclass(frozen=True)
class RunOptions:
    """How each stage runs (the `hub run` options)."""

    instance: int = 0
    commit_interval_s: float = 0.5
    max_batch: int = 2000
    transaction_timeout_s: float = 30.0


def run_process(name: str, options: RunOptions, metrics_port: int,
                reasons: Any = None) -> None:
    """Run stage ``name`` (or the clock) in this process until SIGTERM, serving its metrics and probes on
    ``metrics_port`` (0: none). A failure is logged with its traceback, told to the supervisor (``reasons``, a
    queue) and ends the process with ``STAGE_FAILED``."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    log = get_logger(stage=name, instance=options.instance)
    if reasons is not None:
        _die_with_parent()
    server: HealthServer | None = None
    try:
        if name == CLOCK:
            clock = WallClock(settings, source=f"{os.uname().nodename}/clock.{options.instance}")
            server = _serve(settings, metrics_port, clock.alive)
            clock.run()
            return
        runner = StageRunner(STAGES[name](), settings, instance=options.instance,
                             commit_interval_s=options.commit_interval_s, max_batch=options.max_batch,
                             transaction_timeout_ms=int(options.transaction_timeout_s * 1000))
        server = _serve(settings, metrics_port, runner.alive, runner.readiness)
        runner.run()
    except Exception as exc:  # noqa: BLE001 - whatever stopped the stage is told, never lost silently
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        log.error("stage stopped", reason=reason, traceback="".join(traceback.format_exception(exc))[-4000:])
        if reasons is not None:
            reasons.put((name, reason))
        raise SystemExit(STAGE_FAILED) from None
    finally:
        if server is not None:
            server.close()


def _serve(settings: HubSettings, port: int, alive: Callable[[], tuple[bool, str]],
           ready: Callable[[], tuple[bool, str]] | None = None) -> HealthServer | None:
    if not port:
        return None
    return serve_health(settings.metrics_host, port, alive=alive, ready=ready or alive)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the supervisor dies, even by SIGKILL (no orphaned stage)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux: the supervisor's own SIGTERM handling still stops its stages
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor died before the request took effect


@dataclass
class _Child:
    name: str
    port: int
    process: BaseProcess | None = None
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float = 0.0
    last_reason: str = ""


class Supervisor:
    """Runs ``names`` (stages, and the clock) as child processes and keeps them running; see the module doc."""

    def __init__(self, names: list[str], options: RunOptions = RunOptions(), settings: HubSettings | None = None,
                 *, say: Callable[[str], None] = print) -> None:
        self.settings = settings or get_settings()
        self.options = options
        self.say = say
        base = self.settings.metrics_port
        self.children = [_Child(name, base + n if base else 0) for n, name in enumerate(names, start=1)]
        self.log = get_logger(component="supervisor")
        self._context = multiprocessing.get_context("spawn")  # a clean interpreter: no threads or locks inherited
        self._reasons = self._context.Queue()
        self._stopping = False

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (0) or until a stage keeps crashing (raises :class:`SupervisorError`)."""
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        server = _serve(self.settings, self.settings.metrics_port, lambda: (True, "supervisor: alive"), self._ready)
        try:
            for child in self.children:
                self._start(child)
            self.say("running " + ", ".join(f"{c.name} (pid {c.process.pid}"  # type: ignore[union-attr]
                                            + (f", metrics :{c.port}" if c.port else "") + ")" for c in self.children))
            while not self._stopping:
                self._watch()
                time.sleep(0.2)
            return 0
        finally:
            self._stop_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if server is not None:
                server.close()

    def _ready(self) -> tuple[bool, str]:
        down = [c.name for c in self.children if c.process is None or not c.process.is_alive()]
        return (not down, f"stages not running: {', '.join(down)}" if down else "every stage running")

    def _start(self, child: _Child) -> None:
        child.process = self._context.Process(target=run_process, name=f"hub-{child.name}",
                                              args=(child.name, self.options, child.port, self._reasons))
        child.process.start()
        UP.labels(child.name).set(1)
        self.log.info("stage process started", stage=child.name, pid=child.process.pid)

    def _watch(self) -> None:
        """Note each stage that exited, and restart it when its backoff is over (or give up)."""
        self._collect_reasons()
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is not None and not process.is_alive():
                self._crashed(child, process, now)
            elif process is None and now >= child.restart_at and not self._stopping:
                RESTARTS.labels(child.name).inc()
                self._start(child)
                self.say(f"restarted {child.name} (pid {child.process.pid})")  # type: ignore[union-attr]

    def _crashed(self, child: _Child, process: BaseProcess, now: float) -> None:
        process.join()
        self._collect_reasons()
        UP.labels(child.name).set(0)
        code = process.exitcode
        reason = child.last_reason if code == STAGE_FAILED and child.last_reason else _exit_reason(code)
        child.process, child.last_reason = None, reason
        window = self.settings.restart_window_s
        child.crashes.append(now)
        while child.crashes and now - child.crashes[0] > window:
            child.crashes.popleft()
        self.log.error("stage process exited", stage=child.name, exit_code=code, reason=reason,
                       crashes_in_window=len(child.crashes))
        if len(child.crashes) > self.settings.max_restarts:
            raise SupervisorError(f"stage {child.name} crashed {len(child.crashes)} times in {window:.0f} s; "
                                  f"last: {reason}")
        backoff = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (len(child.crashes) - 1))
        child.restart_at = now + backoff
        self.say(f"stage {child.name} exited ({reason}); restarting in {backoff:.0f} s")

    def _collect_reasons(self) -> None:
        while not self._reasons.empty():
            try:
                name, reason = self._reasons.get_nowait()
            except Exception:  # noqa: BLE001 - queue.Empty raced with empty(): nothing to read
                return
            for child in self.children:
                if child.name == name:
                    child.last_reason = reason

    def _stop(self, signum: int, _frame: Any) -> None:
        if not self._stopping:
            self._stopping = True
            self.say(f"{signal.Signals(signum).name}: stopping every stage after its current batch")

    def _stop_children(self) -> None:
        """SIGTERM every running stage, wait for their last commits, kill what outlives the grace."""
        running = [c.process for c in self.children if c.process is not None and c.process.is_alive()]
        for process in running:
            os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                self.log.error("stage did not stop in time; killed", pid=process.pid, grace_s=STOP_GRACE_S)
                process.kill()
                process.join()
        for child in self.children:
            UP.labels(child.name).set(0)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}" + (" (it should run until stopped)" if code == 0 else "")
