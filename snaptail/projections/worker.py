"""The projection worker: catch up in batches, then follow new events.

Each batch (``batch_size`` notifications read with one query) is applied in ONE
view transaction that also moves the projection's position to the batch's last
notification id. A crash at any moment leaves the view at a batch boundary, and
a restart continues from there: effects happen exactly once.

New events are noticed by polling ``max(notification id)`` every
``poll_interval`` seconds; on SQLite a writer in the same process wakes the worker
at once, on PostgreSQL the recorder's NOTIFY does (LISTEN on a dedicated
connection).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from snaptail.infrastructure.backends import open_recorder
from snaptail.infrastructure.recorder import AgentRecorder
from snaptail.infrastructure.sqlite import SQLiteAgentRecorder
from snaptail.infrastructure.subscription import (
    DEFAULT_POLL_INTERVAL,
    CommitSignal,
    commit_signal,
)
from snaptail.infrastructure.urls import resolve_url
from snaptail.projections.base import Projection
from snaptail.projections.lock import ProjectionLock
from snaptail.projections.view import PositionConflict, ViewDatabase, open_view

logger = logging.getLogger("snaptail.projections")

DEFAULT_BATCH_SIZE = 1000


class _Waiter:
    """Blocks until new events may have been recorded, or ``timeout`` passes."""

    def mark(self) -> int:
        return 0

    def wait(self, mark: int, timeout: float) -> None:
        threading.Event().wait(timeout)

    def close(self) -> None:
        pass


class _SQLiteWaiter(_Waiter):
    def __init__(self, signal: CommitSignal) -> None:
        self._signal = signal

    def mark(self) -> int:
        return self._signal.generation

    def wait(self, mark: int, timeout: float) -> None:
        self._signal.wait(mark, timeout)


class _PostgresWaiter(_Waiter):
    def __init__(self, url: str, channel: str) -> None:
        import psycopg
        from psycopg.sql import SQL, Identifier

        from snaptail.infrastructure.urls import postgres_connect_args

        self._conn = psycopg.connect(**postgres_connect_args(url), autocommit=True)
        self._conn.execute(SQL("LISTEN {}").format(Identifier(channel)))

    def wait(self, mark: int, timeout: float) -> None:
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            pass

    def close(self) -> None:
        self._conn.close()


def _waiter_for(recorder: AgentRecorder, url: str) -> _Waiter:
    if isinstance(recorder, SQLiteAgentRecorder):
        return _SQLiteWaiter(commit_signal(recorder.datastore.pool.db_name))
    channel = getattr(recorder, "channel_name", None)
    if channel and url.startswith(("postgresql://", "postgres://")):
        return _PostgresWaiter(url, channel)
    return _Waiter()


class _SQLiteReader:
    """Reads a batch of notifications from SQLite, converting each agent id string to
    a UUID once (``eventsourcing``'s reader builds a new UUID per row: a quarter of
    a catch-up's time)."""

    def __init__(self, recorder: SQLiteAgentRecorder) -> None:
        self._recorder = recorder
        self._statement = (
            f"SELECT rowid, originator_id, originator_version, topic, state "
            f"FROM {recorder.events_table_name} WHERE rowid > ? ORDER BY rowid LIMIT ?"
        )
        self._ids: dict[str, UUID] = {}

    def __call__(self, after: int, limit: int) -> list[Notification]:
        ids = self._ids
        if len(ids) > 100_000:
            ids.clear()
        with self._recorder.datastore.transaction(commit=False) as c:
            c.execute(self._statement, (after, limit))
            rows = c.fetchall()
        batch = []
        for row in rows:
            key = row[1]
            agent_id = ids.get(key)
            if agent_id is None:
                agent_id = ids[key] = UUID(key)
            batch.append(Notification(agent_id, row[2], row[3], row[4], row[0]))
        return batch


class ProjectionWorker:
    """Runs one projection from the event database ``db`` into ``view_db``.

    ``view_db`` defaults to ``db`` (the view tables then sit beside the events).
    Use :meth:`catch_up` for a one-off update, :meth:`run` for a long-lived worker.
    """

    def __init__(
        self,
        projection: Projection | type[Projection],
        db: str | None = None,
        view_db: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        recorder: AgentRecorder | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        self.projection = projection() if isinstance(projection, type) else projection
        self.name = self.projection.name
        self.db_url = resolve_url(db)
        self.view_url = resolve_url(view_db) if view_db else self.db_url
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._own_recorder = recorder is None
        self.recorder: AgentRecorder = recorder or open_recorder(self.db_url)
        self.view: ViewDatabase = open_view(self.view_url)
        self.view.setup(self.projection.tables)
        self.lock = ProjectionLock(self.view, self.name)
        self.position = self.view.position(self.name)
        self._waiter = _waiter_for(self.recorder, self.db_url)
        self._read: Callable[[int, int], list[Notification]] = (
            _SQLiteReader(self.recorder)
            if isinstance(self.recorder, SQLiteAgentRecorder)
            else self._select_notifications
        )

    def _select_notifications(self, after: int, limit: int) -> list[Notification]:
        return list(
            self.recorder.select_notifications(
                start=after, limit=limit, inclusive_of_start=False
            )
        )

    # -- one batch --------------------------------------------------------------------

    def head(self) -> int:
        """The newest notification id in the event database (0 if none)."""
        return self.recorder.max_notification_id() or 0

    def step(self) -> int:
        """Apply the next batch; returns how many events it held (0: none new)."""
        batch = self._read(self.position, self.batch_size)
        if not batch:
            return 0
        try:
            with self.view.transaction() as cur:
                self.projection.process(cur, batch)
                ViewDatabase.advance(cur, self.name, self.position, batch[-1].id, len(batch))
        except PositionConflict as exc:
            logger.warning("%s; continuing from the stored position", exc)
            self.position = self.view.position(self.name)
            return 0
        self.position = batch[-1].id
        return len(batch)

    # -- running ------------------------------------------------------------------------

    def catch_up(
        self,
        stop: threading.Event | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Apply batches until no new event is left (or ``stop`` is set); returns the
        number of events applied."""
        total = 0
        while stop is None or not stop.is_set():
            applied = self.step()
            if applied == 0 and self.position >= self.head():
                break
            total += applied
            if on_batch is not None and applied:
                on_batch(applied)
        return total

    def follow(
        self, stop: threading.Event, on_batch: Callable[[int], None] | None = None
    ) -> None:
        """Apply new events as they are recorded, until ``stop`` is set. The batch in
        hand is always finished (committed) before returning."""
        while not stop.is_set():
            mark = self._waiter.mark()
            applied = self.step()
            if applied:
                if on_batch is not None:
                    on_batch(applied)
                continue
            self._waiter.wait(mark, self.poll_interval)

    def acquire(
        self,
        stop: threading.Event,
        retry: float = 1.0,
        on_standby: Callable[[str], None] | None = None,
    ) -> bool:
        """Take the projection's lock, waiting (as a standby) while another worker
        holds it. Returns False if ``stop`` was set first."""
        announced = False
        while not stop.is_set():
            if self.lock.try_acquire():
                self.position = self.view.position(self.name)
                return True
            if not announced:
                message = (
                    f"standby: another worker runs projection {self.name!r} "
                    f"({self.lock.where}); retrying every {retry:g}s"
                )
                logger.warning(message)
                if on_standby is not None:
                    on_standby(message)
                announced = True
            stop.wait(retry)
        return False

    def run(
        self,
        stop: threading.Event,
        *,
        follow: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Lock, catch up, then follow until ``stop`` is set."""
        if not self.acquire(stop):
            return
        self.catch_up(stop, on_batch)
        if follow:
            self.follow(stop, on_batch)

    def close(self) -> None:
        self.lock.release()
        self._waiter.close()
        self.view.close()
        if self._own_recorder:
            close: Any = getattr(self.recorder, "close", None) or getattr(
                getattr(self.recorder, "datastore", None), "close", None
            )
            if close is not None:
                close()

    def __enter__(self) -> ProjectionWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
