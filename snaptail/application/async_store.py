"""``AsyncAgentStore``: the ``AgentStore`` API with ``await``, never blocking the event loop.

The logic is the sync store's own (the same load steps, save plan, snapshot policy,
trust decisions and errors); only the I/O differs. On SQLite each operation runs on
one of the store's own threads (8; each uses a connection of its own, as SQLite
wants). On PostgreSQL the recorder calls run natively on psycopg's async connection
pool; rare paths (replacing untrusted snapshots, shedding memory over a budget) run
on a worker thread.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Callable, Iterable
from types import TracebackType
from typing import Any, Self, cast
from uuid import UUID

from snaptail.application.loading import LoadStats
from snaptail.application.store import (
    AgentStore,
    Blocking,
    Call,
    Steps,
    T,
    _check_version,
    as_agent_id,
    run_steps,
)
from snaptail.domain.agent import Agent
from snaptail.domain.replay import apply_events
from snaptail.errors import AgentNotFound, DamagedLog
from snaptail.infrastructure.async_recorder import AsyncRecorder, SQLiteThreads, ThreadedRecorder
from snaptail.infrastructure.urls import resolve_url, sqlite_path
from snaptail.privacy.keys import Erasure


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


# Threads of a store on a SQLite file (one for an in-memory database, which is one
# connection's).
SQLITE_THREADS = 8


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
            # An in-memory database is one connection's: one thread.
            threads = SQLiteThreads(1 if path == ":memory:" else SQLITE_THREADS)
            try:
                store = await threads.run(AgentStore, self.url, **self._settings)
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
        """Close the connections (and the SQLite threads)."""
        recorder, store, threads = self._recorder, self._store, self._threads
        self._recorder = self._store = self._threads = None
        if recorder is None or store is None:
            return
        if threads is not None:
            await threads.run(store.close)
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

    # -- driving the sync store's logic --------------------------------------------

    async def _run(self, steps: Steps[T]) -> T:
        """Drive ``steps`` (see ``snaptail.application.store.Call``).

        On SQLite the whole operation runs on one of the store's threads, as the sync
        store runs it (its Python work too: the loop only awaits it).
        On PostgreSQL the recorder calls are awaited on the loop, blocking ones run
        on a worker thread. Either way a call that commits is awaited to its end even
        if the caller is cancelled meanwhile, and the store's bookkeeping after it
        runs before the cancellation is let through."""
        _, recorder = await self._parts()
        threads = self._threads
        if threads is not None:
            job = asyncio.ensure_future(recorder.run_sync(run_steps, steps, recorder.sync))
            cancelled_job = await outlast_cancellation(job)
            if cancelled_job is not None:
                job.exception()  # retrieved: the cancellation is what the caller sees
                raise cancelled_job
            return cast(T, job.result())
        result: Any = None
        error: Exception | None = None
        cancelled: asyncio.CancelledError | None = None
        while True:
            try:
                request = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as done:
                if cancelled is not None:
                    raise cancelled from None
                return cast(T, done.value)
            result, error = None, None
            try:
                if isinstance(request, Blocking):
                    result = await recorder.run_sync(request)
                elif request.write:
                    call = asyncio.ensure_future(
                        getattr(recorder, request.method)(*request.args, **request.kwargs)
                    )
                    cancelled = await outlast_cancellation(call) or cancelled
                    result = call.result()
                else:
                    method = getattr(recorder, request.method)
                    result = await method(*request.args, **request.kwargs)
            except Exception as exc:
                error = exc

    # -- saving ---------------------------------------------------------------------

    async def save(self, *agents: Agent) -> None:
        """Store the agents' new events (and any snapshot due) in one transaction.

        As :meth:`AgentStore.save`: on a version conflict nothing is written and
        :class:`~snaptail.ConcurrencyError` is raised; once committed it never raises.
        A save cancelled while its transaction runs finishes it (and its bookkeeping)
        before the cancellation goes through.
        """
        store, _ = await self._parts()
        await self._run(store._save_steps(agents))

    async def update(
        self, agent_id: UUID | str, command: Callable[[Agent], object], *, retries: int = 3
    ) -> Agent:
        """Load, apply ``command(agent)``, save; on a conflict reload and apply it again
        (up to ``retries`` more times), as :meth:`AgentStore.update`."""
        store, _ = await self._parts()
        return await self._run(store._update_steps(agent_id, command, retries))

    async def snapshot(self, agent_id: UUID | str) -> int:
        """Take a snapshot of the agent's current state now; returns its version."""
        store, _ = await self._parts()
        return await self._run(store._snapshot_steps(agent_id))

    # -- data subjects (snaptail.privacy) --------------------------------------------

    async def add_subject(self, agent: Agent | UUID | str, *subjects: str) -> tuple[str, ...]:
        """As :meth:`AgentStore.add_subject` (the key store's work runs off the loop)."""
        store, recorder = await self._parts()
        return await recorder.run_sync(store.add_subject, agent, *subjects)

    async def forget(self, subject: str) -> Erasure | None:
        """As :meth:`AgentStore.forget` (the key store's work runs off the loop)."""
        store, recorder = await self._parts()
        return await recorder.run_sync(store.forget, subject)

    async def erasures(self) -> list[Erasure]:
        """As :meth:`AgentStore.erasures`."""
        store, recorder = await self._parts()
        return await recorder.run_sync(store.erasures)

    # -- loading --------------------------------------------------------------------

    async def get(self, agent_id: UUID | str, version: int | None = None) -> Agent:
        """Load an agent: latest valid snapshot (at or before ``version``) plus the
        events after it. Never replays events older than the snapshot."""
        store, _ = await self._parts()
        try:
            return await self._run(store._get_steps(agent_id, version))
        except (AgentNotFound, DamagedLog) as error:  # below the hot range: the archive
            return await asyncio.to_thread(store._get_archived, agent_id, version, error)

    @staticmethod
    def load_stats(agent: Agent) -> LoadStats | None:
        """What the load that built ``agent`` read and cost (None if not loaded)."""
        return AgentStore.load_stats(agent)

    async def replay(self, agent_id: UUID | str, version: int | None = None) -> Agent:
        """Rebuild the agent from its full log, ignoring snapshots (page by page)."""
        store, _ = await self._parts()
        agent_id = as_agent_id(agent_id)
        _check_version(agent_id, "version", version, 1)
        before = None if version is None else version + 1
        agent: Agent | None = None
        async for page in self._pages(agent_id, None, before, False, None, 500):
            agent = apply_events(agent, page)
        return await self._run(store._replayed(agent_id, version, agent))

    # -- reading the log ------------------------------------------------------------

    async def history(
        self,
        agent_id: UUID | str,
        after: int | None = None,
        before: int | None = None,
        reverse: bool = False,
        types: Iterable[type[Any] | str] | None = None,
        page_size: int = 500,
    ) -> AsyncGenerator[Any, None]:
        """The agent's events with ``after < version < before``, oldest first (newest
        first if ``reverse``), optionally only of ``types``; ``page_size`` at a time."""
        async for page in self._pages(agent_id, after, before, reverse, types, page_size):
            for event in page:
                yield event

    async def _pages(
        self,
        agent_id: UUID | str,
        after: int | None,
        before: int | None,
        reverse: bool,
        types: Iterable[type[Any] | str] | None,
        page_size: int,
    ) -> AsyncGenerator[list[Any], None]:
        store, recorder = await self._parts()
        walk = store._walk(agent_id, after, before, reverse, types, page_size)
        if await asyncio.to_thread(store.archive_reader.upto, walk.agent_id):
            # Archived events: the sync store's history, a page at a time off the loop.
            archived = store.history(walk.agent_id, after, before, reverse, types, page_size)
            while chunk := await asyncio.to_thread(list, itertools.islice(archived, page_size)):
                yield chunk
            return
        to_event = store._decode
        while (request := walk.next_request()) is not None:
            page = await recorder.select_page(walk.agent_id, **request)
            events: list[Any] = []
            checks = walk.accept(page)
            reply: Any = None
            try:
                while True:
                    try:
                        item = checks.send(reply)
                    except StopIteration:
                        break
                    reply = None
                    if isinstance(item, Call):
                        reply = await getattr(recorder, item.method)(*item.args, **item.kwargs)
                    else:
                        events.append(to_event(item))
            except Exception:
                if events:  # what precedes a gap is given before the error
                    yield events
                raise
            yield events

    async def latest(self, agent_id: UUID | str, *types: type[Any] | str) -> Any | None:
        """The agent's newest event of one of ``types`` (any type if none given)."""
        store, recorder = await self._parts()
        agent_id, topics = as_agent_id(agent_id), store._topics(types or None)
        page = await recorder.select_page(agent_id, desc=True, limit=1, topics=topics)
        if page:
            return store._decode(page[0])
        return await asyncio.to_thread(store._latest_archived, agent_id, topics)

    async def event_count(self, agent_id: UUID | str) -> int:
        """How many events the agent has: its version, read from the index."""
        _, recorder = await self._parts()
        return await recorder.max_version(as_agent_id(agent_id)) or 0
