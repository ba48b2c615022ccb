"""Eight writer processes on PostgreSQL, each holding its transactions open for a
random moment after writing (so transactions commit in another order than they took
notification ids), while a projection worker process follows and a subscriber
reads. Afterwards: every agent's count in AgentStats equals its version, nothing was
counted twice, and the subscriber saw every event once, positions only increasing.

An observer paging by notification id checks that the hazard really happened: it saw
a notification id while a lower one was still missing, which appeared later.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import signal
import threading
import time
import traceback
import uuid
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import psycopg
import pytest

from snaptail import Agent, AgentStore
from snaptail.infrastructure.postgres import PostgresAgentRecorder
from snaptail.infrastructure.urls import postgres_connect_args
from tests.projection_support import (
    actual,
    close_views,
    expected,
    start_worker,
    view_position,
    wait_until,
)

pytestmark = pytest.mark.postgres

WRITERS = 8
AGENTS_PER_WRITER = 3
SAVES_PER_WRITER = 50
MAX_DELAY = 0.04  # seconds a transaction stays open after writing its rows


def write(url: str, writer: int, barrier: Barrier, results: Any) -> None:
    """Save 2 events at a time to this writer's own agents, each save's transaction
    held open for a random moment; report the agents' versions."""
    report: dict[str, Any] = {"writer": writer, "versions": {}, "errors": []}
    rng = random.Random(writer)
    try:
        with AgentStore(url, snapshot_every=10) as store:
            recorder = store.recorder
            assert isinstance(recorder, PostgresAgentRecorder)
            recorder.in_transaction_hook = lambda: time.sleep(rng.random() * MAX_DELAY)
            agents = [Agent(f"w{writer}-{n}") for n in range(AGENTS_PER_WRITER)]
            barrier.wait()
            for n in range(SAVES_PER_WRITER):
                agent = rng.choice(agents)
                agent.add_input("user", f"w{writer} q{n}")
                agent.add_output("assistant_message", f"w{writer} a{n}")
                store.save(agent)
            for agent in agents:
                store.save(agent)  # agents never picked still get created
                report["versions"][agent.id.hex] = agent.version
    except BaseException:
        report["errors"].append(traceback.format_exc())
    results.put(report)


class Observer(threading.Thread):
    """Reads the set of visible notification ids over and over; :meth:`hazards`
    counts the reads that saw an id while a lower one, present at the end, was not
    yet visible (a reader paging by id would have passed over it)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(**postgres_connect_args(url), autocommit=True)
        self.seen: list[set[int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rows = self.conn.execute("SELECT notification_id FROM stored_events").fetchall()
            self.seen.append({row[0] for row in rows})
            time.sleep(0.002)

    def hazards(self) -> int:
        rows = self.conn.execute("SELECT notification_id FROM stored_events").fetchall()
        ids = {row[0] for row in rows}
        count = 0
        for visible in self.seen:
            if visible and any(i not in visible for i in ids if i < max(visible)):
                count += 1
        return count


class Subscriber(threading.Thread):
    def __init__(self, recorder: PostgresAgentRecorder) -> None:
        super().__init__(daemon=True)
        self.subscription = recorder.subscribe(gt=None, poll_interval=0.01)
        self.received: list[Any] = []

    def run(self) -> None:
        with self.subscription:
            for notification in self.subscription:
                self.received.append(notification)


def test_eight_writers_with_open_transactions_and_a_following_worker(
    postgres_url: str, tmp_path: Path
) -> None:
    with AgentStore(postgres_url) as store:  # creates the tables
        recorder = store.recorder
        assert isinstance(recorder, PostgresAgentRecorder)
        log = tmp_path / "worker.log"
        worker = start_worker(postgres_url, log, "--batch-size", "7")
        subscriber = Subscriber(recorder)
        subscriber.start()
        observer = Observer(postgres_url)
        observer.start()
        try:
            ctx = multiprocessing.get_context("spawn")
            barrier = ctx.Barrier(WRITERS, timeout=120)
            results = ctx.Queue()
            processes = [
                ctx.Process(target=write, args=(postgres_url, w, barrier, results))
                for w in range(WRITERS)
            ]
            for process in processes:
                process.start()
            reports = [results.get(timeout=300) for _ in processes]
            for process in processes:
                process.join(timeout=60)
            errors = [e for r in reports for e in r["errors"]]
            assert errors == [], "\n".join(errors)
            versions = {uuid.UUID(h): v for r in reports for h, v in r["versions"].items()}
            total = sum(versions.values())
            assert total == WRITERS * (AGENTS_PER_WRITER + 2 * SAVES_PER_WRITER)

            wait_until(lambda: view_position(postgres_url)[1] >= total, timeout=120)
            wait_until(lambda: len(subscriber.received) >= total, timeout=120)
        finally:
            observer.stop.set()
            subscriber.subscription.stop()
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            status = worker.wait(timeout=60)
            close_views()
        assert status == 0, log.read_text()

        # The worker: each event counted once, every agent's count equal to its version.
        assert view_position(postgres_url)[1] == total
        close_views()
        stats = actual(postgres_url)
        assert {k: v["events"] for k, v in stats.items()} == {
            str(i): v for i, v in versions.items()
        }
        assert stats == expected(store, list(versions))

        # The subscriber: every event exactly once, positions strictly increasing.
        received = subscriber.received
        assert len(received) == total
        assert {(n.originator_id, n.originator_version) for n in received} == {
            (i, v) for i, top in versions.items() for v in range(1, top + 1)
        }
        positions = [n.position for n in received]
        assert all(a < b for a, b in itertools.pairwise(positions))

        # Notification ids alone would have misled a reader: commits came out of order.
        assert observer.hazards() > 0
