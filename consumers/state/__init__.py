"""Per-partition state for stages: a local store (survives restarts) backed by a compacted changelog topic.

``base`` defines what a stage sees (:class:`State`) and how a change is written to the changelog (sealed under
the record keys of the reports it carries); ``sqlite`` is the on-disk backend and ``memory`` the backend for
pure tests; the runner owns restoring, changelogging, committing and dropping purged entries.
"""

from consumers.state.base import (
    UNKEYED_HASH, KeyedHash, PartitionStore, State, StateKeys, StateWrite, keyed_hash, without_purged,
)
from consumers.state.memory import MemoryPartitionStore
from consumers.state.sqlite import SqlitePartitionStore

__all__ = ["UNKEYED_HASH", "KeyedHash", "MemoryPartitionStore", "PartitionStore", "SqlitePartitionStore", "State",
           "StateKeys", "StateWrite", "keyed_hash", "without_purged"]
