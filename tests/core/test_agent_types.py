"""Any agent type a user can write loads exactly as its full replay, or fails loudly.

Each test here is one of issue 10's reproductions: state kept outside what a snapshot
carries, a handler that raises half-way, and ``check_agent_type`` missing both.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st

from snaptail import (
    Agent,
    AgentBroken,
    AgentState,
    AgentStore,
    InvalidAgentType,
    InvalidEventPayload,
    SnaptailError,
    TokenUsage,
    UndeclaredState,
    event,
)
from snaptail.testing import check_agent_type

QUIET = settings(phases=[Phase.generate], database=None)

# -- 1. state as attributes set in event handlers, as eventsourcing users write it ----


class Ticket(Agent):
    @event("TicketNoted")
    def note(self, text: str, weight: int) -> None:
        self.notes_total = getattr(self, "notes_total", 0) + weight


def test_attribute_state_is_refused_at_the_first_command(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=100) as store:
        ticket = Ticket(name="ticket")
        store.save(ticket)
        with pytest.raises(UndeclaredState) as caught:  # the first command, not the 250th
            ticket.note("noted", 1)
        message = str(caught.value)
        assert "Ticket" in message and "'notes_total'" in message, message
        assert "AgentState" in message and str(ticket.id) in message, message
        assert ticket.pending_events == []
        with pytest.raises(AgentBroken):  # the object holds what its log does not
            store.save(ticket)
        assert store.event_count(ticket.id) == 1, "nothing was stored"


# -- 2. an undeclared attribute on the state dataclass -------------------------------


class ExtraOnState(Agent):
    @event("Extra")
    def extra(self, n: int) -> None:
        self.state.extra = getattr(self.state, "extra", 0) + n  # type: ignore[attr-defined]


def test_undeclared_state_attribute_is_refused_at_the_first_command(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=100) as store:
        agent = ExtraOnState(name="extra")
        store.save(agent)
        with pytest.raises(UndeclaredState) as caught:
            agent.extra(1)
        message = str(caught.value)
        assert "ExtraOnState" in message and "'extra'" in message, message
        assert "field" in message, message
        assert store.event_count(agent.id) == 1


# -- 3. a handler raising half-way leaves no trace ---------------------------------


def test_float_for_a_decimal_is_refused_before_any_state_changes(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=1) as store:
        agent = Agent(name="tokens")
        request = agent.start_llm_request()
        store.save(agent)
        bad = TokenUsage(input_tokens=1000, cost_usd=0.5)  # type: ignore[arg-type]
        with pytest.raises(InvalidEventPayload) as caught:
            agent.finish_llm_request(request, bad)
        assert caught.value.field == "usage" and "cost_usd" in str(caught.value)
        assert "Decimal" in str(caught.value) and "float" in str(caught.value)
        assert agent.state.usage.input_tokens == 0 and agent.state.llm_request == request
        agent.add_label("after")
        store.save(agent)
        loaded = store.get(agent.id)
        assert loaded.state == store.replay(agent.id).state == agent.state
        assert loaded.state.usage.input_tokens == 0


def test_a_dict_is_not_a_token_usage() -> None:
    agent = Agent(name="dict")
    request = agent.start_llm_request()
    with pytest.raises(InvalidEventPayload) as caught:
        agent.finish_llm_request(request, {"input_tokens": 5})  # type: ignore[arg-type]
    assert caught.value.field == "usage" and "TokenUsage" in str(caught.value)
    assert agent.state.usage.input_tokens == 0


def test_exact_types_inside_containers() -> None:
    agent = Agent(name="containers")
    with pytest.raises(InvalidEventPayload) as caught:  # a tuple comes back as a list
        agent.request_tool_call("c1", "search", {"terms": ("a", "b")})
    assert caught.value.field == "arguments" and "tuple" in str(caught.value)
    with pytest.raises(InvalidEventPayload):
        agent.set_metadata("k", True)  # type: ignore[arg-type]
    assert agent.state.pending_tool_calls == {} and agent.state.metadata == {}
    agent.request_tool_call("c1", "search", {"terms": ["a", "b"], "n": 3, "x": None})
    assert agent.state.pending_tool_calls["c1"].arguments["terms"] == ["a", "b"]


@dataclass
class ScoreState(AgentState):
    scores: list[int] = field(default_factory=list)
    total: int = 0


class RaisesHalfWay(Agent):
    State = ScoreState
    if TYPE_CHECKING:
        state: ScoreState

    @event("Scored")
    def score(self, points: int) -> None:
        self.state.total += points
        if points > 100:
            raise ValueError("too many points")
        self.state.scores.append(points)


def test_handler_raising_after_changing_state_breaks_the_agent(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=1) as store:
        agent = RaisesHalfWay(name="half")
        agent.score(5)
        store.save(agent)
        with pytest.raises(ValueError, match="too many points"):
            agent.score(500)
        attempts: list[Callable[[], None]] = [lambda: agent.score(1), lambda: store.save(agent)]
        for attempt in attempts:
            with pytest.raises(SnaptailError) as caught:
                attempt()
            message = str(caught.value)
            assert str(agent.id) in message and "score" in message, message
            assert "raised" in message and "after changing state" in message, message
            assert "Reload" in message, message
        assert store.event_count(agent.id) == 2
        with pytest.raises(SnaptailError, match="Reload"):
            store.save(agent)
        loaded = store.get(agent.id)
        assert isinstance(loaded, RaisesHalfWay)
        assert loaded.state == store.replay(agent.id).state
        assert loaded.state.total == 5
        loaded.score(1)  # the reloaded agent works
        store.save(loaded)
        assert store.get(agent.id).state.total == 6  # type: ignore[attr-defined]


# -- 4. check_agent_type notices all of the above --------------------------------------


@dataclass
class TagState(AgentState):
    tags: list[str] = field(default_factory=list)


class SetInListField(Agent):
    """Its handler assigns a set to a ``list[str]`` field: a snapshot gives a list back."""

    State = TagState
    if TYPE_CHECKING:
        state: TagState

    @event("Tagged")
    def tag(self, tag: str) -> None:
        self.state.tags = {*self.state.tags, tag}  # type: ignore[assignment]


def _check(agent_type: type[Any], command: Any) -> None:
    check_agent_type(
        agent_type, st.just(command), max_examples=5, max_commands=8, hypothesis_settings=QUIET
    )


@pytest.mark.parametrize(
    ("agent_type", "command"),
    [
        (Ticket, lambda a: a.note("n", 1)),
        (ExtraOnState, lambda a: a.extra(1)),
        (SetInListField, lambda a: a.tag("x")),
    ],
    ids=["attribute-state", "undeclared-state-attribute", "set-in-list-field"],
)
def test_check_agent_type_fails_on_broken_types(agent_type: type[Any], command: Any) -> None:
    with pytest.raises((AssertionError, SnaptailError)):
        _check(agent_type, command)


def test_check_agent_type_diff_names_attribute_values_and_version() -> None:
    with pytest.raises(AssertionError) as caught:
        _check(SetInListField, lambda a: a.tag("x"))
    message = str(caught.value)
    assert "state.tags" in message and "set" in message and "list" in message, message
    assert "version" in message, message


def test_decimal_usage_still_accepted() -> None:
    agent = Agent(name="ok")
    request = agent.start_llm_request()
    agent.finish_llm_request(request, TokenUsage(input_tokens=3, cost_usd=Decimal("0.25")))
    assert agent.state.usage.cost_usd == Decimal("0.25")


# -- handler code changed, nothing else: snapshots used, one warning per type -------


class Poked(Agent):
    @event("Poked")
    def poke(self, text: str) -> None:
        self.state.last_error = text


def test_changed_handler_code_warns_once_per_type(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One backend only: the warning is once per type per process."""
    database_url = sqlite_url
    import msgspec

    from tests.snapshot_sql import set_snapshot_column, snapshot_row

    with AgentStore(database_url, snapshot_every=1) as store:
        agents = [Poked(name=f"p{n}") for n in range(3)]
        for agent in agents:
            agent.poke("x")
            store.save(agent)
            # As if written by other handler code with the same schema and versions.
            _, _, state = snapshot_row(database_url, agent.id, 2)
            body = msgspec.msgpack.decode(state)
            assert isinstance(body["code"], str)
            body["code"] = "0" * 16
            state = msgspec.msgpack.encode(body)
            set_snapshot_column(database_url, agent.id, 2, "state", state)
            set_snapshot_column(database_url, agent.id, 2, "checksum", zlib.crc32(state))
        with caplog.at_level(logging.WARNING, logger="snaptail"):
            for agent in agents:
                loaded = store.get(agent.id)
                stats = store.load_stats(loaded)
                assert stats is not None and stats.snapshot_version == 2, "still used"
                assert loaded.state == store.replay(agent.id).state
    (warning,) = [r.getMessage() for r in caplog.records if "handler code" in r.getMessage()]
    assert "type=Poked" in warning and "snaptail snapshots verify --sample N" in warning


