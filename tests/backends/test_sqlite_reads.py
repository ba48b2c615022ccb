"""SQLite loads read through the recorder's own connections (not eventsourcing's pool):
consistent under concurrent saves, errors as eventsourcing's, closed with the store."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from eventsourcing.persistence import ConnectionPoolClosedError, OperationalError

from snaptail import Agent, AgentStore
from snaptail.infrastructure.recorder import SNAPSHOTS_TABLE


def test_loads_in_threads_while_saving_are_each_a_replay(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    with AgentStore(url, snapshot_every=7, recent_events=5, keep_snapshots=1) as store:
        agent = Agent(name="busy")
        store.save(agent)
        done = threading.Event()
        loaded: list[Agent] = []
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for i in range(120):
                    agent.add_input("user", f"question {i}")
                    agent.add_output("assistant_message", f"answer {i}")
                    store.save(agent)
            finally:
                done.set()

        def read() -> None:
            try:
                while not done.is_set():
                    loaded.append(store.get(agent.id))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=write)] + [
            threading.Thread(target=read) for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert loaded
        for each in loaded[:: max(1, len(loaded) // 40)] + loaded[-1:]:
            replayed = store.replay(agent.id, version=each.version)
            assert each.state == replayed.state
            assert [e.originator_version for e in each.recent_events] == list(
                range(max(1, each.version - 4), each.version + 1)
            )


def test_a_failed_read_raises_eventsourcing_errors_and_later_loads_work(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agents.db"
    with AgentStore(f"sqlite:///{path}", snapshot_every=3) as store:
        agent = Agent(name="a")
        agent.add_input("user", "hello")
        agent.add_input("user", "again")
        store.save(agent)
        renamed = f"{SNAPSHOTS_TABLE}_away"
        with sqlite3.connect(path) as other:
            other.execute(f"ALTER TABLE {SNAPSHOTS_TABLE} RENAME TO {renamed}")
        with pytest.raises(OperationalError):
            store.get(agent.id)
        with sqlite3.connect(path) as other:
            other.execute(f"ALTER TABLE {renamed} RENAME TO {SNAPSHOTS_TABLE}")
        assert store.get(agent.id).state == agent.state


def test_a_closed_store_refuses_loads(tmp_path: Path) -> None:
    store = AgentStore(f"sqlite:///{tmp_path / 'agents.db'}")
    agent = Agent(name="a")
    store.save(agent)
    store.get(agent.id)
    store.close()
    with pytest.raises(ConnectionPoolClosedError):
        store.get(agent.id)
