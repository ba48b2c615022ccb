"""The SQLite recorder: ``eventsourcing.sqlite`` plus snapshots and agent queries."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing import persistence
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    OperationalError,
    StoredEvent,
    Subscription,
)
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
)

from snaptail.errors import DatabaseUnusable, LockTimeout
from snaptail.infrastructure import sql
from snaptail.infrastructure.recorder import (
    SAVES_TABLE,
    SNAPSHOTS_TABLE,
    AgentRecorder,
    DirectCursor,
    DirectSQL,
    LoadRows,
    Partition,
    Position,
    PositionedNotification,
    SnapshotInfo,
    StoredSnapshot,
    load_bounds,
    snapshot_from_row,
    stored_events,
)
from snaptail.infrastructure.subscription import (
    DEFAULT_POLL_INTERVAL,
    EventsWaiter,
    SQLiteSubscription,
    SQLiteWaiter,
    commit_signal,
)

# Prepared statements each connection keeps (``sqlite3``'s default). eventsourcing's
# pool opens its connections with ``cached_statements=True``, which is 1: every
# statement of a save or a load was parsed and planned again each time.
STATEMENT_CACHE = 128
# Idle read connections kept for loads (more are opened under concurrency, then closed).
IDLE_READERS = 4


T = TypeVar("T")


class _Executes(Protocol):
    """A connection or cursor: what a read query runs its statements on."""

    def execute(self, sql: str, parameters: Any = ..., /) -> sqlite3.Cursor: ...


def _connect(db_name: str, lock_timeout: int | None) -> sqlite3.Connection:
    try:
        return sqlite3.connect(
            db_name,
            uri=True,
            check_same_thread=False,
            isolation_level=None,  # autocommit: transactions are begun explicitly
            cached_statements=STATEMENT_CACHE,
            timeout=lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
        )
    except (sqlite3.Error, TypeError) as exc:
        raise persistence.InterfaceError(exc) from exc


class StatementCachingPool(SQLiteConnectionPool):
    """``eventsourcing``'s SQLite pool, with connections that cache their statements."""

    def _create_connection(self) -> SQLiteConnection:
        connection = _connect(self.db_name, self.lock_timeout)
        if not self.is_sqlite_memory_mode and not self.is_journal_mode_wal:
            connection.execute("PRAGMA journal_mode=WAL")  # kept by the file once set
            self.is_journal_mode_wal = True
        connection.row_factory = sqlite3.Row  # eventsourcing's queries read rows by name
        return SQLiteConnection(sqlite_conn=connection, max_age=self.max_age)


class SnaptailSQLiteDatastore(SQLiteDatastore):
    """A :class:`SQLiteDatastore` whose pool is a :class:`StatementCachingPool`."""

    def __init__(self, db_name: str, *, lock_timeout: int | None = None) -> None:
        super().__init__(db_name, lock_timeout=lock_timeout)
        self.pool = StatementCachingPool(db_name=db_name, lock_timeout=lock_timeout)


_ERRORS: tuple[tuple[type[sqlite3.Error], type[persistence.PersistenceError]], ...] = (
    (sqlite3.IntegrityError, persistence.IntegrityError),
    (sqlite3.OperationalError, persistence.OperationalError),
    (sqlite3.InterfaceError, persistence.InterfaceError),
    (sqlite3.DataError, persistence.DataError),
    (sqlite3.InternalError, persistence.InternalError),
    (sqlite3.ProgrammingError, persistence.ProgrammingError),
    (sqlite3.NotSupportedError, persistence.NotSupportedError),
    (sqlite3.DatabaseError, persistence.DatabaseError),
    (sqlite3.Error, persistence.PersistenceError),
)


def _persistence_error(exc: sqlite3.Error) -> persistence.PersistenceError:
    """The ``eventsourcing`` error its own SQLite recorder raises for ``exc``."""
    for raw, translated in _ERRORS:
        if isinstance(exc, raw):
            return translated(exc)
    return persistence.PersistenceError(exc)  # pragma: no cover (sqlite3.Error matches)


def _key(originator_id: UUID | str) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


