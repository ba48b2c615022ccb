"""SnaptailSession against the Agents SDK's own SQLiteSession, on both backends."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

pytest.importorskip("agents")

from agents import SQLiteSession
from agents.memory import OpenAIResponsesCompactionSession, Session

from snaptail import AsyncAgentStore
from snaptail.integrations.openai_agents import (
    ItemLog,
    SnaptailSession,
    session_agent_id,
)

ROOT = Path(__file__).resolve().parents[2]


def message(n: int, role: str = "user") -> Any:
    return {"role": role, "content": f"item {n} " + "x" * (n % 7)}


async def apply(session: Any, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "add":
        return await session.add_items(list(op[1]))
    if kind == "get":
        return await session.get_items(op[1])
    if kind == "pop":
        return await session.pop_item()
    return await session.clear_session()


def script(seed: int, length: int = 120) -> list[tuple[Any, ...]]:
    """A random mix of the protocol's operations, weighted towards adds and reads."""
    rng = random.Random(seed)
    ops: list[tuple[Any, ...]] = []
    n = 0
    for _ in range(length):
        roll = rng.random()
        if roll < 0.4:
            batch = [
                message(n + i, rng.choice(["user", "assistant"])) for i in range(rng.randint(0, 6))
            ]
            n += len(batch)
            ops.append(("add", batch))
        elif roll < 0.75:
            ops.append(("get", rng.choice([None, 0, 1, 2, 3, 5, 20, 1000, -1])))
        elif roll < 0.93:
            ops.append(("pop",))
        else:
            ops.append(("clear",))
    return ops


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_outputs_as_sqlite_session(database_url: str, seed: int) -> None:
    """Two sessions each side, interleaved: every operation answers as SQLiteSession."""

    async def main() -> None:
        async with AsyncAgentStore(database_url, snapshot_every=13, recent_events=7) as store:
            theirs = {sid: SQLiteSession(sid) for sid in ("a", "b")}
            ours = {sid: SnaptailSession(sid, store) for sid in ("a", "b")}
            assert isinstance(ours["a"], Session)
            rng = random.Random(seed)
            for step, op in enumerate(script(seed)):
                sid = rng.choice(["a", "b"])
                expected = await apply(theirs[sid], op)
                got = await apply(ours[sid], op)
                assert got == expected, (step, sid, op)
            for sid in ("a", "b"):
                assert await ours[sid].get_items() == await theirs[sid].get_items()
                fresh = SnaptailSession(sid, store)  # nothing cached: read from the store
                assert await fresh.get_items() == await theirs[sid].get_items()
                assert await fresh.get_items(4) == await theirs[sid].get_items(4)

    asyncio.run(main())


def test_pops_after_clears_and_limits(database_url: str) -> None:
    async def main() -> None:
        async with AsyncAgentStore(database_url, recent_events=3) as store:
            ours, theirs = SnaptailSession("s", store), SQLiteSession("s")
            ops: list[tuple[Any, ...]] = [
                ("pop",),
                ("get", None),
                ("add", [message(i) for i in range(5)]),
                ("clear",),
                ("pop",),
                ("get", 3),
                ("add", [message(10), message(11)]),
                ("pop",),
                ("add", [message(12)]),
                ("get", 2),
                ("pop",),
                ("pop",),
                ("pop",),
                ("get", None),
                ("add", [message(i) for i in range(20, 40)]),
                ("pop",),
                ("add", [message(50)]),
                ("get", 0),
                ("get", -1),
                ("get", 19),
                ("get", 25),
            ]
            for op in ops:
                assert await apply(ours, op) == await apply(theirs, op), op

    asyncio.run(main())


