"""OpenAI Agents SDK sessions stored in snaptail: ``SnaptailSession``.

A session is one aggregate (:class:`ItemLog`, id derived from the session id). Every
``add_items`` call is an ``ItemsAdded`` event, ``pop_item`` an ``ItemPopped`` event and
``clear_session`` a ``Cleared`` event, so the full transcript stays in the log for
audit while the live view changes. The aggregate's state is six integers: live items
have the positions ``start <= p < end`` (a pop gives its position back to the next
add), ``cleared_at`` is the version of the newest clear, and two counters give the
mean items per event. Nothing else is held:

* ``get_items(limit=k)`` reads the newest k live items: the newest write of each of the
  positions ``end-k .. end-1``, found in the loaded agent's recent-event cache or
  in reverse pages of the log (stopping as soon as all k are found);
* ``get_items()`` reads the ``ItemsAdded`` events after the newest clear, page by page.

This module imports the SDK only when a session is made, so stored sessions decode
without it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast
from uuid import UUID, uuid5

import msgspec
from eventsourcing.domain import event

from snaptail.application.async_store import AsyncAgentStore
from snaptail.domain.agent import Agent
from snaptail.domain.state import AgentState
from snaptail.errors import ConcurrencyError, SaveOutcomeUnknown
from snaptail.integrations.aggregates import load_fresh
from snaptail.integrations.shared import async_store_for, call_on_home
from snaptail.privacy.registry import register_cache

if TYPE_CHECKING:
    from agents.items import TResponseInputItem
    from agents.memory.session import _CompactionSnapshot
    from agents.memory.session_settings import SessionSettings

T = TypeVar("T")

logger = logging.getLogger("snaptail.openai_agents")

# Session ids map to agent ids in this namespace (stable across processes).
SESSION_NAMESPACE = UUID("a63545fb-136b-4f71-9bdc-8ee07f8296df")
# A session write that lost a race with another writer is retried this many times.
# Items encoded into one event at most (one add_items call may make several events,
# all saved in one transaction).
EVENT_ITEMS_BYTES = 256 * 1024
# Events per page when get_items() reads every live item.
READ_ALL_PAGE = 50


def session_agent_id(session_id: str) -> UUID:
    """The id of the aggregate that stores ``session_id``."""
    return uuid5(SESSION_NAMESPACE, session_id)


@dataclass
class ItemLogState(AgentState):
    """A session's live view as positions: items ``start <= p < end`` are live."""

    start: int = 0
    end: int = 0
    cleared_at: int = 0  # version of the newest Cleared event (0: never cleared)
    adds: int = 0  # ItemsAdded events so far
    added: int = 0  # items they held (the mean sizes a reverse read's page)


class ItemLog(Agent):
    """The conversation items of one Agents SDK session, as events."""

    if TYPE_CHECKING:
        ItemsAdded: ClassVar[type[Any]]
        ItemPopped: ClassVar[type[Any]]
        Cleared: ClassVar[type[Any]]
        PrefixDropped: ClassVar[type[Any]]

    State = ItemLogState
    window_items = 1  # the conversation window is unused: items live in the events
    max_event_bytes = 4 * 1024 * 1024

    @classmethod
    def _create(cls, event_class: Any, *, id: Any = None, **kwargs: Any) -> Any:
        return super()._create(event_class, id=id or session_agent_id(kwargs["name"]), **kwargs)

    @property
    def items_state(self) -> ItemLogState:
        return cast(ItemLogState, self.state)

    def add(self, items: list[dict[str, Any]]) -> None:
        """Append ``items`` after the newest live one."""
        self._items_added(first=self.items_state.end, items=items)

    @event("ItemsAdded")
    def _items_added(self, first: int, items: list[dict[str, Any]]) -> None:
        state = self.items_state
        state.end = first + len(items)
        state.adds += 1
        state.added += len(items)

    def pop(self) -> int | None:
        """Remove the newest live item; returns its position (None if none is live)."""
        state = self.items_state
        if state.end <= state.start:
            return None
        position = state.end - 1
        self._item_popped(position=position)
        return position

    def drop_prefix(self, upto: int) -> None:
        """Remove the live items before position ``upto`` (expired ones), keeping the
        rest live (unlike :meth:`clear`)."""
        if self.items_state.start < upto <= self.items_state.end:
            self._prefix_dropped(upto=upto)

    @event("PrefixDropped")
    def _prefix_dropped(self, upto: int) -> None:
        self.items_state.start = upto

    def truncate(self, position: int) -> None:
        """Remove the live items at ``position`` and after (one event: what a pop of
        each would do)."""
        if self.items_state.start <= position < self.items_state.end:
            self._item_popped(position=position)

    @event("ItemPopped")
    def _item_popped(self, position: int) -> None:
        self.items_state.end = position

    def clear(self) -> None:
        """End the live view: every item so far stays only in the log."""
        self._cleared(upto=self.items_state.end)

    @event("Cleared")
    def _cleared(self, upto: int) -> None:
        self.items_state.start = upto
        self.items_state.cleared_at = self.version + 1


