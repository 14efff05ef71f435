"""Benchmarks that print figures, each next to a raw kafka-python baseline measured in the same run."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kafka import ConsumerRebalanceListener
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from hub.exceptions import BenchmarkError
from hub.kafka import make_admin, make_producer
from hub.settings import HubSettings, get_settings
from hub.topics import ensure_topics
from producers.publisher import Publisher
from producers.sample import generate
from hub.vault import hub_codec
from schemas.codec import Codec, parse_event
from schemas.topics import INGEST


@dataclass(frozen=True)
class BenchResult:
    name: str
    events: int
    seconds: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program. Not ``ru_maxrss``: Linux carries that
    across exec, so a stage process spawned by a large benchmark process reported the benchmark's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(name: str, events: int, work: Callable[[], object]) -> BenchResult:
    started = time.perf_counter()
    work()
    return BenchResult(name, events, time.perf_counter() - started, _peak_rss_mb())


def bench_publish(count: int, settings: HubSettings | None = None) -> list[BenchResult]:
    """validate, encode, raw kafka-python produce of the same bytes, and the full Publisher path."""
    settings = settings or get_settings()
    sample = generate(count, seed=11)
    # One agency publishes them all (a Publisher is per agency), so every generated event is measured.
    publisher_agency = sample.events[0].source_agency
    agency = publisher_agency.ori
    events = [e.model_copy(update={"source_agency": publisher_agency}) for e in sample.events]
    dicts = [e.model_dump(mode="json") for e in events]
    codec = Codec()  # what an agency's publisher encodes with: in the clear, intake seals
    encoded: list[bytes] = []
    run = uuid.uuid4().hex[:8]
    bench_settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}bench.{run}.",
                                                 "runtime_dir": settings.runtime_dir / "bench" / run})
    raw_topic = bench_settings.topic("raw")
    ingest_topic = INGEST.name(bench_settings.topic_prefix, ori=agency)
    admin = make_admin(settings)
    admin.create_topics([NewTopic(raw_topic, INGEST.partitions, 1)])
    ensure_topics([(ingest_topic, INGEST)], bench_settings)

    def raw_produce() -> None:
        producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024)
        for value in encoded:
            producer.send(raw_topic, value=value)
        producer.flush()
        producer.close()

    def publish() -> None:
        with Publisher(agency, bench_settings) as publisher:
            for event in events:
                publisher.publish(event)
            report = publisher.flush()
        assert report.published == len(events), report

    try:
        return [
            _timed("validate (pydantic, from JSON dicts)", len(dicts), lambda: [parse_event(d) for d in dicts]),
            _timed("encode (Avro single-object)", len(events), lambda: encoded.extend(codec.encode(e) for e in events)),
            _timed("baseline: raw kafka-python produce, acks=all", len(encoded), raw_produce),
            _timed("hub Publisher: encode+spool+produce+confirm", len(events), publish),
        ]
    finally:
        admin.delete_topics([raw_topic, ingest_topic])
        admin.close()


@dataclass(frozen=True)
class PipelineResult:
    """Throughput (``events`` inputs in ``seconds``) or latency (percentiles over ``events`` samples)."""

    name: str
    kind: Literal["throughput", "latency"]
    events: int
    seconds: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    p999_ms: float = float("nan")
    #: Latency runs: the rate the events were actually published at (the publisher keeps a schedule, but a busy
    #: machine can fall behind it).
    published_per_s: float = float("nan")
    #: The benchmark process's so far (throughput: every stage runs in it, as threads), or, for the hub's latency
    #: run, the stage processes' peaks added up.
    peak_rss_mb: float = float("nan")

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class _Clock:
    """Times work from its first processed message to its last, so joining the group, restoring state and
    the idle polls that show a backlog is drained are left out."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.last = time.perf_counter()
        self.processed = 0
        self.idle_polls = 0

    def count(self, handled: int) -> None:
        """Called after each poll with how many messages it brought; the first batch's work began at the
        end of the previous poll."""
        now = time.perf_counter()
        if handled and self.started is None:
            self.started = self.last
        self.last = now if handled or self.started is None else self.last
        if handled:
            self.idle_polls = 0
        elif self.started is not None:
            self.idle_polls += 1
        self.processed += handled

    def assigned(self) -> None:
        """Partitions arrived (and state was restored): work counts from here at the earliest."""
        self.last = time.perf_counter()

    @property
    def drained(self) -> bool:
        return self.idle_polls >= 10

    @property
    def seconds(self) -> float:
        return self.last - self.started if self.started is not None else 0.0


