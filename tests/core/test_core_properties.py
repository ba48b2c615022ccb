"""The core promise, by hypothesis: snapshot + tail == full replay; paging == the log."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snaptail import Agent, AgentStore, Never
from snaptail.testing import CHECK_VERSIONS, assert_same
from tests.agents import Command, agent_types, commands, examples, note_bounds, sequences

SETTINGS = settings(
    max_examples=examples(30),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

steps = sequences(st.tuples(commands, st.sampled_from(["none", "none", "save", "snapshot"])), 40)


@SETTINGS
@given(
    agent_type=agent_types,
    steps=steps,
    recent=st.integers(0, 12),
    rnd=st.randoms(use_true_random=False),
)
def test_snapshot_plus_tail_equals_full_replay(
    database_url: str,
    agent_type: type[Agent],
    steps: list[tuple[Command, str]],
    recent: int,
    rnd: random.Random,
) -> None:
    """For any commands and any snapshot points, every version loads as a replay would
    (every version of short logs; of long ones, each snapshot point, the head and 30
    random versions), the whole agent, type for type."""
    store = AgentStore(database_url, policy=Never(), recent_events=recent, keep_snapshots=250)
    with store:
        check_snapshot_plus_tail(store, agent_type(name="prop"), steps, recent, rnd)


def check_snapshot_plus_tail(
    store: AgentStore,
    agent: Agent,
    steps: list[tuple[Command, str]],
    recent: int,
    rnd: random.Random,
) -> Agent:
    """The body of the property above, on any store (also run with encryption on, in
    test_privacy_properties.py); ``agent`` is new (given subjects, if any). Returns it."""
    store.save(agent)
    for command, action in steps:
        command(agent)
        if action in {"save", "snapshot"}:
            store.save(agent)
        if action == "snapshot":
            store.snapshot(agent.id)
    store.save(agent)
    note_bounds(agent)
    versions = {i.originator_version for i in store.recorder.select_snapshot_infos(agent.id)}
    if agent.version <= CHECK_VERSIONS:
        versions.update(range(1, agent.version + 1))
    else:
        versions.update(rnd.sample(range(1, agent.version + 1), CHECK_VERSIONS))
    for version in sorted(versions | {agent.version}):
        from_snapshot = store.get(agent.id, version=version)
        assert from_snapshot.version == version
        assert_same(from_snapshot, store.replay(agent.id, version=version), version, "get")
    latest = store.get(agent.id)
    assert_same(latest, agent, agent.version, "get", "live agent")
    log = list(store.history(agent.id))
    assert list(latest.recent_events) == log[len(log) - min(recent, len(log)) :]
    return agent


@SETTINGS
@given(
    events=st.integers(1, 60),
    page_size=st.integers(1, 70),
    reverse=st.booleans(),
    after=st.one_of(st.none(), st.integers(0, 65)),
    before=st.one_of(st.none(), st.integers(1, 65)),
)
def test_history_pages_yield_exactly_the_log(
    database_url: str,
    events: int,
    page_size: int,
    reverse: bool,
    after: int | None,
    before: int | None,
) -> None:
    with AgentStore(database_url, recent_events=0) as store:
        agent = Agent(name="pages")
        for i in range(events - 1):
            agent.add_input("user", str(i))
            if i % 7 == 0:
                store.save(agent)
        store.save(agent)
        expected = [
            v
            for v in range(1, events + 1)
            if (after is None or v > after) and (before is None or v < before)
        ]
        if reverse:
            expected.reverse()
        got = store.history(
            agent.id, after=after, before=before, reverse=reverse, page_size=page_size
        )
        assert [e.originator_version for e in got] == expected


@SETTINGS
@given(
    agent_type=agent_types,
    steps=sequences(commands, 60),
    recent=st.integers(0, 20),
)
def test_recent_cache_always_equals_newest_events(
    database_url: str, agent_type: type[Agent], steps: list[Command], recent: int
) -> None:
    with AgentStore(database_url, snapshot_every=5, recent_events=recent) as store:
        agent = agent_type(name="recent")
        store.save(agent)
        loaded = store.get(agent.id)
        for i, command in enumerate(steps):
            command(loaded)
            if i % 3 == 0:
                store.save(loaded)
                log = list(store.history(loaded.id))
                assert list(loaded.recent_events) == log[len(log) - min(recent, len(log)) :]
        store.save(loaded)
        reloaded = store.get(agent.id)
        log = list(store.history(agent.id))
        newest = log[len(log) - min(recent, len(log)) :]
        assert list(reloaded.recent_events) == newest == list(loaded.recent_events)
