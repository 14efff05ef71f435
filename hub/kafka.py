"""Kafka client factories: the one place that turns settings into kafka-python configuration.

Every producer, consumer and admin client in the hub comes from here, so security options, client ids
and timeouts are set once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.coordinator.base import BaseCoordinator
from kafka.errors import KafkaTimeoutError, SaslAuthenticationFailedError
from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport
from kafka.producer.transaction_manager import TransactionManager

from hub.exceptions import AuthenticationFailedError, KafkaUnavailableError, TransactionIncompleteError
from hub.settings import HubSettings, get_settings


def _keep_bytes_received_before_close(transport: type) -> None:
    """kafka-python 3.0.12 drops the bytes of a read that ends in the peer's close: a broker refusing a SASL login
    sends its SaslAuthenticate error and closes at once (KIP-306's delayed close), so the refusal was often lost and
    a wrong password looked like an unreachable broker. Hand such bytes over first; the next read sees the close."""
    receive = transport.__dict__["_sock_recv"]

    def sock_recv(self: Any) -> tuple[bytes, Any]:
        data, error = receive(self)
        return (data, None) if data and error is not None else (data, error)

    transport._sock_recv = sock_recv


for _transport in (KafkaTCPTransport, KafkaSSLTransport):
    _keep_bytes_received_before_close(_transport)


def _claim_joins_that_finished_unawaited(coordinator: type) -> None:
    """kafka-python 3.0.12 runs JoinGroup and SyncGroup as a task that a ``poll()`` awaits only until its timeout.
    When the task finishes after that, its assignment is never applied: the next poll either sees the task done and
    sends a new JoinGroup (whenever a join takes longer than the poll timeout, as for seven stages in one busy
    process, the group rebalanced for ever: ~100 times a minute, transactions failing with UnknownMemberId), or, if
    nothing else asks for a rejoin, stays "rebalancing" with no partitions for good. A join task not yet applied now
    keeps the member rejoining, and the next attempt takes that task's assignment instead of asking again (unless the
    member's generation was reset since)."""
    join_group, join_and_sync = coordinator.join_group_async, coordinator._do_join_and_sync_async

    def need_rejoin(self: Any) -> bool:
        return self.rejoin_needed or self._join_task is not None

    async def join_group_async(self: Any, timeout_ms: Any = None) -> Any:
        task = self._join_task
        if task is not None and task.succeeded():
            self._unclaimed_join = (self._joined_generation, task.value)
        return await join_group(self, timeout_ms)

    async def do_join_and_sync_async(self: Any) -> Any:
        unclaimed, self._unclaimed_join = getattr(self, "_unclaimed_join", None), None
        if unclaimed is not None and unclaimed[0] is self._generation:
            return unclaimed[1]
        assignment = await join_and_sync(self)
        self._joined_generation = self._generation
        return assignment

    coordinator.need_rejoin = need_rejoin
    coordinator.join_group_async = join_group_async
    coordinator._do_join_and_sync_async = do_join_and_sync_async


_claim_joins_that_finished_unawaited(BaseCoordinator)


def _give_back_parked_records(fetcher: type) -> None:
    """kafka-python 3.0.12 parks the records of a partition paused while they were being handed out, and gives
    them back once it is resumed, but only if nothing else is in line, checked as ``is None``: a batch handed out
    in full stays in line, drained (falsy, not None), so the parked records were hardly ever given back, and a
    partition holding parked records is not fetched again meanwhile. A stage that paused a partition ahead of the
    others (``_pause_full_buffers``) then saw it as holding records no fetch brought, and its ordered merge waited
    60 s at a time (``hub bench pipeline`` at 200 events/s, the seal stage). A drained batch is now taken out of
    line before records are handed out."""
    fetched_records = fetcher.fetched_records

    def give_back_then_fetched_records(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._next_partition_records is not None and not self._next_partition_records:
            self._next_partition_records = None
        return fetched_records(self, *args, **kwargs)

    fetcher.fetched_records = give_back_then_fetched_records


_give_back_parked_records(Fetcher)


def connection_config(settings: HubSettings | None = None) -> dict[str, Any]:
    """Bootstrap and security options shared by all client types."""
    s = settings or get_settings()
    config: dict[str, Any] = {
        "bootstrap_servers": s.bootstrap_list,
        "security_protocol": s.security_protocol,
        "client_id": s.client_id,
        "bootstrap_timeout_ms": int(s.connect_timeout_s * 1000),
    }
    if s.security_protocol.startswith("SASL"):
        config.update(
            sasl_mechanism=s.sasl_mechanism,
            sasl_plain_username=s.sasl_username,
            sasl_plain_password=s.sasl_password,
        )
    if s.security_protocol.endswith("SSL") and s.ssl_cafile:
        config["ssl_cafile"] = str(s.ssl_cafile)
    return config


class _SaslFailures(logging.Handler):
    """Collects the SASL failures kafka-python only logs: its bootstrap then times out as if no broker answered."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[SaslAuthenticationFailedError] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.seen += [arg for arg in args if isinstance(arg, SaslAuthenticationFailedError)]


def _connect(factory: Any, settings: HubSettings | None, **overrides: Any) -> Any:
    config = connection_config(settings) | overrides
    failures, kafka_log = _SaslFailures(), logging.getLogger("kafka")
    # configure_logging quiets kafka-python (level CRITICAL), which would also hide the SASL failure from this
    # handler: let ERROR records reach it while connecting, without passing them on to the console.
    level, propagate = kafka_log.level, kafka_log.propagate
    if kafka_log.getEffectiveLevel() > logging.ERROR:
        kafka_log.setLevel(logging.ERROR)
        kafka_log.propagate = False
    kafka_log.addHandler(failures)
    try:
        return factory(**config)
    except KafkaTimeoutError as exc:
        where = ",".join(config["bootstrap_servers"])
        if failures.seen:
            raise AuthenticationFailedError(
                f"the broker at {where} refused the credentials of {config.get('sasl_plain_username')!r}"
            ) from failures.seen[-1]
        raise KafkaUnavailableError(f"no Kafka broker answered at {where}") from exc
    finally:
        kafka_log.removeHandler(failures)
        kafka_log.setLevel(level)
        kafka_log.propagate = propagate


class CheckedTransactionalProducer(KafkaProducer):
    """A transactional producer that never commits a transaction missing one of its records.

    kafka-python 3.0.12 classifies a batch that expired in its queue (a broker away longer than the delivery
    timeout) as retriable: it fails the batch's futures but leaves the transaction healthy, so the commit succeeds
    with the consumed offsets and without those records, which are lost (``tests/test_outages.py`` shows it on a
    real broker). Java's producer aborts instead. This one waits for every record of the transaction before the
    commit and raises :class:`TransactionIncompleteError` if any failed; the caller aborts and tries again.
    """

    def __init__(self, **configs: Any) -> None:
        super().__init__(**configs)
        # kafka-python 3.0.12 lowers a retried AddPartitionsToTxn's backoff to 20 ms (the previous transaction's
        # markers are still being written, CONCURRENT_TRANSACTIONS), as Java's client does, but its sender then
        # sleeps its own retry_backoff_ms (100 ms) anyway: every transaction's first record waited ~100 ms, at
        # every hop. The sender uses this setting only for that sleep and to bound waits for a response.
        self._sender.config["retry_backoff_ms"] = TransactionManager.ADD_PARTITIONS_RETRY_BACKOFF_MS
        self._transaction_number = 0
        self._failure: tuple[int, BaseException] | None = None

    def know_topics(self, topics: Iterable[str]) -> None:
        """Learn where every topic of ``topics`` lives now, in one metadata request: kafka-python asks for each topic
        at its first record, a round trip each in the path of the first transaction (route's first took ~0.7 s)."""
        wanted = list(topics)
        for topic in wanted:
            self._sender.add_topic(topic)
        if wanted:
            self.partitions_for(wanted[-1])

    def begin_transaction(self) -> None:
        super().begin_transaction()
        self._transaction_number += 1
        self._failure = None

    def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        future = super().send(topic, *args, **kwargs)
        future.add_errback(self._record_failed, self._transaction_number)
        return future

    def _record_failed(self, transaction_number: int, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = (transaction_number, exc)

    def commit_transaction(self) -> None:
        self.flush(timeout=self.config["delivery_timeout_ms"] / 1000)
        if self._failure is not None and self._failure[0] == self._transaction_number:
            raise TransactionIncompleteError(f"a record of the open transaction was not written "
                                             f"({type(self._failure[1]).__name__}: {self._failure[1]})")
        self._await("commit", self._transaction_manager.begin_commit())

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any) -> None:
        self._await("adding the consumed offsets",
                    self._transaction_manager.send_offsets_to_transaction(offsets, group_metadata))

    def abort_transaction(self) -> None:
        self._await("abort", self._transaction_manager.begin_abort())

    def _await(self, step: str, result: Any) -> None:
        """kafka-python waits on a transaction's coordinator without a bound: while it is away, for ever. This waits
        ``max_block_ms`` and raises :class:`KafkaTimeoutError` (the outcome of a commit is then unknown)."""
        self._sender.wakeup()
        if not result.wait(timeout_ms=self.config["max_block_ms"]):
            raise KafkaTimeoutError(f"the transaction coordinator did not answer the {step} within "
                                    f"{self.config['max_block_ms'] / 1000:.0f} s")


class LeaderAwareConsumer(KafkaConsumer):
    """A consumer whose offset lookups wait out a leader election instead of failing or answering wrongly.

    kafka-python 3.0.12 leaves a partition without a leader (its node just died) out of both the ListOffsets
    requests and their retries: ``end_offsets`` and ``beginning_offsets`` then fail with a bare ``KeyError`` and
    ``offsets_for_times`` answers ``None`` ("no such record") for it. Java's client retries such a partition until
    its timeout; so do these, ending in :class:`KafkaTimeoutError` like any other lookup that ran out of time.
    """

    def end_offsets(self, partitions: Any, timeout_ms: int | None = None) -> dict[Any, int]:
        return self._retry_while_leaderless(super().end_offsets, partitions, timeout_ms)

    def beginning_offsets(self, partitions: Any, timeout_ms: int | None = None) -> dict[Any, int]:
        return self._retry_while_leaderless(super().beginning_offsets, partitions, timeout_ms)

    def offsets_for_times(self, timestamps: Any, timeout_ms: int | None = None) -> dict[Any, Any]:
        return self._retry_while_leaderless(super().offsets_for_times, timestamps, timeout_ms)

    def rejoin(self) -> None:
        """Rejoin the group at the next poll. A transaction's offsets refused for a stale generation or an unknown
        member id mean the group went on without this member; the consumer itself learns that only at its next
        heartbeat (up to 3 s), and every retry meanwhile fails the same way."""
        self._coordinator.request_rejoin()

    def positions(self, partitions: Iterable[TopicPartition],
                  timeout_ms: int | None = None) -> dict[TopicPartition, int | None]:
        """Several partitions' positions for the cost of one ``position()``, which refreshes and validates every
        assigned partition on each call: a merge check over 60 input partitions took ~30 ms that way."""
        wanted = list(partitions)
        if wanted:
            self.position(wanted[0], timeout_ms=timeout_ms)
        return self.known_positions(wanted)

    def known_positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The positions this consumer already knows (None: not yet), asking no broker: for figures read on every
        turn of a loop, which must not wait on the network."""
        return {tp: None if (at := self._subscription.position(tp)) is None else at.offset for tp in partitions}

    def _retry_while_leaderless(self, lookup: Callable[..., dict[Any, Any]], partitions: Any,
                                timeout_ms: int | None) -> dict[Any, Any]:
        budget_ms = self.config["request_timeout_ms"] if timeout_ms is None else timeout_ms
        deadline = time.monotonic() + budget_ms / 1000
        leaderless: list[Any] = []
        while True:
            had_no_leader = {tp for tp in partitions if not self._has_leader(tp)}
            try:
                answer = lookup(partitions, timeout_ms=max(int((deadline - time.monotonic()) * 1000), 1))
            except KeyError as exc:
                leaderless = [exc.args[0]]
            except KafkaTimeoutError as exc:
                if not leaderless:
                    raise
                raise self._no_leader(leaderless, budget_ms) from exc
            else:
                leaderless = [tp for tp, found in answer.items()
                              if found is None and (tp in had_no_leader or not self._has_leader(tp))]
                if not leaderless:
                    return answer
            if time.monotonic() >= deadline:
                raise self._no_leader(leaderless, budget_ms)
            self._cluster.request_update()
            time.sleep(self.config["retry_backoff_ms"] / 1000)

    @staticmethod
    def _no_leader(partitions: list[Any], budget_ms: int) -> KafkaTimeoutError:
        return KafkaTimeoutError(f"no leader for {', '.join(map(str, partitions))} within {budget_ms / 1000:.0f} s")

    def _has_leader(self, partition: Any) -> bool:
        leader = self._cluster.leader_for_partition(partition)
        return leader is not None and leader >= 0


def make_producer(settings: HubSettings | None = None, **overrides: Any) -> KafkaProducer:
    """An idempotent, acks=all producer unless overridden: nothing accepted is lost or doubled by retries. With a
    ``transactional_id``, a :class:`CheckedTransactionalProducer`."""
    defaults = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
    factory = CheckedTransactionalProducer if overrides.get("transactional_id") else KafkaProducer
    return _connect(factory, settings, **(defaults | overrides))


def produce_atomically(settings: HubSettings, transactional_id: str,
                        records: list[tuple[str, bytes, bytes]]) -> None:
    """Write (physical topic, key, value) records in one transaction: all of them become visible, or none."""
    producer = make_producer(settings, transactional_id=transactional_id)
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for topic, key, value in records:
            producer.send(topic, key=key, value=value)
        producer.commit_transaction()
    finally:
        producer.close()


#: How long the broker may hold a fetch open waiting for data (see make_consumer).
FETCH_MAX_WAIT_MS = 50


def make_consumer(*topics: str, settings: HubSettings | None = None, **overrides: Any) -> LeaderAwareConsumer:
    """A consumer that reads only committed data and never commits on its own."""
    # A broker answers one request per connection at a time: an offset lookup waits behind a fetch the broker holds
    # open for want of data, up to fetch_max_wait_ms (kafka-python's 500 ms made every merge check ~200 ms).
    defaults = {"isolation_level": "read_committed", "enable_auto_commit": False, "auto_offset_reset": "earliest",
                "fetch_max_wait_ms": FETCH_MAX_WAIT_MS}
    consumer = _connect(LeaderAwareConsumer, settings, **(defaults | overrides))
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def make_admin(settings: HubSettings | None = None, **overrides: Any) -> KafkaAdminClient:
    return _connect(KafkaAdminClient, settings, **overrides)


def read_topic(topic: str, settings: HubSettings | None = None, timeout_s: float = 120.0) -> list[Any]:
    """Every committed record of every partition of ``topic``, from the beginning to the current end, in
    partition and offset order (an absent topic reads as empty)."""
    consumer = make_consumer(settings=settings, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        records = read_range(consumer, consumer.beginning_offsets(partitions), consumer.end_offsets(partitions),
                             timeout_s)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def read_range(consumer: KafkaConsumer, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int],
               timeout_s: float) -> list[Any]:
    """The records of each partition of ``ends`` from its start (0 if absent) up to its end, read by ``consumer``
    (which this assigns); :class:`KafkaUnavailableError` if that takes longer than ``timeout_s``."""
    wanted = {tp: end for tp, end in ends.items() if starts.get(tp, 0) < end}
    consumer.assign(list(wanted))
    for tp in wanted:
        consumer.seek(tp, starts.get(tp, 0))
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while any(consumer.position(tp) < end for tp, end in wanted.items()):
        if time.monotonic() > deadline:
            topics = ", ".join(sorted({tp.topic for tp in wanted}))
            raise KafkaUnavailableError(f"reading {topics} did not finish within {timeout_s:.0f} s")
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(r for r in batch if r.offset < wanted[TopicPartition(r.topic, r.partition)])
    return records
