"""Review: handlers whose parameters are not exactly the event's payload fields load
(snapshot + tail, and full replay) as they ran live, instead of a bare KeyError.

``eventsourcing`` calls a handler with the event attributes its signature names
(``filter_kwargs_for_method_params``): a parameter the event does not carry takes its
default, and a parameter named ``timestamp`` gets the event's timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from snaptail import Agent, AgentState, AgentStore, event
from snaptail.domain.compare import agent_differences, describe


@dataclass
class NotesState(AgentState):
    notes: list[str] = field(default_factory=list)
    stamps: list[datetime] = field(default_factory=list)
    total: int = 0


class StampingAgent(Agent):
    """A handler that takes the event's timestamp as a parameter."""

    State = NotesState
    if TYPE_CHECKING:
        state: NotesState

    @event("Stamped")
    def stamp(self, text: str, timestamp: datetime | None = None) -> None:
        assert timestamp is not None
        self.state.notes.append(text)
        self.state.stamps.append(timestamp)


class WeighingAgent(Agent):
    """An explicit event class that lacks one of the handler's (defaulted) parameters
    and has a field the handler does not take."""

    State = NotesState
    if TYPE_CHECKING:
        state: NotesState

    class Noted(Agent.Event):
        text: str
        source: str = "cli"

    @event(Noted)
    def note(self, text: str, weight: int = 3) -> None:
        self.state.notes.append(text)
        self.state.total += weight


def _check_loads(url: str, agent: Agent, command: str) -> None:
    with AgentStore(url, snapshot_every=4) as store:
        store.save(agent)
        for i in range(7):
            getattr(agent, command)(text=f"n{i}")
            if i % 3 == 0:
                store.save(agent)
        store.save(agent)
        loaded = store.get(agent.id)
        stats = store.load_stats(loaded)
        assert stats is not None and stats.tail > 0  # the tail went through replay_rows
        replayed = store.replay(agent.id)
        for other, name in ((loaded, "get"), (agent, "live")):
            differences = agent_differences(other, replayed)
            assert not differences, describe(differences, name, "replay")
        from_scratch = AgentStore(url, snapshot_every=4)
        try:
            for version in (2, 5, agent.version):  # no snapshot at or before 2
                at = from_scratch.get(agent.id, version=version)
                again = from_scratch.replay(agent.id, version=version)
                assert not agent_differences(at, again)
        finally:
            from_scratch.close()


def test_a_handler_taking_the_timestamp_loads_as_it_ran(database_url: str) -> None:
    agent = StampingAgent(name="stamps")
    _check_loads(database_url, agent, "stamp")
    assert len(agent.state.stamps) == 7


def test_a_handler_parameter_the_event_lacks_takes_its_default(database_url: str) -> None:
    agent = WeighingAgent(name="weights")
    _check_loads(database_url, agent, "note")
    assert agent.state.total == 21
