"""Review: the README promises that state kept outside ``self.state`` is refused at the
first command with ``UndeclaredState``, before anything is recorded. No test pinned
that: with the check removed, every test still passed (the snapshot encoder's own
refusal kept loads correct, and the README example's ``try`` passed when nothing was
raised). These tests fail without the check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from snaptail import Agent, AgentBroken, AgentState, AgentStore, UndeclaredState, event


class Ticket(Agent):
    @event("TicketNoted")
    def note(self, weight: int) -> None:
        self.notes_total = getattr(self, "notes_total", 0) + weight


@dataclass
class Inner:
    count: int = 0


@dataclass
class NestedState(AgentState):
    inner: Inner = field(default_factory=Inner)


class Nested(Agent):
    State = NestedState
    if TYPE_CHECKING:
        state: NestedState

    @event("Extra")
    def extra(self, on_inner: bool) -> None:
        target = self.state.inner if on_inner else self.state
        target.extra = 1  # type: ignore[union-attr]


class Creates(Agent):
    @event("Created")
    def __init__(self, name: str, system_prompt: str = "", model: str = "") -> None:
        self.state = self.new_state()
        self.state.name = name
        self.opened = True


def test_an_attribute_on_the_agent_is_refused_at_the_first_command(sqlite_url: str) -> None:
    with AgentStore(sqlite_url) as store:
        ticket = Ticket(name="t")
        store.save(ticket)
        with pytest.raises(UndeclaredState) as caught:
            ticket.note(1)
        message = str(caught.value)
        assert "Ticket" in message and "'notes_total'" in message and "note" in message
        assert str(ticket.id) in message and "AgentState" in message
        assert ticket.pending_events == []
        with pytest.raises(AgentBroken):  # the handler did change the object
            store.save(ticket)
        assert store.event_count(ticket.id) == 1


@pytest.mark.parametrize("on_inner", [False, True], ids=["on-state", "on-a-state-dataclass"])
def test_an_undeclared_attribute_on_the_state_is_refused(on_inner: bool) -> None:
    agent = Nested(name="n")
    with pytest.raises(UndeclaredState, match="'extra'"):
        agent.extra(on_inner)
    assert agent.pending_events[1:] == []


def test_an_attribute_set_by_the_created_handler_is_refused() -> None:
    with pytest.raises(UndeclaredState, match="'opened'"):
        Creates(name="c")
