"""Errors raised by snaptail. Every message names the agent it concerns.

Everything snaptail raises on purpose is a :class:`SnaptailError`; the database's own
errors are translated where the store calls its recorder (``StorageError``, which is
also the ``eventsourcing`` error it translates, so code catching those still works)::

    SnaptailError
    ├── InvalidArgument (ValueError, TypeError) a bad argument of a snaptail call
    ├── InvalidEventPayload (TypeError)      a command's argument has the wrong type
    ├── EventTooLarge (ValueError)           an encoded event over max_event_bytes
    ├── AgentLimitExceeded (ValueError)      a bounded part of state would overflow
    ├── InvalidCommand (ValueError)          a command not valid in the agent's state
    ├── InvalidAgentType (TypeError)         an agent type snaptail cannot store
    ├── UndeclaredState (TypeError)          a handler kept state outside ``state``
    ├── AgentBroken (RuntimeError)           a handler raised: the object is unusable
    ├── ReplayFailed (RuntimeError)          a handler raised on a stored event
    ├── AgentNotFound (LookupError)          no such agent (at that version)
    │   └── AgentForgotten                   its data was erased (store.forget)
    ├── VersionNotFound (LookupError)        a version past the agent's newest
    ├── RowUnreadable (ValueError)           a stored row too large, too deep or damaged
    ├── DamagedLog (LookupError)             the stored log lost an event
    │   └── UnknownTopic                     a row names a type this process lacks
    ├── ConcurrencyError                     another writer saved the agent first
    ├── LockTimeout (TimeoutError)           SQLite's write lock was not free in time
    ├── SaveOutcomeUnknown (ConnectionError) a save may or may not have committed
    │   └── SaveOutcomeExpired               ... and its save id is past keep_save_ids
    ├── DatabaseUnreachable (ConnectionError) the server cannot be reached
    ├── NoSuchDatabase (FileNotFoundError)   a read-only open of a missing database
    ├── DatabaseUnusable (OSError)           found, but not usable (a full disk, ...)
    ├── StorageError                         the database failed (translated), one of
    │   ├── StorageOperationalError          ... connection lost, timeout, disk full
    │   ├── StorageInterfaceError            ... the driver's connection is unusable
    │   ├── StorageIntegrityError            ... a constraint (a stored version)
    │   ├── StorageDataError                 ... a value the column refuses
    │   └── StorageProgrammingError          ... bad SQL or a missing table
    ├── SchemaOutdated (RuntimeError)        the tables need ``snaptail migrate``
    ├── KeysRequired (RuntimeError)          encrypted data and no key store
    ├── MasterKeyError (RuntimeError)        the key store's master key is wrong
    ├── SubjectTooLate (ValueError)          a subject added after unencrypted saves
    ├── MemoryBudgetExceeded (MemoryError)   a loaded agent over its budget
    ├── SnapshotEncodeError (ValueError)     state a snapshot would not carry exactly
    ├── SnapshotDecodeError (ValueError)     snapshot bytes that do not decode
    ├── ArchiveDamaged (LookupError)         an archive segment is missing or damaged
    ├── ArchiveBusy (RuntimeError)           another archive run holds the lock
    ├── ThreadConflict                       a LangGraph checkpoint off a stale parent
    ├── ProjectionFailed                     a projection raised on an event
    ├── ProjectionBusy                       another worker holds the projection
    ├── PositionConflict (RuntimeError)      another worker moved the position first
    └── WorkerGaveUp                         a worker could not reconnect in time
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing import persistence


class SnaptailError(Exception):
    """Base class of every error snaptail raises on purpose."""


class InvalidEventPayload(SnaptailError, TypeError):
    """A command's argument does not have the type its event declares."""

    def __init__(self, agent_id: UUID, event: str, field: str, detail: str) -> None:
        self.agent_id, self.event, self.field = agent_id, event, field
        super().__init__(f"agent {agent_id}: event {event!r}, field {field!r}: {detail}")


