"""SnaptailSessionService beside ADK's DatabaseSessionService (SQLite), side by side.

    python -m benchmarks.adk_sessions --markdown            # 1,000 and 10,000 events
    python -m benchmarks.adk_sessions --big --markdown      # and 100,000
    python -m benchmarks.adk_sessions --quick               # 1,000 events, 1,000 sessions

Both services store the same ADK events (a 200-600 character text message each,
alternating user and model, a one-key state delta on every fourth) in a SQLite file in
a temporary directory (snaptail: its defaults; ADK: ``sqlite+aiosqlite``), or with
``--postgres URL`` in a new PostgreSQL database each (ADK: ``postgresql+asyncpg``). A session of
N events is built with ``append_event``, then measured, in turns:

* ``append_event``: median ms over ``--calls`` appends at the end of the session;
* ``get_session(num_recent_events=20)``: median ms on the service that wrote, and on
  a fresh service (a new process: snaptail loads snapshot + tail);
* ``get_session()`` without a config (what the Runner asks by default): median of 3;
  and as the Runner calls it when snaptail's service is made with
  ``unconfigured_recent_events=20`` (ADK's service has no such option: its figure is
  the one without a config);
* storage: bytes of the database files after the build (WAL checkpointed);
* ``list_sessions`` of one user with ``--sessions`` sessions (median of 5).
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


async def median_ms(call: Callable[[], Awaitable[Any]], times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


@dataclass
class Place:
    """Where one service's database is: how to open the service on it, and its size."""

    make: Callable[[], BaseSessionService]
    size: Callable[[], int]
    # The service as configured to bound what a config-less get_session returns (None:
    # it has no such option and returns every event).
    bounded: Callable[[], BaseSessionService] | None = None


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
            ),
        }
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def close(service: BaseSessionService) -> None:
    await service.close()  # type: ignore[attr-defined]


async def measure(place: Place, events: int, calls: int) -> dict[str, float]:
    """One service's figures on a session of ``events`` events."""
    make = place.make
    service = make()
    session = await service.create_session(app_name=APP, user_id=USER, session_id=SID)
    ts = 1_000_000.0
    for n in range(events):
        ts += 1
        await service.append_event(session, make_event(n, ts))
    row: dict[str, float] = {}
    counter = [events]

    async def append() -> None:
        counter[0] += 1
        await service.append_event(session, make_event(counter[0], ts + counter[0]))

    row["append_event, ms"] = await median_ms(append, calls)
    recent = GetSessionConfig(num_recent_events=20)

    async def get_recent(svc: BaseSessionService = service) -> None:
        got = await svc.get_session(app_name=APP, user_id=USER, session_id=SID, config=recent)
        assert got is not None and len(got.events) == 20

    row["get_session(num_recent_events=20), warm, ms"] = await median_ms(get_recent, calls)
    fresh_samples = []
    for _ in range(max(3, calls // 4)):
        fresh = make()
        start = time.perf_counter()
        await get_recent(fresh)
        fresh_samples.append((time.perf_counter() - start) * 1000)
        await close(fresh)
    row["get_session(num_recent_events=20), fresh service, ms"] = statistics.median(fresh_samples)

    async def get_all() -> None:
        got = await service.get_session(app_name=APP, user_id=USER, session_id=SID)
        assert got is not None and len(got.events) >= events

    row["get_session() (no config), ms"] = await median_ms(get_all, 3)
    runner = "get_session() as the Runner calls it (snaptail: unconfigured_recent_events=20), ms"
    if place.bounded is None:
        row[runner] = row["get_session() (no config), ms"]
    else:
        bounded = place.bounded()

        async def get_bounded() -> None:
            got = await bounded.get_session(app_name=APP, user_id=USER, session_id=SID)
            assert got is not None and len(got.events) == 20

        await get_bounded()  # its first load
        row[runner] = await median_ms(get_bounded, calls)
        await close(bounded)
    await close(service)
    row["storage, MiB"] = place.size() / 2**20
    return row


async def one_size(events: int, calls: int, postgres: str | None) -> dict[str, dict[str, float]]:
    with places(postgres) as where:
        return {name: await measure(place, events, calls) for name, place in where.items()}


async def list_figures(place: Place, sessions: int) -> dict[str, float]:
    """One service's ``list_sessions`` figures for one user with ``sessions`` sessions."""
    service = place.make()
    for i in range(sessions):
        s = await service.create_session(
            app_name=APP, user_id=USER, session_id=f"s{i}", state={"i": i}
        )
        await service.append_event(s, make_event(i, 2_000_000.0 + i))

    async def list_all(svc: BaseSessionService = service) -> None:
        got = await svc.list_sessions(app_name=APP, user_id=USER)
        assert len(got.sessions) == sessions

    row = {f"list_sessions, {sessions:,} sessions, warm, ms": await median_ms(list_all, 5)}
    fresh = place.make()
    start = time.perf_counter()
    await list_all(fresh)
    row[f"list_sessions, {sessions:,} sessions, fresh service, ms"] = (
        time.perf_counter() - start
    ) * 1000
    await close(fresh)
    await close(service)
    return row


async def listing(sessions: int, postgres: str | None) -> dict[str, dict[str, float]]:
    with places(postgres) as where:
        return {name: await list_figures(place, sessions) for name, place in where.items()}


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
