"""Many writers on PostgreSQL, and partitioned projection catch-up (issue 14).

    python -m benchmarks.writers            # the RESULTS.md run
    python -m benchmarks.writers --quick

* writers: 1, 4, 8 and 16 processes, each saving its own agent, 2 events per save
  (a user message and a reply), a snapshot every 100 events in the save's
  transaction. Beside it the floor: the same number of processes doing plain psycopg
  inserts of rows of the same shape and sizes (2 event rows per transaction into a
  table with a ``bigserial`` notification id and the same primary key, a snapshot row
  every 100 events), no table lock, no mapper, no snaptail. Each cell runs
  ``--seconds`` after every process is connected and ready; snaptail and the floor
  take turns, cell by cell, for ``--rounds`` rounds (medians; ratios per round).
* catch-up: ``--events`` realistic events (``snaptail.workload``, 120 agents, a
  snapshot every 100 events, recorded by 4 processes at once), then ``AgentStats``
  built from nothing into a fresh view schema by 1, 2 and 4 partition workers (one
  process each, started together); time from the start signal to the last one done.
  Partition counts take turns for ``--rounds`` rounds.

The machine is shared and noisy: compare figures measured in one run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Barrier
from typing import Any

DEFAULT_POSTGRES_URL = os.environ.get(
    "SNAPTAIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
WRITER_COUNTS = (1, 4, 8, 16)
PARTITION_COUNTS = (1, 2, 4)
SNAPSHOT_EVERY = 100


@contextmanager
def schema(postgres_url: str, prefix: str) -> Iterator[str]:
    """A fresh schema; yields the URL naming it, drops it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={name}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


# -- writers ---------------------------------------------------------------------------


def _text(n: int) -> str:
    return f"message {n}: " + "the quick brown fox jumps over the lazy dog " * 2


def snaptail_writer(url: str, seconds: float, barrier: Barrier, results: Any) -> None:
    from snaptail import Agent, AgentStore

    with AgentStore(url, snapshot_every=SNAPSHOT_EVERY) as store:
        agent = Agent("writer")
        store.save(agent)
        start = agent.version
        barrier.wait()
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            agent.add_input("user", _text(n))
            agent.add_output("assistant_message", _text(n + 1))
            store.save(agent)
            n += 2
        results.put(agent.version - start)


FLOOR_DDL = (
    "CREATE TABLE IF NOT EXISTS floor_events (originator_id uuid NOT NULL, "
    "originator_version bigint NOT NULL, topic text, state bytea, "
    "notification_id bigserial, PRIMARY KEY (originator_id, originator_version))",
    "CREATE UNIQUE INDEX IF NOT EXISTS floor_events_nid ON floor_events (notification_id)",
    "CREATE TABLE IF NOT EXISTS floor_snapshots (originator_id uuid NOT NULL, "
    "originator_version bigint NOT NULL, topic text NOT NULL, state bytea NOT NULL, "
    "PRIMARY KEY (originator_id, originator_version))",
)


def _sample_rows() -> tuple[list[tuple[str, bytes]], int]:
    """The (topic, bytes) of 200 events the snaptail writer records, and the size of
    the snapshot it stores at version 100 (from an in-memory store)."""
    from snaptail import Agent, AgentStore

    with AgentStore(":memory:", snapshot_every=SNAPSHOT_EVERY) as store:
        agent = Agent("writer")
        for n in range(0, 200, 2):
            agent.add_input("user", _text(n))
            agent.add_output("assistant_message", _text(n + 1))
            store.save(agent)
        rows = [(e.topic, e.state) for e in store.read_rows(agent.id, limit=1000)]
        sizes = store.snapshot_infos(agent.id)
    return rows[1:], max(info.size for info in sizes)


