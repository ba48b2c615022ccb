"""One worker per projection: a lock held for the worker's lifetime.

PostgreSQL view: a session-level ``pg_try_advisory_lock`` on a 64-bit hash of the
schema and projection name, held on a dedicated connection. SQLite view: an
exclusive ``flock`` on ``<view file>.<projection>.lock``. Both are released by the
operating system or the server when the process dies, even by SIGKILL, so a
standby worker takes over. The position check in the view transaction
(:meth:`~snaptail.projections.view.ViewDatabase.advance`) is a second fence.

Platform limit: the SQLite view's lock is ``fcntl.flock``, POSIX only (Linux, macOS);
on Windows keep views in PostgreSQL (``--view-db postgresql://...``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

from snaptail.infrastructure.urls import postgres_connect_args
from snaptail.projections.view import PostgresView, SQLiteView, ViewDatabase


class ProjectionLock:
    """Try-lock for one projection on one view database."""

    def __init__(self, view: ViewDatabase, projection: str) -> None:
        self.projection = projection
        self._view = view
        self._fd: int | None = None
        self._conn: Any = None
        self.held = False
        self.where = ""
        if isinstance(view, SQLiteView) and view.path != ":memory:":
            self.where = f"{view.path}.{projection}.lock"
        elif isinstance(view, PostgresView):
            self.key = advisory_key(view.schema, projection)
            self.where = f"pg_advisory_lock({self.key})"

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this worker holds it now."""
        if self.held:
            return True
        if isinstance(self._view, PostgresView):
            self.held = self._try_postgres()
        elif self.where:
            self.held = self._try_file()
        else:  # an in-memory view belongs to this process alone
            self.held = True
        return self.held

    def _try_file(self) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows: see the module's docstring
            raise RuntimeError(
                f"projection {self.projection!r}: a SQLite view needs POSIX file locks "
                "(fcntl); on Windows use a PostgreSQL view database (--view-db postgresql://...)"
            ) from None
        fd = os.open(self.where, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _try_postgres(self) -> bool:
        import psycopg

        if self._conn is None:
            self._conn = psycopg.connect(**postgres_connect_args(self._view.url), autocommit=True)
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        if self._fd is not None:
            import fcntl  # held: imported by _try_file

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            # Unlock first: closing alone frees the lock only when the server notices.
            with contextlib.suppress(Exception):
                if self.held:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self._conn.close()
            self._conn = None
        self.held = False


def advisory_key(schema: str, projection: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock`` naming this projection in this schema."""
    digest = hashlib.blake2b(f"snaptail/{schema}/{projection}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
