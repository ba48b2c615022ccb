"""The projection worker: catch up in batches, then follow new events.

Each batch (``batch_size`` notifications read with one query) is applied in ONE
view transaction that also moves the projection's position to the batch's last
event. A crash at any moment leaves the view at a batch boundary, and a restart
continues from there: effects happen exactly once.

Events are read in position order (:class:`~snaptail.infrastructure.recorder.Position`):
on SQLite by rowid (writers are serialised, so rowids commit in order); on PostgreSQL
by (transaction id, notification id), only from transactions older than the oldest
one still running, so a transaction that commits late is never passed over.

New events are noticed by polling ``max(notification id)`` every
``poll_interval`` seconds; on SQLite a writer in the same process wakes the worker
at once, on PostgreSQL the recorder's NOTIFY does (LISTEN on a dedicated
connection).

Faults. Every batch commits only while the worker holds the projection's lock
(checked in the batch's transaction). A lost connection (events, view, LISTEN) is
re-opened with exponential backoff, each attempt logged, and the worker catches up;
after ``give_up_after`` seconds without success it raises :class:`WorkerGaveUp`. The
view's connection carries the PostgreSQL lock: once it is replaced, the worker takes
the lock again or, if another worker took it meanwhile, stands by. A projection that
raises makes the worker retry the batch one event at a time, commit every event
before the failing one and raise :class:`ProjectionFailed` naming it (or, with
``skip_failed``, record it as a dead letter and go on).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from snaptail.application.retry import RetryPolicy, is_retryable
from snaptail.application.store import AgentStore
from snaptail.archive.reader import ArchivedThenHot
from snaptail.errors import (
    InvalidArgument,
    ProjectionBusy,
    ProjectionFailed,
    WorkerGaveUp,
)
from snaptail.infrastructure.recorder import (
    Partition,
    Position,
    PositionedNotification,
)
from snaptail.infrastructure.subscription import (
    DEFAULT_POLL_INTERVAL,
)
from snaptail.infrastructure.urls import is_postgres_url, resolve_url
from snaptail.privacy.cipher import PayloadCipher
from snaptail.privacy.keys import KeyStore, KeyWrapper, open_key_store
from snaptail.projections.base import Projection, event_name
from snaptail.projections.erasure import ErasureFeed, opening_reader
from snaptail.projections.lock import ProjectionLock
from snaptail.projections.view import (
    TRACKING_TABLE,
    PositionConflict,
    ViewDatabase,
    dead_letter,
    open_view,
)

logger = logging.getLogger("snaptail.projections")

DEFAULT_BATCH_SIZE = 1000
DEFAULT_GIVE_UP_AFTER = 60.0
FIRST_RETRY = 0.1  # seconds before the first reconnect attempt; doubles up to MAX_RETRY
MAX_RETRY = 5.0
LOCK_CHECK_INTERVAL = 1.0  # an idle worker checks it still holds its lock this often
HELD_BACK_WARNING = 10.0  # catch_up logs a warning this often while events are held back

T = TypeVar("T")


class _ConnectionLost(Exception):
    """A connection of the worker's failed; ``link`` says which."""

    def __init__(self, link: str, cause: BaseException) -> None:
        super().__init__(f"{link}: {type(cause).__name__}: {cause}")
        self.link, self.cause = link, cause


class _Stopped(Exception):
    """``stop`` was set while the worker waited to reconnect."""


def _pool_options(url: str, give_up_after: float) -> dict[str, Any]:
    """A worker's own PostgreSQL pool waits at most a few seconds for a connection, so
    each reconnect attempt ends in time for ``give_up_after`` (and for SIGTERM)."""
    if is_postgres_url(url):
        return {"pool_timeout": min(MAX_RETRY, give_up_after)}
    return {}


def partitioned_name(projection: str, partition: Partition | None) -> str:
    """The name a partition's position, lock and dead letters are kept under:
    ``"AgentStats[0/2]"`` (the projection's own name when unpartitioned)."""
    return projection if partition is None else f"{projection}[{partition}]"


