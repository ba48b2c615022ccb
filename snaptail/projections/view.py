"""Where a projection's view lives: a SQLite file or a PostgreSQL schema.

A :class:`ViewDatabase` hands out write transactions (:meth:`ViewDatabase.transaction`)
whose cursor takes ``?`` placeholders on both backends, and keeps each projection's
position (the last notification id it processed) in ``snaptail_projection_tracking``,
written in the same transaction as the view update: exactly-once effects.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from snaptail.infrastructure.urls import (
    is_postgres_url,
    parse_postgres_url,
    resolve_url,
    sqlite_path,
)

TRACKING_TABLE = "snaptail_projection_tracking"
_TRACKING_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} ("
    "projection TEXT PRIMARY KEY, notification_id BIGINT NOT NULL, "
    "processed BIGINT NOT NULL)"
)


class PositionConflict(RuntimeError):
    """Another worker advanced the projection's position first: the batch is undone."""


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

    def setup(self, statements: Sequence[str] = ()) -> None:
        """Create the tracking table and a projection's tables (``CREATE ... IF NOT
        EXISTS`` statements), in one transaction."""
        with self.transaction() as cur:
            cur.execute(_TRACKING_DDL)
            for statement in statements:
                cur.execute(statement)

    def position(self, projection: str) -> int:
        """The last notification id the projection processed (0: none yet)."""
        with self.reading() as cur:
            cur.execute(
                f"SELECT notification_id FROM {TRACKING_TABLE} WHERE projection=?",
                (projection,),
            )
            row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def processed(self, projection: str) -> int:
        """How many events the projection has processed in all."""
        with self.reading() as cur:
            cur.execute(
                f"SELECT processed FROM {TRACKING_TABLE} WHERE projection=?", (projection,)
            )
            row = cur.fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def advance(cur: ViewCursor, projection: str, expected: int, to: int, count: int) -> None:
        """Move the position from ``expected`` to ``to`` inside the view transaction.

        Raises :class:`PositionConflict` (so the transaction rolls back) if the
        stored position is not ``expected``: another worker got there first.
        """
        if expected == 0:
            cur.execute(
                f"INSERT INTO {TRACKING_TABLE} (projection, notification_id, processed) "
                "VALUES (?, 0, 0) ON CONFLICT (projection) DO NOTHING",
                (projection,),
            )
        cur.execute(
            f"UPDATE {TRACKING_TABLE} SET notification_id=?, processed=processed+? "
            "WHERE projection=? AND notification_id=?",
            (to, count, projection, expected),
        )
        if cur.rowcount != 1:
            raise PositionConflict(
                f"projection {projection!r}: position moved away from {expected} "
                "(is another worker running it?)"
            )


class SQLiteView(ViewDatabase):
    dialect = "sqlite"

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = path
        self._conn = sqlite3.connect(
            path, isolation_level=None, timeout=30, check_same_thread=False
        )
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")

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
                self._conn.execute(
                    SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(self.schema))
                )

    @contextmanager
    def transaction(self) -> Iterator[ViewCursor]:
        with self._conn.transaction(), self._conn.cursor() as cursor:
            yield ViewCursor(cursor, self.dialect)

    @contextmanager
    def reading(self) -> Iterator[ViewCursor]:
        with self._conn.transaction(), self._conn.cursor() as cursor:
            yield ViewCursor(cursor, self.dialect)

    def close(self) -> None:
        self._conn.close()


def open_view(url: str | None = None) -> ViewDatabase:
    """Open the view database ``url`` names (same forms as the event database)."""
    url = resolve_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not path:
            raise ValueError(f"no file in SQLite URL {url!r}: use sqlite:///file.db")
        return SQLiteView(url, path)
    if is_postgres_url(url):
        return PostgresView(url)
    raise ValueError(f"unsupported view database URL {url!r}")
