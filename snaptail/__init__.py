"""snaptail: event-sourced LLM agents that load from the latest snapshot plus a short tail."""

from eventsourcing.domain import event

from snaptail.application.async_store import AsyncAgentStore
from snaptail.domain import (
    Agent,
    AgentLimitExceeded,
    AgentNotFound,
    AgentState,
    ConcurrencyError,
    EventTooLarge,
    InvalidCommand,
    InvalidEventPayload,
    MemoryBudgetExceeded,
    Participant,
    RecentEvents,
    SnaptailError,
    TokenUsage,
)
from snaptail.infrastructure.cache import AgentCache
from snaptail.infrastructure.store import AgentStore
from snaptail.snapshots import (
    AnyOf,
    EveryNBytes,
    EveryNEvents,
    LoadSlowerThan,
    Never,
    SnapshotPolicy,
)

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentCache",
    "AgentLimitExceeded",
    "AgentNotFound",
    "AgentState",
    "AgentStore",
    "AnyOf",
    "AsyncAgentStore",
    "ConcurrencyError",
    "EventTooLarge",
    "EveryNBytes",
    "EveryNEvents",
    "InvalidCommand",
    "InvalidEventPayload",
    "LoadSlowerThan",
    "MemoryBudgetExceeded",
    "Never",
    "Participant",
    "RecentEvents",
    "SnapshotPolicy",
    "SnaptailError",
    "TokenUsage",
    "event",
]
