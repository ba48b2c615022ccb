"""AgentCache: an LRU of loaded agents bounded in bytes; and a soak test of one process."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from uuid import UUID

import pytest

from snaptail import Agent, AgentCache, AgentStore

KIB = 1024
# memory_bytes() is within 30% of tracemalloc (tests/memory/test_memory.py).
TOLERANCE = 0.30


def saved_agents(store: AgentStore, count: int, text: int = 1_000) -> list[UUID]:
    agents = []
    for i in range(count):
        agent = Agent(f"agent-{i}")
        for j in range(10):
            agent.add_input("user", f"{i}-{j} " + "x" * text)
        agents.append(agent)
    store.save(*agents)
    return [a.id for a in agents]


def test_the_cache_evicts_least_recently_used_agents_by_bytes(database_url: str) -> None:
    with AgentStore(database_url, recent_events=5) as store:
        ids = saved_agents(store, 6)
        one = store.get(ids[0]).memory_bytes()
        cache = AgentCache(store, max_bytes=int(3.5 * one))
        first = cache.get(ids[0])
        assert cache.get(ids[0]) is first
        assert (cache.hits, cache.misses) == (1, 1)
        cache.get(ids[1])
        cache.get(ids[2])
        cache.get(ids[0])  # now ids[1] is the least recently used
        cache.get(ids[3])
        assert ids[1] not in cache
        assert all(i in cache for i in (ids[0], ids[2], ids[3]))
        assert len(cache) == 3 and cache.evictions == 1
        assert cache.bytes <= cache.max_bytes
        assert cache.get(ids[1]) is not first and cache.misses == 5


def test_save_remeasures_and_evict_drops_only_the_caches_reference(database_url: str) -> None:
    with AgentStore(database_url, recent_events=5) as store:
        ids = saved_agents(store, 2, text=100)
        cache = AgentCache(store, max_bytes="1MiB")
        agent = cache.get(ids[0])
        before = cache.bytes
        agent.add_input("user", "y" * 50_000)
        cache.save(agent)
        # +50,000 of text, less the oldest of the 5 cached rows it pushed out (a raw
        # stored row, ~170 bytes: loads cache rows undecoded).
        assert cache.bytes >= before + 49_000
        assert cache.evict(ids[0]) and not cache.evict(ids[0])
        assert ids[0] not in cache and cache.bytes == 0
        agent.add_input("user", "still mine")  # the caller's reference still works
        cache.save(agent)
        assert ids[0] in cache
        assert store.get(ids[0]).version == agent.version


def test_an_agent_larger_than_the_cache_is_returned_but_not_cached(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with AgentStore(database_url) as store:
        ids = saved_agents(store, 1)
        cache = AgentCache(store, max_bytes="4KiB")
        with caplog.at_level(logging.WARNING, logger="snaptail.cache"):
            agent = cache.get(ids[0])
        assert agent.id == ids[0] and ids[0] not in cache and cache.bytes == 0
        assert any("larger than the whole cache" in r.getMessage() for r in caplog.records)


def soak(
    url: str, agents: int, events: int, max_bytes: int, per_turn: int
) -> tuple[int, AgentCache, int]:
    """Drive ``agents`` agents through ``events`` small events (``per_turn`` per agent and
    turn) in batched saves, through an AgentCache, under tracemalloc. Returns the bytes
    still allocated after the run (by everything the run created), the cache and the
    events stored."""
    store = AgentStore(url, snapshot_every=50, recent_events=20)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = AgentCache(store, max_bytes=max_bytes)
        created = [Agent(f"agent-{i}") for i in range(agents)]
        for start in range(0, agents, 100):
            cache.save(*created[start : start + 100])
        ids = [a.id for a in created]
        del created
        stored = agents
        turn = 0
        while stored < events:
            batch: list[Agent] = []
            for n, agent_id in enumerate(ids):
                agent = cache.get(agent_id)
                for k in range(per_turn):
                    agent.add_input("user", f"turn {turn} message {k} for agent {n}")
                batch.append(agent)
                if len(batch) == 100:
                    cache.save(*batch)
                    batch = []
            cache.save(*batch)
            stored += per_turn * len(ids)
            turn += 1
        del batch, agent
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    total = sum(store.event_count(agent_id) for agent_id in ids)
    store.close()
    return grown, cache, total


def soak_figures(url: str, events: int, max_bytes: int, per_turn: int) -> dict[str, int]:
    """:func:`soak` of 1,000 agents, as plain figures (run in a process of its own)."""
    grown, cache, stored = soak(url, 1_000, events, max_bytes, per_turn)
    return {
        "grown": grown,
        "stored": stored,
        "bytes": cache.bytes,
        "evictions": cache.evictions,
        "held": len(cache),
    }


def _check_soak(url: str, events: int, per_turn: int) -> None:
    # In a fresh process: tracemalloc traces every thread, and threads left running by
    # earlier tests in the same process (a shared store's loop, a notifier) would
    # count their allocations as this run's (a mixed run once measured 2.79 MB).
    max_bytes = 2 * 1024 * 1024
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        figures = pool.submit(soak_figures, url, events, max_bytes, per_turn).result()
    grown, stored = figures["grown"], figures["stored"]
    assert stored >= events
    assert figures["bytes"] <= max_bytes
    assert figures["evictions"] > 1_000  # the agents did not fit: the bound was exercised
    average = figures["bytes"] / figures["held"]
    assert 1_000 * average > 3 * max_bytes  # holding them all would be far over
    assert grown <= max_bytes * (1 + TOLERANCE), f"{grown} bytes held after the run"


def test_soak_1000_agents_20000_events_stays_within_the_cache_budget(sqlite_url: str) -> None:
    """Every agent is created, evicted, loaded again and saved (about 10 s: tracemalloc
    slows Python down several times)."""
    _check_soak(sqlite_url, 20_000, per_turn=20)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SNAPTAIL_SLOW") != "1", reason="set SNAPTAIL_SLOW=1")
def test_soak_1000_agents_200000_events_stays_within_the_cache_budget(sqlite_url: str) -> None:
    """The full soak: 20 turns of 10 events per agent (minutes under tracemalloc)."""
    _check_soak(sqlite_url, 200_000, per_turn=10)
