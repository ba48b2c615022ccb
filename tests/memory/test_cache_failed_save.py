"""Review: after a save through ``AgentCache`` fails (nothing was written), the cache
must not hand out the agent object that still holds the unsaved events. A caller that
retries "get, apply the command, save" (the usual way to retry) otherwise applies the
command twice: the old pending event and the new one are both saved. Only a
``ConcurrencyError`` evicted, and only the agent that conflicted."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from snaptail import Agent, AgentCache, AgentStore, ConcurrencyError, SnaptailError


def _retry(cache: AgentCache, agent_id: uuid.UUID, label: str) -> None:
    agent = cache.get(agent_id)
    agent.add_input("user", label)
    cache.save(agent)


def _inputs(store: AgentStore, agent_id: uuid.UUID) -> list[str]:
    return [item.text for item in store.get(agent_id).state.window.items]


def test_a_save_that_timed_out_on_the_lock_is_not_applied_twice(sqlite_url: str) -> None:
    path = sqlite_url[len("sqlite:///") :]
    with AgentStore(sqlite_url, lock_timeout=1) as store:
        cache = AgentCache(store, "16MiB")
        agent = Agent("a")
        cache.save(agent)
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(SnaptailError):
                _retry(cache, agent.id, "hello")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        _retry(cache, agent.id, "hello")  # the caller retries the whole command
        assert _inputs(store, agent.id) == ["hello"]


def test_a_conflict_in_a_multi_agent_save_evicts_every_agent_of_it(database_url: str) -> None:
    with AgentStore(database_url) as store:
        cache = AgentCache(store, "16MiB")
        first, second = Agent("first"), Agent("second")
        cache.save(first, second)
        other = store.get(second.id)  # another writer moves `second` on
        other.add_input("user", "elsewhere")
        store.save(other)
        a, b = cache.get(first.id), cache.get(second.id)
        a.add_input("user", "hello")
        b.add_input("user", "hello")
        with pytest.raises(ConcurrencyError):
            cache.save(a, b)
        _retry(cache, first.id, "hello")  # retrying the command on `first` alone
        assert _inputs(store, first.id) == ["hello"]
