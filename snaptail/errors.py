"""Errors raised by snaptail. Every message names the agent it concerns."""

from __future__ import annotations

from uuid import UUID


class SnaptailError(Exception):
    """Base class of every error snaptail raises on purpose."""


class InvalidEventPayload(SnaptailError, TypeError):
    """A command's argument does not have the type its event declares."""

    def __init__(self, agent_id: UUID, event: str, field: str, detail: str) -> None:
        self.agent_id, self.event, self.field = agent_id, event, field
        super().__init__(f"agent {agent_id}: event {event!r}, field {field!r}: {detail}")


class EventTooLarge(SnaptailError, ValueError):
    """An event's encoded payload is over the configured limit."""

    def __init__(
        self, agent_id: UUID, event: str, field: str, size: int, limit: int
    ) -> None:
        self.agent_id, self.event, self.field = agent_id, event, field
        self.size, self.limit = size, limit
        super().__init__(
            f"agent {agent_id}: event {event!r} is {size} bytes encoded, over the limit"
            f" of {limit} bytes; the largest field is {field!r}"
        )


class AgentNotFound(SnaptailError, LookupError):
    """No event was ever stored for this agent id (or none at the version asked)."""

    def __init__(self, agent_id: UUID, version: int | None = None) -> None:
        self.agent_id, self.version = agent_id, version
        where = "" if version is None else f" at or before version {version}"
        super().__init__(f"agent {agent_id} not found{where}")


class ConcurrencyError(SnaptailError):
    """Another writer saved this agent first; reload it and apply the command again."""

    def __init__(self, agent_id: UUID, first_version: int, detail: str = "") -> None:
        self.agent_id, self.first_version = agent_id, first_version
        super().__init__(
            f"agent {agent_id}: version {first_version} was already written by another"
            f" writer; reload the agent and retry{': ' + detail if detail else ''}"
        )


class AgentLimitExceeded(SnaptailError, ValueError):
    """A command would grow a bounded part of the agent's state past its limit."""

    def __init__(self, agent_id: UUID, what: str, limit: int) -> None:
        self.agent_id, self.what, self.limit = agent_id, what, limit
        super().__init__(f"agent {agent_id}: {what} is limited to {limit} entries")


class InvalidCommand(SnaptailError, ValueError):
    """A command is not valid in the agent's current state."""

    def __init__(self, agent_id: UUID, detail: str) -> None:
        self.agent_id = agent_id
        super().__init__(f"agent {agent_id}: {detail}")


class MemoryBudgetExceeded(SnaptailError, MemoryError):
    """A loaded agent holds more bytes than its memory budget, even after snaptail
    shrank its recent-event cache, snapshotted it and asked it to shed state."""

    def __init__(
        self, agent_id: UUID, agent_type: str, size: int, budget: int, holders: str
    ) -> None:
        self.agent_id, self.agent_type = agent_id, agent_type
        self.size, self.budget, self.holders = size, budget, holders
        super().__init__(
            f"agent {agent_id} ({agent_type}) holds {size} bytes, over its memory budget"
            f" of {budget} bytes after shedding; largest parts: {holders}"
        )
