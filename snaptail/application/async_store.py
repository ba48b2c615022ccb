"""``AsyncAgentStore``: the ``AgentStore`` API with ``await``, never blocking the event loop.

The logic is the sync store's own (the same load steps, save plan, snapshot policy,
trust decisions and errors); only the I/O differs. SQLite work runs on threads of the
store's own, each using its own connection as SQLite wants (one writer, a few
readers); PostgreSQL runs natively on psycopg's async connection pool. Rare paths
(replacing untrusted snapshots, shedding memory over a budget) run the sync store off
the loop, on the SQLite writer thread or a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from snaptail.domain.agent import Agent
from snaptail.domain.errors import AgentNotFound
from snaptail.domain.replay import apply_events
from snaptail.infrastructure.async_recorder import AsyncRecorder, SQLiteThreads, ThreadedRecorder
from snaptail.infrastructure.budget import observe_memory, resolve_budget
from snaptail.infrastructure.database import resolve_url, sqlite_path
from snaptail.infrastructure.store import AgentStore, LoadStats


async def outlast_cancellation(task: asyncio.Future[Any]) -> asyncio.CancelledError | None:
    """Wait for ``task`` to end even if the caller is cancelled meanwhile; returns the
    cancellation (to raise once the task's outcome is accounted for) or None."""
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    return cancelled


# Reader threads (beside the one writer) of a store on a SQLite file.
SQLITE_READERS = 3


class AsyncAgentStore:
    """:class:`~snaptail.AgentStore` for asyncio: same arguments, same methods awaited,
    same semantics and errors; :meth:`history` is an async iterator.

    The database is opened on first use (or ``await store.open()``, or
    ``async with AsyncAgentStore(url) as store``); close it with ``await store.close()``.
    """

    def __init__(self, url: str | None = None, **settings: Any) -> None:
        self.url = resolve_url(url)
        self._settings = settings
        self._store: AgentStore | None = None
        self._recorder: AsyncRecorder | None = None
        self._threads: SQLiteThreads | None = None
        self._opening = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> Self:
        """Open the database (create its tables if missing); idempotent."""
        if self._recorder is None:
            async with self._opening:
                if self._recorder is None:
                    await self._open()
        return self

    async def _open(self) -> None:
        path = sqlite_path(self.url)
        if path is not None:
            # An in-memory database is one connection's: everything on the writer.
            threads = SQLiteThreads(readers=0 if path == ":memory:" else SQLITE_READERS)
            try:
                store = await threads.write(AgentStore, self.url, **self._settings)
            except BaseException:
                threads.shutdown()
                raise
            self._threads = threads
            self._store, self._recorder = store, ThreadedRecorder(store.recorder, threads)
            return
        store = await asyncio.to_thread(AgentStore, self.url, **self._settings)
        try:
            from snaptail.infrastructure.postgres import PostgresAgentRecorder
            from snaptail.infrastructure.postgres_async import AsyncPostgresRecorder

            assert isinstance(store.recorder, PostgresAgentRecorder), store.recorder
            recorder = await AsyncPostgresRecorder.open(store.recorder)
        except BaseException:
            await asyncio.to_thread(store.close)
            raise
        self._store, self._recorder = store, recorder

    async def close(self) -> None:
        """Close the connections (and the SQLite thread)."""
        recorder, store, threads = self._recorder, self._store, self._threads
        self._recorder = self._store = self._threads = None
        if recorder is None or store is None:
            return
        if threads is not None:
            await threads.write(store.close)
            threads.shutdown()
        else:
            await recorder.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _parts(self) -> tuple[AgentStore, AsyncRecorder]:
        if self._recorder is None:
            await self.open()
        assert self._store is not None and self._recorder is not None
        return self._store, self._recorder

    @property
    def sync_store(self) -> AgentStore:
        """The sync store whose logic this one runs (open it first)."""
        if self._store is None:
            raise RuntimeError("AsyncAgentStore is not open: await store.open() first")
        return self._store

    # -- saving ---------------------------------------------------------------------

    async def save(self, *agents: Agent) -> None:
        """Store the agents' new events (and any snapshot due) in one transaction.

        On a version conflict nothing is written, :class:`~snaptail.ConcurrencyError`
        is raised, and the agents keep their new events. A save cancelled while its
        transaction runs finishes it (and its bookkeeping) before the cancellation.
        """
        store, recorder = await self._parts()
        plan = store._plan_save(agents)
        if plan is None:
            return
        write = asyncio.ensure_future(
            recorder.insert_events(
                plan.stored, snapshots=plan.snapshots, keep_snapshots=store.keep_snapshots
            )
        )
        cancelled = await outlast_cancellation(write)
        try:
            write.result()
        except IntegrityError as exc:
            raise store._conflict(plan) from exc
        store._saved(plan)
        if cancelled is not None:
            raise cancelled
        for agent, _, _ in plan.batches:
            await self._check_memory(agent, can_shed=True, saving=True)

    async def _check_memory(self, agent: Agent, *, can_shed: bool, saving: bool) -> None:
        store, recorder = await self._parts()
        if resolve_budget(type(agent), store.memory_budget) is None:
            if not saving:
                observe_memory(agent)
            return
        await recorder.run_sync(store._check_memory, agent, can_shed=can_shed, saving=saving)

    async def snapshot(self, agent_id: UUID) -> int:
        """Take a snapshot of the agent's current state now; returns its version."""
        store, recorder = await self._parts()
        agent = await self.get(agent_id)
        if agent.pending_events:  # recorded by the load to keep its memory budget
            await self.save(agent)
        snapshot = store._take_snapshot(agent)
        if snapshot is None:
            raise ValueError(f"agent {agent_id}: its state cannot be encoded")
        await recorder.insert_snapshot(snapshot, keep_snapshots=store.keep_snapshots)
        return agent.version

    # -- loading --------------------------------------------------------------------

    async def get(self, agent_id: UUID, version: int | None = None) -> Agent:
        """Load an agent: latest valid snapshot (at or before ``version``) plus the
        events after it. Never replays events older than the snapshot."""
        store, recorder = await self._parts()
        steps = store._load_steps(agent_id, version)
        request = next(steps)
        while True:
            rows = await recorder.select_for_load(agent_id, **request)
            try:
                request = steps.send(rows)
            except StopIteration as done:
                loaded: tuple[Agent, list[tuple[int, str]]] = done.value
                break
        agent, untrusted = loaded
        if untrusted:
            await recorder.run_sync(store._replace_untrusted, agent, untrusted)
        await self._check_memory(agent, can_shed=version is None, saving=False)
        return agent

    @staticmethod
    def load_stats(agent: Agent) -> LoadStats | None:
        """What the load that built ``agent`` read and cost (None if not loaded)."""
        return AgentStore.load_stats(agent)

    async def replay(self, agent_id: UUID, version: int | None = None) -> Agent:
        """Rebuild the agent from its full log, ignoring snapshots (page by page)."""
        agent: Agent | None = None
        before = None if version is None else version + 1
        async for page in self._pages(agent_id, None, before, False, None, 500):
            agent = apply_events(agent, page)
        if agent is None:
            raise AgentNotFound(agent_id, version)
        return agent

    # -- reading the log ------------------------------------------------------------

    async def history(
        self,
        agent_id: UUID,
        after: int | None = None,
        before: int | None = None,
        reverse: bool = False,
        types: Iterable[type[Any] | str] | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[Any]:
        """The agent's events with ``after < version < before``, oldest first (newest
        first if ``reverse``), optionally only of ``types``; ``page_size`` at a time."""
        async for page in self._pages(agent_id, after, before, reverse, types, page_size):
            for event in page:
                yield event

    async def _pages(
        self,
        agent_id: UUID,
        after: int | None,
        before: int | None,
        reverse: bool,
        types: Iterable[type[Any] | str] | None,
        page_size: int,
    ) -> AsyncIterator[list[Any]]:
        store, recorder = await self._parts()
        requests = store._page_requests(after, before, reverse, types, page_size)
        request = next(requests)
        to_event = store.mapper.to_domain_event
        while True:
            page = await recorder.select_page(agent_id, **request)
            yield [to_event(stored) for stored in page]
            try:
                request = requests.send(page)
            except StopIteration:
                return

    async def latest(self, agent_id: UUID, *types: type[Any] | str) -> Any | None:
        """The agent's newest event of one of ``types`` (any type if none given)."""
        store, recorder = await self._parts()
        page = await recorder.select_page(
            agent_id, desc=True, limit=1, topics=store._topics(types or None)
        )
        return store.mapper.to_domain_event(page[0]) if page else None

    async def event_count(self, agent_id: UUID) -> int:
        """How many events the agent has: its version, read from the index."""
        _, recorder = await self._parts()
        return await recorder.max_version(agent_id) or 0
