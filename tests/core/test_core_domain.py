"""The Agent's derived state is bounded; commands check their arguments."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from examples.chat_agent import ChatPlatformAgent
from snaptail import (
    Agent,
    AgentLimitExceeded,
    AgentStore,
    InvalidCommand,
    InvalidEventPayload,
    Participant,
    TokenUsage,
)
from snaptail.domain.window import ConversationWindow


def test_window_keeps_newest_items_within_count_and_bytes() -> None:
    window = ConversationWindow(max_items=5, max_bytes=100)
    for i in range(20):
        window.add(i + 1, "user", f"message {i:02d}")
    assert [item.version for item in window.items] == [16, 17, 18, 19, 20]
    assert window.dropped == 15
    window.add(21, "user", "x" * 90)
    assert window.text_bytes <= 100
    assert window.items[-1].version == 21
    window.add(22, "user", "y" * 1000)
    assert len(window.items) == 1 and window.text_bytes <= 100
    assert window.items[0].text.endswith("history()]")


def test_window_add_keeps_exactly_the_newest_items_that_fit() -> None:
    # add() drops the oldest item of a full window inline (the steady state of a long
    # conversation); every other case goes through _trim: both must leave exactly the
    # newest items within the bounds (at least one), with their byte count.
    import random

    rnd = random.Random(19)
    for max_items, max_bytes in ((1, 40), (3, 60), (5, 10_000), (8, 90)):
        window = ConversationWindow(max_items=max_items, max_bytes=max_bytes)
        texts: list[str] = []
        for version in range(1, 300):
            text = rnd.choice(["", "a", "héllo", "ok", "z" * rnd.randint(1, 50), "€" * 7])
            window.add(version, "user", text)
            texts.append(window.items[-1].text)  # as kept: a text over the budget is cut
            sizes = [len(t.encode()) for t in texts]
            keep = 1
            while keep < len(texts) and keep < max_items and sum(sizes[-(keep + 1) :]) <= max_bytes:
                keep += 1
            assert [i.version for i in window.items] == list(range(version - keep + 1, version + 1))
            assert window.text_bytes == sum(sizes[-keep:])
            assert window.dropped == version - keep


def test_window_items_are_the_dataclass_constructor_s() -> None:
    # Window.add builds items through the slots' descriptors, not WindowItem(...): the
    # same objects only while WindowItem's __init__ does nothing but set its fields.
    from snaptail.domain.values import WindowItem

    assert not hasattr(WindowItem, "__post_init__")
    assert [f.name for f in dataclasses.fields(WindowItem)] == ["version", "role", "text"]
    window = ConversationWindow()
    window.add(7, "user", "héllo")
    item = window.items[0]
    built = WindowItem(7, "user", "héllo")
    assert type(item) is WindowItem and item == built and hash(item) == hash(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.text = "changed"  # type: ignore[misc]


def test_window_compaction_keeps_summary_and_newer_items() -> None:
    window = ConversationWindow(max_items=10)
    for v in range(1, 8):
        window.add(v, "user", str(v))
    window.compact("summary of 1-5", through_version=5)
    assert [i.version for i in window.items] == [6, 7]
    assert window.summary == "summary of 1-5" and window.summary_through == 5


def test_agent_state_stays_bounded_under_a_long_conversation() -> None:
    agent = Agent(name="long")
    for i in range(2_000):
        agent.add_input("user", f"question {i} " * 20)
        agent.receive_webhook("slack", b"{}", idempotency_key=f"evt-{i}")
    assert len(agent.state.window.items) <= Agent.window_items
    assert agent.state.window.text_bytes <= Agent.window_bytes
    assert len(agent.state.idempotency_keys) == Agent.idempotency_window
    assert agent.state.usage.webhooks == 2_000


def test_webhook_retries_are_dropped_within_the_window() -> None:
    agent = Agent(name="hooks")
    assert agent.receive_webhook("slack", b"a", idempotency_key="k1")
    assert not agent.receive_webhook("slack", b"a", idempotency_key="k1")
    assert agent.version == 2
    assert agent.receive_webhook("slack", b"b")  # no key: never de-duplicated
    assert agent.receive_webhook("slack", b"b")


def test_llm_request_lifecycle_and_usage() -> None:
    agent = Agent(name="llm", model="m1")
    agent.add_input("user", "hi")
    request = agent.start_llm_request()
    assert agent.status == "thinking"
    with pytest.raises(InvalidCommand, match="in flight"):
        agent.start_llm_request()
    agent.finish_llm_request(request, TokenUsage(input_tokens=100, output_tokens=7))
    assert agent.status == "idle"
    assert agent.state.usage.input_tokens == 100 and agent.state.usage.output_tokens == 7
    started: Any = agent.pending_events[-2]
    assert started.input_through_version == 2 and started.model == "m1"
    agent.pause("night")
    with pytest.raises(InvalidCommand, match="paused"):
        agent.start_llm_request()
    agent.resume()
    assert agent.status == "idle"


def test_tool_calls_and_approvals() -> None:
    agent = Agent(name="tools")
    agent.request_tool_call("c1", "search", {"q": "snaptail"})
    assert agent.status == "running_tools"
    with pytest.raises(InvalidCommand, match="exactly one"):
        agent.complete_tool_call("c1")
    agent.complete_tool_call("c1", error="timeout", duration_ms=30_000)
    assert agent.state.usage.tool_errors == 1 and not agent.state.pending_tool_calls
    with pytest.raises(InvalidCommand, match="not pending"):
        agent.complete_tool_call("c1", output="late")
    agent.request_approval("a1", "shell", {"cmd": "ls"})
    assert agent.status == "awaiting_approval"
    agent.decide_approval("a1", approved=True, decided_by="alice")
    assert agent.status == "idle"


def test_bounded_collections_refuse_to_grow_past_their_limit() -> None:
    class Small(Agent):
        max_labels = 2
        max_participants = 1

    agent = Small(name="small")
    agent.add_label("a")
    agent.add_label("b")
    with pytest.raises(AgentLimitExceeded, match="labels"):
        agent.add_label("c")
    agent.join(Participant(user_id="u1"))
    with pytest.raises(AgentLimitExceeded, match=str(agent.id)):
        agent.join(Participant(user_id="u2"))


def test_invalid_payload_error_names_the_nested_field() -> None:
    agent = Agent(name="typed")
    with pytest.raises(InvalidEventPayload) as info:
        agent.join(Participant(user_id=7))  # type: ignore[arg-type]
    assert info.value.field == "participant" and info.value.event == "Agent.ParticipantJoined"
    assert agent.version == 1


def test_annotated_agent_classes_are_refused_with_advice() -> None:
    with pytest.raises(TypeError, match="AgentState"):

        class Annotated(Agent):
            counter: int = 0


def test_example_chat_agent_handles_webhooks_and_reloads(tmp_path: object) -> None:
    store = AgentStore(":memory:", snapshot_every=5)
    agent = ChatPlatformAgent(name="slack-bot")
    delivered = []
    for i in range(12):
        body = json.dumps(
            {
                "type": "app_mention" if i % 2 else "message",
                "channel": "C1",
                "thread_ts": f"{i // 4}.0",
                "user": f"U{i % 3}",
                "text": f"hello {i}",
                "event_id": f"E{i % 10}",  # deliveries 10 and 11 are retries
            }
        ).encode()
        delivered.append(agent.handle_webhook(body))
        store.save(agent)
    assert delivered == [True] * 10 + [False, False]
    assert agent.state.mentions == 5 and len(agent.state.threads) == 3
    loaded = store.get(agent.id)
    assert type(loaded) is ChatPlatformAgent
    assert loaded.state == agent.state == store.replay(agent.id).state
    assert store.recorder.select_snapshot_infos(agent.id), "snapshots were taken"
    assert dataclasses.asdict(loaded.state)["threads"] == {"0.0": "C1", "1.0": "C1", "2.0": "C1"}
    store.close()