def bench_pipeline(count: int, paced: int = 2000, rate: float = 400.0, settings: HubSettings | None = None,
                   compare_quix: bool = False) -> list[PipelineResult]:
    """Every stage (dedup, correlate, deconflict, alerts, route) next to a raw consume-produce passthrough on
    the same broker and input, in one run.

    Throughput: the passthrough drains a backlog of ``count`` published events; then each stage in pipeline
    order drains everything its upstream produced (inputs/s). Latency: ``paced`` more events published at
    ``rate``/s while the passthrough, or all stages at once (each in a process of its own, as ``hub run all`` runs
    them), run; latency is from publishing to the output being readable (read_committed), so it includes each
    stage's commit. With ``compare_quix``, a Quix Streams application does dedup's and route's work over the same
    sealed records as the hub's dedup stage (:mod:`hub.quix_baseline`).
    """
    import threading

    from datetime import datetime, timezone

    from consumers.replay import Replay
    from consumers.runner import stage_lag
    from consumers.stages import STAGES
    from hub.kafka import make_consumer
    from schemas.models import RoutingDecisions
    from schemas.topics import ALERTS, AUDIT, CANONICAL, INGESTED

    if compare_quix and importlib.util.find_spec("quixstreams") is None:
        raise BenchmarkError("--compare-quix needs Quix Streams, which is not installed here",
                             hint="install the test extra (`make install`), or `pip install quixstreams==3.28.1`")
    sample = generate(count + paced, seed=13)
    backlog, live = sample.events[:count], sample.events[count:]
    bench = _namespace(settings or get_settings(), sorted({e.agency_ori for e in sample.events}))
    passthrough_topic = bench.topic("passthrough")
    admin = make_admin(bench)
    admin.create_topics([NewTopic(passthrough_topic, INGEST.partitions, 1)])
    admin.close()
    pattern = "^" + bench.topic_prefix.replace(".", r"\.") + r"ingest\..+"
    codec = hub_codec(bench)

    def publish(events: list, pace: float | None = None) -> dict[str, float]:
        return _publish(bench, events, pace)

    def passthrough(clock: _Clock, until: Callable[[], bool], ready: threading.Event,
                    transactional: bool = False) -> None:
        """Consume the ingest topics and produce every record again, unchanged: raw (commit after each flush), or
        as a stage does it (read_committed, each poll's records and offsets in one transaction)."""
        kind = "passthrough-tx" if transactional else "passthrough"
        consumer = make_consumer(settings=bench, group_id=f"{bench.topic_prefix}{kind}")

        class Assigned(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: list) -> None:
                pass

            def on_partitions_assigned(self, assigned: list) -> None:
                clock.assigned()

        consumer.subscribe(pattern=pattern, listener=Assigned())
        producer = make_producer(bench, linger_ms=5, batch_size=256 * 1024,
                                 **({"transactional_id": f"{bench.topic_prefix}{kind}"} if transactional else {}))
        if transactional:
            producer.init_transactions()
        while not until():
            polled = consumer.poll(timeout_ms=200)
            if consumer.assignment():
                ready.set()
            if transactional and polled:
                producer.begin_transaction()
            for records in polled.values():
                for r in records:
                    producer.send(passthrough_topic, key=r.key, value=r.value, headers=r.headers)
            if transactional and polled:
                producer.send_offsets_to_transaction(
                    {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in polled.items()},
                    consumer.group_metadata())
                producer.commit_transaction()
            elif not transactional:
                producer.flush()
                consumer.commit()
            clock.count(sum(len(records) for records in polled.values()))
        producer.close()
        consumer.close()

    spawn = multiprocessing.get_context("spawn")  # a fork would copy this process's Kafka client threads
    stage_rss_mb: dict[str, float] = {}

    def stage_process(name: str, clock: _Clock, until: Callable[[], bool], ready: threading.Event) -> None:
        started, stop, rss = spawn.Event(), spawn.Event(), spawn.Value("d", 0.0)
        process = spawn.Process(target=_stage_in_process, args=(name, bench, started, stop, rss), daemon=True,
                                name=f"bench-{name}")
        process.start()
        while not until():
            if started.is_set():
                ready.set()
            time.sleep(0.05)
        stop.set()
        process.join(timeout=60)
        stage_rss_mb[name] = rss.value

    def stage_runner(name: str, clock: _Clock, until: Callable[[], bool], ready: threading.Event) -> None:
        _run_stage(name, bench, ready, until, clock)

    def arrivals(topics: list[str], stop: threading.Event, polled: list[tuple[float, bytes]]) -> None:
        """Note when each record of ``topics`` became readable. Decoding waits until the run is over, so it never
        pushes back the time noted for the next records (the first sealed record of each new report makes the
        benchmark's own key vault read the key table)."""
        consumer = make_consumer(*topics, settings=bench, group_id=None, auto_offset_reset="latest")
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=100)
            now = time.time()
            polled.extend((now, r.value) for records in batch.values() for r in records)
        consumer.close()

    publish(backlog)
    results = [_drain("baseline: raw kafka-python consume-produce passthrough", passthrough),
               _drain("baseline: the same, transactional (read_committed, offsets in each poll's transaction)",
                      lambda c, u, r: passthrough(c, u, r, transactional=True))]
    for name in STAGES:
        results.append(_drain(f"hub {name} stage", lambda c, u, r, name=name: stage_runner(name, c, u, r)))
        behind = sum(stage_lag(STAGES[name](), bench).values())
        if behind:
            raise BenchmarkError(f"the {name} stage stopped {behind} records short of its backlog",
                                 hint="the broker may be overloaded; rerun with a smaller --count")
    total = sum(r.seconds for r in results[2:])
    results.append(PipelineResult("hub whole flow, stages one after another (ingest events/s)", "throughput",
                                  count, total, peak_rss_mb=_peak_rss_mb()))
    if compare_quix:
        results.extend(quix_drain(bench, sorted({e.agency_ori for e in backlog})))
    replay = Replay(bench, "bench", datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
    replayed = replay.run()
    replay.remove()
    results.append(PipelineResult("hub replay of that backlog: copy, dedup..alerts, group joins included (events/s)",
                                  "throughput", replayed.replayed_events, replayed.seconds,
                                  peak_rss_mb=_peak_rss_mb()))

    def paced_run(workers: list[Callable], outputs: dict[str, tuple[list[str], Callable]],
                  idle: Callable[[], bool] = lambda: True,
                  backlog: list | None = None) -> tuple[dict[str, float], dict]:
        """Run ``workers`` while publishing ``live`` at ``rate``; returns publish times and, per output (its topics
        and the keys of a value), when each key first arrived. Publishing starts once every worker is ready and
        ``idle()`` says nothing is left to process (at most 60 s each); it waits until the first output has as many
        records as 95% of the events (at most 60 s), then 2 s more for the later stages.

        With a ``backlog`` instead, those events are published before the workers start, and the run ends once
        ``idle()`` (at most ``len(backlog) / 10`` s); the publish times returned are all when every worker was ready,
        so the latencies are the drain's progress."""
        if backlog is not None:
            publish(backlog)
        stop, polled = threading.Event(), {output: [] for output in outputs}
        readies = [threading.Event() for _ in workers]
        threads = [threading.Thread(target=arrivals, args=(topics, stop, polled[output]), daemon=True)
                   for output, (topics, _) in outputs.items()]
        threads += [threading.Thread(target=w, args=(_Clock(), stop.is_set, r), daemon=True)
                    for w, r in zip(workers, readies)]
        for thread in threads:
            thread.start()
        for ready in readies:
            ready.wait(timeout=60)  # steady state, not the group join and state restore
        if backlog is not None:
            everyone_ready = time.time()
            sent = {event.event_id: everyone_ready for event in backlog}
            deadline = time.monotonic() + max(60.0, len(backlog) / 10)
            while not idle() and time.monotonic() < deadline:
                time.sleep(1)
        else:
            deadline = time.monotonic() + 60
            while not idle() and time.monotonic() < deadline:
                time.sleep(0.5)  # nor what the stages still had to do (late escalations, a drain stopped early)
            time.sleep(1)
            sent = publish(live, pace=rate)
            first = next(iter(outputs))
            deadline = time.monotonic() + 60
            while len(polled[first]) < len(sent) * 0.95 and time.monotonic() < deadline:
                time.sleep(0.2)
        time.sleep(2)  # later stages finish the last inputs
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        seen: dict[str, dict[str, float]] = {output: {} for output in outputs}
        for output, (_, keys_of) in outputs.items():
            for arrived, value in polled[output]:
                for key in keys_of(codec.decode(value)):
                    seen[output].setdefault(key, arrived)
        return sent, seen

    sent, seen = paced_run([passthrough], {"passthrough": ([passthrough_topic], lambda v: [v.event_id])})
    results.append(_latency("baseline passthrough: publish to output", sent, seen["passthrough"]))
    live = generate(paced, seed=101).events  # fresh event ids: the passthrough's already went through
    canonical, alerts, audit = (spec.name(bench.topic_prefix) for spec in (CANONICAL, ALERTS, AUDIT))
    ingested = [INGESTED.name(bench.topic_prefix, ori=ori) for ori in sorted({e.agency_ori for e in sample.events})]
    parties: dict[str, list[str]] = {}

    def alert_keys(alert: Any) -> list[str]:
        parties[alert.alert_id] = [p.event_id for p in alert.parties]
        return [alert.alert_id] if alert.status == "OPEN" else []

    stage_processes = [lambda c, u, r, name=name: stage_process(name, c, u, r) for name in STAGES]
    routed = ([audit], lambda v: v.event_ids if isinstance(v, RoutingDecisions) else [])

    def idle() -> bool:
        return not any(sum(stage_lag(STAGES[name](), bench).values()) for name in STAGES)

    sent, seen = paced_run(stage_processes, {"canonical": ([canonical], lambda v: [v.decision.event_id]),
                                             "ingested": (ingested, lambda v: [v.event_id]),
                                             "alerts": ([alerts], alert_keys), "audit": routed}, idle=idle)
    every_stage_mb = sum(stage_rss_mb.values())
    results.append(_latency("hub intake: publish to sealed and ingested", sent, seen["ingested"], every_stage_mb))
    results.append(_latency("hub intake+dedup: publish to canonical event", sent, seen["canonical"], every_stage_mb))
    results.append(_latency("hub intake+dedup (which routes): publish to every unit's feed", sent, seen["audit"],
                            every_stage_mb))
    # An alert is due once its later party is published (the other may be from the backlog).
    due = {alert_id: max(sent[e] for e in parties[alert_id] if e in sent)
           for alert_id in seen["alerts"] if any(e in sent for e in parties[alert_id])}
    results.append(_latency("hub all stages: later party published to alert raised", due, seen["alerts"],
                            every_stage_mb))
    started, seen = paced_run(stage_processes, {"audit": routed}, idle=idle,
                              backlog=generate(count, seed=202).events)
    if not idle():
        raise BenchmarkError(f"the stages did not drain a backlog of {count} events in {max(60, count / 10):.0f} s",
                             hint="the broker may be overloaded; rerun with a smaller --count")
    last_routed = max(at for key, at in seen["audit"].items() if key in started)
    results.insert(len(STAGES) + 3, PipelineResult(
        "hub whole flow, every stage at once (its own process): backlog drained, ingest to every feed (events/s)",
        "throughput", count, last_routed - min(started.values()), peak_rss_mb=sum(stage_rss_mb.values())))
    return results


def _namespace(settings: HubSettings, agencies: list[str]) -> HubSettings:
    """Settings for a benchmark run of its own: a fresh topic prefix and runtime directory, every hub topic created
    and the task-force registry applied."""
    from consumers.registry import load_registry
    from consumers.stages import STAGES
    from hub.control import apply_registry
    from hub.topics import hub_topics

    run = uuid.uuid4().hex[:8]
    bench = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}bench.{run}.",
                                        "runtime_dir": settings.runtime_dir / "bench" / run})
    units = sorted(unit.unit_id for unit in load_registry().task_forces)
    ensure_topics(hub_topics(bench.topic_prefix, agencies, sorted(STAGES), units), bench)
    apply_registry(settings=bench, applied_by="bench")
    return bench


