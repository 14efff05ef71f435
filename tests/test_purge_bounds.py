"""How long the plain copies a purge must remove survive on the broker, measured on the session's real broker.

A purge (``consumers/retention.py``) replaces a report's entry on ``hub.keys`` with a marker holding no key,
writes a tombstone with a purge notice over each feed item that carried the report, and leaves the plain record
on ``ingest.<ORI>`` to age out. Each of those copies is removed by the broker, not by the hub, so this module
writes recognisable bytes to topics with the production configs of ``schemas/topics.py`` (one partition each), with
the time-based settings scaled down from hours and days to seconds, and measures (seconds after the purge's write
was acknowledged) when a consumer reading from the beginning no longer sees them, and when no file of the
topic-partition's directory on the broker's disk holds them (``*.log``, and ``*.log.cleaned``, ``.swap``,
``.deleted`` while they exist; index files hold no record bytes). One background producer appends a harmless
record to each topic every second, as live traffic would; one ``hub.keys`` copy gets no traffic at all.

What bounds each copy (broker defaults: deploy/kafka/node.properties.template sets none of these; the test reads
them from the broker with describe_configs):

- hub.keys (compact) and feed.<unit> (compact,delete): the cleaner drops a value only once the record replacing it
  (the destroyed marker, the tombstone) is in a rolled segment: it never reads the active segment, and a segment
  rolls only when a record is appended ``segment.ms`` (or the smaller ``max.compaction.lag.ms``) after its first
  record, never on a timer. The cleaner, which sleeps ``log.cleaner.backoff.ms`` whenever it finds nothing to clean,
  then rewrites the log without the value (unreadable from then on) and deletes the replaced segment file
  ``log.segment.delete.delay.ms`` later (gone from disk; here sooner, as the next cleaning 15 s later renames its own
  replaced segment onto the same ``.deleted`` name). Production: 1 h, then the partition's next write, + up to 15 s
  + cleaning; + 60 s on disk. A partition that receives nothing more keeps the value (the idle copy below); on a
  feed only retention.ms (90 days after its newest record) removes such a segment.
- the purge notice (the feed tombstone itself): the first cleaning that includes it stamps it with a horizon of
  ``delete.retention.ms``; a cleaning after that removes it. Production: at least 7 days.
- ingest.<ORI> (delete): a segment is deleted once its newest record is older than ``retention.ms``, at the broker's
  next retention check (every ``log.retention.check.interval.ms``, 5 min; the first one ``log.initial.task.delay.ms``,
  an internal setting of 30 s, after start). Production: 7 days + 1 h + 5 min, + 60 s on disk.

"Gone from disk" means gone from the broker's files: the filesystem may keep the freed blocks, and every replica
and backup of the data directories holds its own copy until its own cleaning.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from hub.kafka import make_admin, make_consumer, make_producer
from hub.settings import HubSettings
from schemas.topics import FEED, INGEST, KEYS, PURGE_NOTICE_HEADER, PURGED_EVENTS_HEADER, TopicSpec
from tests.conftest import unique

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SEGMENT_MS = 2000  # production: 1 hour
RETENTION_MS = 3000  # ingest; production: 7 days
DELETE_RETENTION_MS = 3000  # the notice topic; production: 7 days
TRAFFIC_EVERY_S = 1.0
SLACK_S = 20.0  # cleaning, scheduling and polling on a busy 2-core machine
BROKER_SETTINGS = ("log.cleaner.backoff.ms", "log.retention.check.interval.ms", "log.segment.delete.delay.ms",
                   "log.roll.ms", "log.roll.hours", "log.roll.jitter.ms", "log.cleaner.enable")


def scaled(spec: TopicSpec, **overrides: int) -> dict[str, str]:
    """``spec``'s production configs with time settings replaced (each must be one the spec sets)."""
    configs = spec.configs
    names = {name.replace("_", "."): str(value) for name, value in overrides.items()}
    assert set(names) <= set(configs), f"{spec.pattern} no longer sets {sorted(set(names) - set(configs))}"
    return configs | names


def files_holding(directory: Path, needle: bytes) -> list[str]:
    """Names of the segment files (``*.log*``: live, .cleaned, .swap, .deleted) in ``directory`` holding ``needle``."""
    found = []
    for path in sorted(directory.glob("*.log*")):
        try:
            if needle in path.read_bytes():
                found.append(path.name)
        except OSError:  # renamed or deleted while we looked
            pass
    return found


