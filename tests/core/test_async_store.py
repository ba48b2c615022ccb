"""What only the async store has: coroutines sharing it, ``async for``, cancellation.

Its load/save/history semantics are checked by the storage tests, which run on
``AsyncAgentStore`` too (the ``make_store`` fixture).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from snaptail import Agent, AgentNotFound, AsyncAgentStore, ConcurrencyError


def test_many_coroutines_each_saving_their_own_agent(database_url: str) -> None:
    async def main() -> None:
        async with AsyncAgentStore(database_url, snapshot_every=7) as store:

            async def work(n: int) -> Agent:
                agent = Agent(name=f"a{n}")
                await store.save(agent)
                for i in range(12):
                    loaded = await store.get(agent.id)
                    loaded.add_input("user", f"{n}:{i}")
                    await store.save(loaded)
                return loaded

            agents = await asyncio.gather(*(work(n) for n in range(20)))
            for agent in agents:
                loaded = await store.get(agent.id)
                assert loaded.version == 13 == await store.event_count(agent.id)
                assert loaded.state == (await store.replay(agent.id)).state == agent.state

    asyncio.run(main())


def test_racing_coroutines_on_one_agent_lose_nothing_silently(database_url: str) -> None:
    async def main() -> None:
        async with AsyncAgentStore(database_url) as store:
            agent = Agent(name="shared")
            await store.save(agent)
            wins = conflicts = 0

            async def writer(n: int) -> None:
                nonlocal wins, conflicts
                loaded = await store.get(agent.id)
                loaded.add_input("user", str(n))
                try:
                    await store.save(loaded)
                    wins += 1
                except ConcurrencyError:
                    conflicts += 1

            await asyncio.gather(*(writer(n) for n in range(10)))
            assert wins + conflicts == 10 and wins >= 1
            assert await store.event_count(agent.id) == 1 + wins

    asyncio.run(main())


def test_conflicts_under_contention_are_concurrency_errors(database_url: str) -> None:
    """Many coroutines racing on one agent, with snapshots in some saves: every
    failed save is a ConcurrencyError (on PostgreSQL a conflict inside the pipelined
    transaction once surfaced as OperationalError "pipeline aborted" in about one
    run in four of the session test), and the log holds exactly the winners."""

    async def main() -> None:
        async with AsyncAgentStore(database_url, snapshot_every=3) as store:
            agent = Agent(name="contended")
            await store.save(agent)
            wins = conflicts = 0

            async def writer(n: int) -> None:
                nonlocal wins, conflicts
                for i in range(8):
                    loaded = await store.get(agent.id)
                    loaded.add_input("user", f"{n}.{i}")
                    try:
                        await store.save(loaded)
                        wins += 1
                    except ConcurrencyError:
                        conflicts += 1

            await asyncio.gather(*(writer(n) for n in range(12)))
            assert wins + conflicts == 96 and conflicts > 0
            assert await store.event_count(agent.id) == 1 + wins

    for _ in range(20):
        asyncio.run(main())


def test_history_is_an_async_iterator(database_url: str) -> None:
    async def main() -> None:
        async with AsyncAgentStore(database_url) as store:
            agent = Agent(name="log")
            for i in range(9):
                agent.add_input("user", str(i))
            await store.save(agent)
            versions = [e.originator_version async for e in store.history(agent.id, page_size=4)]
            assert versions == list(range(1, 11))
            newest = [e.originator_version async for e in store.history(agent.id, reverse=True)]
            assert newest == versions[::-1]
            with pytest.raises(ValueError, match="page_size"):
                [e async for e in store.history(agent.id, page_size=0)]
            with pytest.raises(AgentNotFound):
                await store.get(uuid.uuid4())

    asyncio.run(main())


def test_a_cancelled_save_is_accounted_for(database_url: str) -> None:
    """Cancelling the caller while the transaction runs must not leave the agent
    holding events that were committed (saving them again would conflict), and must
    not tell the caller it failed when it committed: a save that committed returns
    normally; one that did not raises the cancellation."""

    async def main() -> None:
        async with AsyncAgentStore(database_url) as store:
            agent = Agent(name="cancelled")
            await store.save(agent)
            outcomes = set()
            for attempt in range(20):
                agent.add_input("user", f"attempt {attempt}")
                before = await store.event_count(agent.id)
                task = asyncio.create_task(store.save(agent))
                for _ in range(attempt % 4):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    await task
                    committed = True
                except asyncio.CancelledError:
                    committed = False
                outcomes.add(committed)
                stored = await store.event_count(agent.id)
                assert (stored > before) == committed, "returned normally exactly when stored"
                assert stored == agent.version - len(agent.pending_events)
                await store.save(agent)  # whatever is left is saved without a conflict
                assert await store.event_count(agent.id) == agent.version

    asyncio.run(main())


def test_opening_lazily_and_closing_twice() -> None:
    async def main() -> None:
        store = AsyncAgentStore(":memory:")
        agent = Agent(name="lazy")
        await store.save(agent)
        assert (await store.get(agent.id)).state == agent.state
        await store.close()
        await store.close()
        with pytest.raises(RuntimeError, match="not open"):
            store.recorder  # noqa: B018

    asyncio.run(main())
