"""Issue 11, "Saves": an acknowledged outcome is the true outcome.

Every fault here is made on a real database (SQLite file in WAL mode, PostgreSQL),
by a second writer or by repeating a committed insert, never by a mock of the DB.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest

from snaptail import (
    Agent,
    AgentCache,
    AgentStore,
    ConcurrencyError,
    MemoryBudgetExceeded,
    Never,
    SnaptailError,
)

# Removed as the faults are fixed (issue 11).


KIB = 1024


def _event_types(store: AgentStore, agent: Agent) -> list[str]:
    return [type(e).__name__ for e in store.history(agent.id)]


# -- save() never raises after its transaction committed -----------------------------


def test_save_over_budget_does_not_raise_after_commit(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit happened: raising would make the caller apply the command twice."""
    with AgentStore(database_url, memory_budget="20KiB", policy=Never()) as store:
        agent = Agent("huge-prompt", system_prompt="p" * 50_000)
        with caplog.at_level(logging.WARNING, logger="snaptail"):
            store.save(agent)  # committed; the budget problem is logged, not raised
        assert not agent.pending_events
        assert store.event_count(agent.id) == 1
        assert any(
            "memory budget exceeded" in r.getMessage() and str(agent.id) in r.getMessage()
            for r in caplog.records
        )
        # Left for the next load, which raises before anything is stored.
        with pytest.raises(MemoryBudgetExceeded, match="system_prompt"):
            store.get(agent.id)


class _RacedWhileShedding(Agent):
    """Before shedding, another writer saves this agent: the WindowShrunk save after
    the commit meets a real version conflict."""

    other_url = ""

    def shed_memory(self, target_bytes: int) -> None:
        with AgentStore(type(self).other_url, policy=Never()) as other:
            copy = other.get(self.id)
            copy.add_label("raced")
            other.save(copy)
        super().shed_memory(target_bytes)