class EventTooLarge(SnaptailError, ValueError):
    """An event's encoded payload is over the configured limit."""

    def __init__(self, agent_id: UUID, event: str, field: str, size: int, limit: int) -> None:
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
    """Another writer saved this agent first; reload it and apply the command again.

    Nothing of the save was written. ``agent_id`` is the agent that conflicted (in a
    save of several agents, the first one found), ``expected_version`` the version
    this writer had loaded and ``stored_version`` the version in the store (None
    when it could not be read).
    """

    def __init__(
        self,
        agent_id: UUID,
        first_version: int,
        detail: str = "",
        *,
        stored_version: int | None = None,
    ) -> None:
        self.agent_id, self.first_version = agent_id, first_version
        self.expected_version = first_version - 1
        self.stored_version = stored_version
        found = "" if stored_version is None else f", the store has version {stored_version}"
        super().__init__(
            f"agent {agent_id}: version {first_version} was already written by another"
            f" writer (this writer expected version {self.expected_version}{found});"
            f" nothing was saved; reload the agent and retry{': ' + detail if detail else ''}"
        )


class LockTimeout(SnaptailError, TimeoutError):
    """A save waited longer than ``lock_timeout`` for the database's write lock.

    Nothing was written: the agents keep their new events; save again later.
    """

    def __init__(self, agent_ids: Sequence[UUID], timeout: float, detail: str = "") -> None:
        self.agent_ids, self.timeout = tuple(agent_ids), timeout
        names = ", ".join(str(a) for a in self.agent_ids)
        super().__init__(
            f"saving agent(s) {names}: the write lock was not free within"
            f" lock_timeout={timeout:g} s (another connection or process is writing);"
            f" nothing was saved; save again, or raise lock_timeout"
            f"{' (' + detail + ')' if detail else ''}"
        )


class DamagedLog(SnaptailError, LookupError):
    """An agent's stored log has lost an event: ``version`` is missing between
    stored events (deleted or never restored from a backup)."""

    def __init__(self, agent_id: UUID, version: int, detail: str = "") -> None:
        self.agent_id, self.version = agent_id, version
        before = (
            f"; until then get({agent_id}, version={version - 1}) loads the state before it"
            if version > 1
            else ""
        )
        super().__init__(
            f"agent {agent_id}: event version {version} is missing from the stored log"
            f"{' (' + detail + ')' if detail else ''}; the log is damaged: restore the"
            f" missing row from a backup{before}"
        )


class DatabaseUnreachable(SnaptailError, ConnectionError):
    """The database server could not be reached (or refused the connection)."""

    def __init__(self, where: str, cause: str) -> None:
        self.where, self.cause = where, cause
        super().__init__(f"cannot connect to {where}: {cause}")


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


class UndeclaredState(SnaptailError, TypeError):
    """An event handler kept state where snapshots do not carry it: an attribute on the
    agent, or an attribute on its state that is not a declared dataclass field."""

    def __init__(
        self, agent_id: UUID, agent_type: str, handler: str, attribute: str, detail: str
    ) -> None:
        self.agent_id, self.agent_type = agent_id, agent_type
        self.handler, self.attribute = handler, attribute
        super().__init__(
            f"agent {agent_id}: {agent_type} handler {handler} {detail}. Snapshots carry"
            f" only `state`, an instance of {agent_type}.State, with its declared fields:"
            " kept anywhere else, a loaded agent would silently differ from its log."
            f" Declare {attribute!r} as a field with a default on a dataclass subclass of"
            f" AgentState, set `State = ThatClass` on {agent_type}, and assign"
            f" `self.state.{attribute}` in the handler. Nothing was recorded; reload this"
            " agent."
        )