def _publish(settings: HubSettings, events: list, pace: float | None = None,
             sent: dict[str, float] | None = None) -> dict[str, float]:
    """Publish ``events`` through each agency's Publisher (at ``pace`` events/s, if given); returns when each was
    handed over, by event id (filling ``sent`` as it goes, if given).

    At a pace, each agency publishes from a thread of its own, every event at its time on one schedule: a paced
    Publisher confirms each event before the next (30-70 ms here), so one thread reached only 13-29 events/s of
    the 50 asked, and the latency runs before this measured less traffic than they said."""
    import threading

    sent = {} if sent is None else sent
    if not pace:
        publishers: dict[str, Publisher] = {}
        for event in events:
            publisher = publishers.get(event.agency_ori) or publishers.setdefault(
                event.agency_ori, Publisher(event.agency_ori, settings, batch_size=2000))
            sent[event.event_id] = time.time()
            publisher.publish(event)
        for publisher in publishers.values():
            publisher.flush()
            publisher.close()
        return sent
    schedules: dict[str, list[tuple[int, Any]]] = {}
    for number, event in enumerate(events):
        schedules.setdefault(event.agency_ori, []).append((number, event))
    started = [0.0]
    # A Publisher's spool belongs to the thread that opened it; opening sixteen at once timed out under load.
    opening = threading.Lock()
    everyone_open = threading.Barrier(len(schedules) + 1, action=lambda: started.__setitem__(0, time.monotonic()))

    def agency(ori: str, schedule: list[tuple[int, Any]]) -> None:
        with opening:
            publisher = Publisher(ori, settings, batch_size=1)
        everyone_open.wait()
        with publisher:
            for number, event in schedule:
                time.sleep(max(0.0, started[0] + number / pace - time.monotonic()))
                sent[event.event_id] = time.time()
                publisher.publish(event)
            publisher.flush()

    threads = [threading.Thread(target=agency, args=item, daemon=True) for item in schedules.items()]
    for thread in threads:
        thread.start()
    everyone_open.wait()
    for thread in threads:
        thread.join()
    return sent


