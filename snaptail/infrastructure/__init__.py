"""Storage adapters: the recorder interface, the msgspec mapper, database URLs, the SQLite
and PostgreSQL recorders and their subscriptions."""

from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.recorder import AgentRecorder, StoredSnapshot

__all__ = ["AgentRecorder", "MsgspecMapper", "StoredSnapshot"]
