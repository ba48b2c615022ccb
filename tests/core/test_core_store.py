"""AgentStore on both backends: save, load from snapshot + tail, time travel, errors."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

from snaptail import (
    Agent,
    AgentNotFound,
    AgentStore,
    ConcurrencyError,
    EventTooLarge,
    InvalidEventPayload,
    Never,
)
from snaptail.errors import VersionNotFound
from snaptail.infrastructure.recorder import LoadRows
from tests.async_bridge import MakeStore, spy


@pytest.fixture
def store(make_store: MakeStore, database_url: str) -> Iterator[AgentStore]:
    with make_store(database_url, snapshot_every=100, recent_events=10) as s:
        yield s


def grow(store: AgentStore, agent: Agent, turns: int, per_save: int = 1) -> None:
    """Each turn is 2 events; save every ``per_save`` turns."""
    for i in range(turns):
        agent.add_input("user", f"question {i}")
        agent.add_output("assistant_message", f"answer {i}")
        if (i + 1) % per_save == 0:
            store.save(agent)
    store.save(agent)


class CountingLoads:
    """Wraps a recorder's select_for_load to record what each load read."""

    def __init__(self, store: AgentStore) -> None:
        self.calls: list[LoadRows] = []
        spy(store, "select_for_load", self.calls.append)


def test_save_and_get_round_trip(store: AgentStore) -> None:
    agent = Agent(name="support-bot", system_prompt="Be brief.", model="gpt-x")
    grow(store, agent, 30)
    loaded = store.get(agent.id)
    assert loaded.version == agent.version == 61
    assert loaded.state == agent.state
    assert loaded.created_on == agent.created_on
    assert loaded.modified_on == agent.modified_on
    assert loaded.pending_events == []


def test_load_reads_snapshot_and_tail_only(make_store: MakeStore, database_url: str) -> None:
    with make_store(database_url, snapshot_every=100, recent_events=0) as store:
        agent = Agent(name="long")
        grow(store, agent, 525, per_save=5)  # 1051 events
        counter = CountingLoads(store)
        loaded = store.get(agent.id)
        assert len(counter.calls) == 1, "one snapshot query + one events query"
        rows = counter.calls[0]
        assert rows.snapshot is not None
        snapshot_version = rows.snapshot.originator_version
        versions = [row[0] for row in rows.events]
        assert versions == list(range(snapshot_version + 1, agent.version + 1))
        assert len(versions) < 100
        assert loaded.state == store.replay(agent.id).state


def test_recent_cache_is_filled_by_the_same_load(make_store: MakeStore, database_url: str) -> None:
    with make_store(database_url, snapshot_every=100, recent_events=50) as store:
        agent = Agent(name="cache")
        grow(store, agent, 100, per_save=10)  # 201 events, snapshot at 201
        counter = CountingLoads(store)
        loaded = store.get(agent.id)
        rows = counter.calls[0]
        assert rows.snapshot is not None
        assert rows.snapshot.originator_version == 201
        # Events before the snapshot are read only to fill the cache, never more.
        assert len(rows.events) == 50
        assert [e.originator_version for e in loaded.recent_events] == list(range(152, 202))


def test_recent_cache_stays_bounded_and_current(store: AgentStore) -> None:
    agent = Agent(name="cache")
    store.save(agent)
    loaded = store.get(agent.id)
    for i in range(25):
        loaded.add_input("user", f"m{i}")
        store.save(loaded)
        assert len(loaded.recent_events) <= 10
    newest = list(store.history(agent.id, reverse=True, page_size=3))[:10]
    assert list(loaded.recent_events) == newest[::-1]


def test_get_at_version_uses_nearest_snapshot_at_or_before(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, snapshot_every=10, keep_snapshots=100) as store:
        agent = Agent(name="travel")
        grow(store, agent, 40)
        counter = CountingLoads(store)
        for version in (1, 2, 9, 10, 11, 35, 50, 81):
            loaded = store.get(agent.id, version=version)
            assert loaded.version == version
            assert loaded.state == store.replay(agent.id, version=version).state
            snap = counter.calls[-1].snapshot
            assert snap is None or snap.originator_version <= version
        # Past the head: refused, naming the head (it used to return the head silently).
        with pytest.raises(VersionNotFound, match=f"its newest is version {agent.version}"):
            store.get(agent.id, version=10_000)


def test_unknown_agent_is_not_found(store: AgentStore) -> None:
    missing = uuid.uuid4()
    with pytest.raises(AgentNotFound, match=str(missing)):
        store.get(missing)
    with pytest.raises(ValueError, match="version must be >= 1"):
        store.get(missing, version=0)


def test_second_writer_gets_a_concurrency_error_and_nothing_is_lost(store: AgentStore) -> None:
    agent = Agent(name="contended")
    store.save(agent)
    first, second = store.get(agent.id), store.get(agent.id)
    first.add_input("user", "from first")
    second.add_input("user", "from second")
    store.save(first)
    with pytest.raises(ConcurrencyError, match=str(agent.id)):
        store.save(second)
    assert len(second.pending_events) == 1, "the losing writer keeps its event"
    stored = store.get(agent.id)
    assert stored.version == 2
    assert stored.state.window.items[-1].text == "from first"


