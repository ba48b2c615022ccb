"""The web console's server time: the fleet page at 1,000 and 100,000 agents, the
agent page at 100 and 1,000,000 events (issue 23).

    python -m benchmarks.ui                      # the issue's sizes
    python -m benchmarks.ui --agents 1000,10000 --events 100,100000   # quicker

Each page is requested ``--requests`` times in turns (one of each size, then the
next round), through the ASGI app in-process (Starlette's TestClient); the figure
is the server's own time from the ``Server-Timing`` header the console sets (the
handler, the SQL and the template), p50 and p95. Fleets are real agents (1 to 5
events each) with AgentStats caught up; the long agents record small input and
output items, 1,000 per save (the last 1,000 100 per save, as turns come), snapshot
every 100 events (the default). The ratio
column divides the larger size's p50 by the smaller's: flat is 1.0.

Time travel is measured 10 versions back (the newest kept snapshot serves it). A
version older than every kept snapshot (``keep_snapshots``, default 2) is rebuilt
from the start of the log: its cost grows with the version asked for.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from starlette.testclient import TestClient

from snaptail import Agent, AgentStore
from snaptail.projections import AgentStats, ProjectionWorker
from snaptail.ui import create_app


def seed_fleet(url: str, agents: int) -> None:
    started = time.perf_counter()
    with AgentStore(url) as store:
        batch: list[Agent] = []
        for i in range(agents):
            agent = Agent(f"agent-{i:06d}")
            for k in range(i % 5):
                agent.add_input("user", f"hello {k}")
            batch.append(agent)
            if len(batch) == 500:
                store.save(*batch)
                batch = []
        if batch:
            store.save(*batch)
    with ProjectionWorker(AgentStats, url, batch_size=5000) as worker:
        worker.catch_up()
    print(f"  seeded {agents:,} agents in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def seed_agent(url: str, events: int) -> UUID:
    started = time.perf_counter()
    with AgentStore(url) as store:
        agent = Agent(f"long-{events}")
        done = 1
        while done < events:
            # 1,000 events a save, the last 1,000 a turn (100) at a time as they come
            size = 1000 if events - done > 1000 else 100
            for _ in range(min(size, events - done)):
                if done % 2:
                    agent.add_input("user", f"question {done}")
                else:
                    agent.add_output("assistant_message", f"answer {done}")
                done += 1
            store.save(agent)
            if done % 100_000 < 1000:
                print(f"  {done:,} events", file=sys.stderr)
    print(f"  seeded one agent of {events:,} events in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)  # fmt: skip
    return agent.id


class AgentStatsWithoutIndexes(AgentStats):
    """AgentStats with its tables as before the console (no sort indexes)."""

    name = "AgentStatsWithoutIndexes"
    tables = tuple(t for t in AgentStats.tables if "CREATE INDEX" not in str(t))


def seed_busy_fleet(url: str, agents: int, events: int) -> None:
    """``agents`` agents of ``events`` realistic events each (Workload), saved a turn
    at a time, agents interleaved: a batch of the worker touches few rows, often."""
    from snaptail.workload import Workload

    started = time.perf_counter()
    with AgentStore(url) as store:
        fleet = [(Agent(f"busy-{i}"), Workload(seed=i)) for i in range(agents)]
        done = 0
        while done < events:
            for agent, workload in fleet:
                workload.turn(agent)
                store.save(agent)
            done = min(agent.version for agent, _ in fleet)
    print(f"  seeded {agents:,} busy agents in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)  # fmt: skip


def catch_up_side_by_side(url: str, where: Path, rounds: int) -> list[dict[str, Any]]:
    """Catch each projection up from the start into a fresh view database, in turns:
    what the console's indexes cost the AgentStats worker."""
    rows = []
    for r in range(rounds):
        for projection in (AgentStatsWithoutIndexes, AgentStats):
            view = where / f"view-{projection.name}-{r}.db"
            started = time.perf_counter()
            with ProjectionWorker(projection, url, f"sqlite:///{view}", batch_size=1000) as w:
                events = w.catch_up()
            seconds = time.perf_counter() - started
            rows.append({"projection": projection.name, "round": r, "events": events,
                         "seconds": round(seconds, 2),
                         "events_per_s": round(events / seconds)})  # fmt: skip
            view.unlink()
    return rows