def _chunks(items: list[dict[str, Any]], limit: int) -> Iterable[list[dict[str, Any]]]:
    """``items`` in runs whose JSON-ish size stays under ``limit`` (at least one each)."""
    encode = msgspec.msgpack.encode
    run: list[dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(encode(item))
        if run and size + item_size > limit:
            yield run
            run, size = [], 0
        run.append(item)
        size += item_size
    if run:
        yield run


Command = Callable[[ItemLog], None]


@dataclass
class _Batch:
    """The writes of one replacement: ``add_items`` and ``clear_session`` calls made
    while it is open (by the session's own methods or a subclass's overrides of them)
    are recorded here and saved together, in one transaction, when it ends."""

    session: SnaptailSession
    commands: list[tuple[Command, bool]] = field(default_factory=list)


_BATCH: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
    "snaptail_session_batch", default=None
)


class _OneAtATime:
    """Mutual exclusion for one session's operations across tasks, threads and event
    loops: an ``asyncio.Lock`` per loop (tasks of one loop queue in order), then a
    thread lock polled without blocking the loop (one loop at a time)."""

    def __init__(self) -> None:
        self._threads = threading.Lock()
        self._guard = threading.Lock()
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        with self._guard:
            lock = self._per_loop.get(loop)
            if lock is None:
                lock = self._per_loop[loop] = asyncio.Lock()
        async with lock:
            delay = 0.0005
            while not self._threads.acquire(blocking=False):
                await asyncio.sleep(delay)
                delay = min(2 * delay, 0.02)
            try:
                yield
            finally:
                self._threads.release()


