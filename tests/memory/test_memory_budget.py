"""The memory budget on both backends: shrink the cache, snapshot, shed by events, or raise."""

from __future__ import annotations

import logging
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.chat_agent import ChatPlatformAgent
from snaptail import Agent, AgentCache, AgentStore, MemoryBudgetExceeded, Never, event
from snaptail.domain.replay import apply_events
from tests.async_bridge import MakeStore

KIB = 1024


def names(store: AgentStore, agent_id: UUID) -> list[str]:
    return [type(e).__qualname__ for e in store.history(agent_id)]


def chatty(agent: Agent, messages: int, size: int = 2_000) -> None:
    for i in range(messages):
        agent.add_input("user", f"message {i} " + "m" * size)


class Tight(Agent):
    memory_budget = "30KiB"


class Roomy(Agent):
    memory_budget = 10 * 1024 * 1024


def shrunk(store: AgentStore, agent_id: UUID) -> int:
    return sum(n.endswith(".WindowShrunk") for n in names(store, agent_id))


def test_a_budget_is_parsed_and_the_agent_types_own_budget_wins(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, memory_budget="40KiB", policy=Never()) as store:
        assert store.memory_budget == 40 * KIB
        tight, roomy, plain = Tight("t"), Roomy("r"), Agent("p")
        for agent in (tight, roomy, plain):
            chatty(agent, 45)
            store.save(agent)
        assert tight.memory_bytes() <= 30 * KIB
        assert plain.memory_bytes() <= 40 * KIB
        assert 40 * KIB < tight.memory_bytes() + 40 * KIB < roomy.memory_bytes()
        assert shrunk(store, tight.id) > 0
        assert shrunk(store, roomy.id) == 0


def test_the_recent_event_cache_is_shrunk_first(database_url: str) -> None:
    with AgentStore(
        database_url, memory_budget="40KiB", recent_events=100, policy=Never()
    ) as store:
        agent = Agent("metadata-heavy")
        for i in range(60):  # each event carries 1 KB; the state keeps only the last
            agent.set_metadata("status", f"{i} " + "s" * 1_000)
        store.save(agent)
        assert agent.memory_bytes() <= 40 * KIB
        assert 0 < len(agent.recent_events) < 60
        assert agent.recent_events[-1].originator_version == agent.version
        assert shrunk(store, agent.id) == 0
        assert store.recorder.select_snapshot_infos(agent.id) == []  # no snapshot needed


def test_over_budget_the_store_snapshots_then_sheds_by_events(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, memory_budget="40KiB", policy=Never()) as store:
        agent = Agent("window-heavy")
        chatty(agent, 60)
        store.save(agent)
        assert agent.memory_bytes() <= 40 * KIB
        assert len(agent.state.window.items) < 50
        assert not agent.pending_events  # the shedding events were saved at once
        log = names(store, agent.id)
        assert log[-1].endswith(".WindowShrunk")
        assert store.event_count(agent.id) == agent.version
        snapshots = [s.originator_version for s in store.recorder.select_snapshot_infos(agent.id)]
        assert 61 in snapshots  # taken before shedding, so a reload is cheap

        reloaded = store.get(agent.id)
        assert reloaded.memory_bytes() <= 40 * KIB
        assert reloaded.state == agent.state == store.replay(agent.id).state


def test_a_load_over_budget_sheds_with_pending_events_saved_later(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, policy=Never()) as unbounded:
        agent = Agent("grew-before-the-budget")
        chatty(agent, 60)
        unbounded.save(agent)
    with make_store(database_url, memory_budget="40KiB", policy=Never()) as store:
        loaded = store.get(agent.id)
        assert loaded.memory_bytes() <= 40 * KIB
        pending = [type(e).__qualname__ for e in loaded.pending_events]
        assert pending and all(n.endswith(".WindowShrunk") for n in pending)
        assert store.event_count(agent.id) == 61  # a load writes no events...
        store.save(loaded)  # ...the next save does
        assert store.event_count(agent.id) == loaded.version > 61
        assert store.replay(agent.id).state == loaded.state


