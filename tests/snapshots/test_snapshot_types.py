"""Review: a state value whose type is not its field's declared type does not survive
a snapshot (msgspec decodes by the declared type: an int in a ``float`` field comes
back 2.0, a set in a ``list[str]`` field a list, a tuple under ``Any`` a list, an Enum
in a ``str`` field its value, a datetime at +01:00 the same instant in UTC, a bool in
an ``int`` field does not decode at all). The agent loaded from such a snapshot was
silently not its full replay. Now the snapshot encoder reads back what it wrote and
refuses (skips the snapshot, with a warning naming the field and both values) unless it
is exactly the live state; loads then replay, and equal the full replay."""

from __future__ import annotations

import copy
import enum
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from snaptail import Agent, AgentState, AgentStore, InvalidAgentType, event
from snaptail.domain.compare import agent_differences, describe, value_differences
from snaptail.snapshots import encode_state
from snaptail.snapshots.codec import SnapshotEncodeError


class Colour(enum.Enum):
    RED = "red"


@dataclass
class LooseState(AgentState):
    score: float = 0.0
    tags: list[str] = field(default_factory=list)
    last: Any = None
    colour: str = ""
    seen_at: datetime | None = None
    count: int = 0
    unique: set[float] = field(default_factory=set)


class Loose(Agent):
    State = LooseState
    if TYPE_CHECKING:
        state: LooseState

    @event("Tagged")
    def tag(self, tag: str, how: str) -> None:
        s = self.state
        if how == "set":
            s.tags = sorted(set(s.tags) | {tag})  # a list again: fine
            s.tags = set(s.tags) | {tag}  # type: ignore[assignment]
        elif how == "tuple":
            s.last = (tag, len(tag))
        elif how == "enum":
            s.colour = Colour.RED  # type: ignore[assignment]
        elif how == "offset":
            s.seen_at = self.modified_on.astimezone(timezone(timedelta(hours=1)))
        elif how == "bool":
            s.count = True
        elif how == "intset":
            s.unique = {1.5, 2}
        elif how == "int":
            s.score = len(tag)


CASES = {
    "int": "state.score",
    "set": "state.tags",
    "tuple": "state.last",
    "enum": "state.colour",
    "offset": "state.seen_at",
    "bool": "state.count",
    "intset": "state.unique",
}


@pytest.mark.parametrize("how", list(CASES))
def test_a_state_value_of_another_type_than_declared_is_not_snapshotted(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Loose(name="loose")
    agent.tag("a", how)
    with pytest.raises(SnapshotEncodeError, match=CASES[how].replace(".", r"\.")):
        encode_state(agent)


@pytest.mark.parametrize("how", list(CASES))
def test_such_an_agent_loads_as_its_full_replay(
    how: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Loose(name="loose")
    with AgentStore(database_url, snapshot_every=2) as store, caplog.at_level(logging.WARNING):
        for i in range(5):
            agent.tag(f"t{i}", how)
            store.save(agent)
        loaded = store.get(agent.id)
        replayed = store.replay(agent.id)
        differences = agent_differences(loaded, replayed)
        assert not differences, describe(differences)
        for version in range(1, agent.version + 1):
            assert not agent_differences(
                store.get(agent.id, version=version), store.replay(agent.id, version=version)
            )
    assert any(
        "snapshot skipped" in r.getMessage() and CASES[how] in r.getMessage()
        for r in caplog.records
    )


@dataclass
class IntDefaultState(AgentState):
    score: float = 0  # an int default in a float field: the most natural slip


class IntDefault(Agent):
    """Given IntDefaultState after its definition (which refuses it: issue 18), so
    that the snapshot encoder's own check is still exercised."""


IntDefault.State = IntDefaultState


def test_an_int_default_in_a_float_field_is_named() -> None:
    with pytest.raises(SnapshotEncodeError, match=r"state\.score: snapshot gives float 0\.0"):
        encode_state(IntDefault(name="slip"))
    with pytest.raises(InvalidAgentType, match=r"State\.score defaults to 0 \(int\)"):

        class Refused(Agent):  # refused when defined
            State = IntDefaultState


@dataclass
class TidyState(AgentState):
    score: float = 0.0
    tags: list[str] = field(default_factory=list)
    unique: set[float] = field(default_factory=set)
    seen_at: datetime | None = None


class Tidy(Agent):
    State = TidyState
    if TYPE_CHECKING:
        state: TidyState

    @event("Tagged")
    def tag(self, tag: str) -> None:
        self.state.tags.append(tag)
        self.state.score += 1.5
        self.state.unique.add(float(len(self.state.tags)))
        self.state.seen_at = self.modified_on


def test_a_state_of_the_declared_types_is_snapshotted(database_url: str) -> None:
    agent = Tidy(name="tidy")
    with AgentStore(database_url, snapshot_every=2) as store:
        for i in range(5):
            agent.tag(f"t{i}")
            store.save(agent)
        loaded = store.get(agent.id)
        stats = store.load_stats(loaded)
        assert stats is not None and stats.snapshot_version == agent.version
        assert not agent_differences(loaded, store.replay(agent.id))


def test_a_dict_s_key_order_is_a_difference() -> None:
    """Code reads a dict in its order (ADK's session directory lists from it): the same
    keys and values in another order are a difference, at any depth, named."""
    agent = Agent(name="ordered")
    agent.state.metadata = {"a": "1", "b": "2"}
    twin = copy.deepcopy(agent)
    assert not agent_differences(agent, twin)
    twin.state.metadata = {"b": "2", "a": "1"}
    differences = agent_differences(agent, twin)
    assert [d.path for d in differences] == ["state.metadata (key order)"], describe(differences)
    assert "['a', 'b']" in describe(differences) and "['b', 'a']" in describe(differences)
    nested = value_differences({"o": {"a": 1, "b": 2}}, {"o": {"b": 2, "a": 1}}, "state.x")
    assert [d.path for d in nested] == ["state.x['o'] (key order)"]