class AgentBroken(SnaptailError, RuntimeError):
    """An event handler raised while applying a new event: the agent object in memory
    may hold changes its log does not have, so it refuses commands and saves."""

    def __init__(
        self, agent_id: UUID, agent_type: str, version: int, handler: str, cause: str
    ) -> None:
        self.agent_id, self.agent_type = agent_id, agent_type
        self.version, self.handler = version, handler
        super().__init__(
            f"agent {agent_id} ({agent_type}) at version {version}: handler {handler} raised"
            f" ({cause}), possibly after changing state; its event was not recorded, so"
            " this object may not match its log: it refuses commands and saves. Reload it"
            " (store.get)"
        )


class ReplayFailed(SnaptailError, RuntimeError):
    """An event handler raised while a stored event was applied (a load, a replay,
    time travel): the handler no longer accepts an event its log holds (a code change
    without an upcaster), or the row is another agent type's (a damaged log). Nothing
    was changed; the error names the agent, its type, the version and the event."""

    def __init__(
        self, agent_id: object, agent_type: str, version: int, topic: str, cause: str
    ) -> None:
        self.agent_id, self.agent_type, self.version, self.topic = (
            agent_id, agent_type, version, topic,
        )  # fmt: skip
        super().__init__(
            f"agent {agent_id} ({agent_type}): applying its stored event {topic} at version"
            f" {version} raised ({cause}). Either the handler changed and no longer accepts"
            " events it once recorded (give the event class a class_version and an"
            " upcaster, or make the handler accept them), or the row belongs to another"
            " agent type (the log is damaged: restore it from a backup)"
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


class SaveOutcomeUnknown(SnaptailError, ConnectionError):
    """A save's transaction may or may not have committed: the connection failed while
    its commit was under way, and the store could not reach the database again to ask.

    Do not apply the command again blindly: ``save_id`` identifies the save, and
    ``store.save_committed(save_id)`` tells (once the database answers) whether its
    rows were stored; ``store.update()`` does that check itself before it applies a
    command again. The agents keep their new events until then.
    """

    def __init__(self, agent_ids: Sequence[UUID], save_id: UUID, cause: BaseException) -> None:
        self.agent_ids, self.save_id = tuple(agent_ids), save_id
        names = ", ".join(str(a) for a in self.agent_ids)
        detail = " ".join(str(cause).split()) or type(cause).__name__
        super().__init__(
            f"saving agent(s) {names}: outcome unknown (save id {save_id}): the connection"
            f" failed during the commit ({type(cause).__name__}: {detail}) and the database"
            f" could not be asked since; do not apply the command again: check"
            f" store.save_committed({str(save_id)!r}) once the database is reachable"
        )


class SaveOutcomeExpired(SaveOutcomeUnknown):
    """``store.save_committed(save_id)`` cannot tell any more: the save is older than
    the store's ``keep_save_ids`` (7 days by default) and its id row, if it had one,
    was pruned. Load the agent and look at its events instead of applying the command
    again."""

    def __init__(self, save_id: UUID, made: datetime, kept: timedelta) -> None:
        self.agent_ids, self.save_id, self.made, self.kept = (), save_id, made, kept
        days = kept.total_seconds() / 86400
        horizon = f"{days:g} days" if days >= 1 else str(kept)
        ConnectionError.__init__(
            self,
            f"save {save_id} (made {made:%Y-%m-%d %H:%M:%S} UTC): outcome unknown: save ids"
            f" are kept {horizon} (keep_save_ids) and this one is not stored, so it was"
            " pruned or never committed; load the agent and check its events instead of"
            " applying the command again",
        )


class ThreadConflict(SnaptailError):
    """A LangGraph saver in strict mode (``SnaptailSaver(..., concurrent_runs="reject")``)
    refused a checkpoint that does not extend its thread's newest one: another run
    wrote the thread since this run read it. Nothing of the checkpoint was saved.
    ``thread_id`` and ``checkpoint_ns`` name the thread, ``parent_id`` the checkpoint
    this run extended, ``head_id`` the thread's newest one."""

    def __init__(self, thread_id: str, checkpoint_ns: str, parent_id: str, head_id: str) -> None:
        self.thread_id, self.checkpoint_ns = thread_id, checkpoint_ns
        self.parent_id, self.head_id = parent_id, head_id
        where = f"thread {thread_id!r}" + (f" namespace {checkpoint_ns!r}" if checkpoint_ns else "")
        super().__init__(
            f"{where}: another run wrote checkpoint {head_id} after checkpoint"
            f" {parent_id or '(none)'} that this run extends; nothing was saved."
            " Run again on the newest checkpoint (one run per thread at a time), or pass"
            " configurable snaptail_allow_fork=True to fork the thread on purpose"
        )


class AgentForgotten(AgentNotFound):
    """The agent's data was erased (``store.forget``): its events and snapshots are
    encrypted with a key that no longer exists. A subclass of :class:`AgentNotFound`, so
    code that handles a missing agent handles a forgotten one; ``erasure_id`` and
    ``forgotten_at`` name the erasure record (no personal data)."""

    def __init__(self, agent_id: UUID, erasure_id: str, forgotten_at: str) -> None:
        self.agent_id, self.version = agent_id, None
        self.erasure_id, self.forgotten_at = erasure_id, forgotten_at
        LookupError.__init__(
            self,
            f"agent {agent_id} was forgotten at {forgotten_at} (erasure {erasure_id}): its"
            " events and snapshots are encrypted with a deleted key and cannot be read;"
            " history() yields them as RedactedEvent",
        )


class KeysRequired(SnaptailError, RuntimeError):
    """An agent's data is (or must be) encrypted, and no key store is configured."""

    def __init__(self, agent_id: UUID | None, detail: str) -> None:
        self.agent_id = agent_id
        who = f"agent {agent_id}: " if agent_id is not None else ""
        super().__init__(
            f"{who}{detail}; configure the key store: AgentStore(url, keys=KEYS_URL) or"
            " $SNAPTAIL_KEYS_URL (for example sqlite:///keys.db), with the master key in"
            " $SNAPTAIL_MASTER_KEY or $SNAPTAIL_MASTER_KEY_FILE (README: Forgetting a person)"
        )


class MasterKeyError(SnaptailError, RuntimeError):
    """The key store's master key is missing, malformed or not the one that wrapped
    its keys. Nothing was read or written."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        super().__init__(f"key store {where}: {detail}")


class SubjectTooLate(SnaptailError, ValueError):
    """A subject was added to an agent whose earlier events are stored unencrypted:
    they could never be erased, so the subject is refused."""

    def __init__(self, agent_id: UUID, stored: int) -> None:
        self.agent_id, self.stored = agent_id, stored
        super().__init__(
            f"agent {agent_id} already has {stored} unencrypted stored event(s): a subject"
            " must be added before the agent's first save (store.add_subject(agent, ...)"
            " right after creating it), or its earlier events could not be forgotten"
        )


class InvalidArgument(SnaptailError, ValueError, TypeError):
    """An argument of a snaptail call (a database URL, an option, a version) is not
    one it accepts. ``argument`` names it. Nothing was read or written."""

    def __init__(self, argument: str, detail: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {detail}")


class NoSuchDatabase(SnaptailError, FileNotFoundError):
    """A read-only command or ``read_only=True`` store was pointed at a database that
    does not exist; nothing was created."""

    def __init__(self, where: str, detail: str = "") -> None:
        self.where = where
        super().__init__(
            f"no such database: {where}{' (' + detail + ')' if detail else ''}; check the"
            " --db URL (or $SNAPTAIL_DATABASE_URL)"
        )


class DatabaseUnusable(SnaptailError, OSError):
    """The database could be found but not opened, read or written: a missing
    directory, a file that is not a database, a read-only location, a full disk.
    The message names the file (and the agent, for a save)."""

    def __init__(self, where: str, cause: str) -> None:
        self.where, self.cause = where, cause
        super().__init__(f"{where}: {cause}")


class VersionNotFound(SnaptailError, LookupError):
    """A read asked for a version past the agent's newest (its head)."""

    def __init__(self, agent_id: UUID, version: int, head: int) -> None:
        self.agent_id, self.version, self.head = agent_id, version, head
        super().__init__(
            f"agent {agent_id} has no version {version}: its newest is version {head};"
            f" ask for a version up to {head}, or none for the newest"
        )


class RowUnreadable(SnaptailError, persistence.MapperDeserialisationError):
    """A stored row (an event or snapshot) that cannot be read: refused before it is
    decoded (larger than the store's ``max_row_bytes``, or nested too deeply), or an
    event whose bytes do not decode as its type. Also ``eventsourcing``'s
    ``MapperDeserialisationError`` (a ``ValueError``), for code that catches that."""

    def __init__(self, agent_id: UUID, version: int | None, what: str, detail: str) -> None:
        self.agent_id, self.version, self.what = agent_id, version, what
        at = "" if version is None else f" at version {version}"
        super().__init__(f"agent {agent_id}: the stored {what}{at} cannot be read: {detail}")


class UnknownTopic(DamagedLog):
    """A stored row names a type (``topic``) that is not an agent or event class this
    process defined or registered (``snaptail.register_topic``). Nothing was imported:
    a stored topic never makes a reader import a module. Either the class was moved
    or renamed (register its old topic) or the row is damaged."""

    def __init__(self, agent_id: UUID, version: int, topic: str, what: str = "event") -> None:
        self.agent_id, self.version, self.topic, self.what = agent_id, version, topic, what
        SnaptailError.__init__(
            self,
            f"agent {agent_id}: the stored {what} at version {version} names the type"
            f" {topic!r}, which is not an agent or event class this process has defined or"
            " registered; nothing was imported. If a module this program does not import"
            " defines it, import that module first (for the snaptail CLI or a worker,"
            " name it in SNAPTAIL_AGENT_MODULES); if the class was moved or renamed, call"
            f" snaptail.register_topic({topic!r}, TheClass) at start-up; otherwise the row"
            " is damaged: restore it from a backup",
        )


class InvalidAgentType(SnaptailError, TypeError):
    """An agent type that snaptail cannot store faithfully: refused when it is defined
    (a state default of another type than its field's) or at its first save (a class
    defined in the script being run, ``__main__``, or handlers that read an attribute
    of the agent by a computed name without ``snapshot_settings``)."""

    def __init__(self, agent_type: str, detail: str) -> None:
        self.agent_type = agent_type
        super().__init__(f"agent type {agent_type}: {detail}")


class SnapshotEncodeError(SnaptailError, ValueError):
    """The agent's state holds something a snapshot would not carry exactly."""


class SnapshotDecodeError(SnaptailError, ValueError):
    """The bytes of a snapshot could not be decoded into the agent type's state."""


class PositionConflict(SnaptailError, RuntimeError):
    """Another worker advanced the projection's position first: the batch is undone."""


class StorageError(SnaptailError, persistence.PersistenceError):
    """The database failed a call of the store's. The message names what the store
    was doing (the agent) and the database's own error; ``cause`` is that error.
    Each subclass is also the ``eventsourcing`` error it translates."""

    def __init__(self, doing: str, cause: BaseException) -> None:
        self.doing, self.cause = doing, cause
        detail = " ".join(str(cause).split()) or type(cause).__name__
        super().__init__(f"{doing}: the database failed ({type(cause).__name__}: {detail})")


class StorageOperationalError(StorageError, persistence.OperationalError):
    """A lost connection, a timeout, a full disk: try again later (the store's retry
    policy already did)."""


class StorageInterfaceError(StorageError, persistence.InterfaceError):
    """The driver's connection is unusable (closed, or it could not be opened)."""


class StorageIntegrityError(StorageError, persistence.IntegrityError):
    """A constraint refused the write (a stored version, a stored save id)."""


class StorageDataError(StorageError, persistence.DataError):
    """A value the database refuses to store."""


class StorageProgrammingError(StorageError, persistence.ProgrammingError):
    """Bad SQL or a missing table: a bug, or a schema another version created."""


# Most specific first: the error a recorder raised, as a StorageError.
STORAGE_ERRORS: tuple[tuple[type[persistence.PersistenceError], type[StorageError]], ...] = (
    (persistence.IntegrityError, StorageIntegrityError),
    (persistence.OperationalError, StorageOperationalError),
    (persistence.InterfaceError, StorageInterfaceError),
    (persistence.DataError, StorageDataError),
    (persistence.ProgrammingError, StorageProgrammingError),
    (persistence.PersistenceError, StorageError),
)


def storage_error(doing: str, exc: Exception) -> Exception:
    """``exc`` as a :class:`SnaptailError` (a :class:`StorageError` for a database
    error), naming what was being done; a SnaptailError is returned as it is."""
    if isinstance(exc, SnaptailError):
        return exc
    for theirs, ours in STORAGE_ERRORS:
        if isinstance(exc, theirs):
            error = ours(doing, exc)
            error.__cause__ = exc
            return error
    return exc


__all__ = [
    "AgentBroken",
    "AgentForgotten",
    "AgentLimitExceeded",
    "AgentNotFound",
    "ArchiveBusy",
    "ArchiveDamaged",
    "ConcurrencyError",
    "DamagedLog",
    "DatabaseUnreachable",
    "DatabaseUnusable",
    "EventTooLarge",
    "InvalidAgentType",
    "InvalidArgument",
    "InvalidCommand",
    "InvalidEventPayload",
    "KeysRequired",
    "LockTimeout",
    "MasterKeyError",
    "MemoryBudgetExceeded",
    "NoSuchDatabase",
    "PositionConflict",
    "ProjectionBusy",
    "ProjectionFailed",
    "ReplayFailed",
    "RowUnreadable",
    "SaveOutcomeExpired",
    "SaveOutcomeUnknown",
    "SchemaOutdated",
    "SnapshotDecodeError",
    "SnapshotEncodeError",
    "SnaptailError",
    "StorageDataError",
    "StorageError",
    "StorageIntegrityError",
    "StorageInterfaceError",
    "StorageOperationalError",
    "StorageProgrammingError",
    "SubjectTooLate",
    "ThreadConflict",
    "UndeclaredState",
    "UnknownTopic",
    "VersionNotFound",
    "WorkerGaveUp",
]


class ArchiveDamaged(SnaptailError, LookupError):
    """An archive segment is missing, truncated or corrupt (or not where the manifest
    says): the archived events it holds cannot be read. Never skipped silently.

    Restore the file (``file``) from a copy; ``snaptail archive verify`` lists every
    segment that fails."""

    def __init__(
        self, agent_id: UUID, first_version: int, last_version: int, file: str, detail: str
    ) -> None:
        self.agent_id, self.first_version, self.last_version = agent_id, first_version, last_version
        self.file = file
        super().__init__(
            f"agent {agent_id}: archived events {first_version}-{last_version} cannot be read"
            f" from segment {file}: {detail}. Restore the file from a copy (snaptail archive"
            " verify lists every damaged segment)"
        )


class ArchiveBusy(SnaptailError, RuntimeError):
    """Another ``archive run`` holds the archive lock of this database."""

    def __init__(self, where: str, waited: float) -> None:
        self.where, self.waited = where, waited
        super().__init__(
            f"another archive run holds the lock ({where}); waited {waited:g} s. Let it"
            " finish (or pass a longer wait) and run again"
        )
