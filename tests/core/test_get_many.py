"""``get_many``: several agents' latest versions in one recorder call, each loaded
exactly as ``get`` loads it (both backends, sync and async)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from snaptail import Agent, AgentStore, DamagedLog, EveryNEvents
from snaptail.domain.compare import agent_differences
from tests.async_bridge import MakeStore, spy
from tests.snapshot_sql import execute, set_snapshot_column, snapshot_versions


def _grow(store: AgentStore, agent: Agent, events: int) -> None:
    for i in range(events):
        agent.add_input("user", f"message {i}")
        store.save(agent)


def _same(store: AgentStore, many: Agent, one: Agent) -> None:
    assert agent_differences(many, one) == []
    assert many.version == one.version and many.state == one.state
    assert list(many.recent_events) == list(one.recent_events)
    many_stats, one_stats = store.load_stats(many), store.load_stats(one)
    assert many_stats is not None and one_stats is not None
    assert many_stats.snapshot_version == one_stats.snapshot_version
    assert (many_stats.tail, many_stats.events_read, many_stats.bytes_read) == (
        one_stats.tail, one_stats.events_read, one_stats.bytes_read,
    )
    assert many_stats.untrusted == one_stats.untrusted


def test_get_many_equals_get_for_each_id(make_store: MakeStore, database_url: str) -> None:
    with make_store(
        database_url, policy=EveryNEvents(5), keep_snapshots=3, recent_events=4
    ) as store:
        with_tail, at_snapshot, no_snapshot = Agent("tail"), Agent("at"), Agent("none")
        _grow(store, with_tail, 13)  # version 14: snapshots at 5 and 10, a tail of 4
        _grow(store, at_snapshot, 9)  # version 10: a snapshot at its version
        _grow(store, no_snapshot, 2)
        assert snapshot_versions(database_url, with_tail.id) == [5, 10]
        assert snapshot_versions(database_url, at_snapshot.id) == [5, 10]
        missing = uuid.uuid4()
        ids: list[uuid.UUID | str] = [
            with_tail.id, missing, str(at_snapshot.id), no_snapshot.id, with_tail.id,
        ]
        reads: list[Any] = []
        spy(store, "select_many_for_load", reads.append)
        many = store.get_many(ids)
        assert len(reads) == 1  # one recorder call for all
        assert list(many) == [with_tail.id, at_snapshot.id, no_snapshot.id]  # missing absent
        for agent in (with_tail, at_snapshot, no_snapshot):
            _same(store, many[agent.id], store.get(agent.id))
        assert store.get_many([]) == {}
        assert store.get_many([missing]) == {}


def test_get_many_passes_over_an_untrusted_snapshot_as_get_does(
    make_store: MakeStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_store(database_url, policy=EveryNEvents(5), keep_snapshots=3) as store:
        bad, good = Agent("bad"), Agent("good")
        _grow(store, bad, 15)  # version 16: snapshots at 5, 10, 15
        _grow(store, good, 7)
        assert snapshot_versions(database_url, bad.id) == [5, 10, 15]
        set_snapshot_column(database_url, bad.id, 15, "checksum", 12345)
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            many = store.get_many([bad.id, good.id])
        warnings = [r.getMessage() for r in caplog.records if "not trusted" in r.getMessage()]
        assert len(warnings) == 1 and str(bad.id) in warnings[0]
        stats = store.load_stats(many[bad.id])
        assert stats is not None and stats.snapshot_version == 10  # passed over 15
        assert many[bad.id].state == store.replay(bad.id).state
        # As get does: a fresh snapshot (at 16) replaced the bad one, trusted next time.
        again = store.get_many([bad.id])[bad.id]
        stats = store.load_stats(again)
        assert stats is not None and stats.snapshot_version == 16
        _same(store, many[good.id], store.get(good.id))


def test_get_many_raises_what_get_raises_for_a_damaged_log(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, policy=EveryNEvents(100)) as store:
        damaged, fine = Agent("damaged"), Agent("fine")
        _grow(store, damaged, 6)
        _grow(store, fine, 3)
        key: object = damaged.id.hex if database_url.startswith("sqlite:") else damaged.id
        execute(
            database_url,
            "DELETE FROM stored_events WHERE originator_id=? AND originator_version=?",
            (key, 3),
        )
        with pytest.raises(DamagedLog) as one:
            store.get(damaged.id)
        with pytest.raises(DamagedLog) as many:
            store.get_many([fine.id, damaged.id])
        assert str(many.value) == str(one.value)


def test_get_many_returns_held_agents_still_current_as_they_are(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, policy=EveryNEvents(5)) as store:
        same, moved, gone = Agent("same"), Agent("moved"), uuid.uuid4()
        _grow(store, same, 3)
        _grow(store, moved, 3)
        held = store.get_many([same.id, moved.id])
        other = store.get(moved.id)  # another writer appends to one of them
        other.add_input("user", "later")
        store.save(other)
        reads: list[Any] = []
        spy(store, "select_many_for_load", reads.append)
        current = {same.id: held[same.id], moved.id: held[moved.id], gone: None}
        fresh = store.get_many([same.id, moved.id, gone], current=current)
        assert len(reads) == 1
        assert reads[0][same.id] is None and reads[0][gone] is None  # only heads read
        assert fresh[same.id] is held[same.id]  # unchanged: the held object itself
        assert fresh[moved.id] is not held[moved.id]
        _same(store, fresh[moved.id], store.get(moved.id))
        assert fresh[moved.id].version == other.version
        assert gone not in fresh
        # A missing id that now has events is loaded.
        late = Agent("late")
        _grow(store, late, 1)
        assert store.get_many([late.id], current={late.id: None})[late.id].version == 2


def test_get_many_reads_each_agent_no_earlier_than_the_ones_before_it(
    make_store: MakeStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the held agents' versions are checked in one statement before any
    load. A save of two agents together that commits after that check and before the
    load of the first must not leave the second as it was held: it is asked again after
    the load (ADK's get_session reads a session, then its user's scope, which every
    append saves with it)."""
    import snaptail.infrastructure.postgres as pg
    import snaptail.infrastructure.postgres_async as pg_async

    with make_store(postgres_url) as store, AgentStore(postgres_url) as other:
        first, second = Agent("first"), Agent("second")
        _grow(store, first, 2)
        _grow(store, second, 2)
        held = store.get_many([first.id, second.id])
        _grow(other, other.get(first.id), 1)  # the first held one is now behind
        checked = pg.still_current

        def then_save_both(*args: Any) -> set[uuid.UUID]:
            found = checked(*args)
            a, b = other.get(first.id), other.get(second.id)
            a.add_input("user", "together")
            b.add_input("user", "together")
            other.save(a, b)  # after the check, before the loads
            return found

        monkeypatch.setattr(pg, "still_current", then_save_both)
        monkeypatch.setattr(pg_async, "still_current", then_save_both)
        fresh = store.get_many([first.id, second.id], current=dict(held))
        monkeypatch.undo()
        assert held[first.id].version == 3 and held[second.id].version == 3
        assert fresh[first.id].version == 5  # loaded: behind at the check
        assert fresh[second.id].version == 4, "the second agent was returned as held"
