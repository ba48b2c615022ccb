"""``snaptail.testing.check_agent_type`` passes on real agent types and fails on buggy ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st

from examples.chat_agent import ChatPlatformAgent
from snaptail import Agent, AgentState, event
from snaptail.testing import TINY_LIMITS, check_agent_type, check_codec, check_fingerprint
from tests.agents import commands as agent_commands
from tests.agents import commands_up_to, examples

users = st.sampled_from(["U1", "U2", "U3"])
threads = st.sampled_from(["t1", "t2", "t3", "t4"])
webhooks = st.builds(
    lambda kind, thread, user, text, event_id: json.dumps(
        {
            "type": kind,
            "channel": "C1",
            "thread_ts": thread,
            "user": user,
            "text": text,
            "event_id": event_id,
        }
    ).encode(),
    st.sampled_from(["message", "app_mention"]),
    threads,
    users,
    st.text(max_size=20),
    st.sampled_from(["", "E1", "E2", "E3"]),
)
chat_commands = st.one_of(
    webhooks.map(lambda body: lambda agent: agent.handle_webhook(body)),
    agent_commands,
)


def test_chat_platform_agent_snapshots_are_exact(database_url: str) -> None:
    check_agent_type(
        ChatPlatformAgent,
        chat_commands,
        store_url=database_url,
        max_examples=examples(12),
        max_commands=commands_up_to(20),
        tiny_limits={**TINY_LIMITS, "max_threads": 2},
    )


def test_built_in_agent_passes_on_a_temporary_sqlite_file() -> None:
    check_agent_type(
        Agent, agent_commands, max_examples=examples(10), max_commands=commands_up_to(15)
    )


# -- buggy agent types are caught -----------------------------------------------------


@dataclass
class TagState(AgentState):
    tags: tuple[str, ...] = ()


class ListInTupleField(Agent):
    """Its apply stores a list in a tuple field: the codec gives a tuple back."""

    State = TagState
    if TYPE_CHECKING:
        state: TagState

    @event("Tagged")
    def tag(self, tag: str) -> None:
        self.state.tags = [*self.state.tags, tag]  # type: ignore[assignment]


def test_state_that_does_not_survive_the_codec_is_caught() -> None:
    agent = ListInTupleField(name="x")
    agent.tag("a")
    with pytest.raises(AssertionError, match=r"codec(.|\n)*state.tags: snapshot gives tuple"):
        check_codec(agent)


@dataclass
class CountState(AgentState):
    ticks: int = 0


_clock = [0]


class ReadsAGlobal(Agent):
    """Its apply reads outside state: a replay does not rebuild what was snapshotted."""

    State = CountState
    if TYPE_CHECKING:
        state: CountState

    @event("Ticked")
    def tick(self) -> None:
        _clock[0] += 1
        self.state.ticks = _clock[0]


def test_snapshot_plus_tail_differing_from_replay_is_caught() -> None:
    with pytest.raises(AssertionError, match="differs"):
        check_agent_type(
            ReadsAGlobal,
            st.just(lambda a: a.tick()),
            max_examples=10,
            hypothesis_settings=settings(phases=[Phase.generate], database=None),
        )


def test_fingerprint_covers_every_state_field() -> None:
    check_fingerprint(Agent)
    check_fingerprint(ChatPlatformAgent)