def first_times(checks: dict[str, Callable[[], bool]], done: Callable[[dict], bool], start: float,
                deadline_s: float, every_s: float = 0.5) -> dict[str, float | None]:
    """Seconds from ``start`` (a time.monotonic()) until each check first held (None: not yet), polling every
    ``every_s`` until ``done(times)`` or ``deadline_s`` after ``start``."""
    times: dict[str, float | None] = dict.fromkeys(checks)
    while time.monotonic() - start < deadline_s and not done(times):
        for name, check in checks.items():
            if times[name] is None and check():
                times[name] = round(time.monotonic() - start, 1)
        time.sleep(every_s)
    return times


class Reader:
    """Reads whole topic-partitions from the beginning, as a new subscriber would."""

    def __init__(self, settings: HubSettings, topics: list[str]) -> None:
        self.consumer = make_consumer(settings=settings, group_id=None)
        self.partitions = [TopicPartition(topic, 0) for topic in topics]
        self.consumer.assign(self.partitions)

    def records(self, topic: str) -> list:
        tp = TopicPartition(topic, 0)
        end = self.consumer.end_offsets([tp])[tp]
        self.consumer.pause(*self.partitions)
        self.consumer.resume(tp)
        self.consumer.seek_to_beginning(tp)
        found, deadline = [], time.monotonic() + 30
        while self.consumer.position(tp) < end:
            assert time.monotonic() < deadline, f"reading {topic} did not reach offset {end} in 30 s"
            for batch in self.consumer.poll(timeout_ms=500).values():
                found += batch
        return found

    def shows(self, topic: str, needle: bytes) -> bool:
        return any(needle in (record.value or b"") for record in self.records(topic))

    def notice(self, topic: str, key: bytes) -> bool:
        return any(record.key == key and record.value is None and PURGE_NOTICE_HEADER in dict(record.headers)
                   for record in self.records(topic))


def _marker(what: str) -> bytes:
    """32 recognisable bytes: ``what:`` and random hex digits (a stand-in for a wrapped key or a plain record)."""
    prefix = f"{what}:".encode()
    return prefix + secrets.token_hex(16).encode()[: 32 - len(prefix)]


