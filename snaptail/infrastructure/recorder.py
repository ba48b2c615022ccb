"""What snaptail needs from a database, beyond ``eventsourcing``'s application recorder."""

from __future__ import annotations

import hashlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Notification, StoredEvent

from snaptail.infrastructure.subscription import EventsWaiter


class Position(NamedTuple):
    """Where a reader of the event log stands: (transaction id, notification id).

    Events are read in this order. On PostgreSQL ``transaction_id`` is the writing
    transaction's id (rows written before the upgrade to concurrent appends have 0);
    on SQLite it is always 0 and the notification id (the rowid) alone orders them.
    Tuples compare element by element, so positions compare as they are read.
    """

    transaction_id: int
    notification_id: int

    def __str__(self) -> str:
        if self.transaction_id == 0:
            return str(self.notification_id)
        return f"{self.notification_id} (transaction {self.transaction_id})"


START = Position(0, 0)


@dataclass(frozen=True)
class PositionedNotification(Notification):
    """A notification that also carries the id of the transaction that wrote it."""

    transaction_id: int = 0

    @property
    def position(self) -> Position:
        return Position(self.transaction_id, self.id)


# The bits of an agent id a partition is computed from: 24 bits from the front
# XOR 24 bits from the end, so UUIDs that share either end (version 1 ids of one
# host share their last bytes, version 7 ids of one moment their first) still spread.
_LOW24 = 0xFFFFFF


# Any version is below this; stands in for "no upper bound" in a load's queries.
NO_LIMIT = 2**62


def load_bounds(lte: int | None, snapshot_lte: int | None) -> tuple[int, int]:
    """The upper version bounds of a load's events and of its snapshot."""
    upper = lte if lte is not None else NO_LIMIT
    return upper, min(upper, snapshot_lte) if snapshot_lte is not None else upper


def partition_key(agent_id: UUID) -> int:
    """A stable 24-bit number for an agent id (the same in Python and in SQL)."""
    value = agent_id.int
    return ((value >> 96) & _LOW24) ^ (value & _LOW24)


@dataclass(frozen=True)
class Partition:
    """Slice ``index`` of ``count``: the agents whose :func:`partition_key` modulo
    ``count`` is ``index``. Every event of one agent falls in the same slice."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} of {self.count}: need 0 <= index < count")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, agent_id: UUID) -> bool:
        return partition_key(agent_id) % self.count == self.index


# The tables snaptail adds beside eventsourcing's ``stored_events``, on every backend.
SNAPSHOTS_TABLE = "snaptail_snapshots"
# One row per save: its id, written in the save's own transaction (see
# snaptail.application.retry: a save whose reply was lost is looked up by it).
SAVES_TABLE = "snaptail_saves"

# Save ids are time-ordered (RFC 9562 version 7: 48 bits of Unix milliseconds, then
# random bits), so the saves table is pruned by id range, with no column to add, and
# an id tells its own age. Ids written before (random, version 4) have no age: kept.
_MS_SHIFT = 80


def new_save_id(at: float | None = None) -> UUID:
    """A fresh save id, time-ordered at ``at`` (seconds since the epoch; default now)."""
    ms = int((time.time() if at is None else at) * 1000) & 0xFFFFFFFFFFFF
    rand = int.from_bytes(os.urandom(10), "big")
    # 12 random bits after the version nibble, then the variant and 62 random bits.
    value = (ms << _MS_SHIFT) | (0x7 << 76) | ((rand >> 64) & 0xFFF) << 64
    value |= (0x2 << 62) | (rand & 0x3FFFFFFFFFFFFFFF)
    return UUID(int=value)


def save_id_time(save_id: UUID) -> float | None:
    """When the save ``save_id`` was made (seconds since the epoch), or None for an id
    that is not time-ordered."""
    if save_id.version != 7:
        return None
    return (save_id.int >> _MS_SHIFT) / 1000


def save_ids_before(at: float) -> UUID:
    """The bound of a prune: every time-ordered save id made before ``at`` is smaller."""
    return UUID(int=(int(at * 1000) & 0xFFFFFFFFFFFF) << _MS_SHIFT)


class StoredSnapshot(NamedTuple):
    """One snapshot row: an agent's encoded state at a version. (A named tuple: every
    load builds one, in a third of a frozen dataclass's time.)"""

    originator_id: UUID
    originator_version: int
    topic: str
    fingerprint: str
    checksum: int
    state: bytes


def snapshot_from_row(originator_id: UUID, row: Sequence[Any]) -> StoredSnapshot:
    """A snapshot row ``(originator_version, topic, fingerprint, checksum, state)``."""
    version, topic, fingerprint, check, state = row
    return StoredSnapshot(originator_id, version, topic, fingerprint, check, bytes(state))