def stored_partitions(view: ViewDatabase, projection: str) -> int | None:
    """How many slices the view's positions for ``projection`` were made with (1:
    unpartitioned; None: the projection has not run yet)."""
    found: int | None = None
    for name, position in view.positions(projection).items():
        if position.notification_id == 0:
            continue
        if name == projection:
            found = 1
        elif name.startswith(f"{projection}[") and name.endswith("]"):
            found = int(name[len(projection) + 1 : -1].partition("/")[2])
    return found


def check_partitioning(view: ViewDatabase, projection: str, partition: Partition | None) -> None:
    """Refuse to run a projection split differently from the positions its view
    keeps: each split's positions are only valid for that split.

    Raises :class:`~snaptail.InvalidArgument` (a ``ValueError``) naming the stored
    split and what to do.
    """
    stored = stored_partitions(view, projection)
    wanted = 1 if partition is None else partition.count
    if stored is not None and stored != wanted:
        have = "unpartitioned" if stored == 1 else f"with --partitions {stored}"
        raise InvalidArgument(
            "--partitions",
            f"projection {projection!r} was built {have}, so it cannot run with"
            f" --partitions {wanted} (its positions belong to the split it was built"
            f" with): run it with --partitions {stored}, or rebuild the view in a new view"
            f" database (--view-db) or after deleting its tables and its rows in"
            f" {TRACKING_TABLE}",
        )


