"""SnaptailSessionService beside ADK's DatabaseSessionService (SQLite), side by side.

    python -m benchmarks.adk_sessions --markdown            # 1,000 and 10,000 events
    python -m benchmarks.adk_sessions --big --markdown      # and 100,000
    python -m benchmarks.adk_sessions --quick               # 1,000 events, 1,000 sessions

Both services store the same ADK events (a 200-600 character text message each,
alternating user and model, a one-key state delta on every fourth) in a SQLite file in
a temporary directory (snaptail: its defaults; ADK: ``sqlite+aiosqlite``). A session of
N events is built with ``append_event``, then measured, in turns:

* ``append_event``: median ms over ``--calls`` appends at the end of the session;
* ``get_session(num_recent_events=20)``: median ms on the service that wrote, and on
  a fresh service (a new process: snaptail loads snapshot + tail);
* ``get_session()`` without a config (what the Runner asks by default): median of 3;
* storage: bytes of the database files after the build (WAL checkpointed);
* ``list_sessions`` of one user with ``--sessions`` sessions (median of 5).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.database_session_service import DatabaseSessionService
from google.genai import types

from snaptail.integrations.adk import SnaptailSessionService

APP, USER, SID = "bench", "u", "s"
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


def db_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def checkpoint(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


SUBDIR = {"DatabaseSessionService": "adk", "SnaptailSessionService": "snaptail"}


def services(folder: Path) -> dict[str, Callable[[], BaseSessionService]]:
    return {
        "DatabaseSessionService": lambda: DatabaseSessionService(
            f"sqlite+aiosqlite:///{folder / 'adk' / 'sessions.db'}"
        ),
        "SnaptailSessionService": lambda: SnaptailSessionService(
            f"sqlite:///{folder / 'snaptail' / 'sessions.db'}"
        ),
    }


async def close(service: BaseSessionService) -> None:
    await service.close()  # type: ignore[attr-defined]


async def measure(
    make: Callable[[], BaseSessionService], sub: Path, events: int, calls: int
) -> dict[str, float]:
    """One service's figures on a session of ``events`` events (database in ``sub``)."""
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
    await close(service)
    checkpoint(sub / "sessions.db")
    row["storage, MiB"] = db_bytes(sub) / 2**20
    return row


async def one_size(events: int, calls: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, make in services(folder).items():
            sub = folder / SUBDIR[name]
            sub.mkdir()
            out[name] = await measure(make, sub, events, calls)
    return out


async def list_figures(make: Callable[[], BaseSessionService], sessions: int) -> dict[str, float]:
    """One service's ``list_sessions`` figures for one user with ``sessions`` sessions."""
    service = make()
    for i in range(sessions):
        s = await service.create_session(
            app_name=APP, user_id=USER, session_id=f"s{i}", state={"i": i}
        )
        await service.append_event(s, make_event(i, 2_000_000.0 + i))

    async def list_all(svc: BaseSessionService = service) -> None:
        got = await svc.list_sessions(app_name=APP, user_id=USER)
        assert len(got.sessions) == sessions

    row = {f"list_sessions, {sessions:,} sessions, warm, ms": await median_ms(list_all, 5)}
    fresh = make()
    start = time.perf_counter()
    await list_all(fresh)
    row[f"list_sessions, {sessions:,} sessions, fresh service, ms"] = (
        time.perf_counter() - start
    ) * 1000
    await close(fresh)
    await close(service)
    return row


async def listing(sessions: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, make in services(folder).items():
            (folder / SUBDIR[name]).mkdir()
            out[name] = await list_figures(make, sessions)
    return out


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
    args = parser.parse_args()
    sizes = [1_000] if args.quick else list(args.sizes) + ([100_000] if args.big else [])
    sessions = 1_000 if args.quick else args.sessions
    results: list[tuple[str, dict[str, dict[str, float]]]] = []
    for size in sizes:
        results.append((f"{size:,} events", asyncio.run(one_size(size, args.calls))))
        print(table(results[-1:]) if not args.markdown else "", flush=True)
    results.append((f"{sessions:,} sessions", asyncio.run(listing(sessions))))
    print(table(results))


if __name__ == "__main__":
    main()
