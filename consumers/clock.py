"""The hub's wall clock as a logged input: ticks on ``hub.clock`` that the alerts stage reads.

A deadline must pass on a quiet night too, when no record arrives to move a stage's stream time. Reading the system
clock inside a stage would make a replay decide differently from live, so time enters the way data does (Kafka
Streams' wall-clock punctuation, made replayable): ``hub run clock`` writes one :class:`ClockTick` to every partition
of ``hub.clock`` every ``HUB_CLOCK_TICK_S``, stamped with its time; the alerts stage, co-partitioned with it, takes
each tick as its time having moved on, and ``hub replay`` copies the ticks with the rest of the history. Several
clocks on several hosts are harmless: a stage's time is the newest it has read.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from kafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from hub.exceptions import TopicMissingError
from hub.kafka import make_producer
from hub.logging import get_logger
from hub.settings import HubSettings
from schemas.codec import Codec
from schemas.models import ClockTick
from schemas.topics import CLOCK

TICKS = Counter("hub_clock_ticks_total", "Wall-clock ticks written to hub.clock (one per partition)")
LAST_TICK = Gauge("hub_clock_last_tick_timestamp_seconds", "When the clock last wrote its ticks")


class WallClock:
    """Writes the hub's wall clock to every partition of ``hub.clock``."""

    def __init__(self, settings: HubSettings, *, source: str | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.topic = settings.topic(CLOCK.pattern)
        self.source = source or f"{socket.gethostname()}/clock"
        self.now = now
        self.codec = Codec()  # a tick carries no report: nothing to seal
        self.log = get_logger(component="clock")
        self._producer = make_producer(settings, linger_ms=0, client_id=f"{settings.topic_prefix}hub.clock")
        partitions = self._producer.partitions_for(self.topic)
        if not partitions:
            raise TopicMissingError(f"the clock writes {self.topic}, which does not exist",
                                    hint="Create the hub's topics with `hub topics init`.")
        self.partitions = sorted(partitions)
        self._stopping = threading.Event()
        self.alive_at = time.monotonic()

    def tick(self) -> float:
        """Write one tick to every partition and wait for the brokers to take them; returns the tick's time."""
        at = self.now()
        value = self.codec.encode(ClockTick(at=datetime.fromtimestamp(at, tz=timezone.utc), source=self.source))
        for partition in self.partitions:
            self._producer.send(self.topic, value=value, partition=partition, timestamp_ms=int(at * 1000))
        self._producer.flush(timeout=30)
        TICKS.inc(len(self.partitions))
        LAST_TICK.set(at)
        self.alive_at = time.monotonic()
        return at

    def alive(self) -> tuple[bool, str]:
        """``/healthz``: a tick was written within a few intervals."""
        behind = time.monotonic() - self.alive_at
        limit = max(10 * self.settings.clock_tick_s, 30.0)
        return (behind < limit, f"clock: last tick {behind:.1f} s ago")

    def run(self) -> None:
        """Tick every ``clock_tick_s`` until SIGTERM/SIGINT (or :meth:`stop`)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self.log.info("clock started", topic=self.topic, partitions=len(self.partitions),
                      every_s=self.settings.clock_tick_s)
        interval = self.settings.clock_tick_s
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    self.tick()
                except KafkaError as exc:  # a tick missed is only time not yet told: the next one tells it
                    self.log.warning("clock tick not written; trying again", reason=f"{type(exc).__name__}: {exc}")
                self._stopping.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            self._producer.close(timeout=10)

    def stop(self) -> None:
        self._stopping.set()
