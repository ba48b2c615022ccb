"""Issue 24 item 2: ``prune(strategy="keep_latest")`` keeps the pending writes saved for a
checkpoint that is not stored yet (an in-flight step), as LangGraph's own savers do."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

pytest.importorskip("langgraph")

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from snaptail.integrations.langgraph import SnaptailSaver
from snaptail.integrations.langgraph_thread import ThreadAgent, thread_uuid


def _checkpoint(step: int) -> Any:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"step": step}
    checkpoint["channel_versions"] = {"step": step + 1}
    return checkpoint


def _config(parent: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": "t", "checkpoint_ns": ""}
    if parent:
        configurable["checkpoint_id"] = parent
    return cast(RunnableConfig, {"configurable": configurable})


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_keep_latest_keeps_writes_saved_before_their_checkpoint(
    database_url: str, mode: str
) -> None:
    first, second = _checkpoint(0), _checkpoint(1)
    with SnaptailSaver(database_url) as saver:

        async def run() -> Any:
            if mode == "sync":
                stored = saver.put(_config(), first, {"step": 0}, {"step": 1})
                saver.put_writes(_config(second["id"]), [("step", 99)], "task-1")
                saver.prune(["t"], strategy="keep_latest")
                saver.put(stored, second, {"step": 1}, {"step": 2})
                return saver.get_tuple(_config())
            stored = await saver.aput(_config(), first, {"step": 0}, {"step": 1})
            await saver.aput_writes(_config(second["id"]), [("step", 99)], "task-1")
            await saver.aprune(["t"], strategy="keep_latest")
            await saver.aput(stored, second, {"step": 1}, {"step": 2})
            return await saver.aget_tuple(_config())

        latest = asyncio.run(run())
        assert latest is not None and latest.checkpoint["id"] == second["id"]
        assert latest.pending_writes == [("task-1", "step", 99)]
        listed = [t.checkpoint["id"] for t in saver.list(_config())]
        assert listed == [second["id"], first["id"]]
    # A fresh saver (no cached thread: the log replayed or a snapshot) agrees.
    with SnaptailSaver(database_url) as fresh:
        again = fresh.get_tuple(_config())
        assert again is not None and again.pending_writes == [("task-1", "step", 99)]


def test_a_prune_stored_before_the_fix_still_drops_early_writes(database_url: str) -> None:
    """Logs written by older versions replay as they did (their prune events carry no
    ``keep_early``): the promise that a load equals a full replay holds for them."""
    with SnaptailSaver(database_url) as saver:
        saver.put(_config(), _checkpoint(0), {"step": 0}, {"step": 1})
        saver.put_writes(_config("not-yet"), [("step", 1)], "task-1")
        agent = saver.store.get(thread_uuid("t"))
        assert isinstance(agent, ThreadAgent)
        agent.prune()  # as the old saver did
        saver.store.save(agent)
        replayed = saver.store.replay(thread_uuid("t"))
        assert isinstance(replayed, ThreadAgent)
        assert replayed.state.early == {}
