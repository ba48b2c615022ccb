"""By hypothesis: whatever the policy and the commands, a load equals a full replay and
no agent ever has more than K snapshots stored."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snaptail import Agent, AgentStore, SnapshotPolicy
from snaptail.testing import assert_same, policies
from tests.agents import Command, agent_types, commands, examples, note_bounds, sequences

SETTINGS = settings(
    max_examples=examples(20),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# After each command: nothing, save, save and reload (measures the load), or save
# and take a snapshot on demand.
steps = sequences(
    st.tuples(commands, st.sampled_from(["none", "none", "save", "reload", "snapshot"])), 30
)


@SETTINGS
@given(agent_type=agent_types, policy=policies, keep=st.integers(1, 4), steps=steps)
def test_any_policy_loads_equal_replay_and_snapshots_stay_bounded(
    database_url: str,
    agent_type: type[Agent],
    policy: SnapshotPolicy,
    keep: int,
    steps: list[tuple[Command, str]],
) -> None:
    with AgentStore(database_url, policy=policy, keep_snapshots=keep, recent_events=5) as store:
        check_policy_loads(store, agent_type(name="prop"), keep, steps)


def check_policy_loads(
    store: AgentStore, agent: Agent, keep: int, steps: list[tuple[Command, str]]
) -> None:
    """The body of the property above, on any store (also run with encryption on, in
    test_privacy_properties.py); ``agent`` is new (given subjects, if any)."""
    store.save(agent)
    for command, action in steps:
        command(agent)
        if action == "none":
            continue
        store.save(agent)
        if action == "reload":
            agent = store.get(agent.id)
            assert_same(agent, store.replay(agent.id), agent.version, "reload")
        elif action == "snapshot":
            store.snapshot(agent.id)
        assert len(store.recorder.select_snapshot_infos(agent.id)) <= keep
    store.save(agent)
    assert len(store.recorder.select_snapshot_infos(agent.id)) <= keep
    note_bounds(agent)
    loaded = store.get(agent.id)
    assert loaded.version == agent.version
    assert_same(loaded, store.replay(agent.id), agent.version, "head")
    assert_same(loaded, agent, agent.version, "head", "live agent")
    for info in store.recorder.select_snapshot_infos(agent.id):
        version = info.originator_version
        at = store.get(agent.id, version=version)
        assert_same(at, store.replay(agent.id, version=version), version, "snapshot")
