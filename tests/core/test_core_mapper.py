"""The msgspec mapper round-trips every event type exactly, built-in and user-defined."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
import typing
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.chat_agent import ChatPlatformAgent
from snaptail import Agent
from snaptail.domain.schema import payload_fields
from snaptail.infrastructure.mapper import MsgspecMapper

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy of values of ``tp`` that a real command could carry."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return json_like
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(a) for a in args))
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=3)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
        return st.tuples(*(strategy_for(a) for a in args))
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(tp)}
        return st.builds(tp, **fields)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        type(None): st.none(),
        str: text,
        int: st.integers(-(2**63), 2**63 - 1),
        bool: st.booleans(),
        float: st.floats(allow_nan=False),
        bytes: st.binary(max_size=40),
        Decimal: st.decimals(allow_nan=False, allow_infinity=False),
        uuid.UUID: st.uuids(),
        datetime: st.datetimes(timezones=st.just(UTC)),
    }
    return simple[tp]


def event_classes(agent_type: type[Agent]) -> list[type[Any]]:
    found = {
        value
        for klass in agent_type.__mro__
        for value in vars(klass).values()
        if isinstance(value, type)
        and issubclass(value, CanMutateAggregate)
        and value.__name__ not in {"Event"}
    }
    own = [cls for cls in found if issubclass(cls, agent_type.Event)]
    return sorted(own, key=lambda c: c.__qualname__)


ALL_EVENTS = event_classes(Agent) + [
    cls
    for cls in event_classes(ChatPlatformAgent)
    if cls.__qualname__.endswith(("ThreadJoined", "Mentioned"))
]


def test_every_built_in_event_type_is_covered() -> None:
    names = {cls.__name__ for cls in event_classes(Agent)}
    assert {
        "Created",
        "SystemPromptSet",
        "ModelOptionsSet",
        "MetadataSet",
        "LabelSet",
        "ParticipantJoined",
        "ParticipantLeft",
        "InputItemAdded",
        "OutputItemAdded",
        "LlmRequestStarted",
        "LlmRequestFinished",
        "LlmRequestCancelled",
        "ToolCallRequested",
        "ToolCallCompleted",
        "ToolApprovalRequested",
        "ToolApprovalDecided",
        "Paused",
        "Resumed",
        "ErrorRecorded",
        "ContextCompacted",
        "WebhookReceived",
    } <= names


@pytest.mark.parametrize("event_class", ALL_EVENTS, ids=lambda c: c.__qualname__)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_mapper_round_trips_event(event_class: type[Any], data: st.DataObject) -> None:
    fields = payload_fields(event_class)
    kwargs = {
        name: data.draw(strategy_for(tp), label=name)
        for name, tp in fields.items()
        if name != "originator_topic"
    }
    if "originator_topic" in fields:
        kwargs["originator_topic"] = get_topic(Agent)
    event = event_class(originator_id=uuid.uuid4(), originator_version=7, **kwargs)
    mapper = MsgspecMapper()
    stored = mapper.to_stored_event(event)
    again = mapper.to_domain_event(stored)
    assert type(again) is type(event)
    assert again == event
    for name, value in vars(event).items():
        assert type(getattr(again, name)) is type(value), name


# -- issue 18, item 2: an agent type defined in the script being run ------------------

MAIN_SCRIPT = """
import sqlite3, sys
from snaptail import Agent, AgentStore, InvalidAgentType, SnaptailError

class Ticketing(Agent):
    pass

url = "sqlite:///" + sys.argv[1]
with AgentStore(url) as store:
    agent = Ticketing("script")
    agent.add_input("user", "hello")
    try:
        store.save(agent)
    except InvalidAgentType as exc:
        assert isinstance(exc, SnaptailError)
        print("REFUSED:", exc)
    else:
        print("SAVED")
rows = sqlite3.connect(sys.argv[1]).execute("SELECT topic FROM stored_events").fetchall()
print("ROWS:", rows)
"""


def test_an_agent_type_defined_in_main_is_refused_at_the_first_save(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(MAIN_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "main.db")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "SAVED" not in done.stdout
    assert "REFUSED: agent type Ticketing" in done.stdout, done.stdout
    assert "__main__" in done.stdout and "module" in done.stdout  # why, and what to do
    assert "Nothing was saved" in done.stdout
    assert "ROWS: []" in done.stdout  # never stored as __main__:...
