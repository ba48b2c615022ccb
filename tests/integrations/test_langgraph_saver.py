"""SnaptailSaver details the conformance suite does not reach: two savers (processes)
writing one thread, and a stored message list costing only its new messages."""

from __future__ import annotations

from typing import cast

import pytest

pytest.importorskip("langgraph")

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from snaptail.bench.langgraph import chat_graph, human, thread_config
from snaptail.integrations.langgraph import SnaptailSaver
from snaptail.integrations.langgraph_thread import thread_uuid


def _put(saver: SnaptailSaver, parent: str | None, step: int) -> str:
    config: RunnableConfig = {"configurable": {"thread_id": "shared", "checkpoint_ns": ""}}
    if parent:
        config["configurable"]["checkpoint_id"] = parent
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"step": step}
    checkpoint["channel_versions"] = {"step": step + 1}
    stored = saver.put(config, checkpoint, {"source": "loop", "step": step}, {"step": step + 1})
    return str(stored["configurable"]["checkpoint_id"])


def test_two_savers_on_one_thread_lose_nothing(database_url: str) -> None:
    with SnaptailSaver(database_url) as first, SnaptailSaver(database_url) as second:
        parent = None
        for step in range(6):  # each saver's cached thread is stale at every other put
            parent = _put(first if step % 2 == 0 else second, parent, step)
        for saver in (first, second):
            steps = [
                t.metadata["step"]
                for t in saver.list(cast(RunnableConfig, thread_config("shared")))
            ]
            assert steps == [5, 4, 3, 2, 1, 0]
            latest = saver.get_tuple(cast(RunnableConfig, thread_config("shared")))
            assert latest is not None and latest.checkpoint["channel_values"] == {"step": 5}


def test_each_message_is_stored_once(sqlite_url: str) -> None:
    with SnaptailSaver(sqlite_url, compress=False) as saver:
        graph = chat_graph(saver, 300)
        config = thread_config("once")
        for turn in range(30):
            graph.invoke({"messages": [human(turn, 300)]}, config)
        events = list(saver.store.history(thread_uuid("once")))
    bodies = [
        body
        for event in events
        for payload in (getattr(event, "c", None), getattr(event, "w", None))
        if payload is not None
        for body in payload.bodies
    ]
    assert len(bodies) == 60  # 30 human + 30 AI messages, one body each
    assert all(300 <= len(data) < 600 for _, data in bodies)
