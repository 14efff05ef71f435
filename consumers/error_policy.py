"""What a failure while handling one input record means: the record's fault, or the infrastructure's.

The runner asks the stage's :class:`ErrorPolicy` about every exception raised while decoding, checking or
processing an input (like Kafka Streams' deserialization and processing exception handlers). A record's fault is
dead-lettered with its reason and the stage goes on: no content of any record, of any type, may stop a stage.
Only the infrastructure (the broker, the key table, the local disk, the configuration) stops it, because then the
next record would fail the same way and processing must resume from the last commit once it is fixed.

An exception no check of the hub raised (a ``KeyError`` deep in a stage: a bug, not a known fault of the record) is
*unexpected*: the deployment chooses (``HUB_UNEXPECTED_ERRORS``) whether it dead-letters the record too, the default,
or stops the stage so that a supervisor restarts it and gives up, loudly, if it keeps failing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from kafka.errors import KafkaError
from pydantic import ValidationError

from consumers.exceptions import StateError
from hub.exceptions import (
    AuthenticationFailedError, ConfigError, HubError, KafkaUnavailableError, TopicMissingError,
)
from hub.vault import VaultError

ErrorAction = Literal["dead-letter", "stop"]

#: Failures no record can cause: retrying the record elsewhere would fail the same way.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError, KafkaUnavailableError, AuthenticationFailedError, TopicMissingError, ConfigError,
    VaultError, StateError, sqlite3.Error, OSError, MemoryError,
)


#: Faults the hub's own checks raise about a record: its content is wrong, whatever the deployment.
RECORD_FAULTS: tuple[type[BaseException], ...] = (HubError, ValidationError)


@dataclass(frozen=True)
class ErrorPolicy:
    """Dead-letter every fault a record can cause; stop on the ``infrastructure`` ones; treat any other exception
    (unexpected: a bug) as ``unexpected`` says."""

    infrastructure: tuple[type[BaseException], ...] = INFRASTRUCTURE_ERRORS
    unexpected: ErrorAction = "dead-letter"

    def action(self, exc: BaseException) -> ErrorAction:
        if not isinstance(exc, Exception) or isinstance(exc, self.infrastructure):
            return "stop"
        return self.unexpected if self.is_unexpected(exc) else "dead-letter"

    @staticmethod
    def is_unexpected(exc: BaseException) -> bool:
        """Raised by no check of the hub: worth a traceback in the log, whatever the action."""
        return not isinstance(exc, RECORD_FAULTS)

