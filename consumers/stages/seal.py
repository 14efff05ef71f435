"""Seal: append every audit record to its partition's hash chain (``audit.chain``).

The runner gives the stage its input partition; the stage writes the seal to the same partition number of
``audit.chain``, so each chain has exactly one writer at a time, and keeps the chain's head in its state
(changelogged in the same transaction), so a killed sealer resumes the chain exactly where it committed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from consumers.audit import GENESIS, seal
from consumers.stage import Message, Output, Stage
from consumers.state import State
from schemas.topics import AUDIT_CHAIN

HEAD = "head"


class SealStage(Stage):
    name = "seal"
    input_pattern = r"audit"
    outputs = (AUDIT_CHAIN.pattern,)
    retention = timedelta(days=365 * 100)  # a chain's head never expires

    def event_time(self, message: Message) -> float:
        return message.timestamp_ms / 1000

    def process(self, message: Message, state: State) -> list[Output]:
        head = state.get("chain", HEAD) or {"sequence": 0, "hash": GENESIS}
        sealed = seal(message.partition, head["sequence"] + 1, head["hash"], message.raw,
                      datetime.fromtimestamp(message.timestamp_ms / 1000, tz=timezone.utc))
        state.put("chain", HEAD, {"sequence": sealed.sequence, "hash": sealed.hash})
        return [Output(AUDIT_CHAIN.pattern, message.key or b"", sealed, partition=message.partition)]