@dataclass(frozen=True)
class StageProfile:
    """Where one stage's time went while it drained its backlog (the main thread, under cProfile)."""

    stage: str
    inputs: int
    seconds: float
    waiting_s: float  # blocked on kafka-python's network thread: fetches, offset lookups, commits, acks
    top: list[tuple[str, int, float, float]]  # (function, calls, own seconds, cumulative seconds)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def bench_profile(count: int, stages: list[str], top: int = 15, dump_dir: Path | None = None,
                  settings: HubSettings | None = None) -> list[StageProfile]:
    """Publish ``count`` sample events, then run each stage in pipeline order until it has drained what its
    upstream wrote, profiling those in ``stages`` (their pstats files go to ``dump_dir``, for snakeviz or pstats)."""
    import cProfile
    import pstats

    from consumers.runner import StageRunner
    from consumers.stages import STAGES

    sample = generate(count, seed=13)
    bench = _namespace(settings or get_settings(), sorted({e.agency_ori for e in sample.events}))
    _publish(bench, sample.events)
    profiles = []
    for name in STAGES:
        runner = StageRunner(STAGES[name](), bench, commit_interval_s=0.1)
        profiler = cProfile.Profile()
        if name in stages:
            profiler.enable()
        started = time.perf_counter()
        inputs = runner.run_until_caught_up()
        seconds = time.perf_counter() - started
        profiler.disable()
        if name not in stages:
            continue
        if dump_dir is not None:
            dump_dir.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(dump_dir / f"{name}.pstats")
        stats = pstats.Stats(profiler).stats  # {(file, line, function): (primitive calls, calls, own, cum, callers)}
        waits = [where for where in stats if where[2] == "<method 'acquire' of '_thread.lock' objects>"]
        waiting = sum(stats[where][2] for where in waits)
        ranked = sorted((item for item in stats.items() if item[0] not in waits),
                        key=lambda item: item[1][2], reverse=True)[:top]
        profiles.append(StageProfile(name, inputs, seconds, waiting, [
            (_function_name(where), calls, own, cumulative) for where, (_, calls, own, cumulative, _) in ranked]))
    return profiles


