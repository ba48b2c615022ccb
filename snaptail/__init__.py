"""snaptail: event-sourced LLM agents that load from the latest snapshot plus a short tail."""

from eventsourcing.domain import event

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
from snaptail.domain.errors import AgentBroken, UndeclaredState
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
    "AgentBroken",
    "AgentCache",
    "AgentLimitExceeded",
    "AgentNotFound",
    "AgentState",
    "AgentStore",
    "AnyOf",
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
    "UndeclaredState",
    "event",
]