class SQLiteAgentRecorder(SQLiteApplicationRecorder, AgentRecorder):
    """Events in ``stored_events`` (as ``eventsourcing``), snapshots in their own table.

    A save writes its events, its snapshot (if any) and the pruning of old snapshots
    in one transaction.
    """

    def __init__(
        self,
        datastore: SQLiteDatastore,
        events_table_name: str = "stored_events",
        snapshots_table_name: str = SNAPSHOTS_TABLE,
        *,
        path: str | None = None,
    ) -> None:
        self.snapshots_table_name = snapshots_table_name
        # The database file as the store's URL names it (its lock files sit beside it).
        self.path = datastore.pool.db_name if path is None else path
        super().__init__(datastore, events_table_name)
        self._commit_signal = commit_signal(datastore.pool.db_name)
        # Loads read through their own connections (plain tuples, cached statements,
        # no pool bookkeeping); an in-memory database is read through the pool, whose
        # readers and writer exclude each other as its shared cache requires.
        self._readers: list[sqlite3.Connection] | None = (
            None if datastore.pool.is_sqlite_memory_mode else []
        )
        self._closed = False
        # Agent ids by their text (select_after converts each once: building a UUID
        # per row was a quarter of a projection catch-up's time).
        self._ids: dict[str, UUID] = {}
        ev, sn = self.events_table_name, self.snapshots_table_name
        self._select_after = (
            f"SELECT rowid, originator_id, originator_version, topic, state "
            f"FROM {ev} WHERE rowid > ? ORDER BY rowid LIMIT ?"
        )
        self._insert_many = f"INSERT INTO {ev} VALUES (?,?,?,?)"
        self._insert_snapshot = f"INSERT INTO {sn} VALUES (?,?,?,?,?,?)"
        self._insert_save = f"INSERT INTO {SAVES_TABLE} VALUES (?,?,?)"
        self._select_save = f"SELECT 1 FROM {SAVES_TABLE} WHERE save_id=?"
        # Time-ordered ids only (the version nibble, byte 7, is 7): see prune_saves.
        self._prune_saves = (
            f"DELETE FROM {SAVES_TABLE} WHERE save_id IN (SELECT save_id FROM {SAVES_TABLE}"
            " WHERE save_id < ? AND substr(save_id, 7, 1) BETWEEN x'70' AND x'7f' LIMIT ?)"
        )
        # The statements PostgreSQL says alike (snaptail.infrastructure.sql).
        self._prune = sql.prune_snapshots(sql.SQLITE).format(sn=sn)
        self._select_snapshot = sql.select_snapshot(sql.SQLITE).format(sn=sn)
        self._select_tail = sql.select_tail(sql.SQLITE).format(ev=ev)

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {self.snapshots_table_name} ("
            "originator_id TEXT, originator_version INTEGER, topic TEXT, "
            "fingerprint TEXT, checksum INTEGER, state BLOB, "
            "PRIMARY KEY (originator_id, originator_version)) WITHOUT ROWID"
        )
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {SAVES_TABLE} ("
            "save_id BLOB PRIMARY KEY, originator_id TEXT, originator_version INTEGER"
            ") WITHOUT ROWID"
        )
        return statements

    def check_tables(self, where: str) -> None:
        """Read both tables once (a read-only open creates nothing): a file without
        them is a :class:`~snaptail.DatabaseUnusable`."""
        with self.datastore.transaction(commit=False) as c:
            for table in (self.events_table_name, self.snapshots_table_name):
                c.execute(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?", (table,)
                )
                if not c.fetchone()[0]:
                    raise DatabaseUnusable(
                        f"SQLite database {where}",
                        f"has no {table} table: it is not a snaptail database (or was never"
                        " written to)",
                    )

    def close(self) -> None:
        """Close the read connections and the datastore's pool."""
        self._closed = True
        while self._readers:
            self._readers.pop().close()
        self.datastore.close()

    def _read(self, query: Callable[[_Executes], T]) -> T:
        """Run ``query`` in one read transaction on a plain connection (rows are
        tuples). No context manager: loads are short, and this is their overhead.
        (BEGIN / ROLLBACK cost instructions, but without them each statement is a
        read transaction of its own, and each takes and drops the file's shared lock:
        two more fcntl calls and a stat per statement, slower on the clock.)"""
        readers = self._readers
        if readers is None:
            with self.datastore.transaction(commit=False) as cursor:
                sqlite_cursor = cursor.sqlite_cursor
                sqlite_cursor.row_factory = None
                return query(sqlite_cursor)
        if self._closed:
            raise persistence.ConnectionPoolClosedError("the SQLite recorder is closed")
        try:
            connection = readers.pop()  # atomic: no lock needed
        except IndexError:
            pool = self.datastore.pool
            connection = _connect(pool.db_name, pool.lock_timeout)
        try:
            connection.execute("BEGIN")
            try:
                result = query(connection)
            finally:
                connection.execute("ROLLBACK")
        except sqlite3.Error as exc:
            connection.close()
            raise _persistence_error(exc) from exc
        except BaseException:
            connection.close()
            raise
        if self._closed or len(readers) >= IDLE_READERS:
            connection.close()
        else:
            readers.append(connection)
        return result

    # -- writing --------------------------------------------------------------------

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
        save_id: UUID | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        try:
            with self.datastore.transaction(commit=True) as c:
                ids = self._insert_events(c, stored_events, **kwargs)
                if save_id is not None and stored_events:
                    first = stored_events[0]
                    c.execute(
                        self._insert_save,
                        (save_id.bytes, _key(first.originator_id), first.originator_version),
                    )
                for snapshot in snapshots:
                    self._write_snapshot(c, snapshot, keep_snapshots)
        except OperationalError as exc:
            agent_ids = dict.fromkeys(_as_uuid(s.originator_id) for s in stored_events)
            if "full" in str(exc):
                names = ", ".join(str(a) for a in agent_ids)
                raise DatabaseUnusable(
                    f"SQLite database {self.datastore.pool.db_name}",
                    f"the database or disk is full: saving agent(s) {names} wrote nothing;"
                    " free disk space (or raise the database's size limit) and save again",
                ) from exc
            if "locked" not in str(exc):
                raise
            timeout = self.datastore.pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT
            raise LockTimeout(list(agent_ids), timeout, str(exc)) from exc
        if stored_events:
            self._commit_signal.notify()  # wake subscribers in this process
        return ids

    def subscribe(
        self,
        gt: int | None = None,
        topics: Sequence[str] = (),
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Subscription[ApplicationRecorder]:
        """Notifications after ``gt``, then new ones as they are committed (see
        :class:`~snaptail.infrastructure.subscription.SQLiteSubscription`)."""
        return SQLiteSubscription(
            self, self.datastore.pool.db_name, gt, topics, poll_interval=poll_interval
        )

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        keys: dict[Any, str] = {}  # one text key per agent, not per row
        rows = []
        for s in stored_events:
            key = keys.get(s.originator_id)
            if key is None:
                key = keys[s.originator_id] = _key(s.originator_id)
            rows.append((key, s.originator_version, s.topic, s.state))
        c.executemany(self._insert_many, rows)
        # The write lock is held: the rows just inserted have the highest rowids,
        # one after another.
        c.execute(self.select_max_notification_id_statement)
        last = int(c.fetchone()[0])
        return list(range(last - len(stored_events) + 1, last + 1))

    def _write_snapshot(self, c: SQLiteCursor, snapshot: StoredSnapshot, keep: int | None) -> None:
        key = _key(snapshot.originator_id)
        c.execute(
            self._insert_snapshot,
            (
                key,
                snapshot.originator_version,
                snapshot.topic,
                snapshot.fingerprint,
                snapshot.checksum,
                snapshot.state,
            ),
        )
        if keep is not None:
            c.execute(self._prune, (key, key, max(keep, 1) - 1, key))

    def insert_snapshot(self, snapshot: StoredSnapshot, *, keep_snapshots: int | None) -> bool:
        try:
            with self.datastore.transaction(commit=True) as c:
                self._write_snapshot(c, snapshot, keep_snapshots)
        except IntegrityError:
            return False
        return True

    def delete_snapshots(
        self, originator_id: UUID, *, keep: int, versions: Sequence[int] = ()
    ) -> int:
        key = _key(originator_id)
        sn = self.snapshots_table_name
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"SELECT COUNT(*) FROM {sn} WHERE originator_id=?", (key,))
            before = int(c.fetchone()[0])
            for v in versions:
                c.execute(
                    f"DELETE FROM {sn} WHERE originator_id=? AND originator_version=?",
                    (key, v),
                )
            if keep == 0:
                c.execute(f"DELETE FROM {sn} WHERE originator_id=?", (key,))
            else:
                c.execute(self._prune, (key, key, keep - 1, key))
            c.execute(f"SELECT COUNT(*) FROM {sn} WHERE originator_id=?", (key,))
            return before - int(c.fetchone()[0])

    # -- reading --------------------------------------------------------------------

    def select_for_load(
        self,
        originator_id: UUID,
        *,
        lte: int | None = None,
        recent: int = 0,
        snapshot_lte: int | None = None,
    ) -> LoadRows:
        upper, snap_upper = load_bounds(lte, snapshot_lte)
        return self._read(
            lambda c: self._load_rows(c, originator_id, upper, snap_upper, recent)
        )

    def select_many_for_load(
        self,
        originator_ids: Sequence[UUID],
        *,
        recent: int = 0,
        known: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, LoadRows | None]:
        head = self._select_head
        upper, snap_upper = load_bounds(None, None)
        known = known or {}

        def query(c: _Executes) -> dict[UUID, LoadRows | None]:
            found: dict[UUID, LoadRows | None] = {}
            for agent_id in originator_ids:
                version = known.get(agent_id)
                if version is not None and (
                    c.execute(head, (_key(agent_id),)).fetchone()[0] or 0
                ) == version:
                    found[agent_id] = None
                else:
                    found[agent_id] = self._load_rows(c, agent_id, upper, snap_upper, recent)
            return found

        return self._read(query)

    def _load_rows(
        self, c: _Executes, originator_id: UUID, upper: int, snap_upper: int, recent: int
    ) -> LoadRows:
        """One agent's load rows, read on ``c`` (inside the caller's transaction)."""
        key = _key(originator_id)
        snapshot = None
        if snap_upper > 0:
            row = c.execute(self._select_snapshot, (key, snap_upper)).fetchone()
            if row is not None:
                snapshot = snapshot_from_row(originator_id, row)
        after = snapshot.originator_version if snapshot else 0
        events = c.execute(self._select_tail, (key, upper, after, key, upper, recent))
        return LoadRows(snapshot=snapshot, events=events.fetchall())

    def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None:
        if lte < 1:
            return None
        key = _key(originator_id)
        row = self._read(lambda c: c.execute(self._select_snapshot, (key, lte)).fetchone())
        return None if row is None else snapshot_from_row(originator_id, row)

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
        statement = sql.select_page(
            sql.SQLITE, gt=gt is not None, lt=lt is not None, topics=len(topics), desc=desc
        ).format(ev=self.events_table_name)
        params: list[Any] = [_key(originator_id)]
        if gt is not None:
            params.append(gt)
        if lt is not None:
            params.append(lt)
        params.extend(topics)
        params.append(limit)
        rows = self._read(lambda c: c.execute(statement, params).fetchall())
        return stored_events(originator_id, rows)

    @property
    def _select_head(self) -> str:
        return f"SELECT MAX(originator_version) FROM {self.events_table_name} WHERE originator_id=?"

    def max_version(self, originator_id: UUID) -> int | None:
        statement = self._select_head
        key = _key(originator_id)
        value = self._read(lambda c: c.execute(statement, (key,)).fetchone()[0])
        return None if value is None else int(value)

    def save_committed(self, save_id: UUID) -> bool:
        key = save_id.bytes
        return self._read(lambda c: c.execute(self._select_save, (key,)).fetchone()) is not None

    def prune_saves(self, before: UUID, limit: int) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute(self._prune_saves, (before.bytes, limit))
            return int(c.sqlite_cursor.rowcount)

    def select_snapshot_infos(self, originator_id: UUID) -> Sequence[SnapshotInfo]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT originator_version, fingerprint, LENGTH(state) FROM "
                f"{self.snapshots_table_name} WHERE originator_id=? "
                "ORDER BY originator_version DESC",
                (_key(originator_id),),
            )
            return [SnapshotInfo(row[0], row[1], row[2]) for row in c.fetchall()]

    def originator_ids(self, *, after: UUID | None = None, limit: int = 1000) -> Sequence[UUID]:
        statement = f"SELECT DISTINCT originator_id FROM {self.events_table_name}"
        params: list[Any] = []
        if after is not None:
            statement += " WHERE originator_id>?"
            params.append(_key(after))
        statement += " ORDER BY originator_id LIMIT ?"
        params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            return [UUID(row[0]) for row in c.fetchall()]


    def select_after(
        self,
        position: Position,
        limit: int,
        *,
        topics: Sequence[str] = (),
        partition: Partition | None = None,
    ) -> list[PositionedNotification]:
        """The next ``limit`` events after ``position`` (of the partition's agents and
        of ``topics`` only, if given: pages are read until one holds some, or the log
        ends). Rowids are taken inside SQLite's one write lock: they become visible
        in order."""
        ids = self._ids
        if len(ids) > 100_000:
            ids.clear()
        wanted = frozenset(topics)
        start = position.notification_id
        while True:
            with self.datastore.transaction(commit=False) as c:
                c.execute(self._select_after, (start, limit))
                rows = c.fetchall()
            batch = []
            for row in rows:
                key = row[1]
                agent_id = ids.get(key)
                if agent_id is None:
                    agent_id = ids[key] = UUID(key)
                if (partition is None or partition.owns(agent_id)) and (
                    not wanted or row[3] in wanted
                ):
                    batch.append(PositionedNotification(agent_id, row[2], row[3], row[4], row[0]))
            if batch or not rows:
                return batch
            start = rows[-1][0]

    def held_back(self, position: Position, upto: int) -> bool:
        """Never: rowids are taken inside SQLite's one write lock."""
        return False

    def ensure_partition_index(self, count: int) -> bool:
        """Nothing to build: SQLite's readers filter the rows of one scan."""
        return False

    def new_events_waiter(self) -> EventsWaiter:
        return SQLiteWaiter(commit_signal(self.datastore.pool.db_name))

    def direct_sql(self) -> DirectSQL:
        return SQLiteDirectSQL(
            self.datastore, self.path, self.events_table_name, self.snapshots_table_name
        )


