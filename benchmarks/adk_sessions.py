"""SnaptailSessionService beside ADK's DatabaseSessionService (SQLite), side by side.

    python -m benchmarks.adk_sessions --markdown            # 1,000 and 10,000 events
    python -m benchmarks.adk_sessions --big --markdown      # and 100,000
    python -m benchmarks.adk_sessions --quick               # 1,000 events, 1,000 sessions

Both services store the same ADK events (a 200-600 character text message each,
alternating user and model, a one-key state delta on every fourth) in a SQLite file in
a temporary directory (snaptail: its defaults; ADK: ``sqlite+aiosqlite``), or with
``--postgres URL`` in a new PostgreSQL database each (ADK: ``postgresql+asyncpg``). A session of
N events is built with ``append_event`` in each, then both are measured side by side
(each measure alternates the services in 4 rounds; medians over all rounds):

* ``append_event``: median ms over ``--calls`` appends at the end of the session;
* ``get_session(num_recent_events=20)``: median ms on the service that wrote (made
  with a URL: snaptail's leases the process's shared store, on a background event
  loop), on a snaptail service given a store of its own opened on the caller's loop
  (no hand-off between loops; ADK's figure is its warm one, measured again beside it),
  and on a fresh service (as in a new process: its first call opens the database; snaptail
  loads snapshot + tail; snaptail's fresh service has a store of its own, not the
  process's shared one);
* ``get_session()`` without a config (what the Runner asks by default): median of 4;
  and as the Runner calls it when snaptail's service is made with
  ``unconfigured_recent_events=20`` (ADK's service has no such option: its figure is
  the one without a config);
* storage: bytes of the database files after the build (WAL checkpointed);
* ``list_sessions`` of one user with ``--sessions`` sessions (median of 8 warm, 4 fresh).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.database_session_service import DatabaseSessionService
from google.genai import types

from benchmarks.openai_session import WORDS
from snaptail import AsyncAgentStore
from snaptail.integrations.adk import SnaptailSessionService

APP, USER, SID = "bench", "u", "s"


def make_event(n: int, ts: float) -> Event:
    rng = random.Random(n)
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 110)))
    return Event(
        invocation_id=f"inv{n // 2}",
        author="user" if n % 2 == 0 else "model",
        content=types.Content(
            role="user" if n % 2 == 0 else "model", parts=[types.Part(text=text)]
        ),
        timestamp=ts,
        actions=EventActions(state_delta={"turn": n} if n % 4 == 0 else {}),
    )


@dataclass
class Place:
    """Where one service's database is: how to open the service on it, and its size."""

    make: Callable[[], BaseSessionService]
    size: Callable[[], int]
    # The service as configured to bound what a config-less get_session returns (None:
    # it has no such option and returns every event).
    bounded: Callable[[], BaseSessionService] | None = None
    # A service as a new process makes it, opening the database itself, and how to
    # close it (None: ``make``; snaptail's services made with a URL share the
    # process's open store, so its fresh one is given a store of its own).
    fresh: Callable[[], tuple[BaseSessionService, Callable[[], Awaitable[None]]]] | None = None


def own_store(url: str) -> tuple[BaseSessionService, Callable[[], Awaitable[None]]]:
    """A snaptail service on a store of its own (not the process's shared one)."""
    store = AsyncAgentStore(url)
    return SnaptailSessionService(store), store.close