def floor_writer(url: str, seconds: float, barrier: Barrier, results: Any) -> None:
    import psycopg

    from snaptail.infrastructure.urls import postgres_connect_args

    rows, snapshot_size = _sample_rows()
    snapshot = bytes(snapshot_size)
    agent_id = uuid.uuid4()
    insert = (
        "INSERT INTO floor_events (originator_id, originator_version, topic, state) "
        "VALUES (%s, %s, %s, %s), (%s, %s, %s, %s)"
    )
    with psycopg.connect(**postgres_connect_args(url)) as conn:
        barrier.wait()
        deadline = time.perf_counter() + seconds
        version = 0
        while time.perf_counter() < deadline:
            (t1, s1), (t2, s2) = rows[version % len(rows)], rows[(version + 1) % len(rows)]
            with conn.transaction():
                conn.execute(
                    insert, (agent_id, version + 1, t1, s1, agent_id, version + 2, t2, s2)
                )
                version += 2
                if version % SNAPSHOT_EVERY == 0:
                    conn.execute(
                        "INSERT INTO floor_snapshots VALUES (%s, %s, %s, %s)",
                        (agent_id, version, "snapshot", snapshot),
                    )
        results.put(version)


def run_writers(url: str, target: Callable[..., None], writers: int, seconds: float) -> float:
    """Events per second of ``writers`` processes running ``target`` at once."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers + 1, timeout=300)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=target, args=(url, seconds, barrier, results)) for _ in range(writers)
    ]
    for process in processes:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    total = sum(results.get(timeout=600) for _ in processes)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join(timeout=60)
        if process.exitcode != 0:
            raise RuntimeError(f"a writer process exited with {process.exitcode}")
    return float(total) / max(elapsed, seconds)


def bench_writers(postgres_url: str, seconds: float, rounds: int) -> list[dict[str, Any]]:
    from snaptail import AgentStore
    from snaptail.infrastructure.urls import postgres_connect_args

    rates: dict[tuple[str, int], list[float]] = {}
    ratios: dict[int, list[float]] = {}
    for r in range(rounds):
        for writers in WRITER_COUNTS:
            with schema(postgres_url, "bench_writers") as url:
                AgentStore(url).close()  # tables
                import psycopg

                with psycopg.connect(**postgres_connect_args(url), autocommit=True) as conn:
                    for ddl in FLOOR_DDL:
                        conn.execute(ddl)
                order = [("snaptail", snaptail_writer), ("floor", floor_writer)]
                if r % 2:
                    order.reverse()
                got = {}
                for name, target in order:
                    got[name] = run_writers(url, target, writers, seconds)
                    rates.setdefault((name, writers), []).append(got[name])
                ratios.setdefault(writers, []).append(got["snaptail"] / got["floor"])
                print(
                    f"round {r + 1}, {writers:2d} writers: snaptail {got['snaptail']:8,.0f} "
                    f"ev/s, floor {got['floor']:8,.0f} ev/s, ratio {ratios[writers][-1]:.2f}",
                    flush=True,
                )
    return [
        {
            "writers": w,
            "snaptail": statistics.median(rates[("snaptail", w)]),
            "floor": statistics.median(rates[("floor", w)]),
            "ratio": statistics.median(ratios[w]),
            "ratios": ratios[w],
        }
        for w in WRITER_COUNTS
    ]


# -- partitioned catch-up ------------------------------------------------------------


def _record(url: str, first: int, agents: int, per_agent: int) -> None:
    from snaptail import Agent, AgentStore
    from snaptail.workload import Workload

    with AgentStore(url, snapshot_every=SNAPSHOT_EVERY) as store:
        for i in range(first, first + agents):
            agent = Agent(f"agent-{i}")
            Workload(seed=i).drive(agent, events=per_agent, save=store.save, batch=100)


def record(url: str, events: int, agents: int = 120, processes: int = 4) -> int:
    """About ``events`` realistic events over ``agents`` agents, written by
    ``processes`` processes at once; returns how many were stored."""
    from snaptail import AgentStore

    AgentStore(url).close()
    ctx = multiprocessing.get_context("spawn")
    share = agents // processes
    jobs = [
        ctx.Process(target=_record, args=(url, p * share, share, max(events // agents, 2)))
        for p in range(processes)
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
        if job.exitcode != 0:
            raise RuntimeError("a recording process failed")
    with AgentStore(url) as store:
        stored = store.newest_position()
    # Measure a settled table: without this, autovacuum (and the first readers, which
    # set the new rows' hint bits) work during the first timed catch-ups.
    import psycopg

    from snaptail.infrastructure.urls import postgres_connect_args

    with psycopg.connect(**postgres_connect_args(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) stored_events")
    return stored


def partition_worker(
    url: str, view_url: str, index: int, count: int, barrier: Barrier, results: Any
) -> None:
    from snaptail.projections import AgentStats, Partition, ProjectionWorker

    partition = Partition(index, count) if count > 1 else None
    with ProjectionWorker(AgentStats, url, view_url, partition=partition) as worker:
        barrier.wait()
        applied = worker.catch_up()
        results.put((applied, time.perf_counter()))


def catch_up_seconds(url: str, postgres_url: str, count: int) -> tuple[float, int]:
    """Seconds for ``count`` partition workers to build AgentStats from nothing."""
    with schema(postgres_url, "bench_view") as view_url:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(count + 1, timeout=300)
        results = ctx.Queue()
        processes = [
            ctx.Process(
                target=partition_worker, args=(url, view_url, k, count, barrier, results)
            )
            for k in range(count)
        ]
        for process in processes:
            process.start()
        barrier.wait()
        started = time.perf_counter()
        done = [results.get(timeout=900) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        return max(end for _, end in done) - started, sum(n for n, _ in done)


def bench_catch_up(postgres_url: str, events: int, rounds: int) -> list[dict[str, Any]]:
    seconds: dict[int, list[float]] = {}
    with schema(postgres_url, "bench_catchup") as url:
        stored = record(url, events)
        print(f"recorded {stored:,} events", flush=True)
        for r in range(rounds):
            order = list(PARTITION_COUNTS) if r % 2 == 0 else list(reversed(PARTITION_COUNTS))
            for count in order:
                took, applied = catch_up_seconds(url, postgres_url, count)
                if applied != stored:
                    raise RuntimeError(f"{count} partitions applied {applied} of {stored}")
                seconds.setdefault(count, []).append(took)
                print(
                    f"round {r + 1}, {count} partitions: {took:.2f}s "
                    f"({stored / took:,.0f} ev/s)",
                    flush=True,
                )
    one = statistics.median(seconds[1])
    return [
        {
            "partitions": p,
            "seconds": statistics.median(seconds[p]),
            "rate": stored / statistics.median(seconds[p]),
            "speedup": one / statistics.median(seconds[p]),
            "events": stored,
        }
        for p in PARTITION_COUNTS
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--quick", action="store_true", help="2 s cells, 20,000 events")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--skip-writers", action="store_true")
    parser.add_argument("--skip-catch-up", action="store_true")
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    events = args.events or (20_000 if args.quick else 100_000)

    if not args.skip_writers:
        rows = bench_writers(args.url, seconds, args.rounds)
        print("\n| writers | snaptail ev/s | floor ev/s | snaptail / floor (median) | per round |")
        print("| ---: | ---: | ---: | ---: | --- |")
        for row in rows:
            per_round = ", ".join(f"{x:.2f}" for x in row["ratios"])
            print(
                f"| {row['writers']} | {row['snaptail']:,.0f} | {row['floor']:,.0f} | "
                f"**{row['ratio']:.2f}** | {per_round} |"
            )
    if not args.skip_catch_up:
        rows = bench_catch_up(args.url, events, args.rounds)
        print(f"\n| partitions | catch-up of {rows[0]['events']:,} events | ev/s | vs 1 |")
        print("| ---: | ---: | ---: | ---: |")
        for row in rows:
            print(
                f"| {row['partitions']} | {row['seconds']:.2f} s | {row['rate']:,.0f} | "
                f"**{row['speedup']:.2f}x** |"
            )


if __name__ == "__main__":
    main()
