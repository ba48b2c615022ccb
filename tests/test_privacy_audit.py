"""An auditor's look after ``forget``: where else could a subject's words stay? The
dead letters of a projection (the error message of a projection that raised on a
subject's event), the log at DEBUG, exception messages, the erasure record."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from eventsourcing.persistence import Notification

from snaptail import Agent, AgentForgotten, AgentStore
from snaptail.projections import Projection, ProjectionWorker, ViewCursor, decode
from snaptail.projections.view import read_dead_letters

MASTER = os.urandom(32)


class _Item(msgspec.Struct):
    text: str = ""


class _Input(msgspec.Struct):
    item: _Item = msgspec.field(default_factory=_Item)


class Picky(Projection):
    """Raises on every input, with the input's text in its message (as user code does)."""

    name = "Picky"

    def process(self, view: ViewCursor, batch: Sequence[Notification]) -> None:
        for n in batch:
            if n.topic.endswith(".InputItemAdded"):
                raise ValueError(f"cannot file {decode(n.state, _Input).item.text!r}")


def test_forget_leaves_no_plaintext_in_dead_letters_logs_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    db, keys = f"sqlite:///{tmp_path}/events.db", f"sqlite:///{tmp_path}/keys.db"
    view = tmp_path / "view.db"
    with AgentStore(db, keys=keys, master_key=MASTER, snapshot_every=2) as store:
        agent, other = Agent("CAROL-NAME"), Agent("dave")
        store.add_subject(agent, "carol@example.com")
        store.add_subject(other, "dave@example.com")
        agent.add_input("user", "CAROL-SECRET", author="CAROL-AUTHOR")
        other.add_input("user", "DAVE-WORDS")
        store.save(agent, other)
        store.snapshot(agent.id)
        with ProjectionWorker(
            Picky, db, f"sqlite:///{view}", skip_failed=True, keys=store.keys
        ) as worker:
            worker.catch_up()
            letters = {d.agent_id: d.error for d in read_dead_letters(f"sqlite:///{view}")}
            assert "CAROL-SECRET" in letters[str(agent.id)]  # what the auditor looks for
            erasure = store.forget("carol@example.com")
            assert erasure is not None
            worker.catch_up()
            letters = {d.agent_id: d.error for d in read_dead_letters(f"sqlite:///{view}")}
            assert "CAROL" not in letters[str(agent.id)] and erasure.id in letters[str(agent.id)]
            assert "DAVE-WORDS" in letters[str(other.id)]  # another subject's: kept
            view_bytes = b"".join(
                p.read_bytes() for p in (view, Path(f"{view}-wal")) if p.exists()
            )
            assert b"CAROL" not in view_bytes and b"DAVE-WORDS" in view_bytes
        errors: list[str] = []
        for read in (lambda: store.get(agent.id), lambda: store.save(agent)):
            with pytest.raises(AgentForgotten) as caught:
                agent.add_input("user", "CAROL-AFTER")
                read()
            errors.append(str(caught.value))
        erasure_text = repr(erasure) + repr(store.erasures())
    # The log at DEBUG (every snaptail logger) names ids and counts, never the words;
    # the worker's skip warnings quoted the projection's message before the erasure,
    # which is the application's text: only what snaptail logs by itself is checked.
    snaptail_lines = [
        r.getMessage() for r in caplog.records
        if r.name.startswith("snaptail") and "dead letter" not in r.getMessage()
    ]  # fmt: skip
    assert snaptail_lines  # something was logged
    for text in (*snaptail_lines, *errors, erasure_text):
        for needle in ("CAROL", "carol@example.com"):
            assert needle not in text, text


def test_forget_evicts_loaded_adk_sessions_and_openai_sessions_of_this_process(
    tmp_path: Path,
) -> None:
    """A service or session object that loaded the subject's data before ``forget``
    answers from the store afterwards, not from what it had loaded."""
    import asyncio

    pytest.importorskip("google.adk")
    from google.adk.errors.session_not_found_error import SessionNotFoundError
    from google.adk.events.event import Event
    from google.adk.events.event_actions import EventActions

    from snaptail import AsyncAgentStore
    from snaptail.integrations.adk import SnaptailSessionService
    from snaptail.integrations.openai_agents import SnaptailSession

    db, keys = f"sqlite:///{tmp_path}/events.db", f"sqlite:///{tmp_path}/keys.db"

    async def scenario() -> None:
        async with AsyncAgentStore(db, keys=keys, master_key=MASTER) as store:
            service = SnaptailSessionService(store, subjects=lambda app, user: ["erin"])
            where: dict[str, Any] = {"app_name": "app", "user_id": "u-9", "session_id": "s"}
            session = await service.create_session(**where, state={"k": "ERIN-STATE"})
            event = Event(author="user", actions=EventActions(state_delta={"user:x": "ERIN"}))
            await service.append_event(session, event)
            openai = SnaptailSession("erin-chat", store, subjects=["erin"])
            await openai.add_items([{"role": "user", "content": "ERIN-WORDS"}])
            assert await openai.get_items() and await service.get_session(**where)
            assert await store.forget("erin") is not None
            assert await service.get_session(**where) is None
            assert await service.get_user_state(app_name="app", user_id="u-9") == {}
            assert (await service.list_sessions(app_name="app", user_id="u-9")).sessions == []
            assert await openai.get_items() == []
            with pytest.raises(AgentForgotten):
                await openai.add_items([{"role": "user", "content": "ERIN-AFTER"}])
            with pytest.raises(SessionNotFoundError):  # (ADK's error for a gone session)
                await service.append_event(session, Event(author="user"))
            with pytest.raises(AgentForgotten):
                await service.create_session(**where)

    asyncio.run(scenario())