def sqlite_bytes(folder: Path) -> int:
    import sqlite3

    with sqlite3.connect(folder / "sessions.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


@contextlib.contextmanager
def places(postgres: str | None) -> Iterator[dict[str, Place]]:
    """A fresh database per service: SQLite files in a temporary directory, or (with
    ``postgres``, a server URL) a new PostgreSQL database each, dropped afterwards."""
    if postgres is None:
        with tempfile.TemporaryDirectory() as tmp:
            adk, ours = Path(tmp) / "adk", Path(tmp) / "snaptail"
            adk.mkdir()
            ours.mkdir()
            yield {
                "DatabaseSessionService": Place(
                    lambda: DatabaseSessionService(f"sqlite+aiosqlite:///{adk / 'sessions.db'}"),
                    lambda: sqlite_bytes(adk),
                ),
                "SnaptailSessionService": Place(
                    lambda: SnaptailSessionService(f"sqlite:///{ours / 'sessions.db'}"),
                    lambda: sqlite_bytes(ours),
                    lambda: SnaptailSessionService(
                        f"sqlite:///{ours / 'sessions.db'}", unconfigured_recent_events=20
                    ),
                    lambda: own_store(f"sqlite:///{ours / 'sessions.db'}"),
                ),
            }
        return
    import psycopg

    base = postgres.rsplit("/", 1)[0]
    names = [f"adk_bench_{uuid.uuid4().hex[:8]}_{kind}" for kind in ("adk", "ours", "empty")]
    with psycopg.connect(postgres, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE DATABASE {name}")

    def size(name: str) -> int:
        with psycopg.connect(postgres, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_database_size(%s) - pg_database_size(%s)", (name, names[2])
            ).fetchone()
        return int(row[0]) if row else 0

    adk_url = f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{names[0]}"
    try:
        yield {
            "DatabaseSessionService": Place(
                lambda: DatabaseSessionService(adk_url), lambda: size(names[0])
            ),
            "SnaptailSessionService": Place(
                lambda: SnaptailSessionService(f"{base}/{names[1]}"),
                lambda: size(names[1]),
                lambda: SnaptailSessionService(f"{base}/{names[1]}", unconfigured_recent_events=20),
                lambda: own_store(f"{base}/{names[1]}"),
            ),
        }
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def close(service: BaseSessionService) -> None:
    await service.close()  # type: ignore[attr-defined]


def fresh_service(place: Place) -> tuple[BaseSessionService, Callable[[], Awaitable[None]]]:
    if place.fresh is not None:
        return place.fresh()
    service = place.make()
    return service, lambda: close(service)


ROUNDS = 4  # each measure alternates the services this many times (the machine is shared)


async def samples_ms(call: Callable[[], Awaitable[Any]], times: int) -> list[float]:
    out = []
    for _ in range(times):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def side_by_side(
    calls: dict[str, Callable[[], Awaitable[Any]]], times: int
) -> dict[str, float]:
    """Median ms of each service's call, ``times`` calls each, in ROUNDS alternating
    turns (ADK's, snaptail's, ADK's, ...), so that both see the same machine load."""
    taken: dict[str, list[float]] = {name: [] for name in calls}
    per_round = max(1, times // ROUNDS)
    for _ in range(ROUNDS):
        for name, call in calls.items():
            taken[name] += await samples_ms(call, per_round)
    return {name: statistics.median(values) for name, values in taken.items()}


async def measure(where: dict[str, Place], events: int, calls: int) -> dict[str, dict[str, float]]:
    """Both services' figures on a session of ``events`` events each (built one after
    the other, then measured side by side)."""
    services = {name: place.make() for name, place in where.items()}
    sessions = {}
    for name, service in services.items():
        session = await service.create_session(app_name=APP, user_id=USER, session_id=SID)
        ts = 1_000_000.0
        for n in range(events):
            ts += 1
            await service.append_event(session, make_event(n, ts))
        sessions[name] = session
    rows: dict[str, dict[str, float]] = {name: {} for name in services}

    def record(measure: str, figures: dict[str, float]) -> None:
        for name, value in figures.items():
            rows[name][measure] = value

    def appender(name: str) -> Callable[[], Awaitable[None]]:
        counter = [events]

        async def append() -> None:
            counter[0] += 1
            ts = 1_000_000.0 + events + counter[0]
            await services[name].append_event(sessions[name], make_event(counter[0], ts))

        return append

    record("append_event, ms", await side_by_side({n: appender(n) for n in services}, calls))
    recent = GetSessionConfig(num_recent_events=20)

    def getter(svc: BaseSessionService) -> Callable[[], Awaitable[None]]:
        async def get_recent() -> None:
            got = await svc.get_session(app_name=APP, user_id=USER, session_id=SID, config=recent)
            assert got is not None and len(got.events) == 20

        return get_recent

    record(
        "get_session(num_recent_events=20), warm, ms",
        await side_by_side({n: getter(s) for n, s in services.items()}, calls),
    )

    # A service made with a URL leases the process's shared store, which lives on a
    # background event loop (any loop may call it): each call crosses to that loop and
    # back. A service given the app's own store runs on the caller's loop.
    own = {n: p.fresh() for n, p in where.items() if p.fresh is not None}
    for svc, _ in own.values():
        await getter(svc)()  # opens the store, loads the session
    on_own = {n: getter(own[n][0] if n in own else s) for n, s in services.items()}
    record(
        "get_session(num_recent_events=20), warm, the app's own store, ms",
        await side_by_side(on_own, calls),
    )
    for svc, done in own.values():
        await close(svc)
        await done()

    opened: list[tuple[BaseSessionService, Callable[[], Awaitable[None]]]] = []

    def fresh_getter(place: Place) -> Callable[[], Awaitable[None]]:
        async def get_fresh() -> None:
            # A new service's first call opens the database (as in a new process);
            # it is closed after the measure, untimed.
            opened.append(fresh_service(place))
            await getter(opened[-1][0])()

        return get_fresh

    record(
        "get_session(num_recent_events=20), fresh service, ms",
        await side_by_side({n: fresh_getter(p) for n, p in where.items()}, max(ROUNDS, calls // 4)),
    )
    for fresh, done in opened:
        await close(fresh)
        await done()

    def all_getter(svc: BaseSessionService) -> Callable[[], Awaitable[None]]:
        async def get_all() -> None:
            got = await svc.get_session(app_name=APP, user_id=USER, session_id=SID)
            assert got is not None and len(got.events) >= events

        return get_all

    no_config = "get_session() (no config), ms"
    record(no_config, await side_by_side({n: all_getter(s) for n, s in services.items()}, 1))
    runner = "get_session() as the Runner calls it (snaptail: unconfigured_recent_events=20), ms"
    bounded = {n: p.bounded() for n, p in where.items() if p.bounded is not None}

    def bounded_getter(svc: BaseSessionService) -> Callable[[], Awaitable[None]]:
        async def get_bounded() -> None:
            got = await svc.get_session(app_name=APP, user_id=USER, session_id=SID)
            assert got is not None and len(got.events) == 20

        return get_bounded

    for svc in bounded.values():
        await bounded_getter(svc)()  # its first load
    record(runner, await side_by_side({n: bounded_getter(s) for n, s in bounded.items()}, calls))
    for name in services:
        if name not in bounded:  # no such option: its figure is the config-less one
            rows[name][runner] = rows[name][no_config]
    for svc in (*bounded.values(), *services.values()):
        await close(svc)
    for name, place in where.items():
        rows[name]["storage, MiB"] = place.size() / 2**20
    return rows


async def one_size(events: int, calls: int, postgres: str | None) -> dict[str, dict[str, float]]:
    with places(postgres) as where:
        return await measure(where, events, calls)


async def list_figures(where: dict[str, Place], sessions: int) -> dict[str, dict[str, float]]:
    """Both services' ``list_sessions`` figures for one user with ``sessions`` sessions
    (built one after the other, measured side by side)."""
    services = {name: place.make() for name, place in where.items()}
    for service in services.values():
        for i in range(sessions):
            s = await service.create_session(
                app_name=APP, user_id=USER, session_id=f"s{i}", state={"i": i}
            )
            await service.append_event(s, make_event(i, 2_000_000.0 + i))

    def lister(svc: BaseSessionService) -> Callable[[], Awaitable[None]]:
        async def list_all() -> None:
            got = await svc.list_sessions(app_name=APP, user_id=USER)
            assert len(got.sessions) == sessions

        return list_all

    rows: dict[str, dict[str, float]] = {name: {} for name in services}
    warm = await side_by_side({n: lister(s) for n, s in services.items()}, 2 * ROUNDS)
    for name, value in warm.items():
        rows[name][f"list_sessions, {sessions:,} sessions, warm, ms"] = value

    opened: list[tuple[BaseSessionService, Callable[[], Awaitable[None]]]] = []

    def fresh_lister(place: Place) -> Callable[[], Awaitable[None]]:
        async def list_fresh() -> None:
            opened.append(fresh_service(place))
            await lister(opened[-1][0])()

        return list_fresh

    fresh = await side_by_side({n: fresh_lister(p) for n, p in where.items()}, ROUNDS)
    for name, value in fresh.items():
        rows[name][f"list_sessions, {sessions:,} sessions, fresh service, ms"] = value
    for service, done in opened:
        await close(service)
        await done()
    for service in services.values():
        await close(service)
    return rows


async def listing(sessions: int, postgres: str | None) -> dict[str, dict[str, float]]:
    with places(postgres) as where:
        return await list_figures(where, sessions)


def table(results: list[tuple[str, dict[str, dict[str, float]]]]) -> str:
    lines = [
        "| size | measure | DatabaseSessionService | SnaptailSessionService | snaptail / ADK |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for size, result in results:
        adk, ours = result["DatabaseSessionService"], result["SnaptailSessionService"]
        for measure in ours:
            a, o = adk[measure], ours[measure]
            lines.append(f"| {size} | {measure} | {a:.2f} | {o:.2f} | {o / a:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--big", action="store_true", help="also 100,000 events")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="1,000 events, 1,000 sessions")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run both on PostgreSQL (a database each, made and dropped on this server)",
    )
    args = parser.parse_args()
    sizes = [1_000] if args.quick else list(args.sizes) + ([100_000] if args.big else [])
    sessions = 1_000 if args.quick else args.sessions
    results: list[tuple[str, dict[str, dict[str, float]]]] = []
    for size in sizes:
        results.append((f"{size:,} events", asyncio.run(one_size(size, args.calls, args.postgres))))
        print(table(results[-1:]) if not args.markdown else "", flush=True)
    results.append((f"{sessions:,} sessions", asyncio.run(listing(sessions, args.postgres))))
    print(table(results))


if __name__ == "__main__":
    main()