@pytest.fixture(scope="module")
def measured(kafka, tmp_path_factory):
    """Creates the topics, writes the copies and the purge, keeps traffic going while it measures, then deletes
    the topics. Returns the broker's settings, the seconds each check took (None: not within the run), and what
    was still there at the end."""
    if kafka.local is None:
        pytest.skip(f"needs the suite's own local broker (its data directory); this run uses a {kafka.source} cluster")
    settings = HubSettings(bootstrap_servers=kafka.bootstrap_servers, runtime_dir=tmp_path_factory.mktemp("rt"),
                           log_format="json")
    admin = make_admin(settings)
    node = str(admin.describe_cluster()["brokers"][0]["broker_id"])
    described = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, node)], config_filter="all")
    broker = {key: entry["value"] for key, entry in described["broker"][node].items()}
    data_dir = Path(broker["log.dirs"].split(",")[0])

    compacted = {"segment_ms": SEGMENT_MS, "max_compaction_lag_ms": SEGMENT_MS}
    configs = {"keys": scaled(KEYS, **compacted), "keys-idle": scaled(KEYS, **compacted),
               "feed": scaled(FEED, **compacted),
               "notice": scaled(FEED, **compacted, delete_retention_ms=DELETE_RETENTION_MS),
               "ingest": scaled(INGEST, segment_ms=SEGMENT_MS, retention_ms=RETENTION_MS)}
    name = {case: unique(f"bounds.{case}") for case in configs}
    admin.create_topics([NewTopic(name[case], 1, 1, topic_configs=configs[case]) for case in configs])
    marker = {"keys": _marker("wrapped-key"), "keys-idle": _marker("wrapped-key"), "feed": _marker("feed-item"),
              "notice": _marker("feed-item"), "ingest": _marker("case-event")}
    notice_text = f"purged under 28 CFR 23.20(h): test {secrets.token_hex(8)}".encode()
    producer = make_producer(settings)
    reader = Reader(settings, list(name.values()))
    stop = threading.Event()

    def send(case: str, key: bytes, value: bytes | None, headers: list | None = None) -> None:
        producer.send(name[case], key=key, value=value, partition=0, headers=headers).get(timeout=30)

    def traffic() -> None:  # every topic but the idle one gets a harmless record every second
        n = 0
        while not stop.wait(TRAFFIC_EVERY_S):
            n += 1
            for case in ("keys", "feed", "notice", "ingest"):
                producer.send(name[case], key=b"traffic", value=b'{"n": %d}' % n, partition=0)
            producer.flush(timeout=30)

    def on_disk(case: str, needle: bytes | None = None) -> list[str]:
        return files_holding(data_dir / f"{name[case]}-0", needle or marker[case])

    thread = threading.Thread(target=traffic, daemon=True)
    try:
        for case in ("keys", "keys-idle"):  # a key entry, then the purge's destroyed marker
            send(case, b"E-1", b'{"wrapped": "' + marker[case] + b'", "nonce": "n", "review_by": "2030-01-01"}')
            send(case, b"E-1", b'{"destroyed_at": "2026-01-01T00:00:00+00:00", "reason": "purged"}')
        for case in ("feed", "notice"):  # a feed item, then the purge's tombstone with its notice
            send(case, b"record-1", b"FeedItem " + marker[case])
            send(case, b"record-1", None, [(PURGED_EVENTS_HEADER, b"E-1"), (PURGE_NOTICE_HEADER, notice_text)])
        send("ingest", b"county:06073", b"CaseEvent " + marker["ingest"])
        purged_at = time.monotonic()
        for case in name:
            assert reader.shows(name[case], marker[case]) and on_disk(case), f"{case}: the copy was never written"
        thread.start()

        checks = {
            "keys unreadable": lambda: not reader.shows(name["keys"], marker["keys"]),
            "keys off disk": lambda: not on_disk("keys"),
            "feed item unreadable": lambda: not reader.shows(name["feed"], marker["feed"]),
            "feed item off disk": lambda: not on_disk("feed"),
            "notice unreadable": lambda: not reader.notice(name["notice"], b"record-1"),
            "notice off disk": lambda: not on_disk("notice", notice_text),
            "ingest unreadable": lambda: not reader.shows(name["ingest"], marker["ingest"]),
            "ingest off disk": lambda: not on_disk("ingest"),
        }
        required = [check for check in checks if not check.startswith("ingest")]

        def done(times: dict) -> bool:  # ingest's disk copy is waited for only once the retention check ran
            return all(times[check] is not None for check in required) and (
                times["ingest unreadable"] is None or times["ingest off disk"] is not None)

        backoff_s = int(broker["log.cleaner.backoff.ms"]) / 1000
        delay_s = int(broker["log.segment.delete.delay.ms"]) / 1000
        deadline_s = SEGMENT_MS / 1000 + 2 * backoff_s + DELETE_RETENTION_MS / 1000 + delay_s + 2 * SLACK_S
        times = first_times(checks, done, purged_at, deadline_s)
        elapsed = round(time.monotonic() - purged_at, 1)
        result = {"broker": broker, "times": times, "elapsed": elapsed,
                  "idle readable": reader.shows(name["keys-idle"], marker["keys-idle"]),
                  "idle on disk": on_disk("keys-idle"), "notice kept": reader.notice(name["feed"], b"record-1")}
        print(f"\npurge bounds, seconds after the purge was acknowledged (segment.ms={SEGMENT_MS} ms, traffic every "
              f"{TRAFFIC_EVERY_S:.0f} s, measured for {elapsed} s):")
        for check, seconds in times.items():
            print(f"  {check:22} {'not within the run' if seconds is None else seconds}")
        print(f"  idle hub.keys copy at {elapsed} s: readable={result['idle readable']}, "
              f"on disk in {result['idle on disk']}")
        print("  broker: " + ", ".join(f"{key}={broker.get(key)}" for key in BROKER_SETTINGS))
        yield result
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        reader.consumer.close()
        producer.close()
        admin.delete_topics(list(name.values()))
        admin.close()


def _seconds(measured, key: str) -> float:
    return int(measured["broker"][key]) / 1000


def _within(measured, check: str, bound_s: float, why: str) -> None:
    seconds = measured["times"][check]
    when = f"not within {measured['elapsed']}" if seconds is None else f"after {seconds}"
    figure = f"{check}: {when} s (bound {bound_s + SLACK_S:.0f} s = {why} + slack {SLACK_S:.0f})"
    print(f"\n  {figure}")
    assert seconds is not None and seconds <= bound_s + SLACK_S, figure


