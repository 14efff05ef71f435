"""Seal: append every audit record to its partition's hash chain (``audit.chain``).

Two inputs feed the chains: ``audit`` (written by the hub) and ``audit.queries`` (queries of the audit log,
written by whoever ran them, auditors included). Both have the same partition count, so partition N of each
goes to the same instance, which interleaves them in timestamp order into chain partition N. The runner gives
the stage its input partition; the stage writes the seal to the same partition number of ``audit.chain``, so
each chain has exactly one writer at a time, and keeps the chain's head in its state (changelogged in the same
transaction), so a killed sealer resumes the chain exactly where it committed.

Auditors may write ``audit.queries`` but not ``audit``: anything there other than an audit query (a forged
routing decision, say) is refused (dead-lettered, and that rejection audited), never sealed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from consumers.audit import GENESIS, seal
from consumers.exceptions import StageError
from consumers.stage import Message, Output, Stage
from consumers.state import State
from schemas.models import AuditEvent, AuditEventType
from schemas.topics import AUDIT_CHAIN, AUDIT_QUERIES

HEAD = "head"


class SealStage(Stage):
    name = "seal"
    input_pattern = r"audit|audit\.queries"
    outputs = (AUDIT_CHAIN.pattern,)
    retention = timedelta(days=365 * 100)  # a chain's head never expires

    def event_time(self, message: Message) -> float:
        return message.timestamp_ms / 1000

    def process(self, message: Message, state: State) -> list[Output]:
        value = message.value
        if message.topic.endswith(AUDIT_QUERIES.pattern) and not (
                isinstance(value, AuditEvent) and value.event_type == AuditEventType.AUDIT_QUERIED):
            raise StageError(f"{AUDIT_QUERIES.pattern} holds only audit queries, not a {type(value).__name__} "
                             f"{getattr(value, 'event_type', '')}".rstrip())
        head = state.get("chain", HEAD) or {"sequence": 0, "hash": GENESIS}
        sealed = seal(message.partition, head["sequence"] + 1, head["hash"], message.raw,
                      datetime.fromtimestamp(message.timestamp_ms / 1000, tz=timezone.utc))
        state.put("chain", HEAD, {"sequence": sealed.sequence, "hash": sealed.hash})
        return [Output(AUDIT_CHAIN.pattern, message.key or b"", sealed, partition=message.partition)]
