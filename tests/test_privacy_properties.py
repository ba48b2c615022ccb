"""The snapshot == replay properties again, with encryption on (every payload and
snapshot of the agent sealed with its data key), on both backends."""

from __future__ import annotations

import os
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snaptail import Agent, AgentStore, Never, SnapshotPolicy
from snaptail.privacy import is_sealed
from snaptail.testing import policies
from tests.agents import Command, agent_types, commands, examples, sequences
from tests.test_core_properties import check_snapshot_plus_tail
from tests.test_snapshots_properties import check_policy_loads

SETTINGS = settings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MASTER = os.urandom(32)


def keys_url(database_url: str, tmp_path: Path) -> str:
    """A key store beside the test's database: its own SQLite file, or (PostgreSQL)
    tables in the test's schema."""
    if database_url.startswith("postgresql"):
        return database_url
    return f"sqlite:///{tmp_path}/keys.db"


def assert_all_sealed(store: AgentStore, agent: Agent) -> None:
    events = store.recorder.select_page(agent.id, limit=100_000)
    assert events and all(is_sealed(e.state) for e in events)
    rows = store.recorder.select_for_load(agent.id, recent=0)
    if rows.snapshot is not None:
        assert is_sealed(rows.snapshot.state)


@SETTINGS
@given(
    agent_type=agent_types,
    steps=sequences(st.tuples(commands, st.sampled_from(["none", "none", "save", "snapshot"])), 30),
    recent=st.integers(0, 12),
    rnd=st.randoms(use_true_random=False),
)
def test_encrypted_snapshot_plus_tail_equals_full_replay(
    database_url: str,
    tmp_path: Path,
    agent_type: type[Agent],
    steps: list[tuple[Command, str]],
    recent: int,
    rnd: random.Random,
) -> None:
    with AgentStore(
        database_url, policy=Never(), recent_events=recent, keep_snapshots=250,
        keys=keys_url(database_url, tmp_path), master_key=MASTER,
    ) as store:  # fmt: skip
        agent = agent_type(name="prop")
        store.add_subject(agent, f"user-{rnd.randrange(3)}", "team-1")
        agent = check_snapshot_plus_tail(store, agent, steps, recent, rnd)
        assert_all_sealed(store, agent)


@SETTINGS
@given(
    agent_type=agent_types,
    policy=policies,
    keep=st.integers(1, 4),
    steps=sequences(
        st.tuples(commands, st.sampled_from(["none", "none", "save", "reload", "snapshot"])), 30
    ),
)
def test_encrypted_any_policy_loads_equal_replay(
    database_url: str,
    tmp_path: Path,
    agent_type: type[Agent],
    policy: SnapshotPolicy,
    keep: int,
    steps: list[tuple[Command, str]],
) -> None:
    with AgentStore(
        database_url, policy=policy, keep_snapshots=keep, recent_events=5,
        keys=keys_url(database_url, tmp_path), master_key=MASTER,
    ) as store:  # fmt: skip
        agent = agent_type(name="prop")
        store.add_subject(agent, "user-1")
        check_policy_loads(store, agent, keep, steps)
        assert_all_sealed(store, agent)
