"""A subscription for SQLite: polls notification ids, woken at once by writers in-process.

``eventsourcing``'s SQLite recorder has no ``subscribe()``. This one reads pages of
notifications with ``rowid > last`` (the primary key: a range scan, no sort). When
it has read everything it waits on a per-database :class:`CommitSignal`: writers in
the same process signal it right after they commit, so a follower in the same
process wakes at once; a writer in another process is seen at the next poll,
``poll_interval`` seconds later at most.

SQLite serialises writers and rowids are taken inside the write lock, so ids
become visible in order: a reader never passes over an id committed later.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from eventsourcing.persistence import ApplicationRecorder, Notification, Subscription

DEFAULT_POLL_INTERVAL = 0.05
DEFAULT_PAGE_SIZE = 500


class EventsWaiter:
    """Blocks until new events may have been recorded, or a timeout passes (what a
    projection worker waits on between batches). This base never wakes early: the
    worker polls."""

    broken = False

    def reconnect(self) -> None:
        """Replace a broken connection (nothing to do here)."""

    def mark(self) -> int:
        """A token to pass to :meth:`wait`, taken before reading."""
        return 0

    def wait(self, mark: int, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a commit after ``mark``."""
        threading.Event().wait(timeout)

    def close(self) -> None:
        """Release what the waiter holds."""


class SQLiteWaiter(EventsWaiter):
    """Woken by the in-process :class:`CommitSignal` of the database's writers."""

    def __init__(self, signal: CommitSignal) -> None:
        self._signal = signal

    def mark(self) -> int:
        return self._signal.generation

    def wait(self, mark: int, timeout: float) -> None:
        self._signal.wait(mark, timeout)


class CommitSignal:
    """A generation counter that writers bump after each commit; readers wait on it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.generation = 0

    def notify(self) -> None:
        with self._condition:
            self.generation += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Wait until the generation differs from ``seen`` or ``timeout`` passes.

        Returns True if a commit (or a wake-up) happened since ``seen``.
        """
        with self._condition:
            if self.generation == seen:
                self._condition.wait(timeout)
            return self.generation != seen


_signals: dict[str, CommitSignal] = {}
_signals_lock = threading.Lock()


def _database_key(db_name: str) -> str:
    if db_name.startswith("file:") or ":memory:" in db_name:
        return db_name
    return os.path.realpath(db_name)


def commit_signal(db_name: str) -> CommitSignal:
    """The process-wide signal of one SQLite database (by its resolved file name)."""
    key = _database_key(db_name)
    with _signals_lock:
        signal = _signals.get(key)
        if signal is None:
            signal = _signals[key] = CommitSignal()
        return signal


class PagedSubscription(Subscription[ApplicationRecorder]):
    """Yields notifications page by page (:meth:`_read_page`), and when a read finds
    nothing, waits on a :class:`CommitSignal` for at most ``poll_interval`` seconds.

    Stops (``StopIteration``) once :meth:`stop` is called, from any thread.
    """

    def __init__(
        self,
        recorder: ApplicationRecorder,
        gt: int | None,
        topics: Sequence[str],
        signal: CommitSignal,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._signal = signal
        self._poll_interval = poll_interval
        self._page_size = page_size
        self._page: Sequence[Notification] = ()
        self._index = 0

    def _read_page(self) -> Sequence[Notification]:
        """The next page after the last one read (empty: nothing new yet)."""
        raise NotImplementedError

    def stop(self) -> None:
        super().stop()
        self._signal.notify()  # wake a reader blocked in __next__

    def __next__(self) -> Notification:
        while not self._has_been_stopped:
            if self._index < len(self._page):
                notification = self._page[self._index]
                self._index += 1
                return notification
            seen = self._signal.generation
            page = self._read_page()
            if page:
                self._page, self._index = page, 0
                continue
            self._signal.wait(seen, self._poll_interval)
        raise StopIteration


class SQLiteSubscription(PagedSubscription):
    """Yields notifications with ids greater than ``gt``, then blocks for new ones.

    Reads ``page_size`` notifications per query; woken by writers in this process.
    """

    def __init__(
        self,
        recorder: ApplicationRecorder,
        db_name: str,
        gt: int | None = None,
        topics: Sequence[str] = (),
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        super().__init__(
            recorder,
            gt,
            topics,
            commit_signal(db_name),
            poll_interval=poll_interval,
            page_size=page_size,
        )

    def _read_page(self) -> Sequence[Notification]:
        page = self._recorder.select_notifications(
            start=self._last_notification_id or 0,
            limit=self._page_size,
            topics=self._topics,
            inclusive_of_start=False,
        )
        if page:
            self._last_notification_id = page[-1].id
        return page
