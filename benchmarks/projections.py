"""Projection workers: AgentStats catch-up throughput and live lag, SQLite and PostgreSQL.

    python -m benchmarks.projections --quick
    python -m benchmarks.projections --events 200000

* catch-up: realistic traffic (``snaptail.workload``, many agents, snapshots every 100
  events) is recorded first; then ``AgentStats`` is built from nothing into the same
  database, ``batch_size`` events per view transaction (median of the repeats; the
  view is emptied between them). Batch size 10 is shown beside 1,000 for the ratio.
* lag: a worker follows the log while this process saves one event at a time
  (a random 2-20 ms apart); lag = from ``save()`` returning to the moment a separate
  reader sees the view's position at or past that event (polled every 0.5 ms).
  Measured with the worker in another process (``snaptail worker run``, the way it
  is deployed: SQLite is polled every ``--poll-interval``, PostgreSQL is woken by
  NOTIFY) and in a thread of the writing process (woken by the commit signal).

The machine is shared and noisy: compare figures measured in one run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from snaptail import Agent, AgentStore
from snaptail.projections import AgentStats, ProjectionWorker, open_view
from snaptail.projections.view import TRACKING_TABLE
from snaptail.workload import Workload

DEFAULT_POSTGRES_URL = os.environ.get(
    "SNAPTAIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ROOT = Path(__file__).resolve().parent.parent
AGENT_STATS = "snaptail.projections:AgentStats"
console = Console()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@contextmanager
def database(backend: str, postgres_url: str) -> Iterator[str]:
    """A fresh database URL: a SQLite file in a temp dir, or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="snaptail-bench-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'events.db'}"
        return
    import psycopg

    schema = f"bench_proj_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def record(url: str, events: int, agents: int) -> int:
    """Record about ``events`` realistic events over ``agents`` agents; returns the count."""
    per_agent = max(events // agents, 2)
    with AgentStore(url, snapshot_every=100) as store:
        for i in range(agents):
            agent = Agent(f"agent-{i}")
            Workload(seed=i).drive(agent, events=per_agent, save=store.save, batch=100)
        return store.newest_position()


def reset_view(url: str) -> None:
    view = open_view(url)
    view.setup(AgentStats.tables)
    with view.transaction() as cur:
        cur.execute("DELETE FROM snaptail_agent_stats")
        cur.execute(f"DELETE FROM {TRACKING_TABLE} WHERE projection = ?", ("AgentStats",))
    view.close()


def catch_up_rate(url: str, batch_size: int, repeats: int, limit: int | None = None) -> float:
    """Median events/s of building AgentStats from nothing (``limit`` events at most)."""
    rates = []
    for _ in range(repeats):
        reset_view(url)
        with ProjectionWorker(AgentStats, url, batch_size=batch_size) as worker:
            assert worker.lock.try_acquire(), "another worker runs AgentStats here"
            started = time.perf_counter()
            applied = 0
            while limit is None or applied < limit:
                step = worker.step()
                if step == 0:
                    break
                applied += step
            rates.append(applied / (time.perf_counter() - started))
    return statistics.median(rates)


def measure_lag(url: str, saves: int, mode: str, poll_interval: float) -> list[float]:
    """Milliseconds from save() returning to the view's position covering the event."""
    reset_view(url)
    stop = threading.Event()
    process: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None
    worker: ProjectionWorker | None = None
    if mode == "process":
        process = subprocess.Popen(
            [sys.executable, "-m", "snaptail.cli", "worker", "run", AGENT_STATS, "--db", url,
             "--no-progress", "--poll-interval", str(poll_interval)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    view = open_view(url)
    lags: list[float] = []
    rng = random.Random(1)
    try:
        with AgentStore(url, snapshot_every=100) as store:
            if mode == "thread":
                worker = ProjectionWorker(AgentStats, url, poll_interval=poll_interval)
                thread = threading.Thread(target=worker.run, args=(stop,))
                thread.start()
            try:
                head = store.newest_position()
                _wait_position(view, head, timeout=120)  # the worker has caught up
                agent = Agent("lag")
                store.save(agent)
                for i in range(saves):
                    time.sleep(rng.uniform(0.002, 0.02))
                    agent.add_input("user", f"message {i}")
                    store.save(agent)
                    saved = time.perf_counter()
                    target = store.newest_position()
                    _wait_position(view, target, timeout=10)
                    lags.append((time.perf_counter() - saved) * 1000)
            finally:  # stop the worker thread before its recorder closes
                stop.set()
                if thread is not None:
                    thread.join()
                if worker is not None:
                    worker.close()
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
        view.close()
    return lags


def _wait_position(view: Any, target: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while view.position("AgentStats") < target:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"view did not reach {target} in {timeout}s")
        time.sleep(0.0005)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 100 lag samples")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--saves", type=int, default=300, help="lag samples per mode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.saves, args.repeats = 20_000, 100, 3
    backends = ["sqlite"] if args.sqlite_only else ["sqlite", "postgres"]

    throughput = Table(title="AgentStats catch-up (events/s, median)")
    for column in ("backend", "events", "MiB", "batch 1000", "batch 10", "ratio"):
        throughput.add_column(column, justify="right")
    lag = Table(title=f"Live lag, save() -> view (ms; poll interval {args.poll_interval}s)")
    for column in ("backend", "worker", "samples", "p50", "p99", "max"):
        lag.add_column(column, justify="right")

    for backend in backends:
        with database(backend, args.postgres_url) as url:
            console.print(f"[bold]{backend}[/]: recording {args.events:,} events")
            count = record(url, args.events, args.agents)
            mib = _stored_mib(url)
            big = catch_up_rate(url, 1000, args.repeats)
            small = catch_up_rate(url, 10, 1, limit=min(count, 5000))
            throughput.add_row(
                backend, f"{count:,}", f"{mib:.1f}", f"{big:,.0f}", f"{small:,.0f}",
                f"{big / small:.1f}x",
            )  # fmt: skip
            for mode in ("process", "thread"):
                lags = measure_lag(url, args.saves, mode, args.poll_interval)
                lag.add_row(
                    backend, mode, str(len(lags)), f"{percentile(lags, 50):.1f}",
                    f"{percentile(lags, 99):.1f}", f"{max(lags):.1f}",
                )  # fmt: skip
    console.print(throughput)
    console.print(lag)


def _stored_mib(url: str) -> float:
    view = open_view(url)
    with view.reading() as cur:
        cur.execute("SELECT SUM(LENGTH(state)) FROM stored_events")
        row = cur.fetchone()
    view.close()
    return float(row[0] if row and row[0] else 0) / 2**20


if __name__ == "__main__":
    main()
