"""Where a projection's view lives: a SQLite file or a PostgreSQL schema.

A :class:`ViewDatabase` hands out write transactions (:meth:`ViewDatabase.transaction`)
whose cursor takes ``?`` placeholders on both backends, and keeps each projection's
position (the transaction id and notification id of the last event it processed, see
:class:`~snaptail.infrastructure.recorder.Position`) in ``snaptail_projection_tracking``,
written in the same transaction as the view update: exactly-once effects. Events a
worker was told to skip (``--skip-failed``) are kept in ``snaptail_projection_dead_letters``.

On PostgreSQL, view tables (and the view's schema) are created under a
transaction-level advisory lock: concurrent ``CREATE TABLE IF NOT EXISTS`` can
collide in the catalogues. A projection's worker lock is a session-level advisory
lock held on the view's own connection, so a batch commits only while its worker
still holds the lock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from snaptail import errors
from snaptail.errors import NoSuchDatabase
from snaptail.infrastructure import sqlite_files
from snaptail.infrastructure.recorder import START, Position, advisory_key
from snaptail.infrastructure.urls import (
    is_postgres_url,
    parse_postgres_url,
    parse_sqlite_url,
    resolve_url,
)

TRACKING_TABLE = "snaptail_projection_tracking"
_TRACKING_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} ("
    "projection TEXT PRIMARY KEY, notification_id BIGINT NOT NULL, "
    "processed BIGINT NOT NULL, transaction_id BIGINT NOT NULL DEFAULT 0)"
)
# Tracking tables made before positions had a transaction id: their positions are
# notification ids of rows that the event database's upgrade gives transaction id 0.
_TRACKING_UPGRADE = (
    f"ALTER TABLE {TRACKING_TABLE} ADD COLUMN transaction_id BIGINT NOT NULL DEFAULT 0"
)
DEAD_LETTERS_TABLE = "snaptail_projection_dead_letters"
_DEAD_LETTERS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {DEAD_LETTERS_TABLE} ("
    "projection TEXT NOT NULL, notification_id BIGINT NOT NULL, agent_id TEXT NOT NULL, "
    "version BIGINT NOT NULL, event_type TEXT NOT NULL, error TEXT NOT NULL, "
    "skipped_at TEXT NOT NULL, PRIMARY KEY (projection, notification_id))"
)
_DEAD_LETTER_COLUMNS = (
    "projection, notification_id, agent_id, version, event_type, error, skipped_at"
)


# Serialises view-table creation in a database (any schema, any projection).
VIEW_SETUP_LOCK = advisory_key("", "view setup")


@dataclass(frozen=True)
class DeadLetter:
    """An event a worker skipped (``--skip-failed``) because its projection raised."""

    projection: str
    notification_id: int
    agent_id: str
    version: int
    event_type: str
    error: str
    skipped_at: str


@dataclass(frozen=True)
class AddColumn:
    """A column added to a projection's table after the table was first released:
    listed in ``Projection.tables``, :meth:`ViewDatabase.setup` runs ``ALTER TABLE
    table ADD COLUMN definition`` once, where the column is missing (both backends)."""

    table: str
    column: str
    definition: str  # e.g. "name TEXT"

    @property
    def statement(self) -> str:
        return f"ALTER TABLE {self.table} ADD COLUMN {self.definition}"


# Defined in snaptail.errors (under SnaptailError), raised here.
PositionConflict = errors.PositionConflict


class ViewCursor:
    """What a projection writes its view with: ``execute``/``executemany`` with ``?``
    placeholders (translated for PostgreSQL), ``fetchone``/``fetchall``.

    ``dialect`` is ``"sqlite"`` or ``"postgresql"`` for the rare statement that differs.
    """

    def __init__(self, cursor: Any, dialect: str) -> None:
        self._cursor = cursor
        self.dialect = dialect

    def _sql(self, statement: str) -> str:
        if self.dialect == "sqlite":
            return statement
        return statement.replace("%", "%%").replace("?", "%s")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self._sql(statement), tuple(params))

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        self._cursor.executemany(self._sql(statement), [tuple(r) for r in rows])

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._cursor.fetchall()]

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class ViewDatabase(ABC):
    """One connection to a view database (not shared between threads)."""

    url: str
    dialect: str

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[ViewCursor]:
        """A write transaction: committed on success, rolled back on error."""

    @abstractmethod
    @contextmanager
    def reading(self) -> Iterator[ViewCursor]:
        """A read-only transaction."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    def broken(self) -> bool:
        """True once the connection is lost (the next use would fail)."""
        return False

    @abstractmethod
    def reconnect(self) -> None:
        """Replace a lost connection (session state, such as locks, is gone)."""

    read_only = False  # opened by a command that only reads: setup() creates nothing

    @abstractmethod
    def worker_lock(self, projection: str) -> WorkerLock:
        """The lock a worker of ``projection`` (or of one partition of it) holds on
        this view database, not taken yet."""

    def scrub(self) -> None:  # noqa: B027 (a no-op unless the backend can scrub)
        """After rows were deleted for an erasure (``Projection.forget``): leave no
        copy of their bytes in the database's files where that is possible (SQLite).
        PostgreSQL keeps dead rows until VACUUM (README: Forgetting a person)."""

    def setup(self, statements: Sequence[str | AddColumn] = ()) -> None:
        """Create the tracking and dead-letter tables and a projection's tables
        (``CREATE ... IF NOT EXISTS`` statements, and :class:`AddColumn` upgrades),
        in one transaction (nothing on a read-only view)."""
        if self.read_only:
            return
        with self.transaction() as cur:
            self._serialise_setup(cur)
            cur.execute(_TRACKING_DDL)
            if "transaction_id" not in self._columns(cur, TRACKING_TABLE):
                cur.execute(_TRACKING_UPGRADE)
            cur.execute(_DEAD_LETTERS_DDL)
            for statement in statements:
                if not isinstance(statement, AddColumn):
                    cur.execute(statement)
                elif statement.column not in self._columns(cur, statement.table):
                    cur.execute(statement.statement)

    @abstractmethod
    def _columns(self, cur: ViewCursor, table: str) -> set[str]:
        """The column names of ``table``."""

    @abstractmethod
    def _serialise_setup(self, cur: ViewCursor) -> None:
        """Hold off other processes' table creation until this transaction ends."""

    def position(self, projection: str) -> Position:
        """Where the projection stands: its last event's position (START: none yet)."""
        with self.reading() as cur:
            cur.execute(
                f"SELECT transaction_id, notification_id FROM {TRACKING_TABLE} "
                "WHERE projection=?",
                (projection,),
            )
            row = cur.fetchone()
        return START if row is None else Position(int(row[0]), int(row[1]))

    def positions(self, prefix: str) -> dict[str, Position]:
        """Every tracked projection whose name starts with ``prefix``."""
        with self.reading() as cur:
            cur.execute(
                f"SELECT projection, transaction_id, notification_id FROM {TRACKING_TABLE} "
                "WHERE substr(projection, 1, ?) = ?",
                (len(prefix), prefix),
            )
            rows = cur.fetchall()
        return {str(row[0]): Position(int(row[1]), int(row[2])) for row in rows}

    def processed(self, projection: str) -> int:
        """How many events the projection has processed in all."""
        with self.reading() as cur:
            cur.execute(
                f"SELECT processed FROM {TRACKING_TABLE} WHERE projection=?", (projection,)
            )
            row = cur.fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def advance(
        cur: ViewCursor, projection: str, expected: Position, to: Position, count: int
    ) -> None:
        """Move the position from ``expected`` to ``to`` inside the view transaction.

        Raises :class:`PositionConflict` (so the transaction rolls back) if the
        stored position is not ``expected``: another worker got there first.
        """
        if expected == START:
            cur.execute(
                f"INSERT INTO {TRACKING_TABLE} "
                "(projection, notification_id, processed, transaction_id) "
                "VALUES (?, 0, 0, 0) ON CONFLICT (projection) DO NOTHING",
                (projection,),
            )
        cur.execute(
            f"UPDATE {TRACKING_TABLE} SET transaction_id=?, notification_id=?, "
            "processed=processed+? WHERE projection=? AND transaction_id=? "
            "AND notification_id=?",
            (*to, count, projection, *expected),
        )
        if cur.rowcount != 1:
            raise PositionConflict(
                f"projection {projection!r}: position moved away from {expected} "
                "(is another worker running it?)"
            )

    def has_table(self, name: str) -> bool:
        """Whether table ``name`` exists (in the view's schema, on PostgreSQL)."""
        with self.reading() as cur:
            cur.execute(self._count_tables, (name,))
            row = cur.fetchone()
        return bool(row and row[0])

    # Counts the tables named by its one parameter (1 or 0).
    _count_tables: str

    @abstractmethod
    def starts_with(self, columns: Sequence[str], prefix: str) -> tuple[str, list[Any]]:
        """A condition (and its parameters) true where one of the text ``columns``
        starts with ``prefix`` (case as given), written so their indexes serve it."""

    def columns(self, table: str) -> set[str]:
        """The column names of ``table`` (empty if it does not exist)."""
        with self.reading() as cur:
            return self._columns(cur, table)

    @staticmethod
    def record_dead_letter(cur: ViewCursor, projection: str, letter: DeadLetter) -> None:
        """Keep a skipped event's coordinates and error (in the view transaction that
        moves the position past it)."""
        cur.execute(
            f"INSERT INTO {DEAD_LETTERS_TABLE} ({_DEAD_LETTER_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                projection, letter.notification_id, letter.agent_id, letter.version,
                letter.event_type, letter.error, letter.skipped_at,
            ),
        )  # fmt: skip

    def dead_letters(
        self, projection: str | None = None, agent_id: str | None = None
    ) -> list[DeadLetter]:
        """The events workers skipped, oldest first (of one projection or agent)."""
        where, params = [], []
        if projection is not None:
            where.append("projection = ?")
            params.append(projection)
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self.reading() as cur:
            cur.execute(
                f"SELECT {_DEAD_LETTER_COLUMNS} FROM {DEAD_LETTERS_TABLE}{clause} "
                "ORDER BY projection, notification_id",
                params,
            )
            return [DeadLetter(*row) for row in cur.fetchall()]