def test_session_settings_limit_is_the_default(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncAgentStore(f"sqlite:///{tmp_path / 's.db'}") as store:
            session = SnaptailSession("s", store, session_settings={"limit": 2})
            await session.add_items([message(i) for i in range(5)])
            assert await session.get_items() == [message(3), message(4)]
            assert len(await session.get_items(4)) == 4

    asyncio.run(main())


@pytest.mark.parametrize("shared", [True, False], ids=["one-session-object", "one-per-task"])
def test_concurrent_add_items_lose_nothing(database_url: str, shared: bool) -> None:
    async def main() -> None:
        async with AsyncAgentStore(database_url, snapshot_every=20) as store:
            one = SnaptailSession("busy", store)

            async def task(t: int) -> None:
                session = one if shared else SnaptailSession("busy", store)
                for i in range(5):
                    await session.add_items([{"role": "user", "content": f"{t}.{i}"}])

            await asyncio.gather(*(task(t) for t in range(30)))
            items = await SnaptailSession("busy", store).get_items()
            texts = [str(cast(Any, item)["content"]) for item in items]
            assert sorted(texts) == sorted(f"{t}.{i}" for t in range(30) for i in range(5))
            for t in range(30):  # each task's items in the order it added them
                mine = [x for x in texts if x.startswith(f"{t}.")]
                assert mine == [f"{t}.{i}" for i in range(5)]

    asyncio.run(main())


def test_clears_and_pops_are_events_and_the_state_is_positions(database_url: str) -> None:
    async def main() -> None:
        async with AsyncAgentStore(database_url, recent_events=0) as store:
            session = SnaptailSession("audit", store)
            await session.add_items([message(i) for i in range(1000)])
            await session.pop_item()
            await session.clear_session()
            await session.add_items([message(2000), message(2001)])
            assert await session.get_items() == [message(2000), message(2001)]
            audit = [item async for item in session.items_in_log()]
            assert len(audit) == 1002 and audit[999] == message(999)
            log = await store.get(session_agent_id("audit"))
            assert isinstance(log, ItemLog)
            state = log.items_state
            assert (state.start, state.end) == (999, 1001)
            assert log.state.window.items == [], "items are not held in the state"
            names = [type(e).__name__ async for e in store.history(log.id)]
            assert names == ["Created", "ItemsAdded", "ItemPopped", "Cleared", "ItemsAdded"]

    asyncio.run(main())


def test_get_items_with_a_limit_reads_only_the_newest_page(database_url: str) -> None:
    """With the recent cache off, get_items(limit=20) reads one reverse page of 20
    events; with it on, none."""

    async def main() -> None:
        for recent, pages_expected in ((0, [20]), (100, [])):
            async with AsyncAgentStore(database_url, recent_events=recent) as store:
                session = SnaptailSession(f"paged-{recent}", store)
                for i in range(300):
                    await session.add_items([message(i)])
                pages = count_pages(store)
                fresh = SnaptailSession(f"paged-{recent}", store)
                assert await fresh.get_items(20) == [message(i) for i in range(280, 300)]
                assert pages == pages_expected

    asyncio.run(main())


def test_a_reverse_read_sizes_its_page_by_the_items_per_event(database_url: str) -> None:
    """Events of 100 items: the newest 5 items take one event, so one is read."""

    async def main() -> None:
        async with AsyncAgentStore(database_url, recent_events=0) as store:
            session = SnaptailSession("batches", store)
            for start in range(0, 1000, 100):
                await session.add_items([message(i) for i in range(start, start + 100)])
            pages = count_pages(store)
            fresh = SnaptailSession("batches", store)
            assert await fresh.get_items(5) == [message(i) for i in range(995, 1000)]
            assert await fresh.get_items(150) == [message(i) for i in range(850, 1000)]
            assert pages == [1, 2]

    asyncio.run(main())


def count_pages(store: AsyncAgentStore) -> list[int]:
    """The sizes of the log pages the store reads from now on."""
    recorder: Any = store._recorder
    pages: list[int] = []
    inner = recorder.select_page

    async def spy(*args: Any, **kwargs: Any) -> Any:
        page = await inner(*args, **kwargs)
        pages.append(len(page))
        return page

    recorder.select_page = spy
    return pages


class StubCompactClient:
    """Stands in for AsyncOpenAI's ``responses.compact`` (no network)."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []
        self.responses = SimpleNamespace(compact=self.compact)

    async def compact(self, **kwargs: Any) -> Any:
        self.inputs.append(kwargs.get("input"))
        summary = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": f"summary of {len(kwargs['input'])}"}],
        }
        return SimpleNamespace(output=[summary], usage=None)


def test_responses_compaction_session_works_on_top(database_url: str) -> None:
    async def main() -> None:
        async with AsyncAgentStore(database_url) as store:
            inner = SnaptailSession("compacted", store)
            client = StubCompactClient()
            session = OpenAIResponsesCompactionSession(
                "compacted",
                inner,
                client=cast(Any, client),
                compaction_mode="input",
            )
            for i in range(12):
                await session.add_items([message(i), message(i, "assistant")])
            await session.run_compaction({"force": True, "compaction_mode": "input"})
            assert len(client.inputs) == 1 and len(client.inputs[0]) == 24
            items = await session.get_items()
            assert len(items) == 1 and "summary of 24" in json.dumps(items)
            audit = [item async for item in inner.items_in_log()]
            assert len(audit) == 25, "the compacted transcript stays in the log"

    asyncio.run(main())


def test_runner_200_turns_resumed_in_a_fresh_process(tmp_path: Path, database_url: str) -> None:
    """Runner.run with a scripted model: 100 turns in one process, 100 in another."""

    def run(first: int, turns: int) -> list[str]:
        out = subprocess.run(
            [sys.executable, "examples/openai_agent.py", "--url", database_url,
             "--session", "resumed", "--first", str(first), "--turns", str(turns)],
            cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        return out.stdout.splitlines()

    replies = run(1, 100) + run(101, 100)
    expected = [f"heard 'message {t}' (saw {2 * t - 1} items)" for t in range(1, 201)]
    assert [r.split(": ", 1)[1] for r in replies] == expected

    async def stored() -> list[Any]:
        async with AsyncAgentStore(database_url) as store:
            return await SnaptailSession("resumed", store).get_items()

    items = asyncio.run(stored())
    assert len(items) == 400
    assert items[-2] == {"role": "user", "content": "message 200"}