def test_a_conflict_saving_window_shrunk_after_commit_is_not_raised(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _RacedWhileShedding.other_url = database_url
    with AgentStore(database_url, policy=Never()) as store:
        agent = _RacedWhileShedding("shedder")
        for i in range(40):
            agent.add_input("user", f"message {i} " + "w" * 1000)
        store.save(agent)
        head = agent.version
        store.memory_budget = 30 * KIB  # from now on the agent is over budget
        agent.add_input("user", "the command that must not be applied twice")
        with caplog.at_level(logging.WARNING, logger="snaptail"):
            store.save(agent)  # committed: must not raise
        stored = store.history(agent.id, after=head)
        assert [type(e).__name__ for e in stored][:1] == ["InputItemAdded"]
        assert sum(1 for e in store.history(agent.id) if type(e).__name__ == "InputItemAdded") == 41
        assert any(str(agent.id) in r.getMessage() for r in caplog.records)
        # The shedding events were not stored; the agent is stale: its next save
        # is a true conflict.
        assert agent.pending_events
        with pytest.raises(ConcurrencyError):
            store.save(agent)


# -- an ambiguous commit is not a conflict with the writer's own rows -----------------


def _commit_twice(store: AgentStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the recorder's insert run twice: the first commits, the second meets the
    rows just committed (as a retry after a lost connection does)."""
    original = store.recorder.insert_events
    calls: list[int] = []

    def twice(stored_events: Sequence[Any], **kwargs: Any) -> Any:
        calls.append(len(stored_events))
        original(stored_events, **kwargs)
        return original(stored_events, **kwargs)

    monkeypatch.setattr(store.recorder, "insert_events", twice)
    return calls


@pytest.mark.parametrize("snapshot_every", [1000, 2], ids=["events", "events+snapshot"])
def test_a_retried_commit_of_the_same_events_is_a_success(
    database_url: str, monkeypatch: pytest.MonkeyPatch, snapshot_every: int
) -> None:
    with AgentStore(database_url, snapshot_every=snapshot_every) as store:
        first, second = Agent("first"), Agent("second")
        first.add_input("user", "hello")
        store.save(first, second)
        calls = _commit_twice(store, monkeypatch)
        first.add_input("user", "again")
        second.add_label("x")
        store.save(first, second)  # must not raise ConcurrencyError
        assert calls == [2]
        assert not first.pending_events and not second.pending_events
        assert store.event_count(first.id) == first.version == 3
        assert store.event_count(second.id) == second.version == 2
        assert [e.originator_version for e in first.recent_events] == [1, 2, 3]
        monkeypatch.undo()
        assert store.get(first.id).state == first.state
        assert store.replay(second.id).state == second.state


def test_a_retry_that_meets_another_writers_rows_is_still_a_conflict(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with AgentStore(database_url) as store:
        agent = Agent("contended")
        store.save(agent)
        other = store.get(agent.id)
        other.add_label("theirs")
        store.save(other)
        _commit_twice(store, monkeypatch)
        agent.add_label("mine")
        with pytest.raises(ConcurrencyError):
            store.save(agent)
        assert agent.pending_events


# -- ConcurrencyError names the agent that conflicted ---------------------------------


def test_a_multi_agent_conflict_names_the_conflicting_agent_and_versions(
    database_url: str,
) -> None:

    with AgentStore(database_url) as store:
        a, b = Agent("a"), Agent("b")
        store.save(a, b)
        stale_b = store.get(b.id)
        b.add_label("first")
        b.add_label("second")
        store.save(b)  # b is now at version 3
        a.add_label("a-change")
        stale_b.add_label("stale")
        with pytest.raises(ConcurrencyError) as caught:
            store.save(a, stale_b)
        error = caught.value
        assert error.agent_id == b.id
        assert error.expected_version == 1  # type: ignore[attr-defined]
        assert error.stored_version == 3  # type: ignore[attr-defined]
        message = str(error)
        assert str(b.id) in message and "1" in message and "3" in message
        assert str(a.id) not in message.split(";")[0]
        assert store.event_count(a.id) == 1  # nothing of the save was written


def test_agent_cache_evicts_the_agent_that_conflicted(database_url: str) -> None:
    with AgentStore(database_url) as store:
        a, b = Agent("a"), Agent("b")
        store.save(a, b)
        cache = AgentCache(store, "64MiB")
        cached_a, cached_b = cache.get(a.id), cache.get(b.id)
        with AgentStore(database_url) as other:
            theirs = other.get(b.id)
            theirs.add_label("theirs")
            other.save(theirs)
        cached_a.add_label("mine")
        cached_b.add_label("mine")
        with pytest.raises(ConcurrencyError):
            cache.save(cached_a, cached_b)
        assert b.id not in cache
        assert cache.get(b.id).state.labels == ["theirs"]  # reloaded


# -- store.update: load, apply, save; on a conflict reload and apply again ------------


def test_update_reapplies_the_command_after_a_conflict(database_url: str) -> None:
    with AgentStore(database_url) as store:
        agent = Agent("updated")
        store.save(agent)
        seen: list[int] = []

        def command(loaded: Agent) -> None:
            seen.append(loaded.version)
            if len(seen) == 1:  # another writer gets in between our load and save
                with AgentStore(database_url) as other:
                    theirs = other.get(agent.id)
                    theirs.add_label("theirs")
                    other.save(theirs)
            loaded.add_label("mine")

        result = store.update(agent.id, command)  # type: ignore[attr-defined]
        assert seen == [1, 2]
        assert result.version == 3
        assert store.get(agent.id).state.labels == ["mine", "theirs"]


def test_update_gives_up_after_its_retries(database_url: str) -> None:
    with AgentStore(database_url) as store:
        agent = Agent("hot")
        store.save(agent)
        calls = 0

        def always_raced(loaded: Agent) -> None:
            nonlocal calls
            calls += 1
            with AgentStore(database_url) as other:
                theirs = other.get(agent.id)
                theirs.add_label(f"theirs-{calls}")
                other.save(theirs)
            loaded.add_label("mine")

        with pytest.raises(ConcurrencyError):
            store.update(agent.id, always_raced, retries=2)  # type: ignore[attr-defined]
        assert calls == 3  # the first try and two retries
        assert "mine" not in store.get(agent.id).state.labels


# -- SQLite's write lock --------------------------------------------------------------


def test_waiting_on_the_sqlite_write_lock_names_the_agents_and_timeout(sqlite_url: str) -> None:
    path = sqlite_url[len("sqlite:///") :]
    with AgentStore(sqlite_url, lock_timeout=1) as store:
        agent = Agent("blocked")
        store.save(agent)
        agent.add_label("x")
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(SnaptailError) as caught:
                store.save(agent)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        message = str(caught.value)
        assert str(agent.id) in message
        assert "1 s" in message or "1 second" in message or "lock_timeout=1" in message
        assert "lock" in message
        assert agent.pending_events  # nothing was written
        store.save(agent)
        assert store.event_count(agent.id) == 2
