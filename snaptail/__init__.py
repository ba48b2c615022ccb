"""snaptail: event-sourced LLM agents that load from the latest snapshot plus a short tail."""

from eventsourcing.domain import event

from snaptail.application.async_store import AsyncAgentStore
from snaptail.application.cache import AgentCache
from snaptail.application.retry import RetryPolicy
from snaptail.application.store import AgentStore
from snaptail.domain import Agent, AgentState, Participant, RecentEvents, TokenUsage
from snaptail.domain.topics import register_topic
from snaptail.errors import (
    AgentBroken,
    AgentLimitExceeded,
    AgentNotFound,
    ConcurrencyError,
    DamagedLog,
    DatabaseUnreachable,
    EventTooLarge,
    InvalidAgentType,
    InvalidCommand,
    InvalidEventPayload,
    LockTimeout,
    MemoryBudgetExceeded,
    SaveOutcomeUnknown,
    SnaptailError,
    UndeclaredState,
    UnknownTopic,
)
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
    "AsyncAgentStore",
    "ConcurrencyError",
    "DamagedLog",
    "DatabaseUnreachable",
    "EventTooLarge",
    "EveryNBytes",
    "EveryNEvents",
    "InvalidAgentType",
    "InvalidCommand",
    "InvalidEventPayload",
    "LoadSlowerThan",
    "LockTimeout",
    "MemoryBudgetExceeded",
    "Never",
    "Participant",
    "RecentEvents",
    "RetryPolicy",
    "SaveOutcomeUnknown",
    "SnapshotPolicy",
    "SnaptailError",
    "TokenUsage",
    "UndeclaredState",
    "UnknownTopic",
    "event",
    "register_topic",
]