def test_wrong_typed_payload_names_agent_event_and_field(store: AgentStore) -> None:
    agent = Agent(name="typed")
    store.save(agent)
    with pytest.raises(InvalidEventPayload) as info:
        agent.set_metadata("team", 42)  # type: ignore[arg-type]
    message = str(info.value)
    assert str(agent.id) in message and "MetadataSet" in message and "'value'" in message
    assert agent.version == 1 and not agent.pending_events
    store.save(agent)
    assert store.event_count(agent.id) == 1


def test_oversized_payload_is_refused_before_anything_is_stored(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, max_event_bytes=10_000) as store:
        agent = Agent(name="big")
        store.save(agent)
        with pytest.raises(EventTooLarge, match="InputItemAdded") as info:
            agent.add_input("user", "x" * 2_000_000)
        assert info.value.field == "item" and agent.version == 1
        agent.add_input("user", "y" * 20_000)  # under the agent's 1 MiB, over the store's
        with pytest.raises(EventTooLarge, match=str(agent.id)):
            store.save(agent)
        assert store.event_count(agent.id) == 1


def test_history_filters_and_bounds(store: AgentStore) -> None:
    agent = Agent(name="history")
    grow(store, agent, 20)
    inputs = list(store.history(agent.id, types=[Agent.InputItemAdded], page_size=4))
    assert [e.originator_version for e in inputs] == list(range(2, 42, 2))
    window = list(store.history(agent.id, after=5, before=9))
    assert [e.originator_version for e in window] == [6, 7, 8]
    latest = store.latest(agent.id, Agent.InputItemAdded)
    assert latest is not None and latest.originator_version == 40
    assert store.latest(agent.id, Agent.WebhookReceived) is None
    assert store.event_count(agent.id) == 41
    assert store.event_count(uuid.uuid4()) == 0


def test_history_is_a_lazy_generator(store: AgentStore) -> None:
    agent = Agent(name="lazy")
    grow(store, agent, 50)
    pages: list[int] = []
    spy(store, "select_page", lambda page: pages.append(len(page)))
    events = store.history(agent.id, page_size=10)
    assert pages == []
    first = next(events)
    assert first.originator_version == 1 and pages == [10]


def test_many_events_loaded_logs_a_warning(
    make_store: MakeStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_store(database_url, policy=Never(), recent_events=0) as store:
        agent = Agent(name="unsnapshotted")
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            grow(store, agent, 501, per_save=50)  # 1003 events, no snapshot
        saves = [r for r in caplog.records if "since its last snapshot" in r.getMessage()]
        assert len(saves) == 1 and str(agent.id) in saves[0].getMessage()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            store.get(agent.id)
        loads = [r for r in caplog.records if "agent loaded" in r.getMessage()]
        assert len(loads) == 1
        assert str(agent.id) in loads[0].getMessage()
        assert "events_read=1003" in loads[0].getMessage()


class RoomyAgent(Agent):
    window_items = 200
    window_bytes = 256 * 1024


def test_a_long_tail_lighter_than_its_snapshot_logs_no_warning(
    make_store: MakeStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """GrowWithState leaves thousands of small events after a large snapshot by design:
    neither the saves nor the load warn of it. A heavier tail still does."""
    with make_store(database_url, policy=Never(), recent_events=0) as store:
        agent: Agent = RoomyAgent(name="big state, small events")
        for i in range(100):
            agent.add_input("user", f"{i:03} " + "x" * 2000)  # a state of ~200 KB
        store.save(agent)
        assert store.snapshot(agent.id) == 101
        agent = store.get(agent.id)  # an object whose books know that snapshot
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            grow(store, agent, 601, per_save=100)  # 1,202 events of ~70 bytes: ~82 KB
            loaded = store.get(agent.id)
        assert store.load_stats(loaded).events_read > 1000  # type: ignore[union-attr]
        assert [r.getMessage() for r in caplog.records] == []
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            for _ in range(60):  # ~120 KB more: now the tail outweighs the snapshot
                loaded.add_input("user", "y" * 2000)
            grow(store, loaded, 400, per_save=100)
            store.get(agent.id)
        warned = [r.getMessage() for r in caplog.records]
        assert any("since its last snapshot" in m for m in warned), warned
        assert any("agent loaded" in m and "events_read>1000" in m for m in warned), warned


def test_snapshots_are_taken_at_save_without_rereading(store: AgentStore) -> None:
    agent = Agent(name="snap")
    grow(store, agent, 60, per_save=10)  # 121 events
    infos = store.recorder.select_snapshot_infos(agent.id)
    assert [i.originator_version for i in infos] == [101]
    calls = CountingLoads(store)
    grow(store, agent, 50, per_save=10)
    assert calls.calls == [], "saving never loads"
    assert [i.originator_version for i in store.recorder.select_snapshot_infos(agent.id)] == [
        201,
        101,
    ]


def test_saving_several_agents_is_one_transaction(store: AgentStore) -> None:
    a, b = Agent(name="a"), Agent(name="b")
    store.save(a, b)
    stale_b = store.get(b.id)
    a.add_input("user", "to a")
    b.add_input("user", "to b")
    store.save(b)
    stale_b.add_input("user", "conflict")
    a.add_input("user", "again")
    with pytest.raises(ConcurrencyError):
        store.save(a, stale_b)
    assert store.event_count(a.id) == 1, "a's events were rolled back with b's conflict"
    assert len(a.pending_events) == 2


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        AgentStore("mysql://localhost/db")
    with pytest.raises(ValueError, match="no file"):
        AgentStore("sqlite://")
