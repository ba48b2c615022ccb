"""A real LangGraph graph on SnaptailSaver, checked against InMemorySaver.

A StateGraph over MessagesState (scripted node, no network) runs hundreds of
supersteps in one process, is interrupted (``interrupt()``), resumed in a fresh process,
and read back in a third (this test's) process; then it time-travels to an earlier
checkpoint, replays and forks from it. Every state, the whole history and the forks
must equal what InMemorySaver gives for the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Interrupt

from snaptail.bench.langgraph import APPROVE, chat_graph, human, thread_config
from snaptail.integrations.langgraph import SnaptailSaver

CHARS = 200
FIRST = 100  # turns before the interrupt (3 checkpoints each)
SECOND = 60  # turns after resuming

SCRIPT = """
import json, sys
from langchain_core.messages import HumanMessage
from langgraph.types import Command, Interrupt
from snaptail.bench.langgraph import APPROVE, chat_graph, human, thread_config
from snaptail.integrations.langgraph import SnaptailSaver

url, phase, first, second, chars = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
config = thread_config("chat")
with SnaptailSaver(url) as saver:
    graph = chat_graph(saver, chars)
    if phase == "run":
        for turn in range(first):
            graph.invoke({"messages": [human(turn, chars)]}, config)
        out = graph.invoke({"messages": [HumanMessage(APPROVE + " deploy", id="ask")]}, config)
        print(json.dumps({"interrupted": "__interrupt__" in out}))
    else:
        state = graph.get_state(config)
        assert state.next == ("chat",), state.next
        graph.invoke(Command(resume="yes"), config)
        for turn in range(first, first + second):
            graph.invoke({"messages": [human(turn, chars)]}, config)
        print(json.dumps({"messages": len(graph.get_state(config).values["messages"])}))
"""


def _run(graph: Any, config: dict[str, Any]) -> None:
    """The same run as SCRIPT, in this process."""
    for turn in range(FIRST):
        graph.invoke({"messages": [human(turn, CHARS)]}, config)
    out = graph.invoke({"messages": [HumanMessage(APPROVE + " deploy", id="ask")]}, config)
    assert "__interrupt__" in out
    graph.invoke(Command(resume="yes"), config)
    for turn in range(FIRST, FIRST + SECOND):
        graph.invoke({"messages": [human(turn, CHARS)]}, config)


def _plain(value: Any) -> Any:
    """A pending write's value without interrupt ids (made from checkpoint ids)."""
    if isinstance(value, list) and value and all(isinstance(v, Interrupt) for v in value):
        return [v.value for v in value]
    return value


def _history(graph: Any, config: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Everything about each checkpoint except its ids and channel versions (which
    each saver makes its own way): the graph's view, and the saver's own tuples."""
    states = [
        (
            s.metadata.get("source"),
            s.metadata.get("step"),
            s.next,
            s.values.get("messages", []),
            [(t.name, [i.value for i in t.interrupts]) for t in s.tasks],
        )
        for s in graph.get_state_history(config)
    ]
    tuples = [
        (
            t.metadata.get("source"),
            t.metadata.get("step"),
            t.checkpoint["channel_values"],
            sorted(((c, repr(_plain(v))) for _, c, v in t.pending_writes or []), key=str),
            t.parent_config is None,
        )
        for t in graph.checkpointer.list(config)
    ]
    return [*states, *tuples]


def _subprocess(url: str, phase: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, phase, str(FIRST), str(SECOND), str(CHARS)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _time_travel(graph: Any, config: dict[str, Any]) -> list[Any]:
    """Replay from an early checkpoint, fork from another, continue the fork."""
    history = list(graph.get_state_history(config))
    replay_from = next(s for s in history[len(history) // 2 :] if s.next == ("chat",))
    replayed = graph.invoke(None, replay_from.config)
    fork_from = history[-40]
    forked = graph.invoke(
        {"messages": [HumanMessage("fork: try another way", id="fork")]}, fork_from.config
    )
    for turn in range(3):
        graph.invoke({"messages": [human(10_000 + turn, CHARS)]}, config)
    return [
        replayed["messages"],
        forked["messages"],
        graph.get_state(config).values["messages"],
        graph.get_state(replay_from.config).values["messages"],
    ]


def test_graph_interrupted_resumed_in_fresh_processes_matches_in_memory(
    database_url: str,
) -> None:
    assert _subprocess(database_url, "run") == {"interrupted": True}
    assert _subprocess(database_url, "resume") == {"messages": 2 * (FIRST + SECOND + 1)}

    reference = chat_graph(InMemorySaver(), CHARS)
    config = thread_config("chat")
    _run(reference, config)
    with SnaptailSaver(database_url) as saver:
        graph = chat_graph(saver, CHARS)
        assert graph.get_state(config).values == reference.get_state(config).values
        expected = _history(reference, config)
        assert len(expected) > 3 * (FIRST + SECOND)
        assert _history(graph, config) == expected

        assert _time_travel(graph, config) == _time_travel(reference, config)
        assert _history(graph, config) == _history(reference, config)

    with SnaptailSaver(database_url) as fresh:  # and once more from storage alone
        graph = chat_graph(fresh, CHARS)
        assert _history(graph, config) == _history(reference, config)


def _editing_graph(checkpointer: Any) -> Any:
    """A node that appends, replaces a message by id, removes one, or changes one in
    place, depending on the turn."""
    from langchain_core.messages import AIMessage, RemoveMessage
    from langgraph.graph import START, MessagesState, StateGraph

    def edit(state: MessagesState) -> dict[str, list[Any]]:
        messages = state["messages"]
        turn = len(messages)
        reply = AIMessage(f"reply {turn}", id=f"ai-{turn}")
        if turn % 7 == 0:
            return {"messages": [RemoveMessage(id=str(messages[0].id)), reply]}
        if turn % 5 == 0:
            return {"messages": [AIMessage(f"edited at {turn}", id=messages[1].id), reply]}
        if turn % 3 == 0:
            # An older message (a copy the saver handed out), never this step's input:
            # the input message object is also in the __start__ task's pending writes,
            # which LangGraph may serialise on another thread while this node runs, so
            # changing it in place races every saver, InMemorySaver included.
            messages[1].content = f"changed in place at {turn}"
        return {"messages": [reply]}

    builder = StateGraph(MessagesState)
    builder.add_node("edit", edit)
    builder.add_edge(START, "edit")
    return builder.compile(checkpointer=checkpointer)


def test_replaced_removed_and_changed_messages_match_in_memory(sqlite_url: str) -> None:
    config = thread_config("edits")
    reference = _editing_graph(InMemorySaver())
    with SnaptailSaver(sqlite_url) as saver:
        graph = _editing_graph(saver)
        for turn in range(40):
            for g in (reference, graph):
                # "sync": a checkpoint is stored before the next node runs (with the
                # default "async", a node changing a message in place races the save).
                g.invoke({"messages": [human(turn, 50)]}, config, durability="sync")
        assert graph.get_state(config).values == reference.get_state(config).values
        assert _history(graph, config) == _history(reference, config)
    with SnaptailSaver(sqlite_url) as fresh:
        graph = _editing_graph(fresh)
        assert _history(graph, config) == _history(reference, config)
