"""One ADK user with many sessions: create_session and list_sessions as the user's
session directory grows, with the directory's snapshot policy as shipped
(``GrowWithState``) beside ``EveryNEvents(100)``, side by side in one process.

    python -m benchmarks.adk_directory --sessions 20000
    python -m benchmarks.adk_directory --sessions 100000 --markdown
    python -m benchmarks.adk_directory --sessions 100000 --only grow --markdown

Two ``SnaptailSessionService`` objects, each on an ``AsyncAgentStore`` of its own over
its own SQLite file: "grow" with the ADK types' own policy, "every-100" with
``policies={AdkDirectory: EveryNEvents(100), AdkScope: EveryNEvents(100)}``. Sessions
are created alternately in both (which goes first alternates), one user, a one-key
state each. Reported per quarter of the build: mean ms per ``create_session`` (the
mean, not the median: a snapshot's cost falls on one save in many).
When the user has 100, 1,000, 10,000 and 100,000 sessions (those reached), on each
service: the first and the last ``list_sessions_page(page_size=100)`` (warm, median of
15; the last page is the one whose token follows every other session), which
show whether a page's cost stays flat as the directory grows.
At the end, on each service: ``list_sessions_page(page_size=100)`` (median of 15),
``list_sessions`` of every session (median of 5), and the first
``list_sessions_page`` on a fresh store (its directory loaded cold: snapshot + tail;
median of 3), with the directory's snapshot and tail as that load read them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from snaptail import AsyncAgentStore, EveryNEvents
from snaptail.integrations.adk import SnaptailSessionService
from snaptail.integrations.adk_model import AdkDirectory, AdkScope, directory_uuid

APP, USER = "bench", "user"
NAMES = ("grow", "every-100")
CHECKPOINTS = (100, 1_000, 10_000, 100_000)


def open_store(name: str, path: Path) -> AsyncAgentStore:
    if name == "grow":
        return AsyncAgentStore(f"sqlite:///{path}")
    every = EveryNEvents(100)
    return AsyncAgentStore(f"sqlite:///{path}", policies={AdkDirectory: every, AdkScope: every})


async def median_ms(call: Callable[[], Awaitable[Any]], times: int) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def pages_at(
    services: dict[str, SnaptailSessionService], sessions: int
) -> list[tuple[str, dict[str, str]]]:
    """The first and the last page of 100 on each service (warm, median of 15)."""
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    for name, service in services.items():

        async def page(token: str | None, service: SnaptailSessionService = service) -> None:
            got = await service.list_sessions_page(
                app_name=APP, user_id=USER, page_size=100, page_token=token
            )
            assert len(got.sessions) == min(100, sessions)
            assert token is None or got.next_page_token is None  # the last page

        first[name] = f"{await median_ms(functools.partial(page, None), 15):.2f}"
        token = None  # the token after all sessions but the last 100 (not timed)
        if sessions > 100:
            before = await service.list_sessions_page(
                app_name=APP, user_id=USER, page_size=sessions - 100
            )
            token = before.next_page_token
        last[name] = f"{await median_ms(functools.partial(page, token), 15):.2f}"
    return [
        (f"list_sessions_page(page_size=100), first page at {sessions:,} sessions, ms", first),
        (f"list_sessions_page(page_size=100), last page at {sessions:,} sessions, ms", last),
    ]


async def run(sessions: int, names: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    rows: list[tuple[str, dict[str, str]]] = []
    with tempfile.TemporaryDirectory() as folder:
        paths = {name: Path(folder) / f"{name}.db" for name in names}
        stores = {name: open_store(name, paths[name]) for name in names}
        services = {name: SnaptailSessionService(stores[name]) for name in names}
        quarter = max(1, sessions // 4)
        times: dict[str, list[float]] = {name: [] for name in names}
        checks: list[tuple[str, dict[str, str]]] = []
        for i in range(sessions):
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                started = time.perf_counter()
                await services[name].create_session(
                    app_name=APP, user_id=USER, session_id=f"s{i:06}", state={"i": i}
                )
                times[name].append((time.perf_counter() - started) * 1000)
            if (i + 1) % quarter == 0 or i + 1 == sessions:
                figures = {n: f"{statistics.fmean(times[n]):.2f}" for n in names}
                first = i + 2 - len(times[names[0]])
                rows.append((f"create_session, sessions {first:,}-{i + 1:,}, ms", figures))
                print(rows[-1], flush=True)
                times = {name: [] for name in names}
            if i + 1 in CHECKPOINTS:
                checks += await pages_at(services, i + 1)
                print(checks[-2:], flush=True)

        async def page(service: SnaptailSessionService) -> None:
            got = await service.list_sessions_page(app_name=APP, user_id=USER, page_size=100)
            assert len(got.sessions) == min(100, sessions)

        async def everything(service: SnaptailSessionService) -> None:
            got = await service.list_sessions(app_name=APP, user_id=USER)
            assert len(got.sessions) == sessions

        figures_page: dict[str, str] = {}
        figures_all: dict[str, str] = {}
        figures_cold: dict[str, str] = {}
        read: dict[str, str] = {}
        for name in names:
            service = services[name]
            figures_page[name] = f"{await median_ms(functools.partial(page, service), 15):.2f}"
            figures_all[name] = f"{await median_ms(functools.partial(everything, service), 5):.1f}"
        for name in names:
            await stores[name].close()
        for name in names:
            cold = []
            for _ in range(3):
                store = open_store(name, paths[name])
                service = SnaptailSessionService(store)
                started = time.perf_counter()
                await page(service)
                cold.append((time.perf_counter() - started) * 1000)
                directory = await store.get(directory_uuid(APP, USER))
                stats = store.load_stats(directory)
                assert stats is not None
                read[name] = (
                    f"snapshot v{stats.snapshot_version} {stats.snapshot_bytes:,} B,"
                    f" tail {stats.tail:,} events"
                )
                await store.close()
            figures_cold[name] = f"{statistics.median(cold):.1f}"
        rows += checks
        rows.append(("list_sessions_page(page_size=100), warm, ms", figures_page))
        rows.append((f"list_sessions (all {sessions:,}), warm, ms", figures_all))
        rows.append(("list_sessions_page(page_size=100), fresh store, ms", figures_cold))
        rows.append(("the directory as a fresh load read it", read))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--only", choices=NAMES, help="build one service, not both")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    names = (args.only,) if args.only else NAMES
    rows = asyncio.run(run(args.sessions, names))
    if args.markdown:
        print(f"\n| measure ({args.sessions:,} sessions of one user) | {' | '.join(names)} |")
        print("| --- |" + " ---: |" * len(names))
        for measure, figures in rows:
            print(f"| {measure} | {' | '.join(figures[n] for n in names)} |")


if __name__ == "__main__":
    main()
