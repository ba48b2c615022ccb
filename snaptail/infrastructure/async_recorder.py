"""The recorder ``AsyncAgentStore`` awaits (:class:`AsyncAgentRecorder`), and SQLite's:
the sync recorder's calls run on the store's own threads.

SQLite has no async driver, and its connections want one thread each:
:class:`ThreadedRecorder` runs each call of the sync recorder on one of the store's
threads (each using a connection of its own), and the event loop only awaits it.
PostgreSQL has a native implementation (``postgres_async``).
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from snaptail.infrastructure.recorder import AgentRecorder, LoadRows, SnapshotInfo, StoredSnapshot

T = TypeVar("T")


class AsyncAgentRecorder(ABC):
    """Every call ``AsyncAgentStore`` awaits: the async twin of
    :class:`~snaptail.infrastructure.recorder.AgentRecorder` (the same arguments,
    results and errors; see its methods). ``sync`` is the sync recorder of the same
    database (for work that has no async twin, such as projections)."""

    sync: AgentRecorder
    # Whether its calls may be awaited from any event loop (they run on threads of the
    # recorder's own), or only from the loop that opened it (its connections' loop).
    any_loop: bool = False

    @abstractmethod
    async def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
        save_id: UUID | None = None,
    ) -> Sequence[int] | None: ...

    @abstractmethod
    async def select_for_load(
        self,
        originator_id: UUID,
        *,
        lte: int | None = None,
        recent: int = 0,
        snapshot_lte: int | None = None,
    ) -> LoadRows: ...

    @abstractmethod
    async def select_many_for_load(
        self,
        originator_ids: Sequence[UUID],
        *,
        recent: int = 0,
        known: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, LoadRows | None]: ...

    @abstractmethod
    async def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None: ...

    @abstractmethod
    async def select_page(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lt: int | None = None,
        desc: bool = False,
        limit: int = 500,
        topics: Sequence[str] = (),
    ) -> Sequence[StoredEvent]: ...

    @abstractmethod
    async def max_version(self, originator_id: UUID) -> int | None: ...

    @abstractmethod
    async def insert_snapshot(
        self, snapshot: StoredSnapshot, *, keep_snapshots: int | None
    ) -> bool: ...

    @abstractmethod
    async def select_snapshot_infos(self, originator_id: UUID) -> Sequence[SnapshotInfo]: ...

    @abstractmethod
    async def delete_snapshots(
        self, originator_id: UUID, *, keep: int, versions: Sequence[int] = ()
    ) -> int: ...

    @abstractmethod
    async def originator_ids(
        self, *, after: UUID | None = None, limit: int = 1000
    ) -> Sequence[UUID]: ...

    @abstractmethod
    async def save_committed(self, save_id: UUID) -> bool: ...

    @abstractmethod
    async def prune_saves(self, before: UUID, limit: int) -> int: ...

    @abstractmethod
    async def max_notification_id(self) -> int | None: ...

    @abstractmethod
    async def run_sync(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` where this backend runs blocking work (the key store's,
        the sync recorder's), off the event loop."""

    @abstractmethod
    async def close(self) -> None: ...


class SQLiteThreads:
    """The threads a store's SQLite work runs on, each using a connection of its own
    (SQLite's connections want one thread each; WAL lets readers run beside the one
    writer, and writers wait for each other on the file's lock, as the sync store's
    callers' threads do)."""

    def __init__(self, size: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="snaptail-sqlite")

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func`` on one of the threads; the loop only awaits it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


class ThreadedRecorder(AsyncAgentRecorder):
    """An :class:`AsyncAgentRecorder` that runs a sync recorder on :class:`SQLiteThreads`
    (awaitable from any event loop: each call is handed to the threads by the loop
    that awaits it)."""

    any_loop = True

    def __init__(self, sync: AgentRecorder, threads: SQLiteThreads) -> None:
        self.sync = sync
        self.threads = threads

    async def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
        save_id: UUID | None = None,
    ) -> Sequence[int] | None:
        return await self.threads.run(
            self.sync.insert_events, stored_events, snapshots=snapshots,
            keep_snapshots=keep_snapshots, save_id=save_id,
        )  # fmt: skip

    async def select_for_load(
        self,
        originator_id: UUID,
        *,
        lte: int | None = None,
        recent: int = 0,
        snapshot_lte: int | None = None,
    ) -> LoadRows:
        return await self.threads.run(
            self.sync.select_for_load, originator_id, lte=lte, recent=recent,
            snapshot_lte=snapshot_lte,
        )  # fmt: skip

    async def select_many_for_load(
        self,
        originator_ids: Sequence[UUID],
        *,
        recent: int = 0,
        known: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, LoadRows | None]:
        return await self.threads.run(
            self.sync.select_many_for_load, originator_ids, recent=recent, known=known
        )

    async def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None:
        return await self.threads.run(self.sync.select_snapshot, originator_id, lte=lte)

    async def select_page(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lt: int | None = None,
        desc: bool = False,
        limit: int = 500,
        topics: Sequence[str] = (),
    ) -> Sequence[StoredEvent]:
        return await self.threads.run(
            self.sync.select_page, originator_id, gt=gt, lt=lt, desc=desc, limit=limit,
            topics=topics,
        )  # fmt: skip

    async def max_version(self, originator_id: UUID) -> int | None:
        return await self.threads.run(self.sync.max_version, originator_id)

    async def insert_snapshot(
        self, snapshot: StoredSnapshot, *, keep_snapshots: int | None
    ) -> bool:
        return await self.threads.run(
            self.sync.insert_snapshot, snapshot, keep_snapshots=keep_snapshots
        )

    async def select_snapshot_infos(self, originator_id: UUID) -> Sequence[SnapshotInfo]:
        return await self.threads.run(self.sync.select_snapshot_infos, originator_id)

    async def delete_snapshots(
        self, originator_id: UUID, *, keep: int, versions: Sequence[int] = ()
    ) -> int:
        return await self.threads.run(
            self.sync.delete_snapshots, originator_id, keep=keep, versions=versions
        )

    async def originator_ids(
        self, *, after: UUID | None = None, limit: int = 1000
    ) -> Sequence[UUID]:
        return await self.threads.run(self.sync.originator_ids, after=after, limit=limit)

    async def save_committed(self, save_id: UUID) -> bool:
        return await self.threads.run(self.sync.save_committed, save_id)

    async def prune_saves(self, before: UUID, limit: int) -> int:
        return await self.threads.run(self.sync.prune_saves, before, limit)

    async def run_sync(self, func: Callable[..., T], *args: Any) -> T:
        return await self.threads.run(func, *args)

    async def max_notification_id(self) -> int | None:
        return await self.threads.run(self.sync.max_notification_id)

    async def close(self) -> None:
        """Close the sync recorder on one of the threads, then the threads."""
        try:
            await self.threads.run(self.sync.close)
        finally:
            self.threads.shutdown()