def stored_events(originator_id: UUID, rows: Iterable[Sequence[Any]]) -> list[StoredEvent]:
    """One agent's event rows ``(originator_version, topic, state)`` as stored events."""
    return [
        StoredEvent(
            originator_id=originator_id, originator_version=version, topic=topic, state=state
        )
        for version, topic, state in rows
    ]


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot row without its bytes (for listing)."""

    originator_version: int
    fingerprint: str
    size: int


# One event row as a load reads it: (originator_version, topic, state). Plain tuples,
# as the database driver returns them: a load builds no object per row.
EventRow = tuple[int, str, bytes]


class LoadRows(NamedTuple):
    """What one load reads: at most one snapshot row, then the events after it.

    ``events`` starts after ``min(snapshot version, head - recent)``: events older
    than the snapshot are read only to fill the recent-event cache, never replayed.
    """

    snapshot: StoredSnapshot | None
    events: Sequence[EventRow]


class DirectCursor:
    """A DB-API cursor whose statements use ``?`` placeholders on either backend."""

    def __init__(self, cursor: Any, placeholder: str) -> None:
        self._cursor = cursor
        self._placeholder = placeholder

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if self._placeholder != "?":
            sql = sql.replace("%", "%%").replace("?", self._placeholder)
        self._cursor.execute(sql, params)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class DirectSQL(ABC):
    """A recorder's database for SQL written outside the recorder (the archive's
    manifest and its reads and deletes of event rows): the tables' names as a
    statement names them, transactions whose statements use ``?`` on either backend,
    and what SQLite and PostgreSQL say differently. One per backend, from
    :meth:`AgentRecorder.direct_sql`."""

    def __init__(self, schema: str, events_table: str, snapshots_table: str) -> None:
        self.schema = schema  # "" on SQLite
        self.events = self.table(events_table)
        self.snapshots = self.table(snapshots_table)

    def table(self, name: str) -> str:
        """``name`` as a statement names it (schema-qualified on PostgreSQL)."""
        return f'"{self.schema}".{name}' if self.schema else name

    # A row's position, (notification id, transaction id), as two integer columns.
    position_columns: str
    # The SQL function giving the bytes of a text or binary value.
    length_function: str

    @abstractmethod
    def transaction(self, write: bool = False) -> AbstractContextManager[DirectCursor]:
        """One transaction on the recorder's connections; committed if ``write``
        (and the block raises nothing), else rolled back."""

    @abstractmethod
    def key(self, agent_id: UUID) -> Any:
        """The agent id as the events and snapshots tables store it."""

    @abstractmethod
    def table_exists(self, cursor: DirectCursor, name: str) -> bool:
        """Whether the table ``name`` (unqualified) exists."""

    @abstractmethod
    def after(self, floor: Position) -> tuple[str, tuple[Any, ...]]:
        """A condition on an events row (and its parameters): its position is after
        ``floor``."""

    @abstractmethod
    def horizon(self) -> Position | None:
        """The last position every reader can see now (see
        :meth:`AgentRecorder.select_after`); None where every committed row is."""

    @abstractmethod
    def guard_versions(
        self, cursor: DirectCursor, name: str, table: str, last: str, condition: str
    ) -> None:
        """Make (if missing) trigger ``name``: an insert into the events table of an
        event at a version at or below column ``last`` of a row of ``table`` (whose
        ``originator_id`` is the agent id as 32 hex digits) that meets ``condition``
        fails as a duplicate version would."""

    @abstractmethod
    def exclusive(
        self, *, file: str, key: str, wait: float, busy: Callable[[str, float], Exception]
    ) -> AbstractContextManager[None]:
        """Hold the database's lock for one job at a time, released by the OS or the
        server if the process dies: SQLite, a ``flock`` of ``<database file>.<file>``
        (an in-memory database: a lock of this process); PostgreSQL, a session
        advisory lock named ``key``. Waits ``wait`` seconds, then raises
        ``busy(where, wait)``."""

    @abstractmethod
    def vacuum_events(self) -> tuple[int, int]:
        """Give back the space deleted event rows held: SQLite ``PRAGMA
        incremental_vacuum`` when the file is in incremental auto-vacuum mode, else
        ``VACUUM``; PostgreSQL ``VACUUM`` of the events table. Returns the bytes
        before and after (SQLite: the database file; PostgreSQL: the events table with
        its indexes)."""


def advisory_key(schema: str, name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` in ``schema``."""
    digest = hashlib.blake2b(f"snaptail/{schema}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AgentRecorder(ApplicationRecorder):
    """An application recorder that also stores snapshots and answers agent queries.

    Implemented for SQLite and PostgreSQL. Each method is one transaction.
    """

    @abstractmethod
    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
        save_id: UUID | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        """Insert events (and snapshots, pruning older ones of the same agents down
        to ``keep_snapshots`` plus the newest of each of the last two fingerprints)
        in one transaction, with ``save_id`` (if given) in the saves table. A version
        conflict (or a save id stored before) raises
        ``eventsourcing.persistence.IntegrityError`` and writes nothing."""

    @abstractmethod
    def save_committed(self, save_id: UUID) -> bool:
        """Whether a save with ``save_id`` committed (its row is in the saves table)."""

    @abstractmethod
    def prune_saves(self, before: UUID, limit: int) -> int:
        """Delete up to ``limit`` rows of time-ordered save ids smaller than ``before``
        (see :func:`save_ids_before`; other ids are kept) in one transaction; returns
        how many were deleted."""

    @abstractmethod
    def close(self) -> None:
        """Close the recorder's connections; idempotent."""

    @abstractmethod
    def select_for_load(
        self,
        originator_id: UUID,
        *,
        lte: int | None = None,
        recent: int = 0,
        snapshot_lte: int | None = None,
    ) -> LoadRows:
        """Read the newest snapshot at or before ``snapshot_lte`` (default ``lte``)
        and the events after it (and enough before it to give ``recent`` events),
        up to ``lte``, in one read transaction and two queries."""

    @abstractmethod
    def select_many_for_load(
        self,
        originator_ids: Sequence[UUID],
        *,
        recent: int = 0,
        known: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, LoadRows | None]:
        """What :meth:`select_for_load` reads for the latest version of each agent,
        for several agents in ONE call: one read transaction on SQLite (one snapshot
        of the database); on PostgreSQL, under read committed, each statement sees
        what was committed when it began, inside a transaction or not (an agent
        without rows gets empty :class:`LoadRows`). An agent whose stored version (0:
        none) is its version in ``known`` gets None: the caller's copy is current,
        nothing more is read (the versions of all such agents are read together).
        Each agent is read no earlier than the agents before it in ``originator_ids``
        (a later one saved with an earlier one in one transaction is at least as new)."""

    @abstractmethod
    def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None:
        """The newest snapshot at or before ``lte``, without any events (a load that
        passed over a snapshot looks for an older one this way)."""

    @abstractmethod
    def select_page(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lt: int | None = None,
        desc: bool = False,
        limit: int = 500,
        topics: Sequence[str] = (),
    ) -> Sequence[StoredEvent]:
        """One page of an agent's events, strictly between ``gt`` and ``lt``."""

    @abstractmethod
    def max_version(self, originator_id: UUID) -> int | None:
        """The agent's newest version (its event count), from the index."""

    @abstractmethod
    def insert_snapshot(self, snapshot: StoredSnapshot, *, keep_snapshots: int | None) -> bool:
        """Store a snapshot on its own; returns False if one exists at that version."""

    @abstractmethod
    def select_snapshot_infos(self, originator_id: UUID) -> Sequence[SnapshotInfo]:
        """The agent's snapshots, newest first, without their bytes."""

    @abstractmethod
    def delete_snapshots(
        self, originator_id: UUID, *, keep: int, versions: Sequence[int] = ()
    ) -> int:
        """Delete the snapshots at ``versions``, then all but the newest ``keep`` and
        the newest of each of the last two fingerprints; returns how many rows were
        deleted."""

    @abstractmethod
    def originator_ids(self, *, after: UUID | None = None, limit: int = 1000) -> Sequence[UUID]:
        """Agent ids that have snapshots or events, in id order, paged."""

    @abstractmethod
    def select_after(
        self,
        position: Position,
        limit: int,
        *,
        topics: Sequence[str] = (),
        partition: Partition | None = None,
    ) -> list[PositionedNotification]:
        """Up to ``limit`` events after ``position``, in position order (of the
        ``partition``'s agents only, if given): what a projection worker reads. Never
        returns an event a later read could find before one it returned."""

    @abstractmethod
    def held_back(self, position: Position, upto: int) -> bool:
        """Whether an event at or below notification id ``upto`` lies after
        ``position`` but :meth:`select_after` cannot return it yet: its transaction is
        younger than the oldest one still running (PostgreSQL; never on SQLite, whose
        rows become readable in position order)."""

    @abstractmethod
    def ensure_partition_index(self, count: int) -> bool:
        """Prepare reads of ``count`` partitions (True if something was built now)."""

    @abstractmethod
    def new_events_waiter(self) -> EventsWaiter:
        """What a reader waits on for new events (see ``EventsWaiter``)."""

    @abstractmethod
    def direct_sql(self) -> DirectSQL:
        """The recorder's database for SQL written outside it (the archive's)."""