def test_an_agent_that_cannot_shed_enough_raises_a_clear_error(
    make_store: MakeStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_store(database_url, memory_budget="20KiB", policy=Never()) as store:
        agent = Agent("huge-prompt", system_prompt="p" * 50_000)
        with caplog.at_level(logging.WARNING, logger="snaptail"):
            store.save(agent)  # committed: the save logs the problem, never raises
        assert any("memory budget exceeded" in r.getMessage() for r in caplog.records)
        assert store.event_count(agent.id) == 1
        with pytest.raises(MemoryBudgetExceeded) as caught:
            store.get(agent.id)  # the next load raises, before anything is stored
        error = caught.value
        assert error.agent_id == agent.id
        assert error.budget == 20 * KIB
        assert error.size > 50_000
        message = str(error)
        for part in (str(agent.id), "Agent", str(error.size), str(20 * KIB), "system_prompt"):
            assert part in message


def test_a_load_at_a_past_version_never_records_events(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, policy=Never()) as unbounded:
        agent = Agent("history")
        chatty(agent, 60)
        unbounded.save(agent)
    with make_store(database_url, memory_budget="40KiB", policy=Never()) as store:
        with pytest.raises(MemoryBudgetExceeded, match="window"):
            store.get(agent.id, version=55)
        assert store.event_count(agent.id) == 61
        assert store.recorder.select_snapshot_infos(agent.id) == []


class ForgetfulChat(ChatPlatformAgent):
    """A user type that sheds its own state (threads) by an event, then the window."""

    def shed_memory(self, target_bytes: int) -> None:
        if self.state.threads:
            self._threads_forgotten(kept=0)
        super().shed_memory(target_bytes)

    @event("ThreadsForgotten")
    def _threads_forgotten(self, kept: int) -> None:
        self.state.threads.clear()


def test_a_user_agent_type_sheds_its_own_state_by_events(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, memory_budget="24KiB", policy=Never()) as store:
        agent = ForgetfulChat("chat")
        for i in range(90):
            agent._thread_joined(thread=f"thread-{i:03d}-" + "t" * 300, channel="C1")
        store.save(agent)
        assert agent.state.threads == {}
        assert agent.memory_bytes() <= 24 * KIB
        assert any(n.endswith(".ThreadsForgotten") for n in names(store, agent.id))
        assert store.replay(agent.id).state == store.get(agent.id).state == agent.state


def test_without_a_budget_nothing_is_shed(make_store: MakeStore, database_url: str) -> None:
    with make_store(database_url, policy=Never()) as store:
        agent = Agent("free")
        chatty(agent, 60, size=5_000)
        store.save(agent)
        assert agent.state.window.max_items == 50
        assert shrunk(store, agent.id) == 0
        assert agent.memory_bytes() > 200 * KIB
        assert store.get(agent.id).memory_bytes() > 200 * KIB


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=200, max_value=6_000), min_size=10, max_size=80),
    per_save=st.integers(min_value=1, max_value=20),
    budget_kib=st.integers(min_value=24, max_value=120),
    snapshot_every=st.integers(min_value=2, max_value=50),
)
def test_a_budgeted_agent_always_fits_and_always_equals_its_replay(
    sizes: list[int], per_save: int, budget_kib: int, snapshot_every: int
) -> None:
    budget = budget_kib * KIB
    with AgentStore(
        ":memory:", memory_budget=budget, snapshot_every=snapshot_every, recent_events=30
    ) as store:
        agent = Agent("property")
        for n, size in enumerate(sizes, start=1):
            agent.add_input("user", f"{n} " + "q" * size)
            if n % per_save == 0 or n == len(sizes):
                store.save(agent)
                assert agent.memory_bytes() <= budget
        loaded = store.get(agent.id)
        assert loaded.memory_bytes() <= budget
        store.save(loaded)  # any shedding the load recorded
        replayed = store.replay(agent.id)
        assert loaded.state == replayed.state
        # Loaded from a snapshot at its head this time. A load can measure a few
        # percent more or less than another of the same state (strings shared by the
        # window items or not, lists built by appends or decoded), so near its budget
        # it may shed where the first load did not: whatever it sheds, it records as
        # events, so it is the replay plus its own unsaved events, never anything else.
        store.snapshot(agent.id)
        again = store.get(agent.id)
        assert again.memory_bytes() <= budget
        assert again.state == apply_events(replayed, again.pending_events).state


def test_a_malformed_budget_is_refused_when_the_store_or_cache_is_made() -> None:
    with pytest.raises(ValueError, match="not a size"):
        AgentStore(":memory:", memory_budget="a lot")
    with AgentStore(":memory:") as store, pytest.raises(ValueError, match="not a size"):
        AgentCache(store, max_bytes="64 parsecs")


def test_snapshot_now_first_saves_what_a_load_shed(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, policy=Never()) as unbounded:
        agent = Agent("snapshotted")
        chatty(agent, 60)
        unbounded.save(agent)
    with make_store(database_url, memory_budget="40KiB", policy=Never()) as store:
        version = store.snapshot(agent.id)
        assert version == store.event_count(agent.id) > 61  # never past the stored log
        assert store.get(agent.id).state == store.replay(agent.id).state