def _function_name(where: tuple[str, int, str]) -> str:
    path, line, function = where
    if path == "~":
        return function
    parts = Path(path).parts
    short = "/".join(parts[parts.index("site-packages") + 1:] if "site-packages" in parts else parts[-2:])
    return f"{short}:{line}({function})"


def _run_stage(name: str, settings: HubSettings, ready: Any, until: Callable[[], bool],
               clock: _Clock | None = None) -> None:
    """Run one stage until ``until()``: ``ready`` is set once its partitions are restored, ``clock`` counts what it
    processes."""
    from consumers.runner import StageRunner
    from consumers.stages import STAGES

    runner = StageRunner(STAGES[name](), settings, commit_interval_s=0.1,
                         on_assigned=clock.assigned if clock is not None else None)

    def done(handled: int) -> bool:
        if clock is not None:
            clock.count(handled)
        if runner.ready:
            ready.set()
        return until()

    runner.run(until=done)


def _stage_in_process(name: str, settings: HubSettings, ready: Any, stop: Any, peak_rss_mb: Any) -> None:
    """One stage in a process of its own, as ``hub run all`` runs it, until ``stop`` is set; reports its peak RSS."""
    _run_stage(name, settings, ready, stop.is_set)
    peak_rss_mb.value = _peak_rss_mb()


