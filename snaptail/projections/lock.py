"""One worker per projection: a lock held for the worker's lifetime.

PostgreSQL view: a session-level ``pg_try_advisory_lock`` on a 64-bit hash of the
schema and projection name, held on the view's own connection: a batch commits on
that connection, so it commits only while the session (and the lock) is alive, and
:meth:`ProjectionLock.check` also asks ``pg_locks`` inside the batch transaction.
A worker whose connection is lost has lost its lock: it re-acquires it or stands by.
SQLite view: an exclusive ``flock`` on ``<view file>.<projection>.lock``. Both are
released by the operating system or the server when the process dies, even by
SIGKILL, so a standby worker takes over. The position check in the view transaction
(:meth:`~snaptail.projections.view.ViewDatabase.advance`) is a second fence.

Platform limit: the SQLite view's lock is ``fcntl.flock``, POSIX only (Linux, macOS);
on Windows keep views in PostgreSQL (``--view-db postgresql://...``).
"""

from __future__ import annotations

import contextlib
import os

from snaptail.errors import ProjectionBusy
from snaptail.infrastructure.recorder import advisory_key
from snaptail.projections.view import (
    PostgresView,
    SQLiteView,
    ViewCursor,
    ViewDatabase,
)

__all__ = ["ProjectionLock", "advisory_key"]


class ProjectionLock:
    """Try-lock for one projection on one view database."""

    def __init__(self, view: ViewDatabase, projection: str) -> None:
        self.projection = projection
        self._view = view
        self._fd: int | None = None
        self.held = False
        self.where = ""
        self.key = 0
        if isinstance(view, SQLiteView) and view.path != ":memory:":
            # ("/" of a partition's name, "AgentStats[0/2]", is not for file names)
            self.where = f"{view.path}.{projection.replace('/', '_')}.lock"
        elif isinstance(view, PostgresView):
            self.key = advisory_key(view.schema, projection)
            self.where = f"pg_advisory_lock({self.key})"

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this worker holds it now."""
        if self.held:
            return True
        if isinstance(self._view, PostgresView):
            self.held = self._view.try_lock(self.key)
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
        fd = os.open(self.where, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def check(self, cur: ViewCursor) -> None:
        """Inside a view transaction: raise :class:`ProjectionBusy` unless this worker
        still holds the lock (so the transaction rolls back)."""
        if self.held and isinstance(self._view, PostgresView):
            self.held = PostgresView.holds_lock(cur, self.key)
        if not self.held:
            raise ProjectionBusy(
                f"projection {self.projection!r}: this worker does not hold its lock "
                f"({self.where or 'in-memory view'}); another worker may run it"
            )

    def lost(self) -> None:
        """The view's connection was replaced: a PostgreSQL lock went with it."""
        if isinstance(self._view, PostgresView):
            self.held = False

    def release(self) -> None:
        if self._fd is not None:
            import fcntl  # held: imported by _try_file

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self.held and isinstance(self._view, PostgresView) and not self._view.broken:
            # Unlock: the view connection stays open for reading. A connection lost
            # meanwhile took the lock with it.
            with contextlib.suppress(Exception):
                self._view.unlock(self.key)
        self.held = False
