"""By hypothesis: whatever the policy and the commands, a load equals a full replay and
no agent ever has more than K snapshots stored."""

from __future__ import annotations

from functools import reduce
from operator import or_

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snaptail import (
    Agent,
    AgentStore,
    EveryNBytes,
    EveryNEvents,
    LoadSlowerThan,
    Never,
    SnapshotPolicy,
)
from tests.agents import Command, commands

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

single_policies: st.SearchStrategy[SnapshotPolicy] = st.one_of(
    st.builds(EveryNEvents, st.integers(1, 12)),
    st.builds(EveryNBytes, st.integers(1, 3000)),
    # Either always or never over the limit, so the property holds without timing.
    st.builds(LoadSlowerThan, st.sampled_from([1e-9, 1e9])),
    st.just(Never()),
)
policies: st.SearchStrategy[SnapshotPolicy] = st.lists(single_policies, min_size=1, max_size=3).map(
    lambda ps: ps[0] if len(ps) == 1 else reduce(or_, ps)
)

# After each command: nothing, save, save and reload (measures the load), or save
# and take a snapshot on demand.
steps = st.lists(
    st.tuples(commands, st.sampled_from(["none", "none", "save", "reload", "snapshot"])),
    min_size=1,
    max_size=30,
)


@SETTINGS
@given(policy=policies, keep=st.integers(1, 4), steps=steps)
def test_any_policy_loads_equal_replay_and_snapshots_stay_bounded(
    database_url: str, policy: SnapshotPolicy, keep: int, steps: list[tuple[Command, str]]
) -> None:
    with AgentStore(database_url, policy=policy, keep_snapshots=keep, recent_events=5) as store:
        agent = Agent(name="prop")
        store.save(agent)
        for command, action in steps:
            command(agent)
            if action == "none":
                continue
            store.save(agent)
            if action == "reload":
                agent = store.get(agent.id)
                assert agent.state == store.replay(agent.id).state
            elif action == "snapshot":
                store.snapshot(agent.id)
            assert len(store.recorder.select_snapshot_infos(agent.id)) <= keep
        store.save(agent)
        assert len(store.recorder.select_snapshot_infos(agent.id)) <= keep
        loaded = store.get(agent.id)
        replayed = store.replay(agent.id)
        assert loaded.version == replayed.version == agent.version
        assert loaded.state == replayed.state == agent.state
        assert loaded.modified_on == replayed.modified_on
        for info in store.recorder.select_snapshot_infos(agent.id):
            at = store.get(agent.id, version=info.originator_version)
            assert at.state == store.replay(agent.id, version=info.originator_version).state
