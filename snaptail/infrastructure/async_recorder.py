"""The recorder calls ``AsyncAgentStore`` awaits, and the SQLite one: a dedicated thread.

SQLite has no async driver, and its connections want one thread each:
``ThreadedRecorder`` runs the sync recorder's calls on the store's own threads (each
using a connection of its own), and the event loop only awaits the result.
PostgreSQL has a native implementation (``postgres_async``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from snaptail.infrastructure.recorder import AgentRecorder

T = TypeVar("T")


class AsyncRecorder(Protocol):
    """What ``AsyncAgentStore`` awaits on any backend: pages of the log, the newest
    version, and ``run_sync`` for blocking work. A recorder that also has async
    twins of the calls a load and a save make (``select_for_load``,
    ``select_snapshot``, ``insert_events``, ``insert_snapshot``; PostgreSQL's) has
    the store's logic driven on the event loop; otherwise each whole operation runs
    in ``run_sync`` (SQLite's)."""

    @property
    def sync(self) -> AgentRecorder:
        """The sync recorder this one awaits the twin of."""
        ...

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

    async def run_sync(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

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


class ThreadedRecorder:
    """An :class:`AsyncRecorder` that runs a sync recorder on :class:`SQLiteThreads`."""

    def __init__(self, sync: AgentRecorder, threads: SQLiteThreads) -> None:
        self.sync = sync
        self.threads = threads

    async def run_sync(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.threads.run(func, *args, **kwargs)

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

    async def close(self) -> None:
        """Nothing of its own: the store closes the sync recorder on the thread."""
