"""``snaptail worker run`` as a real process: SIGKILL at random moments during a
catch-up and restart (exact figures at the end), SIGTERM (clean exit 0), and two
workers on one projection (one runs, one stands by; nothing is processed twice)."""

from __future__ import annotations

import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snaptail import AgentStore
from tests.projection_support import (
    actual,
    close_views,
    expected,
    more,
    seed,
    start_worker,
    view_position,
    wait_until,
)
from tests.projection_support import (
    stop_worker as stop,
)


@pytest.fixture
def store(database_url: str) -> Iterator[AgentStore]:
    with AgentStore(database_url, snapshot_every=100) as s:
        yield s
    close_views()


def test_sigkill_at_random_moments_then_restart_gives_exact_figures(
    store: AgentStore, tmp_path: Path
) -> None:
    ids = seed(store, agents=8, events=250)  # about 2,000 events
    head = store.recorder.max_notification_id() or 0
    rng = random.Random(4)
    log = tmp_path / "worker.log"
    kills = 0
    last = 0
    while kills < 5:
        worker = start_worker(store.url, log, "--batch-size", "5")
        try:
            # Kill only once this run has committed something new, so every kill
            # lands in the middle of the catch-up (or of a batch).
            def progressed(w: subprocess.Popen[bytes] = worker, after: int = last) -> bool:
                return view_position(store.url)[0] > after or w.poll() is not None

            wait_until(progressed)
            wait_until(lambda: rng.random() < 0.3)  # a random extra moment
        finally:
            worker.kill()
            worker.wait(timeout=60)
        last = view_position(store.url)[0]
        kills += 1
        if last >= head:
            break  # caught up before the kill: the next run has nothing left
    assert kills >= 2, "the catch-up finished before the worker could be killed twice"

    worker = start_worker(store.url, log, "--catch-up-only")
    assert worker.wait(timeout=120) == 0, log.read_text()
    assert view_position(store.url) == (head, head)  # each event processed exactly once
    assert actual(store.url) == expected(store, ids)


def test_sigterm_finishes_the_batch_and_exits_0(store: AgentStore, tmp_path: Path) -> None:
    ids = seed(store, agents=4, events=150)
    log = tmp_path / "worker.log"
    worker = start_worker(store.url, log, "--batch-size", "5")
    try:
        wait_until(lambda: view_position(store.url)[0] > 0 or worker.poll() is not None)
    finally:
        status = stop(worker)
    assert status == 0, log.read_text()
    assert "stopped at position" in log.read_text()
    position, processed = view_position(store.url)
    assert processed == position  # a whole number of committed batches, nothing half-done

    worker = start_worker(store.url, log)  # now let it follow, and stop it while idle
    head = store.recorder.max_notification_id()
    wait_until(lambda: view_position(store.url)[0] == head)
    assert stop(worker) == 0, log.read_text()
    assert actual(store.url) == expected(store, ids)


def test_two_workers_never_process_an_event_twice(store: AgentStore, tmp_path: Path) -> None:
    ids = seed(store, agents=2, events=100)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    workers = [start_worker(store.url, log, "--batch-size", "3") for log in logs]
    try:
        wait_until(lambda: any("standby" in log.read_text() for log in logs if log.exists()))
        active = next(i for i, log in enumerate(logs) if "standby" not in log.read_text())
        ids += seed(store, agents=2, events=100, seed=2)
        head = store.recorder.max_notification_id()
        wait_until(lambda: view_position(store.url)[0] == head)
        assert view_position(store.url) == (head, head)

        # The active worker stops (Ctrl-C); the standby takes over and follows new events.
        assert stop(workers[active], signal.SIGINT) == 0
        more(store, ids[0], 20, seed=5)
        head = store.recorder.max_notification_id()
        wait_until(lambda: view_position(store.url)[0] == head)
        assert view_position(store.url) == (head, head)
        assert "lock acquired" in logs[1 - active].read_text()
    finally:
        statuses = [stop(w) for w in workers]
    assert statuses == [0, 0], [log.read_text() for log in logs]
    assert actual(store.url) == expected(store, ids)