# In-memory SQLite databases belong to one process: a lock per database and job.
_memory_locks: dict[str, threading.Lock] = {}


class SQLiteDirectSQL(DirectSQL):
    """:class:`DirectSQL` of a SQLite database (agent ids as 32 hex digits, a row's
    position its rowid)."""

    position_columns = "rowid, 0"
    length_function = "LENGTH"

    def __init__(
        self, datastore: SQLiteDatastore, path: str, events: str, snapshots: str
    ) -> None:
        super().__init__("", events, snapshots)
        self.datastore = datastore
        self.path = path

    @contextlib.contextmanager
    def transaction(self, write: bool = False) -> Iterator[DirectCursor]:
        with self.datastore.transaction(commit=write) as c:
            raw = c.sqlite_cursor
            raw.row_factory = None
            yield DirectCursor(raw, "?")

    def key(self, agent_id: UUID) -> Any:
        return agent_id.hex

    def table_exists(self, cursor: DirectCursor, name: str) -> bool:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
        row = cursor.fetchone()
        return bool(row and row[0])

    def after(self, floor: Position) -> tuple[str, tuple[Any, ...]]:
        return "rowid>?", (floor.notification_id,)

    def horizon(self) -> Position | None:
        return None

    def guard_versions(
        self, cursor: DirectCursor, name: str, table: str, last: str, condition: str
    ) -> None:
        cursor.execute(
            f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE INSERT ON {self.events} "
            f"WHEN NEW.originator_version <= (SELECT MAX({last}) FROM {table} WHERE"
            f" originator_id = NEW.originator_id AND {condition}) "
            "BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: the version is archived');"
            " END"
        )

    @contextlib.contextmanager
    def exclusive(
        self, *, file: str, key: str, wait: float, busy: Callable[[str, float], Exception]
    ) -> Iterator[None]:
        pool = self.datastore.pool
        if pool.is_sqlite_memory_mode:
            lock = _memory_locks.setdefault(f"{pool.db_name}/{file}", threading.Lock())
            if not lock.acquire(timeout=max(wait, 0.0)) if wait > 0 else not lock.acquire(False):
                raise busy("in-memory database lock", wait)
            try:
                yield
            finally:
                lock.release()
            return
        deadline = time.monotonic() + max(wait, 0.0)
        where = f"{self.path}.{file}"
        fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise busy(where, wait) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the flock

    def vacuum_events(self) -> tuple[int, int]:
        name = self.datastore.pool.db_name
        conn = sqlite3.connect(name, uri=True, isolation_level=None, timeout=60)
        try:
            before = _file_size(conn)
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
                conn.execute("PRAGMA incremental_vacuum").fetchall()
            else:
                conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            return before, _file_size(conn)
        finally:
            conn.close()


def _file_size(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def _as_uuid(originator_id: UUID | str) -> UUID:
    return originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