@dataclass(frozen=True)
class MemorySample:
    """The memory of ``hub run all``'s stage processes at one moment of a soak run."""

    seconds: float  # since every stage was assigned its partitions
    published: int
    stage_rss_mb: dict[str, float]
    #: Proportional set size, added up: each page shared by n processes (``hub run all`` forks its stages, which
    #: share the modules it imported) counts 1/n in each, so this is the memory they use together.
    stages_pss_mb: float
    supervisor_rss_mb: float  # the ``hub run all`` process itself

    @property
    def stages_rss_mb(self) -> float:
        return sum(self.stage_rss_mb.values())


def _memory_mb(pid: int, field: str, source: str = "status") -> float:
    """One kB figure of a process (``VmRSS`` from ``status``, ``Pss`` from ``smaps_rollup``), in MB; 0 once gone."""
    try:
        with open(f"/proc/{pid}/{source}") as lines:
            return next(int(line.split()[1]) / 1024 for line in lines if line.startswith(f"{field}:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return 0.0


def bench_soak(minutes: float, rate: float, every_s: float = 60.0, settings: HubSettings | None = None,
               on_sample: Callable[[MemorySample], None] | None = None) -> tuple[list[MemorySample], int]:
    """``hub run all`` (a process of its own, as an operator starts it) fed sample events at ``rate``/s for
    ``minutes``, with its stage processes' memory read every ``every_s`` (and once more after the last event).
    Returns the samples and how many input records the stages still had when the last sample was taken (0: they
    kept up)."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import threading

    from consumers.runner import stage_lag
    from consumers.stages import STAGES

    events = generate(max(1, int(minutes * 60 * rate)), seed=31).events
    bench = _namespace(settings or get_settings(), sorted({e.agency_ori for e in events}))
    bench.runtime_dir.mkdir(parents=True, exist_ok=True)
    log = bench.runtime_dir / "run-all.log"
    env = {**os.environ, "HUB_TOPIC_PREFIX": bench.topic_prefix, "HUB_RUNTIME_DIR": str(bench.runtime_dir),
           "HUB_LOG_FORMAT": "json", "HUB_METRICS_PORT": "0"}  # the user's own `hub run all` may hold the port
    with open(log, "wb") as output:
        run_all = subprocess.Popen([sys.executable, "-m", "hub", "run", "all"], env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not all(_first_line_with(log, f'"stage": "{name}"', "partition assigned") for name in STAGES):
            if time.monotonic() > deadline or run_all.poll() is not None:
                raise BenchmarkError(f"`hub run all` did not get its partitions within 120 s (exit {run_all.poll()})",
                                     hint=f"see its log: {log}")
            time.sleep(1)
        stages = {name: _stage_pid(log, name) for name in STAGES}
        sent: dict[str, float] = {}
        publisher = threading.Thread(target=_publish, args=(bench, events, rate, sent), daemon=True)
        started = time.monotonic()
        publisher.start()
        samples: list[MemorySample] = []

        def sample() -> None:
            samples.append(MemorySample(
                time.monotonic() - started, len(sent), {name: _memory_mb(pid, "VmRSS") for name, pid in stages.items()},
                sum(_memory_mb(pid, "Pss", "smaps_rollup") for pid in stages.values()),
                _memory_mb(run_all.pid, "VmRSS")))
            if on_sample is not None:
                on_sample(samples[-1])

        while publisher.is_alive():
            publisher.join(timeout=every_s)
            sample()
        deadline = time.monotonic() + 60
        while (behind := sum(sum(stage_lag(STAGES[name](), bench).values()) for name in STAGES)) and \
                time.monotonic() < deadline:
            time.sleep(1)
        sample()
        return samples, behind
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(run_all.pid, signal.SIGTERM)  # the supervisor stops its stages after their last commits
        run_all.wait(timeout=60)


def _stage_pid(log: Path, stage: str) -> int:
    """The pid of ``stage``'s process, from the supervisor's log line announcing it."""
    line = _first_line_with(log, "stage process started", f'"stage": "{stage}"')
    if not line:
        raise BenchmarkError(f"`hub run all` did not say it started {stage}", hint=f"see its log: {log}")
    return int(json.loads(line)["pid"])


def _first_line_with(path: Path, *needles: str) -> str:
    with open(path, errors="replace") as lines:
        return next((line for line in lines if all(needle in line for needle in needles)), "")


def quix_drain(settings: HubSettings, agencies: list[str]) -> list[PipelineResult]:
    """The Quix Streams application (:mod:`hub.quix_baseline`, in a process of its own) over every record on the
    ``events.ingested.<ORI>`` topics, copied to one: from its first processed record to the last time its audit topic's
    committed end moved (its outputs readable, read_committed); and the same work on the same records in a loop."""
    from kafka import TopicPartition

    from hub.kafka import make_consumer, read_range
    from hub.quix_baseline import QUIX_INPUT, QUIX_PREFIX, QuixProgress
    from schemas.topics import AUDIT, INGESTED

    spawn = multiprocessing.get_context("spawn")
    progress = QuixProgress(spawn.Value("q", 0), spawn.Value("d", 0.0), spawn.Value("d", 0.0))
    stop = spawn.Event()
    # Untimed set-up: the records on one topic, partition for partition. Quix Streams names the state store of a
    # merged stream after all of its topics, which for sixteen agencies exceeds Kafka's 255-character limit.
    ends = make_consumer(settings=settings, group_id=None)
    ingested = [TopicPartition(INGESTED.name(settings.topic_prefix, ori=ori), p)
                for ori in agencies for p in range(INGESTED.partitions)]
    records = read_range(ends, {}, ends.end_offsets(ingested), timeout_s=300)
    merged = f"{settings.topic_prefix}{QUIX_PREFIX}{QUIX_INPUT}"
    admin = make_admin(settings)
    admin.create_topics([NewTopic(merged, INGESTED.partitions, 1)])
    admin.close()
    producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024)
    for record in records:
        producer.send(merged, key=record.key, value=record.value, partition=record.partition)
    producer.flush()
    producer.close()
    inputs = len(records)
    audit = [TopicPartition(f"{settings.topic_prefix}{QUIX_PREFIX}{AUDIT.name()}", p) for p in range(AUDIT.partitions)]
    process = spawn.Process(target=_quix_in_process, args=(settings, agencies, progress, stop), daemon=True,
                            name="bench-quix")
    process.start()
    deadline = time.monotonic() + max(120.0, inputs / 10)
    written, last_moved = -1, 0.0
    while time.monotonic() < deadline and process.is_alive():
        if progress.processed.value >= inputs:
            now_written = sum(ends.end_offsets(audit).values())
            if now_written != written:
                written, last_moved = now_written, time.time()
            elif time.time() - last_moved > 3:  # Quix commits every second: three without a move is the end
                break
        time.sleep(0.1)
    stop.set()
    process.join(timeout=60)
    ends.close()
    if progress.processed.value < inputs or written <= 0:
        raise BenchmarkError(f"the Quix Streams application processed {progress.processed.value} of {inputs} records",
                             hint="see its log above; rerun with a smaller --count")
    quix = PipelineResult("Quix Streams: dedup and route of the same sealed ingested records, exactly-once (events/s)",
                          "throughput", inputs, last_moved - progress.first_at.value,
                          peak_rss_mb=progress.peak_rss_mb.value)
    return [quix, _work_without_kafka(settings, [record.value for record in records])]


def _work_without_kafka(settings: HubSettings, values: list[bytes]) -> PipelineResult:
    """The Quix application's per-record work in a plain loop, state in a dict, outputs encoded and dropped: the
    ceiling the hub's code sets for any runtime."""
    from hub.quix_baseline import DedupAndRoute

    class DictState(dict):
        def set(self, key: str, value: Any) -> None:
            self[key] = value

    work, state = DedupAndRoute(settings), DictState()
    work.codec.decode(values[0])  # reads the key table once, before the clock starts
    started = time.perf_counter()
    for value in values:
        work(value, state)
    return PipelineResult("the same dedup-and-route work in a loop, no Kafka (records/s, one core)", "throughput",
                          len(values), time.perf_counter() - started, peak_rss_mb=_peak_rss_mb())


def _quix_in_process(settings: HubSettings, agencies: list[str], progress: Any, stop: Any) -> None:
    from hub.quix_baseline import run_quix_app

    run_quix_app(settings, agencies, progress, stop)
    progress.peak_rss_mb.value = _peak_rss_mb()


def _drain(name: str, worker: Callable) -> PipelineResult:
    """Time ``worker`` over the backlog waiting for it, from its first record to its last."""
    import threading

    clock = _Clock()
    worker(clock, lambda: clock.drained, threading.Event())
    return PipelineResult(name, "throughput", clock.processed, clock.seconds, peak_rss_mb=_peak_rss_mb())


def _latency(name: str, sent: dict[str, float], arrived: dict[str, float],
             peak_rss_mb: float | None = None) -> PipelineResult:
    values = [(at - sent[key]) * 1000 for key, at in arrived.items() if key in sent]
    span = max(sent.values(), default=0.0) - min(sent.values(), default=0.0)
    return PipelineResult(name, "latency", len(values), p50_ms=_percentile(values, 0.5),
                          p99_ms=_percentile(values, 0.99), p999_ms=_percentile(values, 0.999),
                          published_per_s=(len(sent) - 1) / span if span else float("nan"),
                          peak_rss_mb=_peak_rss_mb() if peak_rss_mb is None else peak_rss_mb)
