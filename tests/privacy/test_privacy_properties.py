"""The snapshot == replay properties again, with encryption on (every payload and
snapshot of the agent sealed with its data key), on both backends."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snaptail import Agent, AgentForgotten, AgentStore, Never, SnapshotPolicy
from snaptail.privacy import RedactedEvent, is_sealed
from snaptail.testing import policies
from tests.agents import CI, Command, agent_types, commands, sequences
from tests.core.test_core_properties import check_snapshot_plus_tail
from tests.snapshots.test_snapshots_properties import check_policy_loads

# Fewer than the core properties under the ci profile (60, not 300): these add the
# encryption layer to logic those already check, and CI's time is counted.
SETTINGS = settings(
    max_examples=60 if CI else 15,
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


SUBJECTS = ("ann", "bob", "cy")
# A script: ("agent", subjects, events) creates an agent with those subjects and that
# many more events; ("forget", subject) forgets one.
scripts = st.lists(
    st.one_of(
        st.tuples(
            st.just("agent"),
            st.lists(st.sampled_from(SUBJECTS), max_size=3, unique=True),
            st.integers(0, 6),
        ),
        st.tuples(st.just("forget"), st.sampled_from(SUBJECTS)),
    ),
    min_size=1,
    max_size=12,
)


@SETTINGS
@given(script=scripts)
def test_an_agent_is_readable_exactly_while_none_of_its_subjects_is_forgotten(
    database_url: str, tmp_path: Path, script: list[tuple[Any, ...]]
) -> None:
    run = uuid4().hex  # (the key store outlives one example: subjects of this one)
    with AgentStore(
        database_url, snapshot_every=3, keys=keys_url(database_url, tmp_path), master_key=MASTER
    ) as store:
        agents: list[tuple[Agent, set[str]]] = []
        erased: set[UUID] = set()
        keyed: set[str] = set()  # subjects whose key exists now
        erasures = len(store.erasures())
        for step in script:
            if step[0] == "agent":
                _, subjects, events = step
                agent = Agent(f"agent {len(agents)}")
                if subjects:
                    store.add_subject(agent, *(f"{s}-{run}" for s in subjects))
                    keyed |= set(subjects)  # a forgotten subject gets a new key
                for i in range(events):
                    agent.add_input("user", f"message {i}")
                store.save(agent)
                agents.append((agent, set(subjects)))
            else:
                subject = step[1]
                erasure = store.forget(f"{subject}-{run}")
                assert (erasure is not None) == (subject in keyed)
                if erasure is not None:
                    erasures += 1
                    keyed.discard(subject)
                    hit = {a.id for a, subs in agents if subject in subs} - erased
                    assert {UUID(a) for a in erasure.agent_ids} == hit
                    erased |= hit
            for agent, _ in agents:
                if agent.id in erased:
                    with pytest.raises(AgentForgotten):
                        store.get(agent.id)
                    assert all(isinstance(e, RedactedEvent) for e in store.history(agent.id))
                else:
                    loaded = store.get(agent.id)
                    assert loaded.version == agent.version
                    assert loaded.state == agent.state
        assert len(store.erasures()) == erasures
