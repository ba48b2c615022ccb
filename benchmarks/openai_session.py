"""SnaptailSession beside the Agents SDK's SQLiteSession, at 1,000 and 100,000 items.

    python -m benchmarks.openai_session --markdown
    python -m benchmarks.openai_session --quick

Both sessions store the same items (chat messages of 200-600 characters, alternating
user and assistant) in a SQLite file (WAL) in a temporary directory; snaptail with its
defaults (a snapshot every 100 events, a 100-event recent cache). Each history is
built with ``add_items`` of 500 items, then measured, in turns, by:

* ``add_items`` of one turn (2 items): median ms per call over ``--calls`` calls;
* ``get_items(limit=20)``, what a runner with ``session_settings={"limit": 20}``
  reads before each turn: on the warm session object (the one that wrote) and on a
  fresh one (a new process or request handler: snaptail loads snapshot + tail);
* ``get_items()``: all live items (median of 3);
* memory (tracemalloc, Python heap, on only while measuring memory): what a new
  session object holds after one ``get_items(limit=20)`` (its caches), and the peak
  while ``get_items(limit=20)`` and ``get_items()`` run on the warm object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agents import SQLiteSession

from snaptail import AsyncAgentStore
from snaptail.integrations.openai_agents import SnaptailSession

BUILD_BATCH = 500
# The words of the simulated messages (benchmarks.adk_sessions uses them too).
WORDS = [
    "the",
    "agent",
    "checks",
    "the",
    "order",
    "status",
    "and",
    "replies",
    "with",
    "the",
    "tracking",
    "link",
]


def items(start: int, count: int, seed: int = 7) -> list[Any]:
    rng = random.Random(seed + start)
    out = []
    for n in range(start, start + count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(35, 100)))
        out.append({"role": "user" if n % 2 == 0 else "assistant", "content": f"{n}: {text}"})
    return out


async def median_ms(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


async def peak_bytes(call: Callable[[], Awaitable[Any]]) -> int:
    """Bytes allocated at the peak of ``call`` (tracemalloc, on only while measuring)."""
    gc.collect()
    tracemalloc.start()
    try:
        result = await call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak


async def held_bytes(make: Callable[[], Any], use: Callable[[Any], Awaitable[Any]]) -> int:
    """Bytes a new session object keeps after ``use`` (its caches; Python heap)."""
    gc.collect()
    tracemalloc.start()
    try:
        session = make()
        await use(session)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del session
    return held


async def measure(n: int, calls: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="snaptail-session-bench-") as tmp:
        sdk_path = Path(tmp) / "sdk.db"
        async with AsyncAgentStore(f"sqlite:///{Path(tmp) / 'snaptail.db'}") as store:
            systems: dict[str, Callable[[], Any]] = {
                "SQLiteSession": lambda: SQLiteSession("bench", sdk_path),
                "SnaptailSession": lambda: SnaptailSession("bench", store),
            }
            writers = {name: make() for name, make in systems.items()}
            for start in range(0, n, BUILD_BATCH):
                batch = items(start, min(BUILD_BATCH, n - start))
                for session in writers.values():
                    await session.add_items(batch)
            for name, session in writers.items():
                r = results[name] = {}
                added = n

                async def add_turn(session: Any = session) -> None:
                    nonlocal added
                    await session.add_items(items(added, 2))
                    added += 2

                r["add_items (2 items), ms"] = await median_ms(add_turn, calls)
                make = systems[name]

                async def newest(session: Any = session) -> Any:
                    return await session.get_items(20)

                async def newest_fresh(make: Callable[[], Any] = make) -> Any:
                    fresh = make()
                    try:
                        return await fresh.get_items(20)
                    finally:
                        if isinstance(fresh, SQLiteSession):
                            fresh.close()

                async def everything(session: Any = session) -> Any:
                    return await session.get_items()

                r["get_items(limit=20), warm, ms"] = await median_ms(newest, calls)
                r["get_items(limit=20), fresh object, ms"] = await median_ms(
                    newest_fresh, max(5, calls // 4)
                )
                r["get_items(), ms"] = await median_ms(everything, 3)
                assert len(await everything()) == n + 2 * calls
                r["held after get_items(limit=20), KiB"] = (
                    await held_bytes(make, lambda s: s.get_items(20)) / 1024
                )
                r["peak in get_items(limit=20), KiB"] = await peak_bytes(newest) / 1024
                r["peak in get_items(), MiB"] = await peak_bytes(everything) / 1024 / 1024
                print(f"# {n:>7} {name}: {r}", flush=True)
            for session in writers.values():
                if isinstance(session, SQLiteSession):
                    session.close()
    return results


def table(all_results: dict[int, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| items | measure | SQLiteSession | SnaptailSession | snaptail / SDK |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for n, results in all_results.items():
        sdk, ours = results["SQLiteSession"], results["SnaptailSession"]
        for measure_name in sdk:
            a, b = sdk[measure_name], ours[measure_name]
            ratio = f"{b / a:.2f}" if a else "-"
            lines.append(f"| {n:,} | {measure_name} | {a:,.2f} | {b:,.2f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 items")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else args.sizes
    all_results = {n: asyncio.run(measure(n, args.calls)) for n in sizes}
    print(table(all_results) if args.markdown else all_results)


if __name__ == "__main__":
    main()
