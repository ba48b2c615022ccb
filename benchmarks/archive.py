"""Archive segments (issue 21): hot bytes, archive bytes, throughput, loads, full walks.

    python -m benchmarks.archive [--quick] [--events N] [--agents N] [--dir DIR]

Writes ``--events`` events (default 1,000,000; ``--quick`` 100,000) of the realistic
workload over ``--agents`` agents (default 100) into a SQLite file (snapshot every 100
events, the store's defaults), copies the file, and archives one of the two copies
(``archive run`` with the default recent-event window, then ``archive vacuum``). Both
copies are then measured side by side, in alternating turns:

- hot database bytes before and after; archive bytes; the bytes of the rows moved
- archive throughput (events/s of the run; the vacuum timed apart)
- load p50 (``get()`` of every agent, ``--rounds`` rounds, copies in turns)
- a full ``history()`` walk of every agent (events/s), hot copy against archived copy
- a projection from zero (a counting projection, events/s), hot against archived
- appends (1 event per save) on each copy: the archived copy has the insert guard

Prints a Markdown table and appends one JSON line to ``benchmarks/results/archive.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from snaptail import Agent, AgentStore
from snaptail.projections import Projection, ProjectionWorker, ViewCursor
from snaptail.workload import Workload

RESULTS = Path(__file__).resolve().parent / "results" / "archive.jsonl"


class Count(Projection):
    """Counts events (the cheapest projection: measures the reading)."""

    def __init__(self) -> None:
        self.count = 0

    def handle(self, view: ViewCursor, notification: Notification) -> None:
        self.count += 1


def populate(path: Path, events: int, agents: int) -> list[UUID]:
    per_agent = events // agents
    ids = []
    started = time.perf_counter()
    with AgentStore(f"sqlite:///{path}") as store:
        for i in range(agents):
            agent = Agent(name=f"bench-{i}")
            Workload(seed=1000 + i).drive(agent, per_agent - 1, save=store.save, batch=100)
            ids.append(agent.id)
            if (i + 1) % max(1, agents // 10) == 0:
                print(f"  {i + 1}/{agents} agents written ({time.perf_counter() - started:.0f} s)")
    return ids


def file_bytes(path: Path) -> int:
    """The database's bytes after a checkpoint (the WAL folded in)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.stat().st_size


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.seg"))


