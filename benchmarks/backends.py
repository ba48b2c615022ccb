"""SQLite beside PostgreSQL, measured in one run: append throughput and load latency.

    python -m benchmarks.backends --quick
    python -m benchmarks.backends --postgres-url postgresql://postgres@127.0.0.1:5432/test

Each measurement runs on both backends one after the other, on fresh databases (a
SQLite file in a temporary directory; a fresh PostgreSQL schema, dropped at the end).
Compare the ratio column, not absolute figures: this machine is shared and noisy.

* append, 1 event per save: one agent, a short user message per ``save``.
* append, 100 events per save: one agent, 100 short messages per ``save``.
* append, realistic traffic: ``snaptail.workload`` chat and tool turns (webhook
  envelopes, tool outputs of KBs), saved about 100 events at a time.
* load: ``store.get`` of an agent with realistic events, a snapshot every 100 events
  and a tail after it (p50 and p95 of repeated loads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from snaptail import Agent, AgentStore, Never
from snaptail.bench.measure import percentile
from snaptail.workload import Workload

DEFAULT_POSTGRES_URL = os.environ.get(
    "SNAPTAIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TAIL = 50
MESSAGE = "Could you check why the nightly pipeline failed on the staging database? " * 3


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    single_saves: int
    batch_saves: int
    realistic_events: int
    load_events: int
    loads: int
    repeats: int


QUICK = Sizes(
    single_saves=300, batch_saves=20, realistic_events=2_000, load_events=2_000, loads=30,
    repeats=1,
)  # fmt: skip
FULL = Sizes(
    single_saves=2_000, batch_saves=100, realistic_events=10_000, load_events=10_000,
    loads=100, repeats=3,
)  # fmt: skip


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="snaptail-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'agents.db'}"


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    import psycopg

    from snaptail.infrastructure.urls import parse_postgres_url

    connect: dict[str, Any] = dict(parse_postgres_url(server_url).conninfo)
    schema = f"snaptail_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(autocommit=True, **connect) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in server_url else "?"
    try:
        yield f"{server_url}{sep}schema={schema}"
    finally:
        with psycopg.connect(autocommit=True, **connect) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def append_single(url: str, saves: int) -> float:
    """Events per second, one small event per save."""
    with AgentStore(url) as store:
        agent = Agent(name="bench")
        store.save(agent)
        started = time.perf_counter()
        for _ in range(saves):
            agent.add_input("user", MESSAGE)
            store.save(agent)
        return saves / (time.perf_counter() - started)


def append_batches(url: str, saves: int) -> float:
    """Events per second, 100 small events per save."""
    with AgentStore(url) as store:
        agent = Agent(name="bench")
        store.save(agent)
        started = time.perf_counter()
        for _ in range(saves):
            for _ in range(100):
                agent.add_input("user", MESSAGE)
            store.save(agent)
        return saves * 100 / (time.perf_counter() - started)


def append_realistic(url: str, events: int) -> float:
    """Events per second, realistic traffic saved about 100 events at a time."""
    with AgentStore(url) as store:
        agent = Agent(name="bench")
        started = time.perf_counter()
        Workload(seed=1).drive(agent, events, save=store.save, batch=100)
        return events / (time.perf_counter() - started)


@dataclass(frozen=True)
class LoadFigures:
    p50_ms: float
    p95_ms: float
    snapshot_version: int
    version: int


def build_loaded_agent(url: str, events: int) -> uuid.UUID:
    """An agent with snapshots every 100 events, then an explicit one, then a tail of
    ``TAIL`` events after it."""
    workload = Workload(seed=2)
    agent = Agent(name="bench")
    with AgentStore(url, snapshot_every=100) as store:
        workload.drive(agent, events - TAIL, save=store.save, batch=7)
        store.snapshot(agent.id)
    with AgentStore(url, policy=Never()) as store:
        agent = store.get(agent.id)
        workload.drive(agent, TAIL, save=store.save, batch=7)
    return agent.id


def load_latency(urls: tuple[str, str], events: int, loads: int) -> list[LoadFigures]:
    """p50/p95 of ``store.get`` of the same agent on each backend, loads alternating."""
    agent_ids = [build_loaded_agent(url, events) for url in urls]
    with AgentStore(urls[0]) as first, AgentStore(urls[1]) as second:
        stores = (first, second)
        times: tuple[list[float], list[float]] = ([], [])
        for store, agent_id in zip(stores, agent_ids, strict=True):
            store.get(agent_id)  # warm caches and prepared statements
        for _ in range(loads):
            for store, agent_id, samples in zip(stores, agent_ids, times, strict=True):
                started = time.perf_counter()
                loaded = store.get(agent_id)
                samples.append((time.perf_counter() - started) * 1000)
        figures = []
        for store, agent_id, samples in zip(stores, agent_ids, times, strict=True):
            snapshot = store.snapshot_infos(agent_id)
            figures.append(
                LoadFigures(
                    p50_ms=percentile(samples, 0.5),
                    p95_ms=percentile(samples, 0.95),
                    snapshot_version=snapshot[0].originator_version if snapshot else 0,
                    version=loaded.version,
                )
            )
        return figures


@dataclass(frozen=True)
class Row:
    what: str
    unit: str
    sqlite: float
    postgres: float

    def figures(self) -> tuple[str, str]:
        return _figure(self.sqlite, self.unit), _figure(self.postgres, self.unit)

    @property
    def ratio(self) -> float:
        return self.postgres / self.sqlite if self.sqlite else float("nan")


def run(sizes: Sizes, postgres_url: str, console: Console) -> list[Row]:
    """Every measurement on both backends; repeats alternate between them, so that
    changes in the machine's load fall on both alike."""

    def both(measure: Callable[[str], float]) -> tuple[float, float]:
        on_sqlite: list[float] = []
        on_postgres: list[float] = []
        for _ in range(sizes.repeats):
            with sqlite_database() as url:
                on_sqlite.append(measure(url))
            with postgres_database(postgres_url) as url:
                on_postgres.append(measure(url))
        return statistics.median(on_sqlite), statistics.median(on_postgres)

    rows: list[Row] = []
    with console.status("append, 1 event per save"):
        s, p = both(lambda url: append_single(url, sizes.single_saves))
    rows.append(Row("append, 1 event per save", "events/s", s, p))
    with console.status("append, 100 events per save"):
        s, p = both(lambda url: append_batches(url, sizes.batch_saves))
    rows.append(Row("append, 100 events per save", "events/s", s, p))
    with console.status("append, realistic traffic"):
        s, p = both(lambda url: append_realistic(url, sizes.realistic_events))
    rows.append(Row("append, realistic traffic (~100/save)", "events/s", s, p))
    with (
        console.status("load latency"),
        sqlite_database() as sqlite_url,
        postgres_database(postgres_url) as pg_url,
    ):
        ls, lp = load_latency((sqlite_url, pg_url), sizes.load_events, sizes.loads)
    tail = f"v{ls.version}, snapshot v{ls.snapshot_version}"
    rows.append(Row(f"load p50 ({tail})", "ms", ls.p50_ms, lp.p50_ms))
    rows.append(Row(f"load p95 ({tail})", "ms", ls.p95_ms, lp.p95_ms))
    return rows


def _figure(value: float, unit: str) -> str:
    return f"{value:,.0f}" if value >= 100 or unit == "events/s" else f"{value:.2f}"


def table(rows: list[Row], title: str) -> Table:
    out = Table(title=title)
    for column in ("measure", "unit", "SQLite", "PostgreSQL", "PostgreSQL / SQLite"):
        out.add_column(column, justify="left" if column == "measure" else "right")
    for row in rows:
        out.add_row(row.what, row.unit, *row.figures(), f"{row.ratio:.2f}")
    return out


def markdown(rows: list[Row]) -> str:
    lines = [
        "| measure | unit | SQLite | PostgreSQL | PostgreSQL / SQLite |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(f"| {row.what} | {row.unit} | {' | '.join(row.figures())} | {row.ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    console = Console()
    load_before = os.getloadavg()[0]
    rows = run(sizes, args.postgres_url, console)
    console.print(
        f"machine load average (1 min): {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
    )
    console.print(table(rows, f"SQLite beside PostgreSQL ({'quick' if args.quick else 'full'})"))
    if args.markdown:
        console.print(markdown(rows), markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