class ProjectionWorker:
    """Runs one projection from the event database ``db`` into ``view_db``.

    ``view_db`` defaults to ``db`` (the view tables then sit beside the events).
    Use :meth:`catch_up` for a one-off update, :meth:`run` for a long-lived worker;
    both hold the projection's lock while they apply events. ``keys`` (default
    ``$SNAPTAIL_KEYS_URL``) is the key store of agents with data subjects: their
    events reach the projection decrypted, and erasures call
    :meth:`Projection.forget` (README: "Forgetting a person"). The event database is
    read through an :class:`~snaptail.AgentStore` (``store``: the worker opens its own
    on ``db`` if none is given, and closes only its own).
    """

    def __init__(
        self,
        projection: Projection | type[Projection],
        db: str | None = None,
        view_db: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        give_up_after: float = DEFAULT_GIVE_UP_AFTER,
        skip_failed: bool = False,
        store: AgentStore | None = None,
        partition: Partition | None = None,
        keys: KeyStore | str | None = None,
        master_key: KeyWrapper | bytes | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        if not give_up_after > 0:
            raise ValueError(f"give_up_after must be > 0 seconds, got {give_up_after}")
        self.projection = projection() if isinstance(projection, type) else projection
        if partition is not None and partition.count == 1:
            partition = None
        if partition is not None and not self.projection.partitionable:
            raise ValueError(
                f"projection {self.projection.name!r} is not partitionable (its class "
                "does not set partitionable = True): run it without --partitions"
            )
        self.partition = partition
        # Position, lock and dead letters are kept per partition.
        self.name = partitioned_name(self.projection.name, partition)
        self.db_url = resolve_url(db)
        self.view_url = resolve_url(view_db) if view_db else self.db_url
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.give_up_after = give_up_after
        self.skip_failed = skip_failed
        self.keys = open_key_store(keys, master_key)
        self._own_keys = keys is None or isinstance(keys, str)  # opened here: closed here
        # The event database, read through a store of the worker's own (no retries
        # inside it: a lost connection goes to the worker's reconnect loop at once).
        self._own_store = store is None
        self.store: AgentStore = store or AgentStore(
            self.db_url, retry=RetryPolicy(attempts=1), keys=self.keys,
            **_pool_options(self.db_url, give_up_after),
        )  # fmt: skip
        self.view: ViewDatabase = open_view(self.view_url)
        self.view.setup(self.projection.tables)
        check_partitioning(self.view, self.projection.name, partition)
        self.lock = ProjectionLock(self.view, self.name)
        self.position = self.view.position(self.name)
        self._waiter = self.store.new_events_waiter()
        if partition is not None:  # read only this slice's rows (an index, where built)
            self.store.prepare_partitions(partition.count)
        self._read: Callable[[Position, int], list[PositionedNotification]] = functools.partial(
            self.store.events_after, partition=partition
        )
        self._read = ArchivedThenHot(self.store.archive_reader, self._read, partition)
        cipher = None if self.keys is None else PayloadCipher(self.keys)
        self._read = opening_reader(self._read, cipher)
        self._erasures = None if self.keys is None else ErasureFeed(self.keys, self.name)
        if self._erasures is not None:
            self._erasures.setup(self.view)

    # -- connections -----------------------------------------------------------------

    def _events(self, action: Callable[[], T]) -> T:
        """Run a read of the event database; a lost connection is :class:`_ConnectionLost`."""
        try:
            return action()
        except Exception as exc:
            if is_retryable(exc):
                raise _ConnectionLost("event database", exc) from exc
            raise

    def _on_view(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except Exception as exc:
            if self.view.broken or (
                isinstance(exc, sqlite3.OperationalError) and is_retryable(exc)
            ):
                raise _ConnectionLost("view database", exc) from exc
            raise

    def _resilient(self, stop: threading.Event, action: Callable[[], T]) -> T:
        """``action()``, reconnecting (see :meth:`_recover`) as often as it loses a
        connection."""
        while True:
            try:
                return action()
            except _ConnectionLost as lost:
                self._recover(lost, stop)

    def _recover(self, lost: _ConnectionLost, stop: threading.Event) -> None:
        """Re-open what was lost, backing off exponentially, until everything answers
        (then re-take the lock if it went with the view's connection) or
        ``give_up_after`` seconds pass (:class:`WorkerGaveUp`)."""
        policy = RetryPolicy(
            attempts=sys.maxsize, backoff=FIRST_RETRY, max_backoff=MAX_RETRY,
            deadline=self.give_up_after,
        )  # fmt: skip
        waits = policy.waits()
        attempt, error = 0, lost.cause
        relock = self.lock.held
        logger.warning(
            "projection %r lost its %s connection (%s: %s); reconnecting, giving up "
            "after %gs", self.name, lost.link, type(error).__name__, error,
            self.give_up_after,
        )  # fmt: skip
        while True:
            wait = next(waits)
            if wait is None:
                message = (
                    f"projection {self.name!r}: lost its {lost.link} connection and could "
                    f"not restore it within {self.give_up_after:g}s ({attempt} attempts); "
                    f"last error: {type(error).__name__}: {error}"
                )
                raise WorkerGaveUp(message) from error
            attempt += 1
            logger.warning("projection %r: reconnect attempt %d in %.1fs", self.name, attempt, wait)
            if stop.wait(wait):
                raise _Stopped
            try:
                locked = self._reconnect(relock)
            except Exception as exc:
                if not isinstance(exc, _ConnectionLost) and not (
                    is_retryable(exc) or self.view.broken
                ):
                    raise
                error = exc.cause if isinstance(exc, _ConnectionLost) else exc
                logger.warning(
                    "projection %r: reconnect attempt %d failed: %s: %s",
                    self.name, attempt, type(error).__name__, error,
                )  # fmt: skip
                continue
            logger.warning("projection %r: reconnected (attempt %d)", self.name, attempt)
            if not locked:
                raise ProjectionBusy(
                    f"projection {self.name!r}: lost its lock with its view connection "
                    f"and another worker holds it now ({self.lock.where})"
                )
            return

    def _reconnect(self, relock: bool) -> bool:
        """Replace broken connections and check each answers; take the lock again if
        ``relock`` and it went with the view's connection. False if another worker
        holds it now."""
        if self.view.broken:
            self.view.reconnect()
            self.lock.lost()
        with self.view.reading() as cur:
            cur.execute("SELECT 1")
        if self._waiter.broken:
            self._waiter.reconnect()
        self.head()
        if relock and not self.lock.held:
            if not self.lock.try_acquire():
                return False
            logger.warning("projection %r: lock taken again", self.name)
            self.position = self.view.position(self.name)
        return True

    # -- one batch --------------------------------------------------------------------

    def head(self) -> int:
        """The newest notification id in the event database (0 if none)."""
        return self._events(self.store.newest_position)

    def step(self) -> int:
        """Apply the next batch (the caller holds the lock, as :meth:`catch_up` and
        :meth:`run` do); returns how many events the position moved over (0: none new).

        If the projection raises, the batch is applied again one event at a time:
        every event before the failing one is committed, then :class:`ProjectionFailed`
        is raised (or, with ``skip_failed``, the event is recorded as a dead letter).
        """
        self._apply_erasures()
        batch = self._events(lambda: self._read(self.position, self.batch_size))
        if not batch:
            return 0
        start = self.position
        try:
            try:
                self._commit(batch)
                self.position = batch[-1].position
            except (PositionConflict, ProjectionBusy, _ConnectionLost):
                raise
            except Exception:
                self._one_at_a_time(batch)
        except PositionConflict as exc:
            logger.warning("%s; continuing from the stored position", exc)
            self.position = self._on_view(lambda: self.view.position(self.name))
            return 0
        return sum(1 for n in batch if start < n.position <= self.position)

    def _apply_erasures(self, force: bool = False) -> None:
        """Apply new erasure records (see snaptail.projections.erasure)."""
        feed = self._erasures
        if feed is not None:
            self._on_view(lambda: feed.apply(self.view, self.projection, self.lock, force))

    def _commit(self, batch: Sequence[PositionedNotification], skipped: str | None = None) -> None:
        """One view transaction: check the lock, apply ``batch`` (or record its one
        event as a dead letter, ``skipped`` being the error) and move the position."""
        last = batch[-1]

        def commit() -> None:
            with self.view.transaction() as cur:
                self.lock.check(cur)
                if skipped is None:
                    self.projection.process(cur, batch)
                else:
                    letter = dead_letter(
                        self.name, last.id, last.originator_id, last.originator_version,
                        event_name(last.topic), skipped,
                    )  # fmt: skip
                    ViewDatabase.record_dead_letter(cur, self.name, letter)
                count = 0 if skipped is not None else len(batch)
                ViewDatabase.advance(cur, self.name, self.position, last.position, count)

        self._on_view(commit)

    def _one_at_a_time(self, batch: Sequence[PositionedNotification]) -> None:
        for n in batch:
            try:
                self._commit([n])
            except (PositionConflict, ProjectionBusy, _ConnectionLost):
                raise
            except Exception as exc:
                self._failed(n, exc)
            self.position = n.position

    def _failed(self, n: PositionedNotification, exc: Exception) -> None:
        failure = ProjectionFailed(
            self.name, n.id, n.originator_id, n.originator_version, event_name(n.topic), exc
        )
        if not self.skip_failed:
            raise failure from exc
        self._commit([n], skipped=failure.error)
        logger.warning("skipped: %s; recorded as a dead letter", failure)

    # -- running ------------------------------------------------------------------------

    def catch_up(
        self,
        stop: threading.Event | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Apply batches until every event saved before the call is applied and no
        new event is left (or ``stop`` is set); returns the number of events applied.
        Takes the projection's lock for the duration unless this worker holds it
        already; raises :class:`ProjectionBusy` if another worker holds it.

        On PostgreSQL, events of transactions younger than the oldest transaction
        still running are not read yet (it could still commit events before them):
        catch_up waits for such a transaction to end, logging a warning every
        ``HELD_BACK_WARNING`` seconds, rather than return before those events."""
        stop = stop or threading.Event()
        took = False
        total = 0
        upto = self._resilient(stop, self.head)
        waiting_since: float | None = None
        try:
            if not self.lock.held:
                if not self._resilient(stop, lambda: self._on_view(self.lock.try_acquire)):
                    raise ProjectionBusy(
                        f"projection {self.name!r} is run by another worker "
                        f"({self.lock.where}): catch_up() leaves the view to it"
                    )
                took = True
                self.position = self._on_view(lambda: self.view.position(self.name))
            self._apply_erasures(force=True)
            while not stop.is_set():
                before = self.position
                moved = self._resilient(stop, self.step)
                if moved == 0 and self.position == before:
                    # nothing readable (a position conflict moves the position: go on)
                    if not self._resilient(stop, lambda: self._held_back(upto)):
                        break
                    waiting_since = self._wait_held_back(stop, upto, waiting_since)
                    continue
                waiting_since = None
                total += moved
                if on_batch is not None and moved:
                    on_batch(moved)
        except _Stopped:
            pass
        finally:
            if took:
                self.lock.release()
        return total

    def _held_back(self, upto: int) -> bool:
        position = self.position
        return self._events(lambda: self.store.events_held_back(position, upto))

    def _wait_held_back(self, stop: threading.Event, upto: int, since: float | None) -> float:
        """Sleep a little (longer the longer the wait, at most 0.25 s) while saved
        events are held back, with a warning each ``HELD_BACK_WARNING`` seconds of the
        wait. Returns when the wait began."""
        now = time.monotonic()
        since = now if since is None else since
        delay = min(0.25, max(0.01, (now - since) / 8))
        warnings = int((now - since) // HELD_BACK_WARNING)
        stop.wait(delay)
        after = time.monotonic() - since
        if int(after // HELD_BACK_WARNING) > warnings:
            logger.warning(
                "projection %r: events up to notification id %d are held back for %.0f s "
                "by a transaction that began before they were saved and is still running "
                "(PostgreSQL's oldest running transaction; see pg_stat_activity); "
                "catch_up waits for it",
                self.name,
                upto,
                after,
            )
        return since

    def follow(
        self, stop: threading.Event, on_batch: Callable[[int], None] | None = None
    ) -> None:
        """Apply new events as they are recorded, until ``stop`` is set. The batch in
        hand is always finished (committed) before returning. An idle worker checks
        every second that it still holds its lock (:class:`ProjectionBusy` if not)."""
        checked = time.monotonic()
        try:
            while not stop.is_set():
                mark = self._waiter.mark()
                applied = self._resilient(stop, self.step)
                if applied:
                    if on_batch is not None:
                        on_batch(applied)
                    continue
                if time.monotonic() - checked >= LOCK_CHECK_INTERVAL:
                    self._resilient(stop, self._check_lock)
                    checked = time.monotonic()
                self._resilient(stop, lambda m=mark: self._wait(m))  # type: ignore[misc]
        except _Stopped:
            pass

    def _check_lock(self) -> None:
        def check() -> None:
            with self.view.reading() as cur:
                self.lock.check(cur)

        self._on_view(check)

    def _wait(self, mark: int) -> None:
        try:
            self._waiter.wait(mark, self.poll_interval)
        except Exception as exc:
            if self._waiter.broken or is_retryable(exc):
                raise _ConnectionLost("LISTEN", exc) from exc
            raise

    def acquire(
        self,
        stop: threading.Event,
        retry: float = 1.0,
        on_standby: Callable[[str], None] | None = None,
    ) -> bool:
        """Take the projection's lock, waiting (as a standby) while another worker
        holds it. Returns False if ``stop`` was set first."""
        announced = False
        try:
            while not stop.is_set():
                if self._resilient(stop, lambda: self._on_view(self.lock.try_acquire)):
                    self.position = self._resilient(
                        stop, lambda: self._on_view(lambda: self.view.position(self.name))
                    )
                    logger.info("lock acquired: %s runs here", self.name)
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
        except _Stopped:
            pass
        return False

    def run(
        self,
        stop: threading.Event,
        *,
        follow: bool = True,
        on_batch: Callable[[int], None] | None = None,
        on_caught_up: Callable[[int, float], None] | None = None,
    ) -> None:
        """Lock, catch up, then follow until ``stop`` is set. A worker that loses its
        lock (with its view connection) stands by until it can take it again."""
        while not stop.is_set():
            if not self.acquire(stop):
                return
            try:
                started = time.perf_counter()
                applied = self.catch_up(stop, on_batch)
                if on_caught_up is not None:
                    on_caught_up(applied, time.perf_counter() - started)
                if follow:
                    self.follow(stop, on_batch)
                return
            except ProjectionBusy as exc:
                logger.warning("%s; standing by", exc)

    def close(self) -> None:
        self.lock.release()
        self._waiter.close()
        self.view.close()
        if self.keys is not None and self._own_keys:
            self.keys.close()
        if self._own_store:
            self.store.close()

    def __enter__(self) -> ProjectionWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
