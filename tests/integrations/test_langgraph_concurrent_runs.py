"""Issue 18 item 10: two LangGraph runs on one ``thread_id`` at once. By default snaptail
does what LangGraph's own savers do (both succeed, the thread forks, both branches stay
in the history); with ``concurrent_runs="reject"`` the second writer gets
``ThreadConflict`` and nothing of its checkpoint is saved."""

from __future__ import annotations

import contextlib
import operator
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypedDict, cast

import pytest

pytest.importorskip("langgraph")

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from snaptail.errors import ThreadConflict
from snaptail.integrations.langgraph import ALLOW_FORK, SnaptailSaver


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def two_step_graph(saver: BaseCheckpointSaver[Any], gate: threading.Barrier | None) -> Any:
    """``read`` then ``write``; with ``gate``, both runs are inside their first step
    before either stores its checkpoint (unless one has failed already: the other
    goes on after 2 s)."""

    def read(state: State) -> dict[str, list[str]]:
        if gate is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait(2)
        return {"log": ["read"]}

    def write(state: State) -> dict[str, list[str]]:
        return {"log": ["write"]}

    graph = StateGraph(State)
    graph.add_node("read", read)
    graph.add_node("write", write)
    graph.add_edge(START, "read")
    graph.add_edge("read", "write")
    graph.add_edge("write", END)
    return graph.compile(checkpointer=saver)


def config(**extra: Any) -> RunnableConfig:
    return cast(RunnableConfig, {"configurable": {"thread_id": "busy", **extra}})


def two_runs_at_once(saver: BaseCheckpointSaver[Any]) -> tuple[Any, list[BaseException]]:
    two_step_graph(saver, None).invoke({"log": ["start"]}, config(), durability="sync")
    app = two_step_graph(saver, threading.Barrier(2))
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            app.invoke({"log": [name]}, config(), durability="sync")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("run-a", "run-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return app, errors


def histories(app: Any) -> list[tuple[str, ...]]:
    return sorted(tuple(s.values.get("log", [])) for s in app.get_state_history(config()))


def test_by_default_concurrent_runs_fork_as_with_langgraphs_own_saver(database_url: str) -> None:
    _, their_errors = two_runs_at_once(InMemorySaver())
    with SnaptailSaver(database_url) as saver:
        ours, our_errors = two_runs_at_once(saver)
        assert our_errors == their_errors == [], "both runs succeed, as with LangGraph's"
        final = ours.get_state(config()).values["log"]
        assert final[:3] == ["start", "read", "write"] and final[-2:] == ["read", "write"]
        # Two writers extending one checkpoint: both stored, the thread forks there
        # and the newest is the thread's state, exactly as in LangGraph's own saver.
        forks = []
        for fork_saver in (InMemorySaver(), saver):
            put = putter(fork_saver, thread="forked")
            root = put(None, 0)
            first, second = put(root, 1), put(root, 2)
            thread = cast(RunnableConfig, {"configurable": {"thread_id": "forked"}})
            listed = [
                (t.checkpoint["id"], (t.parent_config or {})["configurable"]["checkpoint_id"])
                for t in fork_saver.list(thread)
                if t.parent_config
            ]
            latest = fork_saver.get_tuple(thread)
            assert latest is not None
            forks.append((sorted(listed), latest.checkpoint["channel_values"]))
            assert sorted(listed) == sorted([(first, root), (second, root)])
        assert forks[0][1] == forks[1][1] == {"step": 2}


def test_strict_mode_the_second_writer_gets_a_clear_error(database_url: str) -> None:
    with SnaptailSaver(database_url, concurrent_runs="reject") as saver:
        app, errors = two_runs_at_once(saver)
        assert len(errors) == 1 and isinstance(errors[0], ThreadConflict), errors
        assert "thread 'busy'" in str(errors[0]) and "nothing was saved" in str(errors[0])
        # The winner's turn, whole. (If the loser's input checkpoint was stored before
        # the winner read the thread, the winner's turn starts from it: a linear
        # history in which the loser failed at its next step.)
        final = app.get_state(config()).values["log"]
        assert final[:3] == ["start", "read", "write"] and final[-2:] == ["read", "write"]
        assert set(final[3:-2]) <= {"run-a", "run-b"} and final[3:-2]
        # Exactly one branch: every checkpoint extends the one before it.
        states = list(app.get_state_history(config()))
        ids = [s.config["configurable"]["checkpoint_id"] for s in states]
        parents = [
            (s.parent_config or {}).get("configurable", {}).get("checkpoint_id") for s in states
        ]
        assert parents[:-1] == ids[1:]


Put = Callable[[str | None, int], str]


def putter(saver: BaseCheckpointSaver[Any], thread: str = "t", **extra: Any) -> Put:
    def put(parent: str | None, step: int) -> str:
        configurable: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": "", **extra}
        if parent:
            configurable["checkpoint_id"] = parent
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"step": step}
        checkpoint["channel_versions"] = {"step": step + 1}
        stored = saver.put(
            cast(RunnableConfig, {"configurable": configurable}),
            checkpoint,
            {"step": step},
            {"step": step + 1},
        )
        return str(stored["configurable"]["checkpoint_id"])

    return put


def test_strict_mode_across_savers_and_deliberate_forks(database_url: str) -> None:
    with (
        SnaptailSaver(database_url, concurrent_runs="reject") as one,
        SnaptailSaver(database_url, concurrent_runs="reject") as other,
    ):
        root = putter(one)(None, 0)
        head = putter(one)(root, 1)
        with pytest.raises(ThreadConflict) as raised:
            putter(other)(root, 1)  # read root, another writer stored `head` since
        assert (raised.value.parent_id, raised.value.head_id) == (root, head)
        with pytest.raises(ThreadConflict):
            putter(other)(None, 0)  # a fresh start on a thread that has checkpoints
        fork = putter(other, "t", **{ALLOW_FORK: True})(root, 1)  # time travel, on purpose
        latest = one.get_tuple(cast(RunnableConfig, {"configurable": {"thread_id": "t"}}))
        assert latest is not None and latest.checkpoint["id"] == fork
        assert putter(one)(fork, 2)


def test_concurrent_runs_is_checked() -> None:
    with pytest.raises(ValueError, match="concurrent_runs"):
        SnaptailSaver(None, concurrent_runs=cast(Any, "queue"))