def side_by_side(
    rounds: int, hot: Callable[[], float], archived: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Run both ``rounds`` times in alternating order; each returns its figure."""
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        if r % 2:
            b.append(archived())
            a.append(hot())
        else:
            a.append(hot())
            b.append(archived())
    return a, b


def load_p50(store: AgentStore, ids: list[UUID]) -> float:
    """The median time (ms) of one ``get()`` of each agent."""
    times = []
    for agent_id in ids:
        t = time.perf_counter()
        store.get(agent_id)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def walk_rate(store: AgentStore, ids: list[UUID]) -> float:
    """Events per second of a full ``history()`` walk of every agent."""
    t = time.perf_counter()
    n = sum(1 for agent_id in ids for _ in store.history(agent_id))
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="Working directory (default: a temp dir)")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="Measure PostgreSQL's bytes and throughput instead (a fresh "
                        "schema of the server at URL; no side-by-side reads)")  # fmt: skip
    args = parser.parse_args()
    events = args.events or (100_000 if args.quick else 1_000_000)
    if args.postgres:
        postgres(args.postgres, events, args.agents)
        return
    work = Path(args.dir or tempfile.mkdtemp(prefix="snaptail-archive-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    hot_path, archived_path = work / "hot.db", work / "archived.db"
    segments = work / "segments"
    for p in (hot_path, archived_path):
        for suffix in ("", "-wal", "-shm", ".archive.lock"):
            Path(f"{p}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(segments, ignore_errors=True)

    print(f"writing {events:,} events over {args.agents} agents into {hot_path}")
    ids = populate(hot_path, events, args.agents)
    before_bytes = file_bytes(hot_path)
    shutil.copy(hot_path, archived_path)

    with AgentStore(f"sqlite:///{archived_path}") as store:
        report = store.archive(str(segments))
        print(report.summary())
        started = time.perf_counter()
        store.vacuum_archived()
        vacuum_seconds = time.perf_counter() - started
    after_bytes = file_bytes(archived_path)
    archive_bytes = tree_bytes(segments)

    hot_store = AgentStore(f"sqlite:///{hot_path}")
    cold_store = AgentStore(f"sqlite:///{archived_path}")

    def loads(store: AgentStore) -> Callable[[], float]:
        return lambda: load_p50(store, ids)

    def walk(store: AgentStore) -> Callable[[], float]:
        return lambda: walk_rate(store, ids)

    def from_zero(path: Path) -> Callable[[], float]:
        def run() -> float:
            view = work / f"view-{path.stem}.db"
            view.unlink(missing_ok=True)
            projection = Count()
            with ProjectionWorker(projection, f"sqlite:///{path}", f"sqlite:///{view}",
                                  batch_size=1000) as worker:  # fmt: skip
                t = time.perf_counter()
                worker.catch_up()
                seconds = time.perf_counter() - t
            assert projection.count >= events - args.agents, projection.count
            return projection.count / seconds

        return run

    def appends(store: AgentStore) -> Callable[[], float]:
        def run() -> float:
            agents = [store.get(agent_id) for agent_id in ids[:10]]
            t = time.perf_counter()
            for _ in range(20):
                for agent in agents:
                    agent.add_input("user", "one more")
                    store.save(agent)
            return 200 / (time.perf_counter() - t)

        return run

    print("measuring side by side")
    load_hot, load_cold = side_by_side(args.rounds, loads(hot_store), loads(cold_store))
    walk_hot, walk_cold = side_by_side(min(args.rounds, 3), walk(hot_store), walk(cold_store))
    proj_hot, proj_cold = side_by_side(2, from_zero(hot_path), from_zero(archived_path))
    app_hot, app_cold = side_by_side(args.rounds, appends(hot_store), appends(cold_store))
    hot_store.close()
    cold_store.close()

    med = statistics.median
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "events": events,
        "agents": args.agents,
        "moved": report.events,
        "segments": report.segments,
        "hot_bytes_before": before_bytes,
        "hot_bytes_after": after_bytes,
        "archive_bytes": archive_bytes,
        "moved_payload_bytes": report.hot_bytes,
        "archive_seconds": round(report.seconds, 2),
        "archive_events_per_s": round(report.events / report.seconds),
        "vacuum_seconds": round(vacuum_seconds, 2),
        "load_p50_ms_hot": round(med(load_hot), 4),
        "load_p50_ms_archived": round(med(load_cold), 4),
        "walk_events_per_s_hot": round(med(walk_hot)),
        "walk_events_per_s_archived": round(med(walk_cold)),
        "projection_events_per_s_hot": round(med(proj_hot)),
        "projection_events_per_s_archived": round(med(proj_cold)),
        "appends_per_s_hot": round(med(app_hot)),
        "appends_per_s_archived": round(med(app_cold)),
        "load_avg": os.getloadavg()[0],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result) + "\n")
    print(table(result))


def postgres(server: str, events: int, agents: int) -> None:
    """Bytes of the events table (with its indexes and TOAST) before archiving, after
    ``VACUUM`` (space reusable, file the same), after appending as many new events as
    were moved (reused: the table does not grow) and after ``VACUUM FULL``; throughput;
    load p50 and full history walks against a twin schema of the same traffic kept
    hot, side by side."""
    import uuid

    import psycopg

    from snaptail.infrastructure.urls import postgres_connect_args

    schema, twin = (f"archive_bench_{uuid.uuid4().hex[:8]}" for _ in range(2))
    with psycopg.connect(**postgres_connect_args(server), autocommit=True) as conn:
        for name in (schema, twin):
            conn.execute(f"CREATE SCHEMA {name}".encode())
    url = f"{server}{'&' if '?' in server else '?'}schema={schema}"
    twin_url = f"{server}{'&' if '?' in server else '?'}schema={twin}"
    table = f"{schema}.stored_events"
    segments = Path(tempfile.mkdtemp(prefix="snaptail-archive-pg-"))
    try:
        print(f"writing {events:,} events over {agents} agents into schemas {schema}, {twin}")
        ids = populate_url(url, events, agents)
        twin_ids = populate_url(twin_url, events, agents)  # the same traffic, kept hot

        def size() -> int:
            with psycopg.connect(**postgres_connect_args(server), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT pg_total_relation_size(%s::regclass)", (table,)
                ).fetchone()
                return int(row[0]) if row else 0

        before = size()
        with AgentStore(url) as store:
            report = store.archive(str(segments))
            print(report.summary())
            store.vacuum_archived()
        after_vacuum = size()
        # As many new events as were moved, appended after the plain VACUUM (what
        # autovacuum runs): the table stays the same size if the space is reused.
        print(f"appending {report.events:,} new events after the VACUUM")
        populate_url(url, report.events, agents, prefix="again")
        after_refill = size()
        with psycopg.connect(**postgres_connect_args(server), autocommit=True) as conn:
            conn.execute(f"VACUUM FULL {table}".encode())
        after_full = size()
        with AgentStore(url) as cold, AgentStore(twin_url) as hot:
            load_hot, load_cold = side_by_side(
                5, lambda: load_p50(hot, twin_ids), lambda: load_p50(cold, ids)
            )
            walk_hot, walk_cold = side_by_side(
                3, lambda: walk_rate(hot, twin_ids), lambda: walk_rate(cold, ids)
            )
        med = statistics.median
        result = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "backend": "postgres", "events": events, "agents": agents,
            "moved": report.events, "table_bytes_before": before,
            "table_bytes_after_vacuum": after_vacuum, "table_bytes_after_refill": after_refill,
            "table_bytes_after_vacuum_full": after_full,
            "archive_bytes": tree_bytes(segments),
            "archive_events_per_s": round(report.events / report.seconds),
            "load_p50_ms_hot": round(med(load_hot), 4),
            "load_p50_ms_archived": round(med(load_cold), 4),
            "walk_events_per_s_hot": round(med(walk_hot)),
            "walk_events_per_s_archived": round(med(walk_cold)),
        }  # fmt: skip
        with RESULTS.open("a") as out:
            out.write(json.dumps(result) + "\n")
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(segments, ignore_errors=True)
        with psycopg.connect(**postgres_connect_args(server), autocommit=True) as conn:
            for name in (schema, twin):
                conn.execute(f"DROP SCHEMA {name} CASCADE".encode())


def populate_url(url: str, events: int, agents: int, prefix: str = "bench") -> list[UUID]:
    per_agent = events // agents
    ids = []
    with AgentStore(url) as store:
        for i in range(agents):
            agent = Agent(name=f"{prefix}-{i}")
            Workload(seed=1000 + i).drive(agent, per_agent - 1, save=store.save, batch=100)
            ids.append(agent.id)
    return ids


def table(r: dict[str, Any]) -> str:
    shrunk = r["hot_bytes_before"] - r["hot_bytes_after"]
    rows = [
        ("events (agents)", f"{r['events']:,} ({r['agents']})", ""),
        ("events moved (segments)", f"{r['moved']:,} ({r['segments']})", ""),
        ("hot database bytes before -> after", f"{r['hot_bytes_before']:,} -> "
         f"{r['hot_bytes_after']:,}", f"after/before {r['hot_bytes_after'] / r['hot_bytes_before']:.3f}"),  # noqa: E501
        ("archive bytes", f"{r['archive_bytes']:,}",
         f"/ hot bytes freed {r['archive_bytes'] / shrunk:.3f}" if shrunk > 0 else ""),
        ("archive run", f"{r['archive_seconds']} s, {r['archive_events_per_s']:,} events/s",
         f"vacuum {r['vacuum_seconds']} s"),
        ("load p50 (ms) hot / archived", f"{r['load_p50_ms_hot']} / {r['load_p50_ms_archived']}",
         f"ratio {r['load_p50_ms_archived'] / r['load_p50_ms_hot']:.2f}"),
        ("full history walk (events/s) hot / archived",
         f"{r['walk_events_per_s_hot']:,} / {r['walk_events_per_s_archived']:,}",
         f"ratio {r['walk_events_per_s_archived'] / r['walk_events_per_s_hot']:.2f}"),
        ("projection from zero (events/s) hot / archived",
         f"{r['projection_events_per_s_hot']:,} / {r['projection_events_per_s_archived']:,}",
         f"ratio {r['projection_events_per_s_archived'] / r['projection_events_per_s_hot']:.2f}"),
        ("appends, 1 event per save (/s) hot / archived",
         f"{r['appends_per_s_hot']:,} / {r['appends_per_s_archived']:,}",
         f"ratio {r['appends_per_s_archived'] / r['appends_per_s_hot']:.2f}"),
    ]  # fmt: skip
    lines = ["| what | figure | side by side |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
