"""The PostgreSQL recorder's async twin, on psycopg's ``AsyncConnectionPool``.

It runs the sync :class:`PostgresAgentRecorder`'s own statements (and converts rows
with its functions) on async connections: a load, a save, a page of the log and the
newest version never leave the event loop. Table creation and the rare paths
(deleting untrusted snapshots, memory-budget shedding) run the sync recorder on a
worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from psycopg import AsyncConnection
from psycopg.rows import DictRow, tuple_row
from psycopg.types.composite import register_composite
from psycopg_pool import AsyncConnectionPool

from snaptail.infrastructure.async_recorder import AsyncAgentRecorder
from snaptail.infrastructure.pg_connection import with_deadline
from snaptail.infrastructure.postgres import (
    PostgresAgentRecorder,
    _connect_kwargs,
    still_current,
    tail_params,
)
from snaptail.infrastructure.recorder import (
    EventRow,
    LoadRows,
    SnapshotInfo,
    StoredSnapshot,
    load_bounds,
    snapshot_from_row,
    stored_events,
)

T = TypeVar("T")
P = ParamSpec("P")

# psycopg's errors as eventsourcing's (as its sync datastore maps them), most specific first.
_ERRORS: tuple[tuple[type[psycopg.Error], type[PersistenceError]], ...] = (
    (psycopg.InterfaceError, InterfaceError),
    (psycopg.OperationalError, OperationalError),
    (psycopg.DataError, DataError),
    (psycopg.IntegrityError, IntegrityError),
    (psycopg.InternalError, InternalError),
    (psycopg.ProgrammingError, ProgrammingError),
    (psycopg.NotSupportedError, NotSupportedError),
    (psycopg.DatabaseError, DatabaseError),
    (psycopg.Error, PersistenceError),
)


class AsyncPostgresRecorder(AsyncAgentRecorder):
    """An ``AsyncAgentRecorder`` for PostgreSQL: the sync recorder's SQL, awaited.
    (Listing and pruning snapshots and paging agent ids, rare calls, run the sync
    recorder on a worker thread.)"""

    sync: PostgresAgentRecorder

    def __init__(self, sync: PostgresAgentRecorder, pool: AsyncConnectionPool[Any]) -> None:
        self.sync = sync
        self.pool = pool

    @classmethod
    async def open(cls, sync: PostgresAgentRecorder) -> AsyncPostgresRecorder:
        """An async pool with the sync recorder's connection settings and sizes."""
        sync_pool = sync.datastore.pool
        composites = list(sync.datastore.psycopg_type_adapters.values())

        async def configure(conn: AsyncConnection[Any]) -> None:
            await conn.set_autocommit(True)
            for info in composites:  # the stored-event type the insert sends
                register_composite(info, conn)

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            kwargs=dict(_connect_kwargs(sync.datastore)),
            connection_class=with_deadline(sync.read_timeout)[1],
            min_size=sync_pool.min_size,
            max_size=sync_pool.max_size,
            timeout=sync_pool.timeout,
            configure=configure,
            open=False,
        )
        await pool.open(wait=True)
        return cls(sync, pool)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[DictRow]]:
        try:
            async with self.pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            for theirs, ours in _ERRORS:
                if isinstance(exc, theirs):
                    raise ours(str(exc)) from exc
            raise

    async def close(self) -> None:
        await self.pool.close()
        await asyncio.to_thread(self.sync.close)

    # -- writing --------------------------------------------------------------------

    async def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
        save_id: UUID | None = None,
    ) -> Sequence[int] | None:
        # Not retried here: see the sync recorder's _insert_events_and_snapshots.
        sync = self.sync
        ids: list[int] = []
        # Pipelined as the sync path: one round trip. As the sync path: no table lock,
        # NOTIFY after the commit. An error (a conflict's unique violation) must leave
        # the transaction block as an exception, so that it rolls back and the
        # pipeline's own exit error does not replace it: caught inside the block, the
        # block would try to commit an aborted pipeline and raise PipelineAborted
        # (an OperationalError) instead of the IntegrityError a conflict is.
        async with (
            self._connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
            conn.cursor() as events_curs,
            conn.cursor() as snapshots_curs,
        ):
            if stored_events:
                for statement, params in sync.insert_writes(stored_events, save_id):
                    await events_curs.execute(statement, params, prepare=True)
            for snapshot in snapshots:
                for statement, params in sync.snapshot_writes(snapshot, keep_snapshots):
                    await snapshots_curs.execute(statement, params, prepare=True)
            await pipeline.sync()
            if stored_events:
                ids = [row["notification_id"] for row in await events_curs.fetchall()]
        if stored_events:
            sync.notify_after_commit()
        return ids

    async def insert_snapshot(
        self, snapshot: StoredSnapshot, *, keep_snapshots: int | None
    ) -> bool:
        try:
            async with self._connection() as conn, conn.transaction(), conn.cursor() as curs:
                for statement, params in self.sync.snapshot_writes(snapshot, keep_snapshots):
                    await curs.execute(statement, params, prepare=True)
        except IntegrityError:
            return False
        return True

    # -- reading --------------------------------------------------------------------

    async def select_for_load(
        self,
        originator_id: UUID,
        *,
        lte: int | None = None,
        recent: int = 0,
        snapshot_lte: int | None = None,
    ) -> LoadRows:
        upper, snap_upper = load_bounds(lte, snapshot_lte)
        # Two autocommit statements, no begin/commit (two round trips less than the
        # sync path): under read committed a transaction gives them no common
        # snapshot anyway, and events are only appended, so the tail read after the
        # snapshot row holds every event after it.
        async with (
            self._connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            return await self._load_rows(curs, originator_id, upper, snap_upper, recent)

    async def select_many_for_load(
        self,
        originator_ids: Sequence[UUID],
        *,
        recent: int = 0,
        known: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, LoadRows | None]:
        upper, snap_upper = load_bounds(None, None)
        known = known or {}
        found: dict[UUID, LoadRows | None] = {}
        # Autocommit statements, as select_for_load: under read committed a transaction
        # gives them no common snapshot, and would cost a begin and a commit. The agents
        # held are checked in one statement (a warm get_many: one round trip).
        async with (
            self._connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            checked = {i: known[i] for i in originator_ids if i in known}
            current: set[UUID] = set()
            if checked:
                await curs.execute(self.sync.sql_max_versions, (list(checked),), prepare=True)
                current = still_current(checked, await curs.fetchall())
            loaded = False  # each agent read no earlier than the ones before it
            for agent_id in originator_ids:
                fresh = agent_id in current
                if fresh and loaded:  # current before that load: asked again after it
                    await curs.execute(self.sync.sql_max_version, (agent_id,), prepare=True)
                    row = await curs.fetchone()
                    fresh = ((row[0] if row else None) or 0) == checked[agent_id]
                if fresh:
                    found[agent_id] = None
                else:
                    found[agent_id] = await self._load_rows(
                        curs, agent_id, upper, snap_upper, recent
                    )
                    loaded = True
        return found

    async def _load_rows(
        self,
        curs: psycopg.AsyncCursor[tuple[Any, ...]],
        originator_id: UUID,
        upper: int,
        snap_upper: int,
        recent: int,
    ) -> LoadRows:
        """One agent's load rows, read on ``curs``."""
        sync = self.sync
        snapshot = None
        if snap_upper > 0:
            await curs.execute(sync.sql_select_snapshot, (originator_id, snap_upper), prepare=True)
            row = await curs.fetchone()
            if row is not None:
                snapshot = snapshot_from_row(originator_id, row)
        await curs.execute(
            sync.sql_select_tail, tail_params(originator_id, upper, snapshot, recent), prepare=True
        )
        events: list[EventRow] = await curs.fetchall()  # (version, topic, state) tuples
        return LoadRows(snapshot=snapshot, events=events)

    async def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None:
        if lte < 1:
            return None
        async with (
            self._connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            await curs.execute(self.sync.sql_select_snapshot, (originator_id, lte), prepare=True)
            row = await curs.fetchone()
        return None if row is None else snapshot_from_row(originator_id, row)

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
        statement, params = self.sync.page_query(originator_id, gt, lt, desc, limit, topics)
        async with (
            self._connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            await curs.execute(statement, params, prepare=True)
            return stored_events(originator_id, await curs.fetchall())

    async def max_version(self, originator_id: UUID) -> int | None:
        async with self._connection() as conn, conn.cursor() as curs:
            await curs.execute(self.sync.sql_max_version, (originator_id,), prepare=True)
            row = await curs.fetchone()
        value = None if row is None else row["v"]
        return None if value is None else int(value)

    async def save_committed(self, save_id: UUID) -> bool:
        async with self._connection() as conn, conn.cursor() as curs:
            await curs.execute(self.sync.sql_save_committed, (save_id,), prepare=True)
            return await curs.fetchone() is not None

    async def prune_saves(self, before: UUID, limit: int) -> int:
        async with self._connection() as conn, conn.transaction(), conn.cursor() as curs:
            await curs.execute(self.sync.sql_prune_saves, (before, limit))
            return int(curs.rowcount)

    async def select_snapshot_infos(self, originator_id: UUID) -> Sequence[SnapshotInfo]:
        return await asyncio.to_thread(self.sync.select_snapshot_infos, originator_id)

    async def delete_snapshots(
        self, originator_id: UUID, *, keep: int, versions: Sequence[int] = ()
    ) -> int:
        return await asyncio.to_thread(
            self.sync.delete_snapshots, originator_id, keep=keep, versions=versions
        )

    async def originator_ids(
        self, *, after: UUID | None = None, limit: int = 1000
    ) -> Sequence[UUID]:
        return await asyncio.to_thread(self.sync.originator_ids, after=after, limit=limit)

    async def max_notification_id(self) -> int | None:
        return await asyncio.to_thread(self.sync.max_notification_id)

    async def run_sync(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(func, *args)
