"""``MsgspecMapper.replay_rows`` (what a load applies its tail with) builds exactly the
agent that decoding each row into an event and applying it builds: for the built-in
agent's every event, and for events it cannot apply directly (own ``apply``,
``class_version`` upcasts, fewer method parameters than payload fields); bad rows
raise as before."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from eventsourcing.domain import OriginatorVersionError, event
from eventsourcing.persistence import MapperDeserialisationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snaptail import Agent, AgentState
from snaptail.domain.replay import apply_events
from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.recorder import EventRow
from tests.agents import Command, commands


def rows_of(mapper: MsgspecMapper, events: list[Any]) -> list[EventRow]:
    stored = [mapper.to_stored_event(e) for e in events]
    return [(s.originator_version, s.topic, s.state) for s in stored]


def by_events(mapper: MsgspecMapper, agent: Any, agent_id: uuid.UUID, rows: list[EventRow]) -> Any:
    return apply_events(agent, [mapper.decode_event(agent_id, *row) for row in rows])


def same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    assert a.state == b.state
    assert (a.version, a.created_on, a.modified_on) == (b.version, b.created_on, b.modified_on)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(commands, min_size=0, max_size=50), data=st.data())
def test_replay_rows_equals_applying_decoded_events(steps: list[Command], data: Any) -> None:
    agent = Agent(name="props", system_prompt="be exact")
    for step in steps:
        step(agent)
    mapper = MsgspecMapper()
    rows = rows_of(mapper, list(agent.pending_events))
    same(mapper.replay_rows(None, agent.id, rows), by_events(mapper, None, agent.id, rows))
    # From a part-built agent, as after a snapshot.
    cut = data.draw(st.integers(1, len(rows)), label="cut")
    start = by_events(mapper, None, agent.id, rows[:cut])
    again = by_events(mapper, None, agent.id, rows[:cut])
    same(
        mapper.replay_rows(start, agent.id, rows[cut:]),
        by_events(mapper, again, agent.id, rows[cut:]),
    )
    same(start, agent)


@dataclass
class MixedState(AgentState):
    notes: list[str] = field(default_factory=list)
    applied_by: list[str] = field(default_factory=list)


class MixedAgent(Agent):
    State = MixedState
    if TYPE_CHECKING:  # a class-level annotation would make eventsourcing build a dataclass
        state: MixedState

    class NoteAdded(Agent.Event):
        text: str
        tags: list[str]
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["tags"] = ["v1"]

    @event(NoteAdded)
    def add_note(self, text: str, tags: list[str]) -> None:
        self.state.notes.append(text + "|" + ",".join(tags))

    class Stamped(Agent.Event):
        mark: str

        def apply(self, aggregate: Any) -> None:  # its own apply: no direct path
            aggregate.state.applied_by.append("own apply: " + self.mark)

    def stamp(self, mark: str) -> None:
        self.trigger_event(self.Stamped, mark=mark)

    class Noted(Agent.Event):
        text: str
        source: str = "cli"  # not a parameter of the method

    @event(Noted)
    def note(self, text: str) -> None:
        self.state.applied_by.append("method: " + text)


def test_events_not_applied_directly_take_the_ordinary_path() -> None:
    agent = MixedAgent(name="mixed")
    agent.add_note("a", ["x"])
    agent.stamp("s1")
    agent.note("n1")
    agent.add_input("user", "hello")
    mapper = MsgspecMapper()
    rows = rows_of(mapper, list(agent.pending_events))
    # A NoteAdded row as the first class_version wrote it: no tags, no class_version.
    v1 = mapper._encoder.encode({"text": "old", "timestamp": agent.modified_on})
    rows.append((agent.version + 1, rows[1][1], v1))
    replayed = mapper.replay_rows(None, agent.id, rows)
    same(replayed, by_events(mapper, None, agent.id, rows))
    assert replayed.state.notes == ["a|x", "old|v1"]
    assert replayed.state.applied_by == ["own apply: s1", "method: n1"]


def test_a_bad_row_raises_naming_the_agent_and_version() -> None:
    agent = Agent(name="bad")
    agent.add_input("user", "hello")
    agent.add_input("user", "again")
    mapper = MsgspecMapper()
    rows = rows_of(mapper, list(agent.pending_events))
    version, topic, _ = rows[2]
    with pytest.raises(MapperDeserialisationError, match=f"{agent.id}.* at version 3"):
        mapper.replay_rows(None, agent.id, [*rows[:2], (version, topic, b"\x93garbage")])
    start = mapper.replay_rows(None, agent.id, rows[:1])
    with pytest.raises(OriginatorVersionError):
        mapper.replay_rows(start, agent.id, rows[2:])  # version 2 is missing


class OrderAgent(Agent):
    """Handlers whose parameters are not simply the event's fields in their order."""

    State = MixedState
    if TYPE_CHECKING:
        state: MixedState

    class Swapped(Agent.Event):  # fields in another order than the method's parameters
        second: str
        first: str

    @event(Swapped)
    def swapped(self, first: str, second: str) -> None:
        self.state.notes.append(f"swapped {first} {second}")

    class Gapped(Agent.Event):  # a defaulted parameter between two carried ones
        a: str
        c: str

    @event(Gapped)
    def gapped(self, a: str, b: str = "default-b", c: str = "default-c") -> None:
        self.state.notes.append(f"gapped {a} {b} {c}")

    class KeywordOnly(Agent.Event):
        x: int

    @event(KeywordOnly)
    def keyword_only(self, *, x: int) -> None:
        self.state.notes.append(f"keyword {x}")

    class Stamped(Agent.Event):  # the method takes the timestamp too
        label: str

    @event(Stamped)
    def stamped(self, label: str, timestamp: Any) -> None:
        self.state.notes.append(f"stamped {label} {timestamp.year}")


def test_arguments_reach_their_parameters_by_name() -> None:
    agent = OrderAgent(name="order")
    agent.swapped(first="1", second="2")
    agent.gapped(a="A", c="C")
    agent.keyword_only(x=7)
    agent.stamped(label="L", timestamp=agent.modified_on)
    agent.add_input("user", "hello")
    mapper = MsgspecMapper()
    rows = rows_of(mapper, list(agent.pending_events))
    replayed = mapper.replay_rows(None, agent.id, rows)
    same(replayed, by_events(mapper, None, agent.id, rows))
    same(replayed, agent)
    assert replayed.state.notes == [
        "swapped 1 2",
        "gapped A default-b C",
        "keyword 7",
        f"stamped L {agent.modified_on.year}",
    ]
    # From a part-built agent (the direct path applies rows after the first).
    start = mapper.replay_rows(None, agent.id, rows[:1])
    same(mapper.replay_rows(start, agent.id, rows[1:]), agent)