def _one_cleaning(measured) -> tuple[float, str]:
    """Seconds until the segment holding a replaced value and its replacement rolls and is cleaned, and why."""
    backoff = _seconds(measured, "log.cleaner.backoff.ms")
    return (SEGMENT_MS / 1000 + TRAFFIC_EVERY_S + backoff,
            f"segment.ms {SEGMENT_MS / 1000:.0f} + next append {TRAFFIC_EVERY_S:.0f} + cleaner backoff {backoff:.0f}")


def test_a_destroyed_key_leaves_hub_keys_after_one_roll_and_one_cleaning(measured):
    bound, why = _one_cleaning(measured)
    delay = _seconds(measured, "log.segment.delete.delay.ms")
    _within(measured, "keys unreadable", bound, why)
    _within(measured, "keys off disk", bound + delay, why + f" + segment delete delay {delay:.0f}")


def test_an_idle_partition_keeps_a_destroyed_key_the_active_segment_never_rolls_without_appends(measured):
    elapsed, busy = measured["elapsed"], measured["times"]["keys off disk"]
    figure = (f"idle hub.keys copy at {elapsed} s (the busy copy was off disk after {busy} s): "
              f"readable={measured['idle readable']}, on disk in {measured['idle on disk']}")
    print(f"\n  {figure}")
    assert measured["idle readable"] and measured["idle on disk"], f"Kafka rolled an idle active segment: {figure}"


def test_a_purged_feed_item_leaves_the_feed_and_its_notice_stays(measured):
    bound, why = _one_cleaning(measured)
    delay = _seconds(measured, "log.segment.delete.delay.ms")
    _within(measured, "feed item unreadable", bound, why)
    _within(measured, "feed item off disk", bound + delay, why + f" + segment delete delay {delay:.0f}")
    assert measured["notice kept"], (f"the purge notice was gone after {measured['elapsed']} s, before "
                                     f"delete.retention.ms={FEED.configs['delete.retention.ms']}")


def test_the_purge_notice_goes_at_the_first_cleaning_after_delete_retention(measured):
    bound, why = _one_cleaning(measured)
    kept, delay = DELETE_RETENTION_MS / 1000, _seconds(measured, "log.segment.delete.delay.ms")
    why = f"2 x ({why}) + delete.retention.ms {kept:.0f}"
    _within(measured, "notice unreadable", 2 * bound + kept, why)
    assert measured["times"]["notice unreadable"] >= kept, "the notice went before delete.retention.ms"
    _within(measured, "notice off disk", 2 * bound + kept + delay, why + f" + segment delete delay {delay:.0f}")


def test_an_ingest_record_goes_at_the_first_retention_check_after_retention_ms(measured):
    """The retention check runs every log.retention.check.interval.ms (5 min by default; the first one
    log.initial.task.delay.ms, 30 s, after the broker starts), so this run may end before it: then it says so."""
    check = _seconds(measured, "log.retention.check.interval.ms")
    delay = _seconds(measured, "log.segment.delete.delay.ms")
    bound = RETENTION_MS / 1000 + SEGMENT_MS / 1000 + TRAFFIC_EVERY_S + check
    why = (f"retention.ms {RETENTION_MS / 1000:.0f} + segment.ms {SEGMENT_MS / 1000:.0f} + next append "
           f"{TRAFFIC_EVERY_S:.0f} + retention check interval {check:.0f}")
    elapsed, unreadable = measured["elapsed"], measured["times"]["ingest unreadable"]
    if unreadable is None:
        figure = (f"ingest: still readable after {elapsed} s, before the broker's next retention check "
                  f"(bound {bound:.0f} s = {why}; + {delay:.0f} s on disk)")
        print(f"\n  {figure}")
        assert elapsed < bound, figure
        return
    _within(measured, "ingest unreadable", bound, why)
    if measured["times"]["ingest off disk"] is None:
        figure = f"ingest: on disk {elapsed - unreadable:.1f} s after retention (segment delete delay {delay:.0f} s)"
        print(f"\n  {figure}")
        assert elapsed - unreadable < delay + SLACK_S, figure
        return
    _within(measured, "ingest off disk", bound + delay, why + f" + segment delete delay {delay:.0f}")