def read_dead_letters(
    url: str | None, *, projection: str | None = None, agent_id: str | None = None
) -> list[DeadLetter]:
    """The dead letters kept in the view database ``url`` (none if no worker has run
    there), without creating anything."""
    try:
        view = open_view(url, read_only=True)
    except NoSuchDatabase:
        return []
    try:
        if not view.has_table(DEAD_LETTERS_TABLE):
            return []
        return view.dead_letters(projection, agent_id)
    finally:
        view.close()


def dead_letter(
    projection: str, notification_id: int, agent_id: object, version: int, event_type: str,
    error: str,
) -> DeadLetter:  # fmt: skip
    """A :class:`DeadLetter` stamped now (UTC)."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return DeadLetter(projection, notification_id, str(agent_id), version, event_type, error, stamp)


class WorkerLock(ABC):
    """One projection's worker lock as a view database's backend keeps it (see
    :class:`~snaptail.projections.lock.ProjectionLock`, which holds one): freed by
    the operating system or the server when its process dies."""

    # Where the lock is, for messages ("": an in-memory view, nothing to lock).
    where = ""
    # Whether the lock lives in the view's connection: gone when it is replaced.
    in_session = False

    @abstractmethod
    def take(self) -> bool:
        """Take the lock if it is free: True if this process holds it now."""

    def still_held(self, cur: ViewCursor) -> bool:
        """Inside a view transaction of the lock's holder: whether it holds it still."""
        return True

    @abstractmethod
    def release(self) -> None:
        """Give the lock up (called only while it is held)."""

    @abstractmethod
    def holder(self) -> str | None:
        """Who holds the lock, without taking it (None: nobody, or it cannot be told)."""


