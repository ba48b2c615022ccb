"""Issue 24 items 4 and 5: the SDK's ``OpenAIResponsesCompactionSession`` compacts a
``SnaptailSession`` as it compacts ``SQLiteSession`` (the same decisions, turn by turn,
with older history before the latest exchange), the full transcript stays in the log,
and replacements go through the public ``add_items``/``clear_session``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

pytest.importorskip("agents")

from agents import Agent, Runner, SQLiteSession
from agents.memory import OpenAIResponsesCompactionSession
from agents.testing import ScriptedModel
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

from snaptail.integrations.openai_agents import SnaptailSession


def reply(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg_{text}",
        type="message",
        role="assistant",
        content=[ResponseOutputText(text=text, type="output_text", annotations=[])],
        status="completed",
    )


class Compactor:
    """Stands in for ``AsyncOpenAI().responses.compact``: one summary per call."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []
        self.responses = SimpleNamespace(compact=self.compact)

    async def compact(self, **kwargs: Any) -> Any:
        self.inputs.append(kwargs.get("input"))
        text = f"summary {len(self.inputs)} of {len(kwargs.get('input') or [])}"
        summary = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        return SimpleNamespace(output=[summary], usage=None)


async def conversation(inner: Any, turns: int) -> tuple[list[Any], list[Any], list[int]]:
    """Older history, then ``turns`` runs: the compaction calls' inputs, the final items
    and the number of calls after each turn."""
    client = Compactor()
    session = OpenAIResponsesCompactionSession("c", inner, client=cast(Any, client))
    await inner.add_items(
        [{"role": "assistant" if i % 2 else "user", "content": f"older {i}"} for i in range(30)]
    )
    agent = Agent(
        name="worker",
        model=ScriptedModel(steps=[[reply(f"r{t}"), reply(f"s{t}")] for t in range(turns)]),
    )
    calls: list[int] = []
    for turn in range(turns):
        await Runner.run(agent, f"turn {turn}", session=session)
        calls.append(len(client.inputs))
    return client.inputs, await inner.get_items(), calls


@pytest.mark.parametrize("limit", [None, 20], ids=["no-limit", "limit-20"])
def test_same_compaction_decisions_as_sqlite_session(
    tmp_path: Path, database_url: str, limit: int | None
) -> None:
    """With a session limit (the SDK's own tests use 20) compaction reads a bounded
    snapshot and replaces only the latest exchange: on ce2b2f3 snaptail never compacted."""
    settings = {"limit": limit}

    async def main() -> None:
        theirs = await conversation(
            SQLiteSession("c", tmp_path / "sdk.db", session_settings=settings), 12
        )
        ours_session = SnaptailSession("c", database_url, session_settings=settings)
        ours = await conversation(ours_session, 12)
        assert theirs[2][-1] > 0, "the scenario makes SQLiteSession compact"
        assert ours[2] == theirs[2], "compactions after each turn"
        assert ours[0] == theirs[0], "what each compaction was given"
        assert ours[1] == theirs[1], "the history after compaction"
        audit = [item async for item in ours_session.items_in_log()]
        assert audit[:30] == [
            {"role": "assistant" if i % 2 else "user", "content": f"older {i}"} for i in range(30)
        ], "the full transcript stays in the log"
        assert len(audit) > len(ours[1])
        await ours_session.close()

    asyncio.run(main())


class Refusing(SnaptailSession):
    """A subclass whose ``add_items`` refuses items it is not allowed to store, as the
    SDK's tests inject failures (and as a filtering or encrypting subclass would)."""

    seen: list[Any]

    async def add_items(self, items: list[Any]) -> None:
        self.seen = [*getattr(self, "seen", []), *items]
        if any("secret" in str(item) for item in items):
            raise ValueError("refused")
        await super().add_items(items)


def test_replacements_go_through_the_public_methods(database_url: str) -> None:
    async def main() -> None:
        session = Refusing("r", database_url)
        await session.add_items([{"role": "user", "content": "keep me"}])
        with pytest.raises(ValueError, match="refused"):
            await session.replace_items([{"role": "user", "content": "secret summary"}])
        assert await session.get_items() == [{"role": "user", "content": "keep me"}], (
            "a refused replacement stores nothing (the clear is not saved either)"
        )
        assert await session._atomic_replace_items([{"role": "user", "content": "fine"}])
        assert await session.get_items() == [{"role": "user", "content": "fine"}]
        assert session.seen[-1] == {"role": "user", "content": "fine"}, "the override saw it"
        await session.close()

    asyncio.run(main())
