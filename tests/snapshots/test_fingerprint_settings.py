"""``state_fingerprint`` (asked by every load and snapshot) answers from the settings'
current values: every change of a value, of its type or of the declared names is
seen at the next call, and a value changed back gives the fingerprint back."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st

from snaptail import Agent, AgentState, AgentStore, event
from snaptail.snapshots import state_fingerprint
from snaptail.snapshots.fingerprint import fingerprint_settings
from snaptail.testing import check_agent_type
from tests import handler_limits


class Tunable(Agent):
    snapshot_settings = cast("tuple[str, ...]", ("depth", "ratio"))
    depth = cast(object, 1)
    ratio = cast(object, "a")
    other = cast(object, "a")


def test_every_change_of_a_setting_changes_the_fingerprint() -> None:
    first = state_fingerprint(Tunable)
    assert state_fingerprint(Tunable) == first
    seen = {first}
    try:
        for depth in (2, True, "1", None, 1.0):  # bool, str, None and float differ from 1
            Tunable.depth = depth
            changed = state_fingerprint(Tunable)
            assert changed not in seen, depth
            assert state_fingerprint(Tunable) == changed
            seen.add(changed)
        Tunable.depth = 1
        assert state_fingerprint(Tunable) == first
        for ratio in ((1, 2), (1, 3), (1, True)):  # not plain values: read at every call
            Tunable.ratio = ratio
            changed = state_fingerprint(Tunable)
            assert changed not in seen, ratio
            seen.add(changed)
        Tunable.ratio = "a"
        assert state_fingerprint(Tunable) == first
    finally:
        Tunable.depth, Tunable.ratio = 1, "a"


def test_a_change_of_the_declared_settings_changes_the_fingerprint() -> None:
    first = state_fingerprint(Tunable)
    try:
        Tunable.snapshot_settings = ("depth", "other")  # the same values, other names
        assert state_fingerprint(Tunable) != first
        Tunable.snapshot_settings = ("depth",)
        fewer = state_fingerprint(Tunable)
        assert fewer != first
        Tunable.snapshot_settings = ["depth"]  # type: ignore[assignment]  # unhashable
        assert state_fingerprint(Tunable) == fewer
        Tunable.snapshot_settings = "depth"  # type: ignore[assignment]
        with pytest.raises(TypeError, match="tuple of attribute names"):
            state_fingerprint(Tunable)
        Tunable.snapshot_settings = ("depth", "missing")
        with pytest.raises(TypeError, match="does not have"):
            state_fingerprint(Tunable)
    finally:
        Tunable.snapshot_settings = ("depth", "ratio")
    assert state_fingerprint(Tunable) == first


def test_a_change_of_state_or_versions_at_run_time_is_seen_at_the_next_call() -> None:
    from dataclasses import dataclass

    from snaptail import AgentState

    @dataclass
    class OtherState(AgentState):
        extra: int = 0

    first = state_fingerprint(Tunable)
    original_state = Tunable.State
    try:
        for name, value in (("class_version", 2), ("snapshot_version", 3)):
            setattr(Tunable, name, value)
            changed = state_fingerprint(Tunable)
            assert changed != first, name
            assert state_fingerprint(Tunable) == changed
            delattr(Tunable, name)
            assert state_fingerprint(Tunable) == first, name
        Tunable.State = OtherState
        assert state_fingerprint(Tunable) != first
        Tunable.State = original_state
        assert state_fingerprint(Tunable) == first
        Tunable.depth = 10**30  # a large int: not a cached small-int object
        assert state_fingerprint(Tunable) != first
        Tunable.depth = int("1" * 30)  # equal value, another object: the same answer
        big = state_fingerprint(Tunable)
        Tunable.depth = int("1" * 30)
        assert state_fingerprint(Tunable) == big
    finally:
        Tunable.State = original_state
        Tunable.depth = 1
        for name in ("class_version", "snapshot_version"):
            if name in vars(Tunable):
                delattr(Tunable, name)


# -- issue 18, item 1: what the handlers read is covered, found from the handlers -----

KEEP_NOTES = 20  # a module-level limit a handler reads


@dataclass
class TicketState(AgentState):
    tickets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Tickets(Agent):
    """Keeps the newest ``max_tickets`` tickets and ``KEEP_NOTES`` notes; neither is
    listed in ``snapshot_settings``."""

    State = TicketState
    max_tickets = 20
    audit_label = "audit"  # read by a handler, for a log line only

    @event("TicketAdded")
    def add_ticket(self, ticket: str) -> None:
        tickets = self.state.tickets  # type: ignore[attr-defined]
        tickets.append(ticket)
        del tickets[: -self.max_tickets]

    @event("NoteAdded")
    def add_note(self, note: str) -> None:
        notes = self.state.notes  # type: ignore[attr-defined]
        notes.append(note)
        del notes[:-KEEP_NOTES]
        logging.getLogger(__name__).debug("%s: note added", self.audit_label)


class HelpedTickets(Tickets):
    """Keeps its labels with a helper of another module, which reads its limit."""

    @event("Labelled")
    def label(self, text: str) -> None:
        self.state.labels.append(text)
        handler_limits.keep_newest(self.state.labels)


class PropertyTickets(Tickets):
    """Reads its limit through a property."""

    keep = 5

    @property
    def keep_limit(self) -> int:
        return type(self).keep

    @event("Kept")
    def keep_ticket(self, ticket: str) -> None:
        self.state.tickets.append(ticket)  # type: ignore[attr-defined]
        del self.state.tickets[: -self.keep_limit]  # type: ignore[attr-defined]


class QuietTickets(Tickets):
    snapshot_ignore = ("audit_label",)  # the log line's label does not shape state


class WronglyIgnored(Tickets):
    snapshot_ignore = ("max_tickets",)  # a mistake check_agent_type must catch


def _written(url: str, agent_type: type[Tickets], command: str) -> Tickets:
    with AgentStore(url, snapshot_every=5) as store:
        agent = agent_type("tickets")
        for i in range(30):
            getattr(agent, command)(f"{command} {i}")
            store.save(agent)
        store.snapshot(agent.id)  # at the head: a load applies no tail
    return agent


def test_a_class_attribute_the_handlers_read_is_covered(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _written(sqlite_url, Tickets, "add_ticket")
    first = state_fingerprint(Tickets)
    monkeypatch.setattr(Tickets, "max_tickets", 3)
    assert state_fingerprint(Tickets) != first
    with AgentStore(sqlite_url) as store:
        loaded, replayed = store.get(agent.id), store.replay(agent.id)
        assert loaded.state.tickets == replayed.state.tickets == [  # type: ignore[attr-defined]
            "add_ticket 27",
            "add_ticket 28",
            "add_ticket 29",
        ]
        assert store.load_stats(loaded).untrusted  # type: ignore[union-attr]
    assert "max_tickets" in fingerprint_settings(Tickets)


def test_a_module_global_the_handlers_read_is_covered(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _written(sqlite_url, Tickets, "add_note")
    first = state_fingerprint(Tickets)
    monkeypatch.setattr(sys.modules[__name__], "KEEP_NOTES", 3)
    assert state_fingerprint(Tickets) != first
    with AgentStore(sqlite_url) as store:
        loaded, replayed = store.get(agent.id), store.replay(agent.id)
        assert loaded.state.notes == replayed.state.notes  # type: ignore[attr-defined]
        assert len(loaded.state.notes) == 3  # type: ignore[attr-defined]
    assert f"{__name__}.KEEP_NOTES" in fingerprint_settings(Tickets)


def test_a_limit_read_through_a_helper_module_is_covered(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _written(sqlite_url, HelpedTickets, "label")
    first = state_fingerprint(HelpedTickets)
    monkeypatch.setattr(handler_limits, "KEEP", 3)
    assert state_fingerprint(HelpedTickets) != first
    with AgentStore(sqlite_url) as store:
        loaded, replayed = store.get(agent.id), store.replay(agent.id)
        assert loaded.state.labels == replayed.state.labels == ["label 27", "label 28", "label 29"]
    assert "tests.handler_limits.KEEP" in fingerprint_settings(HelpedTickets)


def test_a_setting_read_through_a_property_is_covered() -> None:
    assert fingerprint_settings(PropertyTickets)["keep"] == 5


def test_snapshot_ignore_leaves_a_name_out(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet, loud = state_fingerprint(QuietTickets), state_fingerprint(Tickets)
    monkeypatch.setattr(Tickets, "audit_label", "other")
    assert state_fingerprint(Tickets) != loud  # read by a handler: covered
    assert state_fingerprint(QuietTickets) == quiet  # listed in snapshot_ignore
    assert "audit_label" not in fingerprint_settings(QuietTickets)
    # Limits only commands check stay out without being listed.
    assert "max_labels" not in fingerprint_settings(Agent)
    assert "max_event_bytes" not in fingerprint_settings(Agent)
    with pytest.raises(TypeError, match="snapshot_ignore must be a tuple of names"):

        class Misdeclared(Agent):  # refused when defined
            snapshot_ignore = "audit_label"  # type: ignore[assignment]


def _ticket_commands() -> st.SearchStrategy[Callable[[Tickets], object]]:
    return st.sampled_from(
        [
            lambda a: a.add_ticket("t"),
            lambda a: a.add_note("n"),
            lambda a: a.add_input("user", "hi"),
        ]
    )


def test_check_agent_type_catches_a_setting_the_fingerprint_misses() -> None:
    quick = settings(derandomize=True, database=None, phases=[Phase.generate])  # no shrinking
    check_agent_type(Tickets, _ticket_commands(), max_examples=4, hypothesis_settings=quick)
    with pytest.raises(AssertionError, match="tickets"):
        check_agent_type(
            WronglyIgnored, _ticket_commands(), max_examples=6, hypothesis_settings=quick
        )


class NamedLimitTickets(Tickets):
    """Reads its limit with ``getattr`` and a constant name."""

    keep_named = 5

    @event("NamedKept")
    def keep_named_ticket(self, ticket: str) -> None:
        self.state.tickets.append(ticket)  # type: ignore[attr-defined]
        del self.state.tickets[: -getattr(self, "keep_named", 0)]  # type: ignore[attr-defined]


class ComputedLimitTickets(Tickets):
    """Reads its limit by a name that comes with the event: the bytecode cannot say
    which attribute shapes the state."""

    keep_short = 2
    keep_long = 10

    @event("ComputedKept")
    def keep_computed(self, ticket: str, limit: str) -> None:
        self.state.tickets.append(ticket)  # type: ignore[attr-defined]
        del self.state.tickets[: -getattr(self, limit)]  # type: ignore[attr-defined]


class DeclaredComputedTickets(ComputedLimitTickets):
    snapshot_settings = ("keep_short", "keep_long")


def test_a_limit_read_by_getattr_with_a_constant_name_is_covered(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _written(sqlite_url, NamedLimitTickets, "keep_named_ticket")
    assert fingerprint_settings(NamedLimitTickets)["keep_named"] == 5
    monkeypatch.setattr(NamedLimitTickets, "keep_named", 3)
    with AgentStore(sqlite_url) as store:
        loaded, replayed = store.get(agent.id), store.replay(agent.id)
        assert loaded.state.tickets == replayed.state.tickets  # type: ignore[attr-defined]
        assert len(loaded.state.tickets) == 3  # type: ignore[attr-defined]


def test_a_setting_read_by_a_computed_name_is_refused_before_anything_is_stored(
    sqlite_url: str,
) -> None:
    """``getattr(self, limit)`` reads a class attribute the fingerprint cannot find:
    a snapshot written under ``keep_long = 10`` would be trusted under 3. The type is
    refused at its first save, with nothing stored, until it declares
    ``snapshot_settings``."""
    from snaptail import AgentNotFound, InvalidAgentType

    with AgentStore(sqlite_url, snapshot_every=5) as store:
        agent = ComputedLimitTickets("computed")
        agent.keep_computed("t", "keep_long")
        with pytest.raises(InvalidAgentType) as caught:
            store.save(agent)
        message = str(caught.value)
        assert "ComputedLimitTickets" in message and "keep_computed" in message
        assert "snapshot_settings" in message
        with pytest.raises(AgentNotFound):
            store.get(agent.id)
        declared = DeclaredComputedTickets("declared")
        declared.keep_computed("t", "keep_long")
        store.save(declared)
    assert fingerprint_settings(DeclaredComputedTickets)["keep_long"] == 10