class _ProcessLock(WorkerLock):
    """An in-memory SQLite view belongs to its process alone: nothing to lock."""

    def take(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def holder(self) -> str | None:
        return None


class _FileLock(WorkerLock):
    """An exclusive ``flock`` on ``<view file>.<projection>.lock`` (POSIX only)."""

    def __init__(self, view_path: str, projection: str) -> None:
        self.projection = projection
        # ("/" of a partition's name, "AgentStats[0/2]", is not for file names)
        self.where = f"{view_path}.{projection.replace('/', '_')}.lock"
        self._fd: int | None = None

    def take(self) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows: see snaptail.projections.lock's docstring
            raise RuntimeError(
                f"projection {self.projection!r}: a SQLite view needs POSIX file locks "
                "(fcntl); on Windows use a PostgreSQL view database (--view-db postgresql://...)"
            ) from None
        fd = os.open(self.where, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            import fcntl  # held: imported by take

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str | None:
        """The process holding the file's ``flock``, its pid read from ``/proc/locks``
        (Linux)."""
        try:
            inode = os.stat(self.where).st_ino
            with open("/proc/locks") as locks:
                lines = locks.read().splitlines()
        except OSError:
            return None
        for line in lines:
            parts = line.split()
            if "->" in parts:  # a waiter, not a holder
                continue
            if (
                len(parts) >= 6
                and parts[1] == "FLOCK"
                and parts[5].rsplit(":", 1)[-1] == str(inode)
            ):
                return f"process {parts[4]} (lock file {self.where})"
        return None


class SQLiteView(ViewDatabase):
    dialect = "sqlite"

    def __init__(self, url: str, path: str, read_only: bool = False) -> None:
        self.url = url
        self.path = path
        self.read_only = read_only
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            name = sqlite_files.read_only_name(self.path)
            return sqlite3.connect(
                name, uri=True, isolation_level=None, timeout=30, check_same_thread=False
            )
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in pages
        return conn

    def scrub(self) -> None:
        """Write the WAL back into the file and empty it: its older page images would
        keep the bytes of deleted rows (secure_delete zeroes them in the file)."""
        if self.path != ":memory:":
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def reconnect(self) -> None:
        if self.path != ":memory:":  # an in-memory view would be lost with it
            self._conn.close()
            self._conn = self._connect()

    def _serialise_setup(self, cur: ViewCursor) -> None:
        """``BEGIN IMMEDIATE`` already holds SQLite's write lock."""

    _count_tables = "SELECT count(*) FROM sqlite_master WHERE name = ?"

    def starts_with(self, columns: Sequence[str], prefix: str) -> tuple[str, list[Any]]:
        """As index ranges: SQLite's binary collation orders text by code point."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        clause = " OR ".join(f"({column} >= ? AND {column} < ?)" for column in columns)
        return clause, [prefix, upper] * len(columns)

    def worker_lock(self, projection: str) -> WorkerLock:
        if self.path == ":memory:":
            return _ProcessLock()
        return _FileLock(self.path, projection)

    @contextmanager
    def transaction(self) -> Iterator[ViewCursor]:
        cursor = self._conn.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield ViewCursor(cursor, self.dialect)
        except BaseException:
            self._conn.rollback()
            raise
        else:
            self._conn.commit()
        finally:
            cursor.close()

    def _columns(self, cur: ViewCursor, table: str) -> set[str]:
        cur.execute(f"PRAGMA table_info({table})")
        return {str(row[1]) for row in cur.fetchall()}

    @contextmanager
    def reading(self) -> Iterator[ViewCursor]:
        cursor = self._conn.cursor()
        cursor.execute("BEGIN")
        try:
            yield ViewCursor(cursor, self.dialect)
        finally:
            self._conn.rollback()
            cursor.close()

    def close(self) -> None:
        self._conn.close()


class PostgresView(ViewDatabase):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.sql import SQL, Identifier

        settings = parse_postgres_url(url)
        self.url = url
        self._conn = psycopg.connect(**settings.connect_args())
        self.schema = settings.schema
        with self._conn.transaction():
            found = self._conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchone()
            if found is None:  # a view database of its own, new
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (VIEW_SETUP_LOCK,))
                self._conn.execute(
                    SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(self.schema))
                )

    @property
    def broken(self) -> bool:
        return bool(self._conn.broken or self._conn.closed)

    def reconnect(self) -> None:
        import psycopg

        self._conn.close()
        self._conn = psycopg.connect(**parse_postgres_url(self.url).connect_args())

    def _serialise_setup(self, cur: ViewCursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(?)", (VIEW_SETUP_LOCK,))

    _count_tables = (
        "SELECT count(*) FROM pg_tables WHERE tablename = ? AND schemaname = current_schema()"
    )

    def starts_with(self, columns: Sequence[str], prefix: str) -> tuple[str, list[Any]]:
        """As LIKE: the database's collation may not order text by code point."""
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clause = " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in columns)
        return clause, [like] * len(columns)

    def worker_lock(self, projection: str) -> WorkerLock:
        return _AdvisoryLock(self, advisory_key(self.schema, projection))

    @contextmanager
    def transaction(self) -> Iterator[ViewCursor]:
        with self._conn.transaction(), self._conn.cursor() as cursor:
            # A view commit need not wait for its WAL flush: the batch and the
            # position it moves commit together, so a server crash can only lose
            # both, and the worker then applies that batch again. Exactly once holds;
            # a catch-up no longer waits for a disk flush per batch.
            cursor.execute("SET LOCAL synchronous_commit = off")
            yield ViewCursor(cursor, self.dialect)

    @contextmanager
    def reading(self) -> Iterator[ViewCursor]:
        with self._conn.transaction(), self._conn.cursor() as cursor:
            yield ViewCursor(cursor, self.dialect)

    def _columns(self, cur: ViewCursor, table: str) -> set[str]:
        cur.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ?",
            (self.schema, table),
        )
        return {str(row[0]) for row in cur.fetchall()}

    def close(self) -> None:
        self._conn.close()


class _AdvisoryLock(WorkerLock):
    """A session-level advisory lock held on the view's own connection: a batch
    commits on that connection, so only while the lock is held; a lost connection
    has lost it. A 64-bit key is split into ``classid``, ``objid``; ``objsubid`` 1."""

    in_session = True
    # A pg_locks row (as l) of the lock, granted: the key's halves are its parameters.
    _GRANTED = (
        "l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.classid::bigint = ? AND l.objid::bigint = ?"
    )

    def __init__(self, view: PostgresView, key: int) -> None:
        self._view = view
        self.key = key
        self.where = f"pg_advisory_lock({key})"
        self._halves = ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)

    def take(self) -> bool:
        with self._view.transaction() as cur:
            cur.execute("SELECT pg_try_advisory_lock(?)", (self.key,))
            row = cur.fetchone()
        return bool(row and row[0])

    def still_held(self, cur: ViewCursor) -> bool:
        cur.execute(
            f"SELECT count(*) FROM pg_locks l WHERE {self._GRANTED} "
            "AND l.pid = pg_backend_pid()",
            self._halves,
        )
        row = cur.fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        # Unlock: the view connection stays open for reading. A connection lost
        # meanwhile took the lock with it.
        if not self._view.broken:
            with contextlib.suppress(Exception), self._view.transaction() as cur:
                cur.execute("SELECT pg_advisory_unlock(?)", (self.key,))

    def holder(self) -> str | None:
        """The backend holding the lock: its pid, client address and application."""
        with self._view.reading() as cur:
            cur.execute(
                "SELECT l.pid, COALESCE(host(a.client_addr), 'local'), "
                "COALESCE(a.application_name, '') FROM pg_locks l "
                f"LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE {self._GRANTED}",
                self._halves,
            )
            row = cur.fetchone()
        if row is None:
            return None
        app = f" ({row[2]})" if row[2] else ""
        return f"PostgreSQL backend {row[0]} from {row[1]}{app}"


def open_view(url: str | None = None, read_only: bool = False) -> ViewDatabase:
    """Open the view database ``url`` names (same forms as the event database).
    ``read_only``: an existing SQLite file, opened without creating anything."""
    url = resolve_url(url)
    parsed = parse_sqlite_url(url)
    if parsed is not None:
        path, params = parsed
        if not path:
            raise ValueError(f"no file in SQLite URL {url!r}: use sqlite:///file.db")
        if read_only:
            sqlite_files.require_existing(path)
        else:
            mode = params.get("file_mode", sqlite_files.DEFAULT_FILE_MODE)
            sqlite_files.prepare(path, sqlite_files.file_mode(mode))
        try:
            return SQLiteView(url, path, read_only)
        except sqlite3.Error as exc:
            raise (sqlite_files.explain(path, exc) or exc) from exc
    if is_postgres_url(url):
        return PostgresView(url)
    raise ValueError(f"unsupported view database URL {url!r}")
