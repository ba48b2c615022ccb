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
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast
from uuid import UUID, uuid5

import msgspec
from eventsourcing.domain import event

from snaptail.application.async_store import AsyncAgentStore
from snaptail.domain.agent import Agent
from snaptail.domain.state import AgentState
from snaptail.errors import ConcurrencyError, SaveOutcomeUnknown
from snaptail.integrations.aggregates import load_fresh

if TYPE_CHECKING:
    from agents.items import TResponseInputItem
    from agents.memory.session_settings import SessionSettings

logger = logging.getLogger("snaptail.openai_agents")

# Session ids map to agent ids in this namespace (stable across processes).
SESSION_NAMESPACE = UUID("a63545fb-136b-4f71-9bdc-8ee07f8296df")
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


class SnaptailSession:
    """An Agents SDK ``Session`` stored in snaptail (SQLite or PostgreSQL).

    ``store`` is an :class:`~snaptail.AsyncAgentStore` (shared by many sessions) or a
    database URL (the session opens its own store; close it with :meth:`close`).
    Operations of one session object run one at a time; writers in other tasks or
    processes are detected by version and the operation is redone on fresh state.
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
        self._owns_store = not isinstance(store, AsyncAgentStore)
        self.store = store if isinstance(store, AsyncAgentStore) else AsyncAgentStore(store)
        self.agent_id = session_agent_id(session_id)
        self._log: ItemLog | None = None
        self._lock = asyncio.Lock()
        self.subjects = tuple(subjects)

    # -- the Session protocol -------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The live items, oldest first; with ``limit``, only the newest ``limit``."""
        from agents.memory.session_settings import resolve_session_limit

        limit = resolve_session_limit(limit, self.session_settings)
        async with self._lock:
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
        async with self._lock:
            waits = self.store.retry.conflict_waits()
            while True:
                log = await self._fresh()
                if log is None or log.items_state.end <= log.items_state.start:
                    return None
                [item] = await self._read_newest(log, log.items_state.end - 1)
                log.pop()
                if await self._saved(log, waits):
                    return cast("TResponseInputItem", item)

    async def clear_session(self) -> None:
        """Empty the live view (the items stay in the log)."""

        def command(log: ItemLog) -> None:
            if log.items_state.end > log.items_state.start:
                log.clear()

        await self._write(command, create=False)

    async def replace_items(self, items: list[TResponseInputItem]) -> bool:
        """Clear and add ``items`` in one transaction (what compaction needs)."""

        def command(log: ItemLog) -> None:
            if log.items_state.end > log.items_state.start:
                log.clear()
            for run in _chunks([dict(item) for item in items], EVENT_ITEMS_BYTES):
                log.add(run)

        await self._write(command, create=True)
        return True

    # The SDK's OpenAIResponsesCompactionSession replaces history with this hook when
    # the wrapped session has it (one transaction instead of clear, then add).
    _atomic_replace_items = replace_items

    async def close(self) -> None:
        """Close the store if this session opened it."""
        if self._owns_store:
            await self.store.close()

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

    async def _write(self, command: Any, *, create: bool) -> None:
        async with self._lock:
            waits = self.store.retry.conflict_waits()
            while True:
                log = await self._fresh()
                if log is None:
                    if not create:
                        return
                    if self.subjects:  # before the first save (AgentForgotten if forgotten)
                        await self.store.add_subject(self.agent_id, *self.subjects)
                    log = ItemLog(name=self.session_id)
                command(log)
                if await self._saved(log, waits):
                    return

    async def _saved(self, log: ItemLog, waits: Iterator[float | None]) -> bool:
        """Save; False (to redo the operation on fresh state) if another writer won,
        or if a save whose outcome was unknown is found not to have committed (by its
        save id: never applied twice). The waits: the store's retry policy's."""
        try:
            await self.store.save(log)
        except SaveOutcomeUnknown as unknown:
            self._log = None
            try:
                committed = await self.store.save_committed(unknown.save_id)
            except Exception as exc:
                raise unknown from exc
            return committed
        except BaseException as exc:
            self._log = None  # it holds unsaved changes: reload next time
            if not isinstance(exc, ConcurrencyError):
                raise
            wait = next(waits)
            if wait is None:
                raise
            logger.debug(
                "session write raced another writer: session=%s agent=%s wait=%s",
                self.session_id,
                self.agent_id,
                wait,
            )
            await asyncio.sleep(wait)
            return False
        self._log = log
        return True

    async def items_in_log(self) -> AsyncIterator[dict[str, Any]]:
        """Every item ever added, live or not, oldest first (the audit view)."""
        async for stored in self.store.history(self.agent_id, types=[ItemLog.ItemsAdded]):
            for item in stored.items:
                yield item


__all__ = [
    "ItemLog",
    "ItemLogState",
    "SnaptailSession",
    "session_agent_id",
]
