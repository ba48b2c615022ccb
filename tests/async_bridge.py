"""Runs the storage tests against ``AsyncAgentStore`` too: a blocking facade over it.

``BlockingAsyncStore`` has the sync store's methods; each one runs the async store's
coroutine on an event loop in a background thread and waits for it, so a test written
for ``AgentStore`` exercises the async code path unchanged (``history`` pulls one
event at a time from the async iterator, so laziness is preserved).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID

from snaptail import Agent, AgentStore, AsyncAgentStore
from snaptail.infrastructure.async_recorder import AsyncAgentRecorder, ThreadedRecorder
from snaptail.infrastructure.recorder import AgentRecorder

T = TypeVar("T")

# What the ``make_store`` fixture gives: AgentStore, or BlockingAsyncStore typed as one.
MakeStore = Callable[..., AgentStore]


class BlockingAsyncStore:
    """An ``AsyncAgentStore`` driven from sync code (for tests)."""

    def __init__(self, url: str | None = None, **settings: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.inner = AsyncAgentStore(url, **settings)
        try:
            self._call(self.inner.open())
        except BaseException:
            self._stop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def async_recorder(self) -> AsyncAgentRecorder:
        return self.inner.recorder

    @property
    def recorder(self) -> AgentRecorder:
        """The sync recorder of the same database (for tests that reach the rows)."""
        return self.inner.recorder.sync

    def __getattr__(self, name: str) -> Any:  # mapper, policy_for, settings...
        return getattr(self.inner, name)

    @property
    def memory_budget(self) -> int | None:
        return self.inner.memory_budget

    @memory_budget.setter
    def memory_budget(self, value: int | None) -> None:
        self.inner.memory_budget = value

    def update(
        self, agent_id: UUID, command: Callable[[Agent], object], *, retries: int = 3
    ) -> Agent:
        return self._call(self.inner.update(agent_id, command, retries=retries))

    def save_committed(self, save_id: UUID | str) -> bool:
        return self._call(self.inner.save_committed(save_id))

    def prune_save_ids(self) -> int:
        return self._call(self.inner.prune_save_ids())

    def agent_ids(self, after: UUID | str | None = None) -> list[UUID]:
        async def collect() -> list[UUID]:
            return [agent_id async for agent_id in self.inner.agent_ids(after)]

        return self._call(collect())

    def snapshot_infos(self, agent_id: UUID) -> Any:
        return self._call(self.inner.snapshot_infos(agent_id))

    def prune_snapshots(self, agent_id: UUID, keep: int) -> int:
        return self._call(self.inner.prune_snapshots(agent_id, keep))

    def get(self, agent_id: UUID, version: int | None = None) -> Agent:
        return self._call(self.inner.get(agent_id, version))

    def get_many(
        self, agent_ids: Iterable[UUID | str], *, current: Any = None
    ) -> dict[UUID, Agent]:
        return self._call(self.inner.get_many(agent_ids, current=current))

    def save(self, *agents: Agent) -> None:
        self._call(self.inner.save(*agents))

    def snapshot(self, agent_id: UUID) -> int:
        return self._call(self.inner.snapshot(agent_id))

    def replay(self, agent_id: UUID, version: int | None = None) -> Agent:
        return self._call(self.inner.replay(agent_id, version))

    def latest(self, agent_id: UUID, *types: type[Any] | str) -> Any | None:
        return self._call(self.inner.latest(agent_id, *types))

    def event_count(self, agent_id: UUID) -> int:
        return self._call(self.inner.event_count(agent_id))

    def history(
        self,
        agent_id: UUID,
        after: int | None = None,
        before: int | None = None,
        reverse: bool = False,
        types: Iterable[type[Any] | str] | None = None,
        page_size: int = 500,
    ) -> Iterator[Any]:
        events = self.inner.history(agent_id, after, before, reverse, types, page_size)

        async def step() -> tuple[bool, Any]:
            try:
                return True, await anext(events)
            except StopAsyncIteration:
                return False, None

        while True:
            more, event = self._call(step())
            if not more:
                return
            yield event

    def close(self) -> None:
        try:
            self._call(self.inner.close())
        finally:
            self._stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def spy(store: Any, method: str, seen: Callable[[Any], None]) -> None:
    """Call ``seen`` with each result of the store's recorder ``method``: the sync
    recorder's, or for a ``BlockingAsyncStore`` on PostgreSQL the async recorder's
    (where its calls go; on SQLite they go to the sync recorder, on its threads)."""
    if isinstance(store, BlockingAsyncStore) and not isinstance(
        store.async_recorder, ThreadedRecorder
    ):
        target: Any = store.async_recorder
        inner_async = getattr(target, method)

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            result = await inner_async(*args, **kwargs)
            seen(result)
            return result

        setattr(target, method, async_wrapper)
        return
    target = store.recorder
    inner = getattr(target, method)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = inner(*args, **kwargs)
        seen(result)
        return result

    setattr(target, method, wrapper)
