"""Adapters: the msgspec mapper, recorders for SQLite and PostgreSQL, the agent store."""

from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.recorder import AgentRecorder, StoredSnapshot
from snaptail.infrastructure.store import AgentStore

__all__ = ["AgentRecorder", "AgentStore", "MsgspecMapper", "StoredSnapshot"]
