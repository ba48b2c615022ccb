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
    AgentForgotten,
    AgentLimitExceeded,
    AgentNotFound,
    ArchiveBusy,
    ArchiveDamaged,
    ConcurrencyError,
    DamagedLog,
    DatabaseUnreachable,
    DatabaseUnusable,
    EventTooLarge,
    InvalidAgentType,
    InvalidArgument,
    InvalidCommand,
    InvalidEventPayload,
    KeysRequired,
    LockTimeout,
    MasterKeyError,
    MemoryBudgetExceeded,
    NoSuchDatabase,
    RowUnreadable,
    SaveOutcomeUnknown,
    SnaptailError,
    SubjectTooLate,
    UndeclaredState,
    UnknownTopic,
    VersionNotFound,
)
from snaptail.snapshots import (
    AnyOf,
    EveryNBytes,
    EveryNEvents,
    GrowWithState,
    LoadSlowerThan,
    Never,
    SnapshotPolicy,
)

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentBroken",
    "AgentCache",
    "AgentForgotten",
    "AgentLimitExceeded",
    "AgentNotFound",
    "AgentState",
    "AgentStore",
    "AnyOf",
    "ArchiveBusy",
    "ArchiveDamaged",
    "AsyncAgentStore",
    "ConcurrencyError",
    "DamagedLog",
    "DatabaseUnreachable",
    "DatabaseUnusable",
    "EventTooLarge",
    "EveryNBytes",
    "EveryNEvents",
    "GrowWithState",
    "InvalidAgentType",
    "InvalidArgument",
    "InvalidCommand",
    "InvalidEventPayload",
    "KeysRequired",
    "LoadSlowerThan",
    "LockTimeout",
    "MasterKeyError",
    "MemoryBudgetExceeded",
    "Never",
    "NoSuchDatabase",
    "Participant",
    "RecentEvents",
    "RetryPolicy",
    "RowUnreadable",
    "SaveOutcomeUnknown",
    "SnapshotPolicy",
    "SnaptailError",
    "SubjectTooLate",
    "TokenUsage",
    "UndeclaredState",
    "UnknownTopic",
    "VersionNotFound",
    "event",
    "register_topic",
]
