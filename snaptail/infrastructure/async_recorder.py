"""The recorder calls ``AsyncAgentStore`` awaits, and the SQLite one: a dedicated thread.

SQLite has no async driver, and its connections want one thread each:
``ThreadedRecorder`` runs the sync recorder's calls on dedicated threads (one writer,
a few readers, each using a connection of its own), and the event loop only awaits
the result. PostgreSQL has a native implementation (``postgres_async``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from snaptail.infrastructure.recorder import AgentRecorder, LoadRows, StoredSnapshot

T = TypeVar("T")


class AsyncRecorder(Protocol):
    """The async twin of the :class:`AgentRecorder` calls a load, a save and the log
    readers make; ``run_sync`` runs anything else (rare paths) off the event loop."""

    @property
    def sync(self) -> AgentRecorder:
        """The sync recorder this one awaits the twin of."""
        ...

    async def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
    ) -> Sequence[int] | None: ...

    async def select_for_load(
        self,
        originator_id: UUID,
        *,
        lte: int | None = None,
        recent: int = 0,
        snapshot_lte: int | None = None,
    ) -> LoadRows: ...

    async def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None: ...

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

    async def max_version(self, originator_id: UUID) -> int | None: ...

    async def insert_snapshot(
        self, snapshot: StoredSnapshot, *, keep_snapshots: int | None
    ) -> bool: ...

    async def run_sync(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    async def close(self) -> None: ...


class SQLiteThreads:
    """The threads a store's SQLite work runs on, each with its own connection: one
    writer (SQLite allows one at a time, so writes queue here, not on the file's
    lock) and ``readers`` more for reads, which WAL lets run beside the writer.
    ``readers=0`` runs everything on the writer thread (for in-memory databases)."""

    def __init__(self, readers: int = 3) -> None:
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snaptail-sqlite-w")
        self._readers = (
            ThreadPoolExecutor(max_workers=readers, thread_name_prefix="snaptail-sqlite-r")
            if readers
            else self._writer
        )

    async def write(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func`` on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(func, *args, **kwargs))

    async def read(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func`` (which only reads) on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, functools.partial(func, *args, **kwargs))

    def shutdown(self) -> None:
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)


class ThreadedRecorder:
    """An :class:`AsyncRecorder` that runs a sync recorder on :class:`SQLiteThreads`
    (anything that may write on the writer thread)."""

    def __init__(self, sync: AgentRecorder, threads: SQLiteThreads) -> None:
        self.sync = sync
        self.threads = threads

    async def run_sync(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.threads.write(func, *args, **kwargs)

    async def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
    ) -> Sequence[int] | None:
        return await self.threads.write(
            self.sync.insert_events,
            stored_events,
            snapshots=snapshots,
            keep_snapshots=keep_snapshots,
        )

    async def select_for_load(
        self,
        originator_id: UUID,
        *,
        lte: int | None = None,
        recent: int = 0,
        snapshot_lte: int | None = None,
    ) -> LoadRows:
        return await self.threads.read(
            self.sync.select_for_load,
            originator_id,
            lte=lte,
            recent=recent,
            snapshot_lte=snapshot_lte,
        )

    async def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None:
        return await self.threads.read(self.sync.select_snapshot, originator_id, lte=lte)

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
        return await self.threads.read(
            self.sync.select_page, originator_id, gt=gt, lt=lt, desc=desc, limit=limit,
            topics=topics,
        )  # fmt: skip

    async def max_version(self, originator_id: UUID) -> int | None:
        return await self.threads.read(self.sync.max_version, originator_id)

    async def insert_snapshot(
        self, snapshot: StoredSnapshot, *, keep_snapshots: int | None
    ) -> bool:
        return await self.threads.write(
            self.sync.insert_snapshot, snapshot, keep_snapshots=keep_snapshots
        )

    async def close(self) -> None:
        """Nothing of its own: the store closes the sync recorder on the thread."""
