"""Memory accounting: sizes, deep sizeof, the breakdown, and its error against tracemalloc."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from examples.chat_agent import ChatPlatformAgent
from snaptail import Agent, AgentStore, Never, Participant
from snaptail.domain.memory import deep_sizeof, format_bytes, measure_agent, parse_size
from snaptail.domain.recent import RecentEvents
from snaptail.workload import Workload

# The documented tolerance of memory_bytes() against tracemalloc.
TOLERANCE = 0.30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1048576, 1048576),
        ("1048576", 1048576),
        ("2MiB", 2 * 1024 * 1024),
        ("512KiB", 512 * 1024),
        ("512 kib", 512 * 1024),
        ("1.5MB", 1_500_000),
        ("64mib", 64 * 1024 * 1024),
        ("1GiB", 1024**3),
        ("10kB", 10_000),
        ("0", 0),
    ],
)
def test_parse_size_reads_ints_and_unit_strings(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MiB", "2 parsecs", "-1", "1..2MiB", True, -5])
def test_parse_size_rejects_what_is_not_a_size(bad: Any) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


def test_format_bytes_is_readable() -> None:
    assert format_bytes(812) == "812 B"
    assert format_bytes(3 * 1024 + 512) == "3.5 KiB"
    assert format_bytes(5 * 1024 * 1024) == "5.00 MiB"


def test_deep_sizeof_counts_contents_and_shared_objects_once() -> None:
    text = "x" * 10_000
    assert deep_sizeof([text]) == sys.getsizeof([text]) + sys.getsizeof(text)
    assert deep_sizeof([text, text]) == sys.getsizeof([text, text]) + sys.getsizeof(text)
    seen: set[int] = set()
    first = deep_sizeof({"a": text}, seen)
    second = deep_sizeof((text,), seen)
    assert first > 10_000
    assert second == sys.getsizeof((text,))  # the text was counted by the first call


def test_deep_sizeof_skips_singletons_classes_and_functions() -> None:
    items = [None, True, 7, "", "a", len, Agent, deep_sizeof]
    assert deep_sizeof(items) == sys.getsizeof(items)


@dataclass(frozen=True, slots=True)
class _Slotted:
    payload: str


class _Plain:
    def __init__(self, payload: str) -> None:
        self.payload = payload


def test_deep_sizeof_follows_slots_and_instance_dicts() -> None:
    text = "y" * 5_000
    assert deep_sizeof(_Slotted(text)) >= 5_000 + sys.getsizeof(_Slotted(""))
    assert deep_sizeof(_Plain(text)) >= 5_000 + sys.getsizeof(_Plain(""))


def test_memory_usage_says_which_part_holds_the_bytes() -> None:
    agent = Agent("breakdown")
    for i in range(20):
        agent.add_input("user", f"message {i} " + "z" * 2_000)
    usage = agent.memory_usage()
    assert usage.total == agent.memory_bytes() == sum(usage.parts.values())
    assert next(iter(usage.parts)) == "window"
    assert usage.parts["window"] > 20 * 2_000
    assert list(usage.parts.values()) == sorted(usage.parts.values(), reverse=True)
    assert {"pending_events", "agent", "participants", "pending_tool_calls"} <= set(usage.parts)
    assert usage.describe(1).startswith("window ")

    before = usage.parts["participants"]
    for i in range(50):
        agent.join(Participant(user_id=f"user-{i}", display_name="d" * 200))
    after = agent.memory_usage()
    assert after.parts["participants"] > before + 50 * 200
    before_tools = after.parts["pending_tool_calls"]
    agent.request_tool_call("call-1", "search", {"query": "q" * 5_000})
    assert agent.memory_usage().parts["pending_tool_calls"] > before_tools + 5_000


def test_memory_usage_names_a_user_types_own_fields() -> None:
    agent = ChatPlatformAgent("chat")
    for i in range(100):
        agent._thread_joined(thread=f"thread-{i:04d}-" + "t" * 100, channel="C1")
    usage = agent.memory_usage()
    assert usage.parts["threads"] > 100 * 100
    assert "mentions" in usage.parts


def test_the_recent_event_cache_is_counted() -> None:
    agent = Agent("recent")
    for i in range(30):
        agent.add_input("user", f"m{i}")
    events = list(agent.pending_events)
    del agent.pending_events[:]
    without = agent.memory_bytes()
    agent.__dict__["_recent_events"] = RecentEvents(100, events)
    assert agent.memory_usage().parts["recent_events"] > 30 * 100
    assert agent.memory_bytes() > without


def _traced(build: Callable[[], Agent]) -> tuple[Agent, int]:
    """Build an agent under tracemalloc; returns it and the bytes still allocated."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        agent = build()
        gc.collect()
        return agent, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def _built_by_commands(seed: int) -> Callable[[], Agent]:
    def build() -> Agent:
        agent = Agent("measured")
        Workload(seed=seed).drive(agent, events=300)
        events = list(agent.pending_events)  # as a save would: into the recent cache
        del agent.pending_events[:]
        agent.__dict__["_recent_events"] = RecentEvents(100, events)
        return agent

    return build


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_memory_bytes_is_within_tolerance_of_tracemalloc(seed: int) -> None:
    _built_by_commands(seed + 100)()  # warm every cache the first run fills
    agent, traced = _traced(_built_by_commands(seed))
    measured = agent.memory_bytes()
    assert traced > 50_000  # a realistic agent, not noise
    assert abs(measured - traced) <= TOLERANCE * traced, (measured, traced)


