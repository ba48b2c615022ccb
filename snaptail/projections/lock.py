"""One worker per projection: a lock held for the worker's lifetime.

Each view database takes the lock its own way (:meth:`ViewDatabase.worker_lock
<snaptail.projections.view.ViewDatabase.worker_lock>`). PostgreSQL view: a
session-level ``pg_try_advisory_lock`` on a 64-bit hash of the schema and projection
name, held on the view's own connection: a batch commits on that connection, so it
commits only while the session (and the lock) is alive, and
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

from snaptail.errors import ProjectionBusy
from snaptail.infrastructure.recorder import advisory_key
from snaptail.projections.view import ViewCursor, ViewDatabase

__all__ = ["ProjectionLock", "advisory_key"]


class ProjectionLock:
    """Try-lock for one projection on one view database."""

    def __init__(self, view: ViewDatabase, projection: str) -> None:
        self.projection = projection
        self._lock = view.worker_lock(projection)
        self.held = False
        self.where = self._lock.where

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this worker holds it now."""
        if not self.held:
            self.held = self._lock.take()
        return self.held

    def check(self, cur: ViewCursor) -> None:
        """Inside a view transaction: raise :class:`ProjectionBusy` unless this worker
        still holds the lock (so the transaction rolls back)."""
        if self.held:
            self.held = self._lock.still_held(cur)
        if not self.held:
            raise ProjectionBusy(
                f"projection {self.projection!r}: this worker does not hold its lock "
                f"({self.where or 'in-memory view'}); another worker may run it"
            )

    def lost(self) -> None:
        """The view's connection was replaced: a lock kept in its session went with it."""
        if self._lock.in_session:
            self.held = False

    def holder(self) -> str | None:
        """Who holds the lock (this worker or another), without taking it."""
        return self._lock.holder()

    def release(self) -> None:
        if self.held:
            self._lock.release()
        self.held = False