def server_ms(client: TestClient, path: str) -> float:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
    timing = response.headers["server-timing"]
    return float(timing.split("dur=")[1])


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="1000,100000", help="fleet sizes (comma-separated)")
    parser.add_argument("--events", default="100,1000000", help="agent lengths (comma-separated)")
    parser.add_argument("--requests", type=int, default=30, help="requests per page and size")
    parser.add_argument("--dir", default=None, help="where the databases go (default: temp)")
    parser.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    parser.add_argument("--catch-up", type=int, default=0, metavar="ROUNDS",
                        help="also time AgentStats catch-up with and without the console's "
                        "indexes over the largest fleet's events, ROUNDS times each")
    parser.add_argument("--busy", default="", metavar="AGENTS,EVENTS",
                        help="with --catch-up: also over AGENTS agents of about EVENTS "
                        "realistic events each, saved a turn at a time")
    args = parser.parse_args(argv)
    logging.getLogger("snaptail").setLevel(logging.ERROR)  # loads of long agents warn
    fleets = [int(n) for n in args.agents.split(",")]
    lengths = [int(n) for n in args.events.split(",")]
    where = Path(args.dir or tempfile.mkdtemp(prefix="snaptail-ui-bench-"))
    where.mkdir(parents=True, exist_ok=True)

    pages: dict[str, list[tuple[int, TestClient, str]]] = {}
    clients = []
    for n in fleets:
        url = f"sqlite:///{where / f'fleet-{n}.db'}"
        if not (where / f"fleet-{n}.db").exists():
            seed_fleet(url, n)
        with ProjectionWorker(AgentStats, url) as worker:  # (creates new view indexes)
            worker.catch_up()
        client = TestClient(create_app(url), base_url="http://127.0.0.1")
        client.__enter__()
        clients.append(client)
        last = -(-n // 50)
        for name, path in [
            ("fleet page (HTML, by events)", "/"),
            ("fleet API, by name, page 2", "/api/v1/fleet?sort=name&page=2"),
            ("fleet API, search by name prefix", "/api/v1/fleet?q=agent-0009"),
            ("fleet API, last page by bytes", f"/api/v1/fleet?sort=bytes&page={last}"),
            ("fleet API, by last activity", "/api/v1/fleet?sort=last"),
        ]:
            pages.setdefault(name, []).append((n, client, path))
    for events in lengths:
        db = where / f"agent-{events}.db"
        url = f"sqlite:///{db}"
        if not db.exists():
            agent_id = seed_agent(url, events)
            (where / f"agent-{events}.id").write_text(str(agent_id))
        agent_id = UUID((where / f"agent-{events}.id").read_text())
        client = TestClient(create_app(url), base_url="http://127.0.0.1")
        client.__enter__()
        clients.append(client)
        for name, path in [
            ("agent page (HTML, newest 50 events)", f"/agents/{agent_id}"),
            ("agent API", f"/api/v1/agents/{agent_id}"),
            ("timeline API, 50 events from the middle",
             f"/api/v1/agents/{agent_id}/events?before={events // 2}"),
            ("time travel API, 10 versions back", f"/api/v1/agents/{agent_id}/at/{events - 10}"),
        ]:  # fmt: skip
            pages.setdefault(name, []).append((events, client, path))

    results = []
    for name, sizes in pages.items():
        for _, client, path in sizes:  # warm up: first requests open connections, caches
            server_ms(client, path)
        samples: dict[int, list[float]] = {size: [] for size, _, _ in sizes}
        for _ in range(args.requests):
            for size, client, path in sizes:
                samples[size].append(server_ms(client, path))
        row: dict[str, Any] = {"page": name}
        for size, values in samples.items():
            p50, p95 = percentiles(values)
            row[str(size)] = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2)}
        small, large = min(samples), max(samples)
        row["ratio_p50"] = round(
            statistics.median(samples[large]) / statistics.median(samples[small]), 2
        )
        results.append(row)
    for client in clients:
        client.__exit__(None, None, None)
    if args.catch_up:  # (after the pages: their figures are not disturbed)
        largest = f"sqlite:///{where / f'fleet-{max(fleets)}.db'}"
        for row in catch_up_side_by_side(largest, where, args.catch_up):
            print(json.dumps({"fleet": f"{max(fleets)} agents", **row}), file=sys.stderr)
        if args.busy:
            agents, events = (int(n) for n in args.busy.split(","))
            db = where / f"busy-{agents}x{events}.db"
            if not db.exists():
                seed_busy_fleet(f"sqlite:///{db}", agents, events)
            for row in catch_up_side_by_side(f"sqlite:///{db}", where, args.catch_up):
                print(json.dumps({"fleet": f"{agents} busy agents", **row}), file=sys.stderr)

    if args.json:
        for row in results:
            print(json.dumps(row))
        return
    print("| page | size | p50 ms | p95 ms | larger/smaller p50 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in results:
        keys = [k for k in row if k not in {"page", "ratio_p50"}]
        for i, key in enumerate(keys):
            cell = row[key]
            assert isinstance(cell, dict)
            ratio = f"{row['ratio_p50']}" if i == len(keys) - 1 else ""
            print(f"| {row['page'] if i == 0 else ''} | {int(key):,} | {cell['p50_ms']} | "
                  f"{cell['p95_ms']} | {ratio} |")  # fmt: skip


if __name__ == "__main__":
    main()
