"""Review: the state fingerprint covers the *values* of ``snapshot_settings``, but it
was cached per class, so a setting changed at run time (configuration applied after
the first load or save, as ``snaptail.testing.limited`` does) kept the old
fingerprint: the process went on trusting snapshots taken under the old value and
loaded agents that its full replay does not give, silently."""

from __future__ import annotations

from snaptail import Agent, AgentStore
from snaptail.domain.compare import agent_differences, describe
from snaptail.snapshots import state_fingerprint


class Configurable(Agent):
    """An agent type whose window size is set by the application's configuration."""


def test_a_setting_changed_at_run_time_invalidates_the_snapshots(sqlite_url: str) -> None:
    saved = Configurable.window_items
    try:
        with AgentStore(sqlite_url, snapshot_every=5) as store:
            agent = Configurable(name="c")
            for i in range(12):
                agent.add_input("user", f"m{i}")
            store.save(agent)  # a snapshot under window_items=50
            before = state_fingerprint(Configurable)
            Configurable.window_items = 3  # configuration applied later
            assert state_fingerprint(Configurable) != before
            loaded = store.get(agent.id)
            differences = agent_differences(loaded, store.replay(agent.id))
            assert not differences, describe(differences)
            assert len(loaded.state.window.items) == 3
    finally:
        Configurable.window_items = saved
