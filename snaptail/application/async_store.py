"""``AsyncAgentStore``: the ``AgentStore`` API with ``await``, never blocking the event loop.

Thin, as ``AgentStore``: the logic is the same :class:`~snaptail.application.engine.Engine`
steps (load, save plan, snapshot policy, trust decisions, errors), run by the async
driver on an :class:`~snaptail.infrastructure.async_recorder.AsyncAgentRecorder`. On
SQLite each recorder call runs on one of the store's own threads (8; each uses a
connection of its own, as SQLite wants); on PostgreSQL they run natively on psycopg's
async connection pool.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID

from snaptail.application import arguments
from snaptail.application.drivers import Steps, drive_async
from snaptail.application.engine import Engine, as_agent_id
from snaptail.application.store import AGENT_ID_PAGE, AgentStore, StoreBase, known_versions
from snaptail.domain.agent import Agent
from snaptail.errors import AgentNotFound, DamagedLog
from snaptail.infrastructure.async_recorder import AsyncAgentRecorder
from snaptail.infrastructure.backends import open_async_recorder
from snaptail.infrastructure.recorder import AgentRecorder, SnapshotInfo
from snaptail.infrastructure.urls import resolve_url
from snaptail.privacy.forget import add_subjects, forget_subject
from snaptail.privacy.keys import Erasure

__all__ = ["AsyncAgentStore"]

T = TypeVar("T")


class AsyncAgentStore(StoreBase):
    """:class:`~snaptail.AgentStore` for asyncio: same arguments, same methods awaited,
    same semantics and errors; :meth:`history` is an async iterator.

    The database is opened on first use (or ``await store.open()``, or
    ``async with AsyncAgentStore(url) as store``); close it with ``await store.close()``.
    """

    def __init__(self, url: str | None = None, **settings: Any) -> None:
        self.url = resolve_url(url)
        arguments.check_url(self.url)
        self._settings = dict(settings)
        self._sync_store: AgentStore | None = None
        self._engine, self._options = Engine.split(settings)
        self._engine.enforces_budgets = self.enforces_budgets
        self._engine.repairs_snapshots = self.repairs_snapshots
        self._recorder: AsyncAgentRecorder | None = None
        self._opening = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> Self:
        """Open the database (create its tables if missing); idempotent."""
        if self._recorder is None:
            async with self._opening:
                if self._recorder is None:
                    self._recorder = await open_async_recorder(self.url, **self._options)
        return self

    @property
    def sync_store(self) -> AgentStore:
        """A blocking :class:`~snaptail.AgentStore` on the same database and settings
        (its own connections; for sync code sharing this store, such as the LangGraph
        saver). Open this store first; closed with it."""
        if self._recorder is None:
            raise RuntimeError("AsyncAgentStore is not open: await store.open() first")
        if self._sync_store is None:
            self._sync_store = AgentStore(self.url, **self._settings)
        return self._sync_store

    async def close(self) -> None:
        """Close the connections (and the SQLite threads)."""
        sync, self._sync_store = self._sync_store, None
        if sync is not None:
            await asyncio.to_thread(sync.close)
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            await recorder.close()
            keys = self._engine.keys
            if keys is not None and self._engine.own_keys:
                await asyncio.to_thread(keys.close)

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def recorder(self) -> AsyncAgentRecorder:
        """The async recorder (open the store first)."""
        if self._recorder is None:
            raise RuntimeError("AsyncAgentStore is not open: await store.open() first")
        return self._recorder

    @property
    def any_loop(self) -> bool:
        """Whether this store's calls may now be awaited from any event loop, not only
        the one that opened it: True once open on SQLite (each call runs on the
        store's own threads, handed over by whichever loop awaits it); False on
        PostgreSQL (its async connections belong to the opening loop) and while closed."""
        recorder = self._recorder
        return recorder is not None and recorder.any_loop

    def _sync_recorder(self) -> AgentRecorder:
        return self.recorder.sync

    async def _run(self, steps: Steps[T]) -> T:
        recorder = self._recorder
        if recorder is None:
            await self.open()
            recorder = self._recorder
            assert recorder is not None
        return await drive_async(steps, recorder, self._engine.retry)

    # -- saving ---------------------------------------------------------------------

    async def save(self, *agents: Agent) -> None:
        """Store the agents' new events (and any snapshot due) in one transaction.

        As :meth:`AgentStore.save`: on a version conflict nothing is written and
        :class:`~snaptail.ConcurrencyError` is raised; once committed it never raises.
        A save cancelled while its transaction runs finishes it (and its bookkeeping):
        if it committed, the save returns normally (the cancellation came too late to
        undo it), otherwise the cancellation goes through.
        """
        await self._run(self._engine.save(agents))

    async def save_committed(self, save_id: UUID | str) -> bool:
        """Whether the save ``save_id`` (from :class:`~snaptail.SaveOutcomeUnknown`)
        committed its rows."""
        return await self._run(self._engine.save_committed(save_id))

    async def prune_save_ids(self) -> int:
        """Delete the save ids older than ``keep_save_ids`` now (see
        :meth:`AgentStore.prune_save_ids`); returns how many."""
        return await self._run(self._engine.prune_save_ids())

    async def update(
        self, agent_id: UUID | str, command: Callable[[Agent], object], *, retries: int = 3
    ) -> Agent:
        """Load, apply ``command(agent)``, save; on a conflict reload and apply it again
        (up to ``retries`` more times), as :meth:`AgentStore.update`."""
        return await self._run(self._engine.update(agent_id, command, retries))

    async def snapshot(self, agent_id: UUID | str) -> int:
        """Take a snapshot of the agent's current state now; returns its version."""
        return await self._run(self._engine.snapshot(agent_id))

    # -- data subjects (snaptail.privacy) --------------------------------------------

    async def add_subject(self, agent: Agent | UUID | str, *subjects: str) -> tuple[str, ...]:
        """As :meth:`AgentStore.add_subject` (the key store's work runs off the loop)."""
        await self.open()
        agent_id = agent.id if isinstance(agent, Agent) else as_agent_id(agent)
        cipher = self.mapper.payload_cipher
        return await self.recorder.run_sync(
            add_subjects, self.recorder.sync, self.keys, cipher, agent_id, subjects
        )

    async def forget(self, subject: str) -> Erasure | None:
        """As :meth:`AgentStore.forget` (the key store's work runs off the loop)."""
        await self.open()
        cipher = self.mapper.payload_cipher
        return await self.recorder.run_sync(
            forget_subject, self.recorder.sync, self.keys, cipher, subject
        )

    async def erasures(self) -> list[Erasure]:
        """As :meth:`AgentStore.erasures`."""
        keys = self.keys
        return [] if keys is None else await asyncio.to_thread(keys.erasures)

    # -- loading --------------------------------------------------------------------

    async def get(self, agent_id: UUID | str, version: int | None = None) -> Agent:
        """Load an agent: latest valid snapshot (at or before ``version``) plus the
        events after it. Never replays events older than the snapshot."""
        try:
            return await self._run(self._engine.load(agent_id, version))
        except (AgentNotFound, DamagedLog) as error:  # below the hot range: the archive
            return await self.recorder.run_sync(self._get_archived, agent_id, version, error)

    async def get_many(
        self,
        agent_ids: Iterable[UUID | str],
        *,
        current: Mapping[UUID, Agent | None] | None = None,
    ) -> dict[UUID, Agent]:
        """Load the latest versions of several agents, reading their rows in ONE read
        transaction (one recorder call); each is loaded as :meth:`get` loads it.
        Returns agent id -> agent in the order asked; an id with no agent is absent.
        ``current``: as :meth:`AgentStore.get_many`'s (held agents still current are
        returned as is)."""
        current = current or {}
        found = await self._run(self._engine.load_many(agent_ids, known_versions(current)))
        if not any(isinstance(r, (AgentNotFound, DamagedLog)) for r in found.values()):
            return self._found_many(found, current)  # no archive to ask: no thread hop
        return await self.recorder.run_sync(self._found_many, found, current)

    async def replay(self, agent_id: UUID | str, version: int | None = None) -> Agent:
        """Rebuild the agent from its full log, ignoring snapshots (page by page)."""
        await self.open()
        if await self.recorder.run_sync(self.archive_reader.upto, as_agent_id(agent_id)):
            return await self.recorder.run_sync(self._replay_all, agent_id, version)
        return await self._run(self._engine.replay(agent_id, version))

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
        async for page in self.history_pages(agent_id, after, before, reverse, types, page_size):
            for event in page:
                yield event

    async def history_pages(
        self,
        agent_id: UUID | str,
        after: int | None = None,
        before: int | None = None,
        reverse: bool = False,
        types: Iterable[type[Any] | str] | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[Any]]:
        """:meth:`history` a page (a list of up to ``page_size`` events) at a time."""
        walk = self._engine.walk(agent_id, after, before, reverse, types, page_size)
        await self.open()
        if await self.recorder.run_sync(self.archive_reader.upto, walk.agent_id):
            # Archived events: the blocking history, a page at a time off the loop.
            archived = self._history(walk)
            while True:
                chunk: list[Any] = await self.recorder.run_sync(
                    list, itertools.islice(archived, page_size)
                )
                if not chunk:
                    return
                yield chunk
        while (page := await self._run(walk.page())) is not None:
            yield page

    async def latest(self, agent_id: UUID | str, *types: type[Any] | str) -> Any | None:
        """The agent's newest event of one of ``types`` (any type if none given)."""
        found = await self._run(self._engine.latest(agent_id, types))
        if found is not None:
            return found
        topics = self._engine.topics(types)
        return await self.recorder.run_sync(self._latest_archived, as_agent_id(agent_id), topics)

    async def event_count(self, agent_id: UUID | str) -> int:
        """How many events the agent has: its version, read from the index."""
        return await self._run(self._engine.event_count(agent_id))

    # -- the fleet and its snapshots ----------------------------------------------

    async def agent_ids(self, after: UUID | str | None = None) -> AsyncIterator[UUID]:
        """Every stored agent's id, in id order (after ``after``), a page at a time."""
        cursor = None if after is None else as_agent_id(after)
        while True:
            ids = await self._run(self._engine.agent_ids(cursor, AGENT_ID_PAGE))
            for agent_id in ids:
                yield agent_id
            if len(ids) < AGENT_ID_PAGE:
                return
            cursor = ids[-1]

    async def snapshot_infos(self, agent_id: UUID | str) -> Sequence[SnapshotInfo]:
        """The agent's stored snapshots, newest first, without their bytes."""
        return await self._run(self._engine.snapshot_infos(agent_id))

    async def prune_snapshots(self, agent_id: UUID | str, keep: int) -> int:
        """As :meth:`AgentStore.prune_snapshots`."""
        return await self._run(self._engine.prune_snapshots(agent_id, keep))
