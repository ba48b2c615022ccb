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


class SchemaOutdated(SnaptailError, RuntimeError):
    """The events table was created by a snaptail that serialised saves with a table
    lock; it needs a one-time upgrade (``snaptail migrate``) before this version
    writes to it."""

    def __init__(self, schema: str, table: str) -> None:
        self.schema, self.table = schema, table
        super().__init__(
            f"PostgreSQL table {schema}.{table} has no transaction_id column (it was "
            f"created by an older snaptail): run `snaptail migrate --db URL` once, after "
            f"stopping older writers and workers (README: Upgrading a PostgreSQL database)"
        )


class ProjectionFailed(SnaptailError):
    """A projection raised on an event. The view is committed up to the event before
    it; a restart stops at the same event (``--skip-failed`` records it as a dead
    letter and goes on)."""

    def __init__(
        self,
        projection: str,
        notification_id: int,
        agent_id: UUID | str,
        version: int,
        event_type: str,
        cause: BaseException,
    ) -> None:
        self.projection, self.notification_id = projection, notification_id
        self.agent_id, self.version, self.event_type = agent_id, version, event_type
        self.cause = cause
        self.error = f"{type(cause).__name__}: {cause}"
        super().__init__(
            f"projection {projection!r} failed on notification {notification_id} "
            f"(agent {agent_id}, version {version}, event {event_type}): {self.error}"
        )


class ProjectionBusy(SnaptailError):
    """Another worker holds the projection's lock (or took it over after this one
    lost its connection)."""


class WorkerGaveUp(SnaptailError):
    """A projection worker could not restore a lost database connection within its
    ``give_up_after`` seconds."""