def test_agent_cache_reloads_a_broken_agent(sqlite_url: str) -> None:
    from snaptail import AgentCache

    with AgentStore(sqlite_url) as store:
        agent = RaisesHalfWay(name="cached")
        agent.score(5)
        store.save(agent)
        cache = AgentCache(store, max_bytes="1MiB")
        cached = cache.get(agent.id)
        assert isinstance(cached, RaisesHalfWay)
        with pytest.raises(ValueError):
            cached.score(500)
        fresh = cache.get(agent.id)
        assert fresh is not cached and isinstance(fresh, RaisesHalfWay)
        assert fresh.state.total == 5
        fresh.score(1)
        cache.save(fresh)
        assert store.get(agent.id).state.total == 6  # type: ignore[attr-defined]


def test_attribute_state_from_an_older_log_is_never_snapshotted(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A log written before handlers were checked replays into an attribute outside the
    state: such an agent is never snapshotted (loads replay), so it never diverges."""
    with AgentStore(database_url, snapshot_every=1) as store:
        ticket = Ticket(name="legacy")
        for version in (2, 3):  # what the unchecked trigger_event of old code did
            noted = Ticket.TicketNoted(  # type: ignore[attr-defined]
                originator_id=ticket.id,
                originator_version=version,
                timestamp=ticket.modified_on,
                text="x",
                weight=2,
            )
            noted.mutate(ticket)
            ticket.pending_events.append(noted)
        with caplog.at_level(logging.WARNING, logger="snaptail"):
            store.save(ticket)
        assert store.recorder.select_snapshot_infos(ticket.id) == []
        assert any("'notes_total'" in r.getMessage() for r in caplog.records)
        loaded = store.get(ticket.id)
        assert loaded.notes_total == 4  # type: ignore[attr-defined]


# -- what the fingerprint covers: declared settings of any type, nothing else ---------


class Mode(Enum):
    FAST = 1
    CAREFUL = 2


def _kind(**overrides: object) -> type:
    """A stand-in agent type (a plain class with the attributes the fingerprint reads)."""
    namespace: dict[str, object] = {
        "State": AgentState,
        "snapshot_settings": ("flag", "mode", "tags", "window_items"),
        "flag": False,
        "mode": Mode.FAST,
        "tags": ("a",),
        "window_items": 50,
        "max_event_bytes": 1024,
        "max_labels": 256,
        "__module__": __name__,
        "__qualname__": "Kind",
        **overrides,
    }
    return type("Kind", (), namespace)


def test_fingerprint_covers_declared_settings_of_any_type_and_nothing_else() -> None:
    from snaptail.snapshots import state_fingerprint

    base = state_fingerprint(_kind())
    assert state_fingerprint(_kind()) == base
    for changed in (
        {"flag": True},
        {"mode": Mode.CAREFUL},
        {"tags": ("a", "b")},
        {"window_items": 51},
        {"snapshot_version": 2},
        {"class_version": 2},
    ):
        assert state_fingerprint(_kind(**changed)) != base, changed
    for command_only in ({"max_event_bytes": 4096}, {"max_labels": 1}, {"memory_budget": 5}):
        assert state_fingerprint(_kind(**command_only)) == base, command_only


def test_snapshot_settings_must_name_class_attributes() -> None:
    with pytest.raises(TypeError, match="max_tickets"):

        class Misspelt(Agent):  # refused when defined
            snapshot_settings = ("max_tickets",)


# -- issue 18, item 3: a default of another type than its field's ---------------------


@dataclass
class SlippedState(AgentState):
    score: float = 0  # type: ignore[assignment]  # an int where a float is declared


@dataclass
class Inner:
    ratio: float = 1.0
    when: datetime = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class NestedSlip(AgentState):
    inner: Inner = field(default_factory=lambda: Inner(ratio=1))  # type: ignore[arg-type]


@dataclass
class ExactState(AgentState):
    score: float = 0.0
    inner: Inner = field(default_factory=Inner)


def test_a_default_of_another_type_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(InvalidAgentType) as caught:

        class Slipped(Agent):
            State = SlippedState

    message = str(caught.value)
    assert isinstance(caught.value, SnaptailError) and isinstance(caught.value, TypeError)
    assert "Slipped" in message and "State.score" in message
    assert "float" in message and "int" in message and "score: float = 0.0" in message
    with pytest.raises(InvalidAgentType, match=r"State\.inner\.ratio"):

        class Nested(Agent):
            State = NestedSlip

    class Exact(Agent):  # defaults of their declared types are accepted
        State = ExactState

    assert Exact("x").state.score == 0.0  # type: ignore[attr-defined]
