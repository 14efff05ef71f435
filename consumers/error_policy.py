"""What a failure while handling one input record means: the record's fault, or the infrastructure's.

The runner asks the stage's :class:`ErrorPolicy` about every exception raised while decoding, checking or
processing an input (like Kafka Streams' deserialization and processing exception handlers). A record's fault is
dead-lettered with its reason and the stage goes on: no content of any record, of any type, may stop a stage.
Only the infrastructure (the broker, the key table, the local disk, the configuration) stops it, because then the
next record would fail the same way and processing must resume from the last commit once it is fixed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from kafka.errors import KafkaError

from consumers.exceptions import StateError
from hub.exceptions import (
    AuthenticationFailedError, ConfigError, KafkaUnavailableError, TopicMissingError,
)
from hub.vault import VaultError

ErrorAction = Literal["dead-letter", "stop"]

#: Failures no record can cause: retrying the record elsewhere would fail the same way.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError, KafkaUnavailableError, AuthenticationFailedError, TopicMissingError, ConfigError,
    VaultError, StateError, sqlite3.Error, OSError, MemoryError,
)


@dataclass(frozen=True)
class ErrorPolicy:
    """Dead-letter every exception a record can cause; stop on the ``infrastructure`` ones."""

    infrastructure: tuple[type[BaseException], ...] = INFRASTRUCTURE_ERRORS

    def action(self, exc: BaseException) -> ErrorAction:
        if not isinstance(exc, Exception) or isinstance(exc, self.infrastructure):
            return "stop"
        return "dead-letter"