class SnaptailSession:
    """An Agents SDK ``Session`` stored in snaptail (SQLite or PostgreSQL).

    ``store`` is a database URL (None: the default one) or an
    :class:`~snaptail.AsyncAgentStore`. Sessions (and LangGraph savers) made with the
    same URL share one store and its connections (:mod:`snaptail.integrations.shared`),
    whichever thread or event loop uses them; :meth:`close` (or garbage collection)
    gives the session's hold back. An explicit store is used as it is, on the
    caller's event loop (on PostgreSQL its pool serves the loop it was opened on).
    Operations of one session object run one at a time, from any number of tasks,
    threads and event loops; writers elsewhere are detected by version and the
    operation is redone on fresh state.
    ``subjects`` (ids of the people the session is about) are added to the session's
    agent before its first write: its items are then stored encrypted, and
    ``store.forget`` of any of them erases it (README: Forgetting a person).
    """

    def __init__(
        self,
        session_id: str,
        store: AsyncAgentStore | str | None = None,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        subjects: Iterable[str] = (),
    ) -> None:
        from agents.memory.session_settings import SessionSettings, coerce_session_settings

        self.session_id = session_id
        self.session_settings: SessionSettings | None = (
            coerce_session_settings(session_settings)
            if session_settings is not None
            else SessionSettings()
        )
        self.store, self._lease = async_store_for(self, store)
        self.agent_id = session_agent_id(session_id)
        self._log: ItemLog | None = None
        self._lock = _OneAtATime()
        self.subjects = tuple(subjects)
        register_cache(self)  # store.forget drops the loaded log (snaptail.privacy)

    def evict(self, agent_id: UUID) -> bool:
        """Drop the loaded log if it is ``agent_id``'s (its subject was forgotten)."""
        if agent_id != self.agent_id or self._log is None:
            return False
        self._log = None
        return True

    async def _run(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run one operation where the store lives: a shared store's home loop, or
        the caller's loop for an explicit store."""
        if self._lease is not None:
            return await call_on_home(operation)
        return await operation

    # -- the Session protocol -------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The live items, oldest first; with ``limit``, only the newest ``limit``."""
        from agents.memory.session_settings import resolve_session_limit

        resolved = resolve_session_limit(limit, self.session_settings)
        return await self._run(self._get_items(resolved))

    async def _get_items(self, limit: int | None) -> list[TResponseInputItem]:
        async with self._lock.hold():
            log = await self._fresh()
            if log is None or limit == 0:
                return []
            state = log.items_state
            if limit is None or limit < 0:  # as SQLiteSession: negative means no limit
                return cast("list[TResponseInputItem]", await self._read_all(log))
            first = max(state.start, state.end - limit)
            return cast("list[TResponseInputItem]", await self._read_newest(log, first))

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` (one transaction, however many there are)."""
        if not items:
            return
        plain = [dict(item) for item in items]

        def command(log: ItemLog) -> None:
            for run in _chunks(plain, EVENT_ITEMS_BYTES):
                log.add(run)

        await self._write(command, create=True)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest live item (None if there is none)."""
        batch = _BATCH.get()
        if batch is not None and batch.session is self:
            raise RuntimeError(
                f"session {self.session_id!r}: pop_item() inside a replacement of the"
                " session's items is not supported (a replacement records add_items and"
                " clear_session calls only)"
            )
        return await self._run(self._pop_item())

    async def _pop_item(self) -> TResponseInputItem | None:
        async with self._lock.hold():
            for wait in self.store.retry.conflict_waits():
                log = await self._fresh()
                if log is None or log.items_state.end <= log.items_state.start:
                    return None
                [item] = await self._read_newest(log, log.items_state.end - 1)
                log.pop()
                if await self._saved(log, wait):
                    return cast("TResponseInputItem", item)
        raise AssertionError("unreachable")

    async def clear_session(self) -> None:
        """Empty the live view (the items stay in the log)."""

        def command(log: ItemLog) -> None:
            if log.items_state.end > log.items_state.start:
                log.clear()

        await self._write(command, create=False)

    async def replace_items(self, items: list[TResponseInputItem]) -> bool:
        """Replace the live items with ``items`` in one transaction (what compaction
        needs). It calls :meth:`clear_session` and :meth:`add_items`, so a subclass's
        overrides of them see (and may change or refuse) the replacement; their
        writes are saved together at the end, or not at all if one raises."""
        commands = await self._recorded(list(items), clear=True)
        await self._run(self._apply_now(commands))
        return True

    async def _apply_now(
        self,
        commands: list[tuple[Command, bool]],
        check: Callable[[ItemLog], Awaitable[bool]] | None = None,
    ) -> bool:
        async with self._lock.hold():
            return await self._apply(commands, check)

    # The SDK's OpenAIResponsesCompactionSession replaces history with this hook when
    # the wrapped session has it (one transaction instead of clear, then add).
    _atomic_replace_items = replace_items

    async def _recorded(
        self, items: list[TResponseInputItem], *, clear: bool
    ) -> list[tuple[Command, bool]]:
        """The writes ``clear_session()`` (if ``clear``) then ``add_items(items)`` make,
        through the public methods (and so any override of them), not saved. They run
        on the caller's event loop (an override may await the caller's own objects);
        nothing is read or written until the commands are applied."""
        batch = _Batch(self)
        token = _BATCH.set(batch)
        try:
            if clear:
                await self.clear_session()
            if items:
                await self.add_items(items)
        finally:
            _BATCH.reset(token)
        return batch.commands

    async def _get_compaction_snapshot(
        self,
        limit: int,
        *,
        prune_prefix: Callable[[TResponseInputItem], bool] | None = None,
    ) -> _CompactionSnapshot | None:
        """The newest ``limit`` live items, whether they are all of them, and a
        replacement of a suffix of them that applies only if that suffix is still the
        newest stored (the SDK's ``OpenAIResponsesCompactionSession`` uses this, as
        it does ``SQLiteSession``'s, to compact the latest exchange while keeping
        older history). ``prune_prefix`` says which of the oldest live items have
        expired: the replacement also drops the run of them at the start (a
        ``PrefixDropped`` event; they stay in the log). None (no snapshot: the SDK
        then needs the whole history) when a subclass overrides ``get_items`` (its
        reads would be bypassed)."""
        from agents.memory.session import _CompactionSnapshot

        if type(self).get_items is not SnaptailSession.get_items:
            return None
        if limit <= 0:
            return None
        items, complete = await self._run(self._snapshot(limit))

        async def replace_suffix(start: int, output: list[TResponseInputItem]) -> bool:
            expected = items[start:]
            if not expected:
                return False
            commands = await self._recorded(list(output), clear=False)
            check = _suffix_check(self, expected, prune_prefix)
            return await self._run(self._apply_now(commands, check))

        return _CompactionSnapshot(items, complete, replace_suffix)

    async def _snapshot(self, limit: int) -> tuple[list[TResponseInputItem], bool]:
        async with self._lock.hold():
            log = await self._fresh()
            if log is None:
                return [], True
            state = log.items_state
            first = max(state.start, state.end - limit)
            items = await self._read_newest(log, first)
            return cast("list[TResponseInputItem]", items), first == state.start

    async def close(self) -> None:
        """Give back this session's hold on the shared store (the last one closes it).
        A session given an explicit store leaves it open."""
        if self._lease is not None:
            self._lease.release()

    # -- reading --------------------------------------------------------------------

    async def _fresh(self) -> ItemLog | None:
        """The session's aggregate as stored now (None if never written). Reuses the
        loaded one when no writer has appended since (one index read)."""
        self._log = await load_fresh(self.store, self.agent_id, self._log, ItemLog)
        return self._log

    async def _read_newest(self, log: ItemLog, first: int) -> list[dict[str, Any]]:
        """The live items at positions ``first .. end-1``: the newest write of each,
        from the recent-event cache, then reverse pages of the log."""
        state = log.items_state
        wanted = state.end - first
        found: dict[int, dict[str, Any]] = {}
        oldest_cached: int | None = None
        for stored in reversed(log.recent_events):
            oldest_cached = stored.originator_version
            self._take(stored, first, state.end, found)
            if len(found) == wanted or stored.originator_version <= state.cleared_at:
                break
        before = oldest_cached if oldest_cached is not None else log.version + 1
        while len(found) < wanted and before > state.cleared_at + 1:
            # As many events as the items still needed fill, at the mean event size.
            needed = wanted - len(found)
            page_size = max(1, min(500, -(-needed * state.adds // max(state.added, 1))))
            read = 0
            async with aclosing(
                self.store.history(
                    self.agent_id,
                    after=state.cleared_at,
                    before=before,
                    reverse=True,
                    types=[ItemLog.ItemsAdded],
                    page_size=page_size,
                )
            ) as events:
                async for stored in events:
                    self._take(stored, first, state.end, found)
                    before = stored.originator_version
                    read += 1
                    if read == page_size or len(found) == wanted:
                        break
            if read < page_size:
                break  # the log after the clear has no more items
        if len(found) < wanted:
            missing = sorted(set(range(first, state.end)) - set(found))
            raise RuntimeError(
                f"session {self.session_id!r} (agent {self.agent_id}, version {log.version}): "
                f"items at positions {missing[:5]} are missing from the log"
            )
        # Copies: the caller may change them, the cache must not change.
        return cast(
            "list[dict[str, Any]]",
            msgspec.msgpack.decode(
                msgspec.msgpack.encode([found[p] for p in range(first, state.end)])
            ),
        )

    @staticmethod
    def _take(stored: Any, first: int, end: int, found: dict[int, dict[str, Any]]) -> None:
        """Keep the items of one ``ItemsAdded`` event at positions not found yet
        (the event is newer than any seen after it, so its writes win)."""
        if type(stored) is not ItemLog.ItemsAdded:
            return
        for offset, item in enumerate(stored.items):
            position = stored.first + offset
            if first <= position < end and position not in found:
                found[position] = item

    async def _read_all(self, log: ItemLog) -> list[dict[str, Any]]:
        """Every live item, reading the ``ItemsAdded`` events after the newest clear
        page by page (a later write of a position replaces an earlier one)."""
        state = log.items_state
        live: dict[int, dict[str, Any]] = {}
        async for stored in self.store.history(
            self.agent_id,
            after=state.cleared_at,
            before=log.version + 1,
            types=[ItemLog.ItemsAdded],
            page_size=READ_ALL_PAGE,
        ):
            for offset, item in enumerate(stored.items):
                live[stored.first + offset] = item
        return [live[p] for p in range(state.start, state.end)]

    # -- writing --------------------------------------------------------------------

    async def _write(self, command: Command, *, create: bool) -> None:
        batch = _BATCH.get()
        if batch is not None and batch.session is self:
            batch.commands.append((command, create))
            return
        await self._run(self._write_now(command, create))

    async def _write_now(self, command: Command, create: bool) -> None:
        async with self._lock.hold():
            await self._apply([(command, create)])

    async def _apply(
        self,
        commands: list[tuple[Command, bool]],
        check: Callable[[ItemLog], Awaitable[bool]] | None = None,
    ) -> bool:
        """Apply ``commands`` to the stored session and save them in one transaction,
        redoing it on fresh state if another writer saved first. ``check`` (run first
        on each attempt) may refuse: then nothing is saved and False returned."""
        for wait in self.store.retry.conflict_waits():
            log = await self._fresh()
            if log is None:
                if check is not None or not any(create for _, create in commands):
                    return False
                if self.subjects:  # before the first save (AgentForgotten if forgotten)
                    await self.store.add_subject(self.agent_id, *self.subjects)
                log = ItemLog(name=self.session_id)
            if check is not None and not await check(log):
                return False
            try:
                for command, _ in commands:
                    command(log)
            except BaseException:
                self._log = None  # it may hold some of the changes: reload next time
                raise
            if await self._saved(log, wait):
                return True
        raise AssertionError("unreachable")

    async def _saved(self, log: ItemLog, wait: float | None) -> bool:
        """Save; False (to redo the operation on fresh state, after ``wait`` seconds)
        if another writer won; the conflict itself when the store's retry policy
        allows no more tries (``wait`` None)."""
        try:
            await self.store.save(log)
        except SaveOutcomeUnknown as unknown:
            # Asked by its save id before the operation is done again: never twice.
            self._log = None
            try:
                return await self.store.save_committed(unknown.save_id)
            except Exception as exc:
                raise unknown from exc
        except BaseException as exc:
            self._log = None  # it holds unsaved changes: reload next time
            if not isinstance(exc, ConcurrencyError):
                raise
            if wait is None:
                raise
            logger.debug(
                "session write raced another writer: agent=%s wait=%s",
                self.agent_id,  # (not the session id: it may be personal)
                wait,
            )
            await asyncio.sleep(wait)
            return False
        self._log = log
        return True

    async def items_in_log(self) -> AsyncIterator[dict[str, Any]]:
        """Every item ever added, live or not, oldest first (the audit view)."""
        after = 0
        while True:
            page = await self._run(self._log_page(after))
            for version, items in page:
                after = version
                for item in items:
                    yield item
            if len(page) < READ_ALL_PAGE:
                return

    async def _log_page(self, after: int) -> list[tuple[int, list[dict[str, Any]]]]:
        """Up to READ_ALL_PAGE ``ItemsAdded`` events after version ``after``."""
        page: list[tuple[int, list[dict[str, Any]]]] = []
        async with aclosing(
            self.store.history(
                self.agent_id, after=after, types=[ItemLog.ItemsAdded], page_size=READ_ALL_PAGE
            )
        ) as events:
            async for stored in events:
                page.append((stored.originator_version, list(stored.items)))
                if len(page) == READ_ALL_PAGE:
                    break
        return page


def _suffix_check(
    session: SnaptailSession,
    expected: list[TResponseInputItem],
    prune_prefix: Callable[[TResponseInputItem], bool] | None,
) -> Callable[[ItemLog], Awaitable[bool]]:
    """A check for ``_apply``: the newest live items are still ``expected``; if so they
    are removed (one event), for the commands to add their replacement, and the run
    of expired items at the start (``prune_prefix``) is dropped."""

    async def check(log: ItemLog) -> bool:
        state = log.items_state
        first = state.end - len(expected)
        if first < state.start:
            return False
        if await session._read_newest(log, first) != expected:
            return False
        if prune_prefix is not None and first > state.start:
            older = await session._read_all(log)
            upto = state.start
            for item in older[: first - state.start]:
                if not prune_prefix(cast("TResponseInputItem", item)):
                    break
                upto += 1
            log.drop_prefix(upto)
        log.truncate(first)
        return True

    return check


__all__ = [
    "ItemLog",
    "ItemLogState",
    "SnaptailSession",
    "session_agent_id",
]
