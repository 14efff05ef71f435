"""The one runner every stage uses: consume, transform, produce, exactly once.

Each batch is one Kafka transaction holding the stage's outputs, its state changes (to a compacted
changelog topic, partition for partition) and the input offsets (``send_offsets_to_transaction``), so a
process killed at any point either committed all of a batch or none of it. The local state store is
updated only after the transaction commits and is restored from the changelog on start or reassignment.
State values carrying a report's data are written to the changelog sealed under the report's record key, and
state keys hash identifiers with a key derived from the KEK, so a purge reaches state too: a sealed entry whose
key was destroyed restores as a delete, and the local stores drop a purged report's entries as soon as the key
vault learns of the purge (or, for a store that was closed then, when it is next opened).
Whatever a record holds, it cannot stop the stage: every exception raised while decoding, checking or processing
one input goes to the stage's :class:`ErrorPolicy`, which dead-letters the record's faults with the reason and the
record's origin and stops only on the infrastructure's (broker, key table, disk, configuration). A transaction is
committed as soon as every fetched input is processed (the next stage sees it without waiting for a timer), and
within ``commit_interval_s`` in any case; one the broker aborted (timed out, or failed to
commit) is begun again from the last commit: nothing of it was visible, so its inputs are simply processed again.

Inputs are processed in timestamp order across every assigned partition (ties: topic, partition, offset),
and each output carries its input's timestamp, as Kafka Streams does; intake instead stamps its outputs with the
hub's clock when it took them in (``Stage.output_timestamps``), so the history a replay starts from is in the order
the hub saw it. The order a stage sees therefore depends on what is in the log, not on how fetches happened to
interleave, so a replay of the same history makes the same decisions (``hub replay --compare`` relies on it).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import (AuthorizationError, CommitFailedError, FencedInstanceIdError, KafkaConnectionError,
                          KafkaError, ProducerFencedError, RetriableError)
from kafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge, Histogram

from hub.auditing import audit_event, principal_of
from hub.exceptions import KafkaUnavailableError, TopicMissingError, TransactionIncompleteError
from hub.kafka import LeaderAwareConsumer, make_consumer, make_producer
from hub.logging import get_logger
from hub.settings import HubSettings, get_settings
from hub.vault import hub_codec
from consumers.exceptions import StageError, StateError, TransactionRetryError
from consumers.stage import Message, Output, Stage
from consumers.state import SqlitePartitionStore, State, StateWrite, keyed_hash, without_purged
from schemas.codec import Codec
from schemas.exceptions import RecordKeyUnknownError, RecordPurgedError
from schemas.limits import MAX_MESSAGE_BYTES
from schemas.models import AuditEventType, AuditOutcome
from schemas.topics import AUDIT, FEED, changelog_topic, deadletter_topic

STATE_ENTRIES = Gauge("hub_state_entries", "Entries in a stage's local state store", ["stage", "partition"])
PROCESSED = Counter("hub_messages_processed_total", "Input messages processed", ["stage"])
DEAD_LETTERS = Counter("hub_dead_letters_total", "Messages sent to the dead-letter topic", ["stage"])
PURGED_SKIPPED = Counter("hub_purged_inputs_total", "Inputs skipped because retention purged them", ["stage"])
PURGED_STATE = Counter("hub_purged_state_entries_total", "Local state entries dropped because retention purged "
                       "a report they carried", ["stage"])
UNKNOWN_KEYS = Counter("hub_unknown_key_inputs_total", "Inputs sealed under a record key the hub never had "
                       "(dead-lettered)", ["stage"])
TRANSACTIONS_ABORTED = Counter("hub_transactions_aborted_total", "Transactions the broker aborted or refused, "
                               "processed again from the last commit", ["stage"])
LATE_INPUTS = Counter("hub_late_inputs_total", "Inputs processed after a newer input (by log timestamp): committed "
                      "upstream after it was processed; a replay may decide differently on them", ["stage"])
CONSUMER_LAG = Gauge("hub_consumer_lag", "Records in an assigned input partition not processed yet (to its high "
                     "watermark)", ["stage", "topic", "partition"])
COMMIT_SECONDS = Histogram("hub_transaction_commit_seconds", "Committing a batch: changelog, offsets, commit",
                           ["stage"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
REBALANCES = Counter("hub_rebalances_total", "Partitions assigned, revoked or lost by a group rebalance",
                     ["stage", "kind"])
WATERMARK = Gauge("hub_event_time_watermark_seconds", "Event time up to which every input was read (the oldest of "
                  "the assigned partitions'): state expires behind it", ["stage"])
END_TO_END = Histogram("hub_end_to_end_latency_seconds", "From the hub taking a report in (intake's timestamp) to "
                       "its feed item committed for a task force", ["stage"],
                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
OUTPUTS = Counter("hub_outputs_total", "Committed outputs a stage counts for operators (Output.counted_as)",
                  ["stage", "counted_as"])
READY = Gauge("hub_stage_ready", "1 when the stage has partitions assigned and their state restored", ["stage"])
LAST_PROGRESS = Gauge("hub_stage_last_progress_timestamp_seconds", "When the stage last committed or was caught up "
                      "(compare with time() to see a stall)", ["stage"])

#: Longest reason kept in a dead-letter header (an exception can quote a whole record).
MAX_REASON_CHARS = 2000
#: Larger inputs are dead-lettered without their value (its size and SHA-256 are kept): the dead letter must fit
#: the broker's request limit with its headers.
MAX_DEAD_LETTER_VALUE = 900 * 1024
#: Failed transactions in a row, with the brokers answering, before the stage stops: such a failure is not
#: transient. While the brokers do not answer, the stage waits for them however long it takes.
MAX_TRANSACTION_RETRIES = 5
#: A stage that has made no progress for this long says why in its log (and again as often while it lasts).
STALL_REPORT_S = 10.0
#: After SIGTERM/SIGINT the stage commits its open batch and leaves; if that takes longer (a broker away), it exits
#: without it: the uncommitted batch is processed again on restart, so nothing is lost.
STOP_TIMEOUT_S = 30.0
#: Errors that no retry mends: the principal lacks a permission, or another member took this one's group instance.
#: A fenced producer is retried (counted): a broker that came back after a crash bumps the epoch of the transaction
#: it aborted; a second process with the same ``--instance`` keeps fencing, and stops the stage after the limit.
FATAL_KAFKA_ERRORS = (FencedInstanceIdError, AuthorizationError)
#: How often the lag gauges are refreshed from the consumer's fetch positions (no broker call).
LAG_REFRESH_S = 1.0
#: Bound on a client call that waits for a broker (committed offsets, end offsets, positions, a transaction's
#: coordinator): kafka-python waits for some of them for ever while the brokers are away.
CLIENT_CALL_TIMEOUT_MS = 15_000
#: The main loop not coming round for this long means a call is stuck: the watchdog logs where, with the stack.
BLOCKED_REPORT_S = 60.0
#: How long a restore waits for a transaction still open on the changelog (the previous owner's last commit, whose
#: markers the brokers write partition by partition) before it stops at the last stable offset and says so. It runs
#: on kafka-python's network thread, within the group's 10 s session.
CHANGELOG_SETTLE_S = 5.0


@dataclass(frozen=True)
class _CommitInDoubt:
    """What a commit in flight would make final: state writes (with the last changelog send per partition), the
    input offsets and the stream time."""

    state_writes: dict[int, tuple[list[StateWrite], Any]]
    offsets: dict[TopicPartition, OffsetAndMetadata]
    stream_time: dict[TopicPartition, float]
    merged_to_ms: int


@dataclass(frozen=True)
class _ChangelogEnds:
    """Where a restore of a changelog partition ends: its last stable offset, its high watermark (open
    transactions included), and until when to wait for those transactions to end."""

    stable: int
    written: int
    settle_by: float


class StageRunner(ConsumerRebalanceListener):
    """Runs one stage in this process as member ``instance`` of the stage's consumer group."""

    def __init__(self, stage: Stage, settings: HubSettings | None = None, *, instance: int = 0,
                 commit_interval_s: float = 0.5, max_batch: int = 2000, state_dir: Path | None = None,
                 on_assigned: Callable[[], None] | None = None, max_wait_s: float = 60.0,
                 transaction_timeout_ms: int = 30_000) -> None:
        self.stage = stage
        self.settings = settings or get_settings()
        self.instance = instance
        self.commit_interval_s = commit_interval_s
        #: The broker aborts a transaction open longer than this; the runner commits long before (commit interval).
        self.transaction_timeout_ms = transaction_timeout_ms
        self.max_batch = max_batch
        self.on_assigned = on_assigned  # called once new partitions' state is restored (benchmarks time from here)
        #: How long the ordered merge waits for a partition known to hold unfetched records (committed, or in a
        #: transaction still open) before it goes on without them (Kafka Streams' max.task.idle.ms): a safety net,
        #: not the normal path. Long enough to outlast a leader's failover (a node lost or paused loses leadership
        #: after the controller's 9 s session).
        self.max_wait_s = max_wait_s
        self.state_dir = state_dir or self.settings.runtime_dir / "state" / f"{self.settings.topic_prefix}{stage.name}"
        self.codec = hub_codec(self.settings)
        self.clear_codec = Codec(self.codec.store)  # for the outputs a stage delivers in the clear (Output.in_clear)
        #: The stage's policy, with the deployment's choice for exceptions no check raised.
        self.error_policy = replace(stage.error_policy, unexpected=self.settings.unexpected_errors)
        self.log = get_logger(stage=stage.name, instance=instance)
        # Identifiers in state keys are hashed under a key every hub host derives from the KEK.
        self._state_key_hash = keyed_hash(self.codec.vault.state_key_hash_key())
        self.codec.vault.on_destroyed(self._purge_local_state)
        self._stores: dict[int, SqlitePartitionStore] = {}
        self._states: dict[int, State] = {}
        self._restoring: SqlitePartitionStore | None = None
        self._destroyed_since: set[str] = set()  # reports purged since the writes being applied were sealed
        self._stream_time: dict[TopicPartition, float] = {}  # newest event time read, per input partition
        self._committed_stream_time: dict[TopicPartition, float] = {}  # as of the last commit
        self._merged_to_ms = 0  # newest input timestamp processed (the ordered merge's progress), and at the commit
        self._committed_merged_to_ms = 0
        self._records_ready = False  # the last merge stopped for a commit with records it could take
        self._stamped_ms = 0  # the last ``received`` output timestamp given, and the floor of the open transaction's
        self._stamp_floor_ms = 0
        self._late: tuple[int, int] = (0, 0)  # late inputs not yet reported: how many, and the latest by (ms)
        self._late_reported = 0.0
        self._offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self._buffers: dict[TopicPartition, deque[Any]] = {}  # fetched, not yet processed, per input partition
        self._waiting_since: float | None = None
        self._open_at_end_since: float | None = None  # caught up but for an input transaction still open, since
        self._in_transaction = False
        self._committed: dict[TopicPartition, int] = {}  # offsets this member committed, per input partition
        self._batch_started = 0.0
        self._batch_size = 0
        self._failed_transactions = 0  # in a row
        self._feed_stamps: list[int] = []  # input timestamps (the hub's intake time) of the batch's feed items
        self._counted: dict[str, int] = {}  # the batch's outputs by Output.counted_as
        self._writable: set[str] = set()  # output topics known to exist (see _require_topic)
        self._lag_refreshed = 0.0
        self._doomed: BaseException | None = None  # why the open transaction can no longer commit (a rebalance)
        #: A commit whose outcome is unknown until the brokers answer again: its state writes, offsets, stream time.
        self._in_doubt: _CommitInDoubt | None = None
        self._loop_turned = time.monotonic()  # the watchdog's view of the main loop
        self._last_progress = time.monotonic()
        self._stall_reported = 0.0
        self._unassigned_reported = False  # said once per assignment: a spare instance may never get partitions
        self._stopping = False
        self._consumer: LeaderAwareConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._globals: KafkaConsumer | None = None
        self._written: LeaderAwareConsumer | None = None  # read_uncommitted: ends with open transactions' records

    # -- topics ----------------------------------------------------------------------------------
    @property
    def group_id(self) -> str:
        return f"{self.settings.topic_prefix}hub.{self.stage.name}"

    @property
    def changelog(self) -> str:
        return self.settings.topic(changelog_topic(self.stage.name))

    @property
    def deadletter(self) -> str:
        return self.settings.topic(deadletter_topic(self.stage.name))

    # -- main loop -------------------------------------------------------------------------------
    def run(self, until: Callable[[int], bool] = lambda handled: False) -> None:
        """Process until SIGTERM/SIGINT, or until ``until(messages handled by the last poll)`` is true;
        the last batch is committed before leaving."""
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)} \
            if in_main_thread else {}
        run_over = threading.Event()
        watchdog = threading.Thread(target=self._watch_main_loop, args=(threading.current_thread(), run_over),
                                    name=f"{self.stage.name}-watchdog", daemon=True)
        watchdog.start()
        try:
            self._open_when_brokers_answer()
            while True:
                while not self._stopping and not until(self.poll_once()):
                    pass
                if not self._in_transaction or self._transaction_committed(self._commit):
                    break
                if self._stopping:
                    break  # the last batch could not commit; it is processed again on restart
        finally:
            run_over.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()

    def run_until_idle(self, idle_polls: int = 15, progress: Callable[[int], None] | None = None) -> int:
        """Process until ``idle_polls`` polls in a row bring nothing (catching up on a backlog: demos, benchmarks,
        replays); returns how many messages were processed."""
        processed = idle = 0

        def caught_up(handled: int) -> bool:
            nonlocal processed, idle
            processed += handled
            idle = 0 if handled else idle + 1
            if progress is not None:
                progress(processed)
            return idle >= idle_polls

        self.run(until=caught_up)
        return processed

    def run_until_caught_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Process until every input partition is read to its last stable offset (inputs that are complete, as
        in a replay); returns how many messages were processed."""
        processed = 0

        def caught_up(handled: int) -> bool:
            nonlocal processed
            processed += handled
            if progress is not None:
                progress(processed)
            return handled == 0 and self.caught_up()

        self.run(until=caught_up)
        return processed

    def caught_up(self) -> bool:
        """Partitions assigned, nothing buffered, every input read to its end, transactions still open included.

        An upstream stage's last commit returns before the brokers have written its markers, so its last records
        are beyond the last stable offset for a moment: a replay that ran its next stage just then stopped short of
        them. A transaction open past ``CHANGELOG_SETTLE_S`` (a writer that died mid-transaction) is not waited for.
        """
        if not self.ready or self._consumer is None or any(self._buffers.values()):
            return False
        assigned = list(self._consumer.assignment())
        positions = self._consumer.positions(assigned)
        if _behind(positions, self._consumer.end_offsets(assigned, timeout_ms=CLIENT_CALL_TIMEOUT_MS)):
            self._open_at_end_since = None
            return False
        open_transactions = _behind(positions, self._written_ends(assigned))
        if not open_transactions:
            return True
        now = time.monotonic()
        if self._open_at_end_since is None:
            self._open_at_end_since = now
        if now - self._open_at_end_since < CHANGELOG_SETTLE_S:
            return False
        self.log.warning("caught up without a transaction still open on the inputs", waited_s=CHANGELOG_SETTLE_S,
                         partitions=sorted(map(str, open_transactions)))
        return True

    @property
    def ready(self) -> bool:
        """Partitions are assigned and their state restored."""
        return bool(self._stores)

    def alive(self) -> tuple[bool, str]:
        """``/healthz``: the main loop comes round (while waiting for brokers too); a stuck call is not alive."""
        blocked_s = time.monotonic() - self._loop_turned
        if blocked_s >= BLOCKED_REPORT_S:
            return False, f"the {self.stage.name} stage's main loop has not come round for {blocked_s:.0f} s"
        return True, f"{self.stage.name}: alive"

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: partitions assigned and restored, and not stopping."""
        if self._stopping:
            return False, f"{self.stage.name}: stopping"
        if not self.ready:
            return False, f"{self.stage.name}: no partitions assigned and restored yet (rebalancing, or a spare)"
        return True, f"{self.stage.name}: ready, partitions {sorted(self._stores)}"

    def _watch_main_loop(self, loop_thread: threading.Thread, run_over: threading.Event) -> None:
        """Say, with the stack, where the main loop is when it has not come round for ``BLOCKED_REPORT_S`` (a client
        call waiting on a broker without a bound, a long state restore): else a stuck stage is a silent, live one."""
        reported = 0.0
        while not run_over.wait(BLOCKED_REPORT_S / 6):
            turned = self._loop_turned
            blocked_s = time.monotonic() - turned
            if blocked_s >= BLOCKED_REPORT_S and turned != reported:
                reported = turned
                frame = sys._current_frames().get(loop_thread.ident or -1)
                stack = "".join(traceback.format_stack(frame)[-8:]) if frame is not None else "(unknown)"
                self.log.error("stage main loop not coming round", for_s=round(blocked_s, 1), stack=stack)

    def _request_stop(self, *_: Any) -> None:
        if self._stopping:
            return
        self._stopping = True
        deadline = threading.Timer(STOP_TIMEOUT_S, self._exit_now)
        deadline.daemon = True
        deadline.start()

    def _exit_now(self) -> None:
        self.log.error("stage did not stop in time; exiting without its last commit (processed again on restart)",
                       timeout_s=STOP_TIMEOUT_S)
        os._exit(143)

    def _open_when_brokers_answer(self) -> None:
        """Open the clients, waiting (and saying so) while no broker answers: a stage started during an outage
        starts when it ends."""
        self._retry_while_brokers_away(self._open, after_failure=self.close_clients)

    def _retry_while_brokers_away(self, action: Callable[[], None],
                                  after_failure: Callable[[], None] = lambda: None) -> None:
        """Run ``action`` until it succeeds, backing off (and saying why) while the brokers do not answer; any other
        failure, or a stop requested meanwhile, is raised."""
        backoff = 0.5
        while True:
            try:
                action()
                return
            except KafkaError as exc:
                if isinstance(exc, FATAL_KAFKA_ERRORS) or not _broker_away(exc) or self._stopping:
                    raise
                after_failure()
                self._report_stall(f"brokers not answering: {_reason(exc).splitlines()[0]}")
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _open(self) -> None:
        self._producer = self._transactional_producer()
        # New record keys go to hub.keys in the batch's transaction: a key and the record sealed under it become
        # visible together or not at all (a crash mid-batch leaves neither). The table is read on first use.
        keys_topic = self.settings.key_table
        self.codec.vault.bind(lambda key, value: self._producer.send(keys_topic, key=key, value=value))
        self._consumer = make_consumer(
            settings=self.settings, group_id=self.group_id, max_poll_records=self.max_batch,
            partition_assignment_strategy=[RangePartitionAssignor],  # co-partitioned inputs share state
            # A member that died is replaced after 10 s, not kafka-python's 45: a restarted stage resumes sooner.
            session_timeout_ms=10_000, heartbeat_interval_ms=3_000,
            client_id=f"{self.group_id}.{self.instance}")
        missing = [t for t in (self.changelog, self.deadletter) if not self._consumer.partitions_for_topic(t)]
        if missing:
            raise TopicMissingError(f"the {self.stage.name} stage needs {', '.join(missing)}, which does not exist")
        self._writable = set(self._output_topics())
        self._producer.know_topics(self._writable)
        self._open_globals()
        pattern = input_regex(self.stage, self.settings)
        self._consumer.subscribe(pattern=pattern, listener=self)
        self.log.info("stage started", group=self.group_id, inputs=pattern)

    def _output_topics(self) -> list[str]:
        """Every topic this stage may write: its outputs (``feed.{unit}``: each unit's), changelog, dead letters and
        the key table."""
        assert self._consumer is not None
        outputs = [re.sub(r"\\\{\w+\\\}", "[^.]+", re.escape(self.settings.topic(o))) for o in self.stage.outputs]
        found = [t for t in sorted(self._consumer.topics()) if any(re.fullmatch(o, t) for o in outputs)]
        return [*found, self.settings.key_table, self.deadletter, self.changelog]  # last: known to exist

    def _transactional_producer(self) -> KafkaProducer:
        """A producer for this member's transactional id; initialising it fences any earlier one (a zombie)."""
        # Waiting longer than the transaction timeout for a record is pointless (the broker aborts it by then), and
        # a flush that waits kafka-python's default 120 s looks like a hung stage.
        delivery_timeout_ms = max(self.transaction_timeout_ms, 15_000)
        producer = make_producer(
            self.settings, transactional_id=f"{self.group_id}.{self.instance}",
            transaction_timeout_ms=self.transaction_timeout_ms, linger_ms=10, batch_size=256 * 1024,
            delivery_timeout_ms=delivery_timeout_ms, request_timeout_ms=min(30_000, delivery_timeout_ms - 1000),
            max_block_ms=CLIENT_CALL_TIMEOUT_MS,
            client_id=f"{self.group_id}.{self.instance}")
        producer.init_transactions()
        return producer

    def _open_globals(self) -> None:
        """Read the global inputs to their end, then wait (saying why) until the stage has what it needs."""
        if not self.stage.global_inputs:
            return
        self._globals = make_consumer(settings=self.settings, group_id=None, client_id=f"{self.group_id}.global")
        topics = [self.settings.topic(name) for name in self.stage.global_inputs]
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(self._globals.partitions_for_topic(t) or [])]
        missing = sorted(set(topics) - {tp.topic for tp in partitions})
        if missing:
            raise TopicMissingError(f"the {self.stage.name} stage reads {', '.join(missing)}, which does not exist")
        self._globals.assign(partitions)
        self._globals.seek_to_beginning()
        ends = self._globals.end_offsets(partitions)
        while any(self._globals.position(tp) < end for tp, end in ends.items()):
            self._poll_globals(timeout_ms=500)
        announced = 0.0
        while (missing := self.stage.waiting_for()) and not self._stopping:
            if time.monotonic() - announced > 10:
                self.log.warning("stage waiting", reason=missing)
                announced = time.monotonic()
            self._poll_globals(timeout_ms=500)

    def _poll_globals(self, timeout_ms: int = 0) -> None:
        if self._globals is None:
            return
        for records in self._globals.poll(timeout_ms=timeout_ms).values():
            for record in records:
                try:
                    self.stage.on_global(Message(record.topic, record.partition, record.offset, record.key,
                                                 self.codec.decode(record.value), record.timestamp))
                except Exception as exc:
                    if self.error_policy.action(exc) == "stop":
                        raise
                    self.log.error("global input record ignored", topic=record.topic, offset=record.offset,
                                   reason=_reason(exc).splitlines()[0])

    def poll_once(self, timeout_ms: int = 200) -> int:
        """One poll, then as many inputs as the ordered merge allows and, when due, one commit; returns how many
        messages were processed (0 when the transaction failed and its inputs will be processed again)."""
        assert self._consumer is not None and self._producer is not None
        processed = 0

        def poll_and_process() -> None:
            nonlocal processed
            processed = self._poll_and_process(timeout_ms)

        committed = self._transaction_committed(poll_and_process)
        self._report_stall()
        self._refresh_lag()
        return processed if committed else 0

    def _refresh_lag(self) -> None:
        """Set ``hub_consumer_lag`` per assigned partition: its high watermark less the next offset to process (from
        what the consumer already knows: no broker call on the main loop's path)."""
        now = time.monotonic()
        if self._consumer is None or now - self._lag_refreshed < LAG_REFRESH_S:
            return
        self._lag_refreshed = now
        known = self._consumer.known_positions(self._consumer.assignment())
        for tp, fetched_to in known.items():
            end = self._consumer.highwater(tp)
            buffered = self._buffers.get(tp)
            position = buffered[0].offset if buffered else fetched_to
            if end is not None and position is not None:
                CONSUMER_LAG.labels(self.stage.name, tp.topic, str(tp.partition)).set(max(0, end - position))

    def _transaction_committed(self, work: Callable[[], None]) -> bool:
        """Run ``work`` (processing, committing); False if it failed on the brokers (an aborted or refused
        transaction, a broker away, a rebalance that revoked the batch's partitions): everything since the last
        commit is then dropped and processed again (see :meth:`_recover`)."""
        try:
            work()
            if self._doomed is None:
                return True
            exc, self._doomed = self._doomed, None
        except KafkaError as exc_:
            if isinstance(exc_, FATAL_KAFKA_ERRORS):
                raise
            exc = exc_
        self._recover(exc)
        return False

    def _poll_and_process(self, timeout_ms: int) -> int:
        assert self._consumer is not None
        self._poll_globals()
        self.codec.vault.refresh()  # purges reach a running stage at its next poll
        processed = 0
        while True:
            # An open transaction is committed on time even when no input comes: never wait past its deadline.
            wait_ms = min(timeout_ms, max(0, int(self._commit_due_in() * 1000))) if self._in_transaction else timeout_ms
            if self._records_ready:
                wait_ms = 0  # buffered records the merge can take now: only fetch what has already arrived
            for tp, records in self._consumer.poll(timeout_ms=wait_ms, max_records=self.max_batch).items():
                if tp.partition not in self._states:
                    # kafka-python runs the assignment listener on its own thread, and a poll that timed out
                    # meanwhile can return records of a partition whose state is still being restored: fetch them
                    # again once it is.
                    self._consumer.seek(tp, records[0].offset)
                    continue
                self._buffers.setdefault(tp, deque()).extend(records)
            processed += self._process_in_order()
            self._pause_full_buffers()
            # Nothing processed although records are buffered: the merge waits for a partition to be fetched.
            # Fetch again now, so that a caller counting idle polls never mistakes that wait for an idle input.
            if processed or self._stopping or not any(self._buffers.values()) or self._commit_due():
                break
        if self._commit_due():
            self._commit()
        elif not processed and not self._in_transaction and self.ready:
            self._commit_past_markers()
        return processed

    def _commit_due_in(self) -> float:
        """Seconds until the open transaction must be committed."""
        return self._batch_started + self.commit_interval_s - time.monotonic()

    def _commit_due(self) -> bool:
        """A full batch, the interval over, or nothing fetched left to process: latency costs one commit per fetch
        at most, and a backlog still commits in batches (each fetch brings many records)."""
        return self._in_transaction and (self._batch_size >= self.max_batch or self._commit_due_in() <= 0
                                         or not any(self._buffers.values()))

    def _recover(self, exc: BaseException) -> None:
        """Something failed on the brokers: none of the open transaction is visible, so drop everything it held
        (state writes, new record keys, fetched records) and go back to the last commit with a new producer.

        While the brokers do not answer this waits for them, saying why every few seconds; a failure that repeats
        with the brokers answering (a duplicate instance that keeps fencing this one, too) stops the stage after
        ``MAX_TRANSACTION_RETRIES``. Only errors no retry mends (a permission missing) are fatal at once."""
        if isinstance(exc, CommitFailedError) and self._consumer is not None:
            self._consumer.rejoin()  # the group went on without this member: rejoin now, not at the next heartbeat
        transient = _broker_away(exc)
        if not transient:
            self._failed_transactions += 1
        if self._in_transaction or not transient:
            TRANSACTIONS_ABORTED.labels(self.stage.name).inc()
        if self._failed_transactions > MAX_TRANSACTION_RETRIES:
            raise TransactionRetryError(f"the {self.stage.name} stage's transaction failed "
                                        f"{self._failed_transactions} times in a row; last: {_reason(exc)}",
                                        hint=_FENCED_HINT if isinstance(exc, ProducerFencedError) else None) from exc
        self.log.warning("processing again from the last commit", reason=_reason(exc).splitlines()[0],
                         in_transaction=self._in_transaction, attempt=self._failed_transactions)
        self._drop_uncommitted()
        if not self._stopping:  # leaving: the dropped batch is processed again on restart
            self._retry_while_brokers_away(self._rewind_to_commit)

    def _drop_uncommitted(self) -> None:
        """Forget everything since the last commit (local only: nothing here talks to a broker)."""
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except KafkaError:
                pass  # its transaction is already lost; the next producer fences it in any case
            self._producer = None
        if self._in_doubt is None or self._stopping:
            self._in_doubt = None
            self.codec.vault.rollback()  # keys created in the failed transaction never reached hub.keys
        for state in self._states.values():
            state.discard_all()
        self._offsets, self._in_transaction, self._batch_size = {}, False, 0
        self._feed_stamps, self._counted = [], {}
        self._stream_time = dict(self._committed_stream_time)  # expiry must not run ahead of the inputs replayed
        self._merged_to_ms = self._committed_merged_to_ms
        self._buffers.clear()  # the partitions are sought back to their commits below

    def _rewind_to_commit(self) -> None:
        """A new producer (fencing the failed one's transaction) and every assigned partition back at its commit."""
        assert self._consumer is not None
        if self._producer is None:
            self._producer = self._transactional_producer()  # completes or aborts the failed transaction first
        if self._in_doubt is not None:
            self._settle_in_doubt()
        assigned = list(self._consumer.assignment())
        committed = {tp: self._consumer.committed(tp, timeout_ms=CLIENT_CALL_TIMEOUT_MS) for tp in assigned}
        for tp in assigned:
            if committed[tp] is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed[tp])

    def _settle_in_doubt(self) -> None:
        """A commit failed without an answer (a broker away): the new producer has completed or aborted it, and the
        group's committed offsets say which. Committed, its state writes and record keys are kept, not dropped."""
        assert self._consumer is not None and self._in_doubt is not None
        commit = self._in_doubt
        committed = {tp: self._consumer.committed(tp, timeout_ms=CLIENT_CALL_TIMEOUT_MS) for tp in commit.offsets}
        if commit.offsets and all(committed[tp] == meta.offset for tp, meta in commit.offsets.items()):
            self.log.info("the transaction in doubt had committed; its state writes are kept",
                          inputs=len(commit.offsets))
            self._stream_time, self._merged_to_ms = dict(commit.stream_time), commit.merged_to_ms
            self._committed_as(commit)
        else:
            self._in_doubt = None
            self.codec.vault.rollback()

    def _report_stall(self, reason: str | None = None) -> None:
        """Say, every ``STALL_REPORT_S`` while it lasts, why the stage has made no progress."""
        now = time.monotonic()
        self._loop_turned = now  # called on every turn of the main loop and of every wait for the brokers
        if reason is None and not self._in_transaction and not any(self._buffers.values()):
            if self.ready:
                self._last_progress, self._unassigned_reported = now, False  # caught up
            elif self._unassigned_reported:
                self._last_progress = now  # an idle spare member: said once
            elif now - self._last_progress >= STALL_REPORT_S:
                self._unassigned_reported = True
                self.log.warning("stage has no partitions yet", waited_s=round(now - self._last_progress, 1),
                                 reason="the group is rebalancing (a member that died is replaced once its "
                                        "10 s session ends), or other instances hold every partition")
            if self.ready:
                LAST_PROGRESS.labels(self.stage.name).set_to_current_time()
            return
        if now - self._last_progress < STALL_REPORT_S or now - self._stall_reported < STALL_REPORT_S:
            return
        self._stall_reported = now
        self.log.warning("stage making no progress", stalled_s=round(now - self._last_progress, 1),
                         reason=reason or "its batch has not committed within the interval (a broker is slow or "
                                          "away; the transaction is retried if the broker aborts it)")

    def _process_in_order(self) -> int:
        """Process buffered records oldest first while the merge allows; returns how many."""
        assert self._consumer is not None
        processed = 0
        unfetched = self._partitions_with_unfetched_records()
        self._records_ready = False
        while processed < self.max_batch and not self._commit_due():
            tp = self._next_in_order(unfetched)
            if tp is None:
                break  # nothing buffered, or the merge waits for a partition to be fetched
            buffer = self._buffers[tp]
            record = buffer.popleft()
            self._begin()
            if self.stage.output_timestamps == "carried":  # else the inputs' order does not reach the outputs
                self._note_order(tp, record.timestamp)
            self._handle(record)
            processed += 1
            self._batch_size += 1
            # Once a partition's fetched records are all processed, commit its position rather than the last
            # offset + 1: the position has moved past transaction markers and aborted records too, so a
            # caught-up group's lag is exactly zero.
            next_offset = self._consumer.position(tp) if not buffer else record.offset + 1
            self._offsets[tp] = OffsetAndMetadata(next_offset, "", -1)
            if not buffer and next_offset < (self._consumer.highwater(tp) or 0):
                unfetched.add(tp)  # more of it on the broker: its next record may be older than the others' heads
        else:
            self._records_ready = any(self._buffers.values())  # stopped for the commit, not by the merge
        return processed

    def _note_order(self, tp: TopicPartition, timestamp_ms: int) -> None:
        """Count (and report every ``STALL_REPORT_S``) an input older than one already processed: it became
        visible only after newer inputs were processed (several upstream instances, a member's partitions taken
        over, the merge going on without a partition), so live processing did not see the log's order here."""
        if timestamp_ms >= self._merged_to_ms:
            self._merged_to_ms = timestamp_ms
            return
        LATE_INPUTS.labels(self.stage.name).inc()
        count, latest_ms = self._late
        self._late = (count + 1, max(latest_ms, self._merged_to_ms - timestamp_ms))
        now = time.monotonic()
        if now - self._late_reported >= STALL_REPORT_S:
            self._late_reported = now
            self.log.warning("inputs processed out of timestamp order", inputs=self._late[0],
                             late_by_s=round(self._late[1] / 1000, 3), partition=str(tp),
                             consequence="a replay of this history may decide differently on them")
            self._late = (0, 0)

    def _partitions_with_unfetched_records(self) -> set[TopicPartition]:
        """Assigned partitions with nothing buffered but records written beyond the position, asked of the broker
        now: committed ones not yet fetched, and those of transactions still open.

        The high watermark of the last fetch is not enough: an upstream transaction may have written to a partition
        since it was last fetched, older records than those buffered from another partition. Nor is the last stable
        offset: the brokers write a transaction's commit markers partition by partition (a paused leader holds its
        partition's back for as long as it is away), so the newer half of a transaction can be readable while its
        older half is not. Waiting for every record written before this look (until it is committed, or skipped as
        aborted) merges a single upstream writer processing in timestamp order exactly as a replay sees it.
        """
        assert self._consumer is not None
        if not any(self._buffers.values()):
            return set()
        empty = [tp for tp in self._consumer.assignment() if not self._buffers.get(tp)]
        if not empty:
            return set()
        return _behind(self._consumer.positions(empty, timeout_ms=CLIENT_CALL_TIMEOUT_MS), self._written_ends(empty))

    def _written_ends(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The partitions' high watermarks: their ends with the records of open transactions, which the stage's
        read_committed clients do not see. Asked on a connection of its own (not behind a held fetch)."""
        if self._written is None:
            self._written = make_consumer(settings=self.settings, group_id=None, isolation_level="read_uncommitted",
                                          client_id=f"{self.group_id}.{self.instance}.ends")
        return self._written.end_offsets(partitions, timeout_ms=CLIENT_CALL_TIMEOUT_MS)

    def _next_in_order(self, unfetched: set[TopicPartition]) -> TopicPartition | None:
        """The partition holding the oldest buffered record, or None while a partition that may hold an older
        one has not been fetched yet (for at most ``max_wait_s``)."""
        if any(not self._buffers.get(tp) for tp in unfetched):
            now = time.monotonic()
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < self.max_wait_s:
                return None
            self.log.warning("ordered merge went on without a partition", partitions=sorted(map(str, unfetched)),
                             waited_s=round(now - self._waiting_since, 1))
            unfetched.clear()
        self._waiting_since = None
        heads = [(b[0].timestamp, tp.topic, tp.partition, b[0].offset, tp) for tp, b in self._buffers.items() if b]
        return min(heads)[-1] if heads else None

    def _pause_full_buffers(self) -> None:
        """Stop fetching partitions far ahead of the others (the merge cannot use their records yet)."""
        assert self._consumer is not None
        full = [tp for tp, b in self._buffers.items() if len(b) >= 4 * self.max_batch]
        paused = self._consumer.paused()
        if full:
            self._consumer.pause(*[tp for tp in full if tp not in paused])
        drained = [tp for tp in paused if len(self._buffers.get(tp, ())) < self.max_batch]
        if drained:
            self._consumer.resume(*drained)

    def _begin(self) -> None:
        if not self._in_transaction:
            assert self._producer is not None
            self._producer.begin_transaction()
            self._in_transaction = True
            self._stamp_floor_ms = self._stamped_ms + 1
            self._batch_started = time.monotonic()
            self._batch_size = 0

    def _handle(self, record: Any) -> None:
        """Process one input; any failure the record caused dead-letters it (see :class:`ErrorPolicy`)."""
        state = self._states[record.partition]
        try:
            message = self._message_of(record)
            if message is None:
                PURGED_SKIPPED.labels(self.stage.name).inc()  # purged under retention: as if never written
                return
            event_time = self._event_time_of(message)
            state.hide_expired(self.stage.grace.total_seconds())
            outputs = self.stage.process(message, state)
            # Encoded and checked before anything is sent: a derived record that cannot be written (one of its
            # reports was purged, it would exceed the message limit) rejects its input as a whole.
            encoded = [(o, self._encoded(o)) for o in outputs]
            for output in outputs:
                self._require_topic(self.settings.topic(output.topic))
        except Exception as exc:
            state.discard_last()
            if self.error_policy.action(exc) == "stop":
                raise
            if self.error_policy.is_unexpected(exc):
                self.log.error("unexpected exception processing a record (a bug?); dead-lettered, stage goes on",
                               topic=record.topic, partition=record.partition, offset=record.offset,
                               exc_info=exc, policy="HUB_UNEXPECTED_ERRORS=dead-letter")
            if isinstance(exc, RecordKeyUnknownError):
                UNKNOWN_KEYS.labels(self.stage.name).inc()  # not purged: forged or sealed elsewhere
            self._dead_letter(record, exc)
            return
        state.keep_last()
        state.advance_clock(record.topic, event_time, record.timestamp)
        tp = TopicPartition(record.topic, record.partition)
        self._stream_time[tp] = max(self._stream_time.get(tp, 0.0), event_time)
        stamp = record.timestamp if self.stage.output_timestamps == "carried" else self._received_stamp()
        for output, data in encoded:
            self._send(output, data, stamp)
            if output.topic.startswith(FEED_PREFIX):
                self._feed_stamps.append(stamp)
            if output.counted_as:
                self._counted[output.counted_as] = self._counted.get(output.counted_as, 0) + 1
        PROCESSED.labels(self.stage.name).inc()

    def _message_of(self, record: Any) -> Message | None:
        """The decoded input, checked to be a type the stage reads; None if retention purged it."""
        if record.value is None:
            raise StageError(f"a null value (tombstone) on {record.topic}: the {self.stage.name} stage's inputs "
                             f"carry records, never deletes")
        try:
            value = self.codec.decode(record.value)
        except RecordPurgedError:
            return None
        expected = self.stage.input_types
        if expected and not isinstance(value, expected):
            raise StageError(f"a {type(value).__name__} on {record.topic}, where the {self.stage.name} stage reads "
                             f"only {' or '.join(t.__name__ for t in expected)}")
        return Message(record.topic, record.partition, record.offset, record.key, value, record.timestamp,
                       record.value)

    def _event_time_of(self, message: Message) -> float:
        """The stage's event time for ``message``, refused if it is not a finite number (it drives expiry)."""
        seconds = float(self.stage.event_time(message))
        if not math.isfinite(seconds):
            raise StageError(f"the record's event time is {seconds}, not a point in time")
        return seconds

    def _encoded(self, output: Output) -> bytes:
        codec = self.clear_codec if output.in_clear else self.codec
        data = output.value if isinstance(output.value, bytes) else codec.encode(output.value)
        if len(data) > MAX_MESSAGE_BYTES:
            raise StageError(f"its {type(output.value).__name__} for {output.topic} would be {len(data)} bytes, over "
                             f"the {MAX_MESSAGE_BYTES}-byte message limit")
        return data

    def _received_stamp(self) -> int:
        """Now, in epoch ms, never before an earlier stamp and after every stamp of the earlier transactions: the
        next stage's merge then sees a transaction's records only after everything older (no ties across commits)."""
        self._stamped_ms = max(int(time.time() * 1000), self._stamp_floor_ms, self._stamped_ms)
        return self._stamped_ms

    def _require_topic(self, topic: str) -> None:
        """Stop the stage (TopicMissingError: infrastructure) rather than let a send to a topic that does not exist
        block the transaction until it times out, again on every retry. Topics created since the start are looked up
        once (an agency's, say)."""
        if topic in self._writable:
            return
        assert self._consumer is not None
        if not self._consumer.partitions_for_topic(topic):
            raise TopicMissingError(f"the {self.stage.name} stage writes {topic}, which does not exist",
                                    hint="Create the hub's topics with `hub topics init` (after an upgrade too: it "
                                         "creates the topics the new version declares), then restart the stage.")
        self._writable.add(topic)

    def _send(self, output: Output, value: bytes, timestamp_ms: int) -> None:
        """Produce one output with the stage's timestamp for it, so downstream merges order it the same way."""
        assert self._producer is not None
        self._producer.send(self.settings.topic(output.topic), key=output.key, value=value, headers=output.headers,
                            partition=output.partition, timestamp_ms=timestamp_ms)

    def _dead_letter(self, record: Any, exc: BaseException) -> None:
        assert self._producer is not None
        reason = _reason(exc)
        self.log.warning("message sent to dead-letter topic", topic=record.topic, partition=record.partition,
                         offset=record.offset, reason=reason.splitlines()[0])
        headers = [("dlq.stage", self.stage.name.encode()), ("dlq.reason", reason.encode()),
                   ("dlq.source_topic", record.topic.encode()), ("dlq.source_partition", str(record.partition).encode()),
                   ("dlq.source_offset", str(record.offset).encode()),
                   ("dlq.trace", "".join(traceback.format_exception_only(exc))[:MAX_REASON_CHARS].encode())]
        value = record.value
        if value is not None and len(value) > MAX_DEAD_LETTER_VALUE:
            headers += [("dlq.value_bytes", str(len(value)).encode()),
                        ("dlq.value_sha256", hashlib.sha256(value).hexdigest().encode())]
            value = None
        self._producer.send(self.deadletter, key=(record.key or b"")[:MAX_REASON_CHARS] or None, value=value,
                            headers=headers, timestamp_ms=record.timestamp)
        where = f"{record.topic}/{record.partition}/{record.offset}"
        rejection = audit_event(self.stage.name, AuditEventType.RECORD_REJECTED, principal_of(self.settings),
                                f"{where} sent to {self.deadletter}: {reason.splitlines()[0]}",
                                subject_ids=[where], outcome=AuditOutcome.FAILURE, identity=f"rejected|{where}")
        self._producer.send(self.settings.topic(AUDIT.pattern), key=rejection.audit_id.encode(),
                            value=self.codec.encode(rejection), timestamp_ms=record.timestamp)
        DEAD_LETTERS.labels(self.stage.name).inc()

    def _commit(self) -> None:
        """Changelog the batch's state writes, add the offsets, commit; then apply the writes locally."""
        assert self._producer is not None and self._consumer is not None
        started = time.monotonic()
        pending: dict[int, tuple[list[StateWrite], Any]] = {}
        self._destroyed_since = set()
        watermarks = []
        grace_s = self.stage.grace.total_seconds()
        for partition, state in self._states.items():
            # never ahead of what reads already leave out (the state's clock), so a delete changes no decision
            watermarks.append(min(self._watermark(partition), state.clock(grace_s)))
            state.expire(watermarks[-1] - grace_s)
            writes = []
            last = None
            for write in state.take_writes():
                try:
                    value = write.encode(self.codec.vault)  # sealed under its reports' keys, if it names any
                except RecordPurgedError:
                    write, value = write.deleted(), None  # a report it carries was purged since: the entry goes
                writes.append(write)
                last = self._producer.send(self.changelog, key=write.store_key.encode(), value=value,
                                           partition=partition)
            pending[partition] = (writes, last)
        if self._offsets:
            self._producer.send_offsets_to_transaction(self._offsets, self._consumer.group_metadata())
        self._in_doubt = _CommitInDoubt(pending, dict(self._offsets), dict(self._stream_time), self._merged_to_ms)
        self._producer.commit_transaction()
        self._committed_as(self._in_doubt)
        self._offsets = {}
        self._in_transaction = False
        self._observe_commit(time.monotonic() - started, min((w for w in watermarks if w > 0), default=0.0))

    def _observe_commit(self, seconds: float, watermark: float) -> None:
        """The committed batch's figures: commit latency, watermark, feed latency, counted outputs."""
        stage = self.stage.name
        COMMIT_SECONDS.labels(stage).observe(seconds)
        if watermark:
            WATERMARK.labels(stage).set(watermark)
        now_ms = time.time() * 1000
        latency = END_TO_END.labels(stage)
        for stamp in self._feed_stamps:
            latency.observe(max(0.0, now_ms - stamp) / 1000)
        for counted_as, count in self._counted.items():
            OUTPUTS.labels(stage, counted_as).inc(count)
        self._feed_stamps, self._counted = [], {}

    def _committed_as(self, commit: _CommitInDoubt) -> None:
        """The transaction committed: its new record keys are final and its state writes go to the local stores
        (of the partitions this member still holds; a new owner restores them from the changelog)."""
        self._in_doubt = None
        self.codec.vault.confirm()
        self._failed_transactions = 0
        self._last_progress = time.monotonic()
        LAST_PROGRESS.labels(self.stage.name).set_to_current_time()
        for partition, (writes, last) in commit.state_writes.items():
            store = self._stores.get(partition)
            if store is None:
                continue
            if writes:
                offset = last.get(timeout=30).offset + 1 if last is not None else None
                # A key destroyed after its write was sealed: the changelog copy is unreadable, the local one goes.
                store.apply(without_purged(writes, self._destroyed_since), offset)
            STATE_ENTRIES.labels(self.stage.name, str(partition)).set(store.size())
        self._committed.update({tp: meta.offset for tp, meta in commit.offsets.items()})
        self._committed_stream_time = dict(commit.stream_time)
        self._committed_merged_to_ms = commit.merged_to_ms

    def _commit_past_markers(self) -> None:
        """Commit the position of idle partitions that moved past a transaction marker since their last record.

        An upstream commit marker can arrive after the last record it closes was processed; the position then
        moves past it with nothing to process, and without this commit a caught-up stage would show a lag of one
        record per such partition (``stage_lag`` reads the last stable offset)."""
        assert self._consumer is not None and self._producer is not None
        idle = [tp for tp in self._consumer.assignment() if not self._buffers.get(tp)]
        moved = {tp: position for tp, position in self._consumer.positions(idle, CLIENT_CALL_TIMEOUT_MS).items()
                 if position is not None and position > self._committed.get(tp, -1)}
        if moved:
            self._begin()
            self._offsets.update({tp: OffsetAndMetadata(position, "", -1) for tp, position in moved.items()})
            self._commit()

    def _watermark(self, partition: int) -> float:
        """Event time up to which every input topic feeding ``partition`` has been read.

        Co-partitioned topics are read one after another when there is a backlog (a replay, a restart), so
        one topic's event time can run months ahead of another's; state may only expire behind the slowest
        topic that still has unread records, else reports of one seizure could miss each other.
        """
        assert self._consumer is not None
        topics = [tp for tp in self._consumer.assignment() if tp.partition == partition]
        positions = self._consumer.positions(topics)
        lagging = []
        for tp in topics:
            end, seen = self._consumer.highwater(tp), self._stream_time.get(tp)
            if end is None or (positions[tp] or 0) < end or self._buffers.get(tp):
                if seen is None:
                    return 0.0  # unread backlog of unknown age: expire nothing yet
                lagging.append(seen)
        if lagging:
            return min(lagging)
        return max((self._stream_time.get(tp, 0.0) for tp in topics), default=0.0)

    # -- partitions and state --------------------------------------------------------------------
    # kafka-python calls these on its network thread, where a call that waits on the network raises: they commit
    # only what needs no fetch, and leave anything that fails to the poll loop (the transaction is then retried).
    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        REBALANCES.labels(self.stage.name, "revoked").inc()
        if self._in_transaction and self._doomed is None:
            try:
                self._commit()
            except Exception as exc:  # noqa: BLE001 - whatever it was, the batch is processed again
                self._doomed = exc
        self._release(revoked)

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        """The group expelled this member (a broker or the network was away): its batch cannot commit."""
        REBALANCES.labels(self.stage.name, "lost").inc()
        if self._in_transaction and self._doomed is None:
            self._doomed = StageError(f"the {self.stage.name} stage lost its partitions (expelled from the group)")
        self._release(lost)

    def _release(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            buffered = self._buffers.pop(tp, None)
            if buffered:
                # Fetched, never processed: if this member gets the partition back, kafka-python keeps its fetch
                # position, so rewind it to the first of them (another owner starts at the committed offset).
                self._consumer.seek(tp, buffered[0].offset)
        for tp in partitions:
            try:
                CONSUMER_LAG.remove(self.stage.name, tp.topic, str(tp.partition))
            except KeyError:
                pass  # never measured
        for partition in {tp.partition for tp in partitions}:
            store = self._stores.pop(partition, None)
            self._states.pop(partition, None)
            if store is not None:
                store.close()
        READY.labels(self.stage.name).set(1 if self.ready else 0)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        REBALANCES.labels(self.stage.name, "assigned").inc()
        new = sorted({tp.partition for tp in assigned} - set(self._stores))
        if new:
            # One changelog reader for the whole assignment: a client per partition cost a bootstrap each.
            reader = make_consumer(settings=self.settings, group_id=None, client_id=f"{self.group_id}.restore")
            try:
                changelogs = [TopicPartition(self.changelog, partition) for partition in new]
                stable = reader.end_offsets(changelogs, timeout_ms=CLIENT_CALL_TIMEOUT_MS)
                written = self._written_ends(changelogs)
                settle_by = time.monotonic() + CHANGELOG_SETTLE_S
                for changelog in changelogs:
                    self._open_partition(changelog, _ChangelogEnds(stable[changelog], written[changelog], settle_by),
                                         reader)
            finally:
                reader.close()
        READY.labels(self.stage.name).set(1 if self.ready else 0)
        if self.on_assigned is not None:
            self.on_assigned()

    def _open_partition(self, changelog: TopicPartition, ends: _ChangelogEnds, reader: Any) -> None:
        """Open the partition's local store, drop what was purged while it was closed, restore the rest."""
        store = SqlitePartitionStore(self.state_dir / f"partition-{changelog.partition}.sqlite")
        self._restoring = store  # a purge learned while restoring reaches this store too
        try:
            purged = self._purge_destroyed(store)
            restored = self._restore(store, changelog, ends, reader)
        except BaseException:
            store.close()
            raise
        finally:
            self._restoring = None
        self._stores[changelog.partition] = store
        self._states[changelog.partition] = State(store, hasher=self._state_key_hash)
        self.log.info("partition assigned", partition=changelog.partition, restored=restored, purged=purged,
                      entries=store.size())

    def _purge_destroyed(self, store: SqlitePartitionStore) -> int:
        """Drop the entries of reports purged while the store was closed; returns how many."""
        reports = store.reports()
        destroyed = [r for r in sorted(reports) if self.codec.vault.destroyed(r)] if reports else []
        purged = store.purge(destroyed)
        PURGED_STATE.labels(self.stage.name).inc(purged)
        return purged

    def _purge_local_state(self, key_id: str) -> None:
        """The key vault learned that ``key_id`` was destroyed: drop its report's entries from every local store
        and pending write. Nothing goes to Kafka: the changelog's copies are sealed under the destroyed key."""
        self._destroyed_since.add(key_id)
        purged = 0
        for store in [*self._stores.values(), *([self._restoring] if self._restoring is not None else [])]:
            purged += store.purge([key_id])
        for state in self._states.values():
            purged += state.forget_reports([key_id])
        if purged:
            PURGED_STATE.labels(self.stage.name).inc(purged)
            self.log.info("purged report dropped from local state", report=key_id, entries=purged)
        for partition, store in self._stores.items():
            STATE_ENTRIES.labels(self.stage.name, str(partition)).set(store.size())

    def _restore(self, store: SqlitePartitionStore, changelog: TopicPartition, ends: _ChangelogEnds,
                 reader: Any) -> int:
        """Apply the changelog from the store's checkpoint to its end; returns how many changes were applied.

        The end includes a transaction still open: the previous owner's last commit returns before the brokers have
        written its markers, and its offsets are already the group's, so stopping at the last stable offset would
        lose its state writes for good. A transaction that stays open past ``ends.settle_by`` (a writer that died
        mid-transaction, aborted by the broker only at its timeout) is left out, and said.

        A sealed entry whose record key was destroyed is applied as a delete; one sealed under a key the hub never
        had stops the restore (:class:`StateError` naming the entry and its offset)."""
        start = store.changelog_offset
        if start >= ends.written:
            return 0
        reader.assign([changelog])
        reader.seek(changelog, start)
        applied = 0
        while (position := reader.position(changelog)) < ends.written:
            if position >= ends.stable and time.monotonic() > ends.settle_by:
                self.log.warning("restored without a transaction still open on the changelog", changelog=str(changelog),
                                 stable_end=position, written_end=ends.written, waited_s=CHANGELOG_SETTLE_S)
                break
            for records in reader.poll(timeout_ms=200).values():
                self._destroyed_since = set()
                writes = [self._decode_change(r) for r in records]
                store.apply(without_purged(writes, self._destroyed_since), records[-1].offset + 1)
                applied += len(writes)
        return applied

    def _decode_change(self, record: Any) -> StateWrite:
        try:
            return StateWrite.decode(record.key.decode(), record.value, self.codec.vault)
        except StateError as exc:
            raise StateError(f"cannot restore the {self.stage.name} stage's state from {record.topic}/"
                             f"{record.partition}/{record.offset}: {exc}") from exc

    def close(self) -> None:
        self.close_clients()
        for store in self._stores.values():
            store.close()
        self._stores, self._states = {}, {}
        READY.labels(self.stage.name).set(0)
        self.codec.vault.bind(None)
        self.codec.vault.close()

    def close_clients(self) -> None:
        if self._globals is not None:
            self._globals.close()
            self._globals = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._written is not None:
            self._written.close()
            self._written = None
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None


#: Logical feed topics (``feed.{unit}``) start with this: their items' latency is the end-to-end figure.
FEED_PREFIX = FEED.pattern.split("{", 1)[0]

_FENCED_HINT = ("Another process runs this stage with the same --instance: give each host its own "
                "(`hub run STAGE --instance N`).")


#: Errors that say a broker did not answer in time, which waiting mends.
BROKER_AWAY_ERRORS = (RetriableError, KafkaConnectionError, KafkaUnavailableError, TransactionIncompleteError)


def _behind(positions: dict[TopicPartition, int | None], ends: dict[TopicPartition, int]) -> set[TopicPartition]:
    """The partitions whose position (None: not yet known, so the start) is short of their end."""
    return {tp for tp, end in ends.items() if (positions.get(tp) or 0) < end}


def _broker_away(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is one of ``BROKER_AWAY_ERRORS``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BROKER_AWAY_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    """``Type: message``, bounded (an exception can quote a whole record)."""
    return f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]


def input_regex(stage: Stage, settings: HubSettings) -> str:
    """The stage's input pattern (over logical names) under the settings' topic prefix, anchored at both ends
    (``alerts`` must not also match ``alerts.raised``)."""
    return "^" + re.escape(settings.topic_prefix) + "(?:" + stage.input_pattern.lstrip("^").rstrip("$") + ")$"


def stage_lag(stage: Stage, settings: HubSettings | None = None) -> dict[TopicPartition, int]:
    """Committed records in the stage's input partitions that its consumer group has not committed yet.

    End offsets are read ``read_committed`` (the last stable offset) and the runner commits positions, which
    skip transaction markers and aborted records, so a caught-up stage has lag zero everywhere.
    """
    settings = settings or get_settings()
    consumer = make_consumer(settings=settings, group_id=f"{settings.topic_prefix}hub.{stage.name}")  # never subscribes
    try:
        pattern = re.compile(input_regex(stage, settings))
        topics = sorted(t for t in consumer.topics() if pattern.match(t))
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        ends = consumer.end_offsets(partitions)
        return {tp: max(0, end - (consumer.committed(tp) or 0)) for tp, end in ends.items()}
    finally:
        consumer.close()