def test_memory_bytes_of_a_loaded_agent_is_within_tolerance(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=120, recent_events=50) as store:
        agent = Agent("loaded")
        Workload(seed=4).drive(agent, events=500, save=store.save, batch=50)
        store.get(agent.id)  # warm-up load
        loaded, traced = _traced(lambda: store.get(agent.id))
    measured = loaded.memory_bytes()
    assert traced > 50_000
    assert abs(measured - traced) <= TOLERANCE * traced, (measured, traced)


def test_measuring_does_not_change_the_agent() -> None:
    agent = Agent("pure")
    agent.add_input("user", "hello")
    before = (agent.version, list(agent.pending_events), agent.state)
    measure_agent(agent)
    assert (agent.version, list(agent.pending_events), agent.state) == before


# -- issue 18, item 11: the same state measures the same bytes, however it was built --


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_the_same_state_measures_the_same_however_it_was_loaded(
    sqlite_url: str, seed: int
) -> None:
    with AgentStore(sqlite_url, policy=Never(), recent_events=50) as store:
        agent = ChatPlatformAgent("canonical") if seed == 6 else Agent("canonical")
        Workload(seed=seed).drive(agent, events=500, save=store.save, batch=50)
        replayed = store.get(agent.id)  # no snapshot: every event applied
        store.snapshot(agent.id)
        from_snapshot = store.get(agent.id)
        assert store.load_stats(from_snapshot).snapshot_version == agent.version  # type: ignore[union-attr]
        assert store.load_stats(replayed).snapshot_version == 0  # type: ignore[union-attr]
    live = agent.memory_usage()
    assert from_snapshot.memory_usage() == replayed.memory_usage()
    assert live.parts["window"] == replayed.memory_usage().parts["window"]


def test_sizes_do_not_depend_on_sharing_spare_capacity_or_cached_encodings() -> None:
    text = "é" * 100  # not ASCII: encoding it to UTF-8 caches a copy inside the string
    fresh = "".join(["é"] * 100)
    text.encode("utf-8")
    msgspec.msgpack.encode(text)
    assert deep_sizeof([text]) == deep_sizeof([fresh])
    grown: list[str] = []
    for i in range(10):
        grown.append(f"item {i}")
    assert deep_sizeof(grown) == deep_sizeof([f"item {i}" for i in range(10)])
    emptied = {f"k{i}": i for i in range(100)}
    emptied.clear()
    assert deep_sizeof(emptied) == deep_sizeof({})
    role = "assistant"
    shared = [[role, 1], [role, 2]]
    copies = [["".join(["assis", "tant"]), 1], ["".join(["assi", "stant"]), 2]]
    assert deep_sizeof(shared) == deep_sizeof(copies)
