"""Partitioned projection workers, on both backends: each slice of agents has its own
position and lock; together the slices give exactly the unpartitioned figures; a
standby takes a slice over from its stored position; a different split is refused."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import msgspec
import pytest
from typer.testing import CliRunner

from examples.tool_latency import ToolLatency
from snaptail import AgentStore
from snaptail.cli import app
from snaptail.projections import AgentStats, Partition, ProjectionWorker
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


@pytest.fixture
def store(database_url: str) -> Iterator[AgentStore]:
    with AgentStore(database_url, snapshot_every=100) as s:
        yield s
    close_views()


def _processed(url: str, count: int) -> list[int]:
    return [view_position(url, f"AgentStats[{k}/{count}]")[1] for k in range(count)]


def test_slices_together_give_exactly_the_unpartitioned_figures(store: AgentStore) -> None:
    ids = seed(store, agents=8, events=60)
    total = sum(store.event_count(i) for i in ids)
    owners = {k: {i for i in ids if Partition(k, 3).owns(i)} for k in range(3)}
    for k in range(3):
        with ProjectionWorker(AgentStats, store.url, batch_size=13, partition=Partition(k, 3)) as w:
            assert w.name == f"AgentStats[{k}/3]"
            assert w.catch_up() == sum(store.event_count(i) for i in owners[k])
            # Only this slice's agents are in the view so far (and all of theirs).
            done = {UUID(a) for a in actual(store.url)}
            assert owners[k] <= done <= set().union(*(owners[j] for j in range(k + 1)))
    assert sum(_processed(store.url, 3)) == total
    assert actual(store.url) == expected(store, ids)

    more(store, ids[0], 20, seed=3)  # one more catch-up of each slice adds just these
    applied = 0
    for k in range(3):
        with ProjectionWorker(AgentStats, store.url, partition=Partition(k, 3)) as w:
            applied += w.catch_up()
    assert applied == 20
    assert actual(store.url) == expected(store, ids)

    more(store, ids[1], 4, seed=4)  # `snaptail stats` catches each slice up in turn
    result = CliRunner().invoke(app, ["stats", "--db", store.url, "--json", "--top", "0"])
    assert result.exit_code == 0, result.output
    rows = msgspec.json.decode(result.stdout)
    assert {r["agent_id"]: r["events"] for r in rows} == {
        k: v["events"] for k, v in expected(store, ids).items()
    }


def test_a_different_split_or_an_unpartitionable_projection_is_refused(
    store: AgentStore,
) -> None:
    seed(store, agents=2, events=10)
    for k in range(2):  # (one slice may own neither agent)
        with ProjectionWorker(AgentStats, store.url, partition=Partition(k, 2)) as w:
            w.catch_up()
    with pytest.raises(ValueError, match="built with --partitions 2"):
        ProjectionWorker(AgentStats, store.url, partition=Partition(0, 3))
    with pytest.raises(ValueError, match="built with --partitions 2"):
        ProjectionWorker(AgentStats, store.url)
    assert not ToolLatency.partitionable
    with pytest.raises(ValueError, match="not partitionable"):
        ProjectionWorker(ToolLatency, store.url, partition=Partition(0, 2))


def _stop(process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(how)
    return process.wait(timeout=60)


def test_partition_processes_and_a_standby_that_takes_a_slice_over(
    store: AgentStore, tmp_path: Path
) -> None:
    ids = seed(store, agents=6, events=80, slices=2)  # (6 random ids: 1 in 32 in one slice)
    total = sum(store.event_count(i) for i in ids)
    logs = [tmp_path / "all.log", tmp_path / "standby.log"]
    both = start_worker(store.url, logs[0], "--partitions", "2", "--batch-size", "9")
    standby = None
    try:
        wait_until(lambda: sum(_processed(store.url, 2)) == total)
        assert all(_processed(store.url, 2))
        standby = start_worker(store.url, logs[1], "--partitions", "2", "--partition", "0")
        wait_until(lambda: "standby" in logs[1].read_text())

        assert _stop(both) == 0, logs[0].read_text()  # both slices' workers stop
        wait_until(lambda: "lock acquired" in logs[1].read_text())
        zero = [i for i in ids if Partition(0, 2).owns(i)]
        one = [i for i in ids if Partition(1, 2).owns(i)]
        assert zero and one
        before = _processed(store.url, 2)
        more(store, zero[0], 10, seed=7)
        more(store, one[0], 10, seed=8)
        # The standby follows slice 0 from its stored position; slice 1 waits.
        wait_until(lambda: _processed(store.url, 2)[0] == before[0] + 10)
        assert _processed(store.url, 2)[1] == before[1]
    finally:
        statuses = [_stop(p) for p in (both, standby) if p is not None]
    assert statuses == [0, 0], [log.read_text() for log in logs]

    finish = start_worker(store.url, logs[0], "--partitions", "2", "--catch-up-only")
    assert finish.wait(timeout=120) == 0, logs[0].read_text()
    assert sum(_processed(store.url, 2)) == total + 20  # each event once
    assert actual(store.url) == expected(store, ids)
