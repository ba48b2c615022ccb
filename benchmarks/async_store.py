"""AsyncAgentStore under 200 coroutines beside the sync store driven from 8 threads.

    python -m benchmarks.async_store --markdown
    python -m benchmarks.async_store --quick

Every coroutine (or thread job) owns one agent and does ``ops`` cycles of: load it,
record one user message, save it. Meanwhile a ticker coroutine on the same event loop
sleeps 5 ms again and again; how late it wakes up is the **event-loop lag** a server
running this loop would add to every other request. Three ways to drive the store, on
both backends, each on a fresh database:

* ``async``: ``AsyncAgentStore``, one coroutine per agent (200 at once);
* ``sync, 8 threads``: ``AgentStore``, one job per agent on an 8-thread executor the
  loop awaits (the usual way to call blocking code from asyncio);
* ``sync, in the loop``: ``AgentStore`` called straight from the coroutines (what
  happens without an async store: every call blocks the loop).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from uuid import UUID

from benchmarks.backends import DEFAULT_POSTGRES_URL, postgres_database, sqlite_database
from snaptail import Agent, AgentStore, AsyncAgentStore
from snaptail.bench.measure import percentile

MESSAGE = "Could you check why the nightly pipeline failed on the staging database? " * 2
TICK_S = 0.005


@dataclass(frozen=True)
class Result:
    backend: str
    mode: str
    cycles: int
    seconds: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float

    @property
    def per_second(self) -> float:
        return self.cycles / self.seconds


async def measured(work: Callable[[], Awaitable[None]]) -> tuple[float, list[float]]:
    """Run ``work`` with a ticker beside it; returns its seconds and the ticker's lags."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append((time.perf_counter() - t0 - TICK_S) * 1000)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    await work()
    seconds = time.perf_counter() - started
    done.set()
    await tick
    return seconds, lags


def cycle_sync(store: AgentStore, agent_id: UUID, ops: int) -> None:
    for i in range(ops):
        agent = store.get(agent_id)
        agent.add_input("user", f"{i}: {MESSAGE}")
        store.save(agent)


async def run_async(url: str, agents: int, ops: int) -> tuple[float, list[float]]:
    async with AsyncAgentStore(url) as store:
        ids = []
        for n in range(agents):
            agent = Agent(name=f"agent-{n}")
            await store.save(agent)
            ids.append(agent.id)

        async def cycle(agent_id: UUID) -> None:
            for i in range(ops):
                agent = await store.get(agent_id)
                agent.add_input("user", f"{i}: {MESSAGE}")
                await store.save(agent)

        async def work() -> None:
            await asyncio.gather(*(cycle(agent_id) for agent_id in ids))

        return await measured(work)


async def run_threads(url: str, agents: int, ops: int) -> tuple[float, list[float]]:
    with AgentStore(url) as store, ThreadPoolExecutor(max_workers=8) as pool:
        ids = []
        for n in range(agents):
            agent = Agent(name=f"agent-{n}")
            store.save(agent)
            ids.append(agent.id)
        loop = asyncio.get_running_loop()

        async def work() -> None:
            jobs = [loop.run_in_executor(pool, cycle_sync, store, i, ops) for i in ids]
            await asyncio.gather(*jobs)

        return await measured(work)


async def run_blocking(url: str, agents: int, ops: int) -> tuple[float, list[float]]:
    with AgentStore(url) as store:
        ids = []
        for n in range(agents):
            agent = Agent(name=f"agent-{n}")
            store.save(agent)
            ids.append(agent.id)

        async def cycle(agent_id: UUID) -> None:
            for i in range(ops):
                agent = store.get(agent_id)  # blocks the loop
                agent.add_input("user", f"{i}: {MESSAGE}")
                store.save(agent)  # blocks the loop
                await asyncio.sleep(0)  # lets the other coroutines (and the ticker) in

        async def work() -> None:
            await asyncio.gather(*(cycle(agent_id) for agent_id in ids))

        return await measured(work)


MODES = {
    "async": run_async,
    "sync, 8 threads": run_threads,
    "sync, in the loop": run_blocking,
}


def measure(backend: str, url_of: Callable[[], object], agents: int, ops: int) -> list[Result]:
    results = []
    for mode, run in MODES.items():
        with url_of() as url:  # type: ignore[attr-defined]
            seconds, lags = asyncio.run(run(url, agents, ops))
        lags = lags or [0.0]
        results.append(
            Result(
                backend=backend,
                mode=mode,
                cycles=agents * ops,
                seconds=seconds,
                lag_p50_ms=statistics.median(lags),
                lag_p99_ms=percentile(lags, 0.99),
                lag_max_ms=max(lags),
            )
        )
        print(f"# {backend:10} {mode:18} {results[-1].per_second:8.0f} cycles/s", flush=True)
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| backend | driven by | cycles/s | vs sync, 8 threads | loop lag p50 ms "
        "| loop lag p99 ms | loop lag max ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    threads = {r.backend: r.per_second for r in results if r.mode == "sync, 8 threads"}
    for r in results:
        lines.append(
            f"| {r.backend} | {r.mode} | {r.per_second:,.0f} | "
            f"{r.per_second / threads[r.backend]:.2f} | {r.lag_p50_ms:.1f} | "
            f"{r.lag_p99_ms:.1f} | {r.lag_max_ms:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--ops", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="50 agents, 10 cycles each")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    agents, ops = (50, 10) if args.quick else (args.agents, args.ops)
    results = measure("SQLite", sqlite_database, agents, ops)
    if not args.no_postgres:
        results += measure("PostgreSQL", lambda: postgres_database(args.postgres_url), agents, ops)
    print(table(results) if args.markdown else "\n".join(map(str, results)))


if __name__ == "__main__":
    main()
