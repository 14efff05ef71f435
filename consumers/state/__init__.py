"""Per-partition state for stages: a local store (survives restarts) backed by a compacted changelog topic.

``base`` defines what a stage sees (:class:`State`); ``sqlite`` is the on-disk backend and ``memory`` the
backend for pure tests; the runner owns
restoring, changelogging and committing.
"""

from consumers.state.base import PartitionStore, State, StateWrite
from consumers.state.memory import MemoryPartitionStore
from consumers.state.sqlite import SqlitePartitionStore

__all__ = ["MemoryPartitionStore", "PartitionStore", "SqlitePartitionStore", "State", "StateWrite"]
