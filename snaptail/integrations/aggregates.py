"""Helpers shared by the framework integrations that keep one aggregate per session.

An integration maps a framework's session (thread, conversation) to a snaptail
:class:`~snaptail.Agent` subclass with a chosen id, keeps the aggregates it loaded,
and reads a session's newest events from the loaded agent's recent-event cache before
it reads the log backwards. No framework is imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import aclosing
from typing import Any, TypeVar, cast
from uuid import UUID

from snaptail.application.async_store import AsyncAgentStore
from snaptail.domain.agent import Agent
from snaptail.errors import AgentNotFound

A = TypeVar("A", bound=Agent)


def start(cls: type[A], agent_id: UUID, name: str) -> A:
    """A new aggregate of ``cls`` with a chosen id (Agent's constructor makes its own)."""
    created = cast(Any, cls).Created
    return cast(A, cls._create(created, id=agent_id, name=name, system_prompt="", model=""))


async def load_fresh(
    store: AsyncAgentStore, agent_id: UUID, cached: A | None, cls: type[A]
) -> A | None:
    """The aggregate ``agent_id`` as stored now (None if never written). Reuses
    ``cached`` when no writer has appended since it was loaded (one index read)."""
    if cached is not None and await store.event_count(agent_id) == cached.version:
        return cached
    try:
        loaded = await store.get(agent_id)
    except AgentNotFound:
        return None
    return of_type(agent_id, loaded, cls)


def of_type(agent_id: UUID, loaded: Agent | None, cls: type[A]) -> A | None:
    """``loaded`` (None stays None) if it is a ``cls``, else TypeError naming it."""
    if loaded is not None and not isinstance(loaded, cls):
        raise TypeError(
            f"agent {agent_id} is a {type(loaded).__qualname__}, not a {cls.__qualname__}"
        )
    return loaded


async def newest_events(
    store: AsyncAgentStore,
    agent: Agent,
    types: Iterable[type[Any]],
    *,
    after: int,
    limit: int | None,
    stop: Callable[[Any], bool] | None = None,
    page_size: int = 100,
) -> list[Any]:
    """The agent's newest stored events of ``types`` with version > ``after``, newest
    first: at most ``limit`` (None: no limit), ending before the first event for which
    ``stop`` is true. Taken from the loaded agent's recent-event cache, then from
    reverse pages of the log; nothing older than needed is read."""
    wanted = tuple(types)
    found: list[Any] = []
    if limit == 0:
        return found
    before = agent.version + 1
    for stored in reversed(agent.recent_events):
        if stored.originator_version <= after or stored.originator_version >= before:
            if stored.originator_version <= after:
                return found
            continue
        before = stored.originator_version
        if not isinstance(stored, wanted):
            continue
        if stop is not None and stop(stored):
            return found
        found.append(stored)
        if limit is not None and len(found) >= limit:
            return found
    if before <= after + 1:
        return found
    size = page_size if limit is None else max(1, min(page_size, limit - len(found)))
    async with aclosing(
        store.history(
            agent.id, after=after, before=before, reverse=True, types=list(wanted), page_size=size
        )
    ) as events:
        async for stored in events:
            if stop is not None and stop(stored):
                break
            found.append(stored)
            if limit is not None and len(found) >= limit:
                break
    return found
