"""End to end, on SQLite and PostgreSQL: agents of a subject (one shared with another
subject), snapshots, a cache, two projections (one keeping personal data), a copy of
the event database taken before; then ``forget``. Afterwards no plaintext is in any
file, every read path gives the redacted form, the other subjects are intact and the
erasure record exists."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import msgspec
import psycopg
import pytest
from eventsourcing.persistence import Notification
from google.adk.events.event import Event as AdkEvent
from google.adk.events.event_actions import EventActions
from google.genai import types
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig

from snaptail import Agent, AgentCache, AgentForgotten, AgentStore, AsyncAgentStore
from snaptail.application.inspection import inspect_agent
from snaptail.application.maintenance import verify_agent
from snaptail.bench.langgraph import chat_graph, thread_config
from snaptail.infrastructure.urls import parse_postgres_url, sqlite_path
from snaptail.integrations.adk import SnaptailSessionService
from snaptail.integrations.adk_model import directory_uuid, session_uuid, user_uuid
from snaptail.integrations.langgraph import SnaptailSaver
from snaptail.integrations.langgraph_thread import thread_uuid
from snaptail.integrations.openai_agents import SnaptailSession, session_agent_id
from snaptail.privacy import Erasure, RedactedEvent, is_sealed
from snaptail.projections import AgentStats, Projection, ProjectionWorker, ViewCursor, decode
from snaptail.projections.agent_stats import read_agent_stats
from snaptail.projections.view import open_view

MASTER = os.urandom(32)


class _Item(msgspec.Struct):
    text: str = ""


class _Input(msgspec.Struct):
    item: _Item = msgspec.field(default_factory=_Item)


class Transcripts(Projection):
    """A read model that keeps personal data (message texts), and drops it on forget."""

    tables = (
        "CREATE TABLE IF NOT EXISTS test_transcripts (agent_id TEXT NOT NULL,"
        " version BIGINT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (agent_id, version))",
    )

    def process(self, view: ViewCursor, batch: Sequence[Notification]) -> None:
        for n in batch:
            if n.topic.endswith(".InputItemAdded"):
                text = decode(n.state, _Input).item.text
                if text:  # a forgotten agent's event comes with an empty payload
                    view.execute(
                        "INSERT INTO test_transcripts (agent_id, version, text) VALUES (?, ?, ?)",
                        (str(n.originator_id), n.originator_version, text),
                    )

    def forget(self, view: ViewCursor, erasure: Erasure) -> None:
        for agent_id in erasure.agent_ids:
            view.execute("DELETE FROM test_transcripts WHERE agent_id = ?", (agent_id,))


def transcripts(view_url: str) -> dict[str, int]:
    view = open_view(view_url)
    try:
        with view.reading() as cur:
            cur.execute("SELECT agent_id, count(*) FROM test_transcripts GROUP BY agent_id")
            return {row[0]: row[1] for row in cur.fetchall()}
    finally:
        view.close()


@dataclass
class World:
    db: str
    keys: str
    view: str
    files: list[Path]  # the event database's files (SQLite), the view's, the key store's


def talk(agent: Agent, secret: str, turns: int) -> None:
    agent.set_system_prompt(f"prompt {secret}-PROMPT")
    for i in range(turns):
        agent.add_input("user", f"{secret}-MESSAGE-{i}", author=f"{secret}-AUTHOR")
        agent.add_output("assistant_message", f"reply {secret}-REPLY-{i}")


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    if database_url.startswith("postgresql"):
        yield World(database_url, database_url, database_url, [])
        return
    path = sqlite_path(database_url)
    assert path is not None
    view = tmp_path / "view.db"
    keys = tmp_path / "keys.db"
    yield World(
        database_url, f"sqlite:///{keys}", f"sqlite:///{view}",
        [Path(path), Path(path + "-wal"), view, Path(f"{view}-wal"), keys],
    )  # fmt: skip


def file_bytes(files: Sequence[Path]) -> bytes:
    return b"".join(f.read_bytes() for f in files if f.exists())


def postgres_table_bytes(url: str, tables: Sequence[str]) -> bytes:
    """The on-disk bytes of ``tables`` (after a CHECKPOINT), read by the server."""
    schema = parse_postgres_url(url).schema
    base = url.partition("?")[0]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        data = b""
        for table in tables:
            row = conn.execute(
                "SELECT pg_relation_filepath(%s::regclass)", (f"{schema}.{table}",)
            ).fetchone()
            assert row is not None and row[0]
            found = conn.execute("SELECT pg_read_binary_file(%s)", (row[0],)).fetchone()
            assert found is not None
            data += bytes(found[0])
        return data


def test_forget_erases_a_subject_everywhere(world: World, tmp_path: Path) -> None:
    store = AgentStore(world.db, snapshot_every=5, keys=world.keys, master_key=MASTER)
    cache = AgentCache(store, "64MiB")
    alice = [Agent("ALICE0-NAME chat"), Agent("alice and bob")]  # a name may be personal
    bob, plain = Agent("bob chat"), Agent("no subject")
    store.add_subject(alice[0], "alice@example.com")
    store.add_subject(alice[1], "alice@example.com", "bob@example.com")
    store.add_subject(bob, "bob@example.com")
    talk(alice[0], "ALICE0", 6)
    talk(alice[1], "ALICE1", 4)
    talk(bob, "BOBONLY", 3)
    talk(plain, "PLAINTEXT", 2)
    store.save(*alice, bob, plain)
    for agent in (*alice, bob, plain):
        store.snapshot(agent.id)
        cache.get(agent.id)
    # A LangGraph thread and an OpenAI Agents session of alice's.
    saver = SnaptailSaver(
        store, subjects=lambda thread: [f"{thread.partition('-')[0]}@example.com"]
    )
    graph = chat_graph(saver, 100)
    graph.invoke(
        {"messages": [HumanMessage("ALICE0-LANGGRAPH hello")]}, thread_config("alice-thread")
    )
    assert saver.get_tuple(cast(RunnableConfig, thread_config("alice-thread"))) is not None
    assert asyncio.run(_session(world, "write")) == ["ALICE0-OPENAI hello"]
    assert asyncio.run(_adk(world, "write")) == ["ALICE0-ADK hello"]
    # (The workers share the store's recorder and key store: fewer connections.)
    shared: dict[str, Any] = {"store": store, "keys": store.keys}
    stats = ProjectionWorker(AgentStats, world.db, world.view, **shared)
    trans = ProjectionWorker(Transcripts, world.db, world.view, **shared)
    assert stats.catch_up() == trans.catch_up() > 0
    before_stats = {r.agent_id: r.events for r in read_agent_stats(stats.view, top=None)}
    assert transcripts(world.view)[str(alice[0].id)] == 6  # decrypted for the projection
    # Sealed in the store: payloads and snapshots of subjects' agents, not of the other.
    for agent in (*alice, bob):
        assert all(is_sealed(e.state) for e in store.recorder.select_page(agent.id))
        snapshot = store.recorder.select_for_load(agent.id, recent=0).snapshot
        assert snapshot is not None and is_sealed(snapshot.state)
    assert not any(is_sealed(e.state) for e in store.recorder.select_page(plain.id))
    # A copy of the event database, taken before the erasure.
    backup_url = world.db
    if world.files:
        backup = tmp_path / "backup"
        backup.mkdir()
        for f in world.files[:2]:
            if f.exists():
                shutil.copy(f, backup / f.name)
        backup_url = f"sqlite:///{backup / world.files[0].name}"
    events_before = sum(a.version for a in alice)

    erasure = store.forget("alice@example.com")

    assert erasure is not None
    session_id = session_agent_id("alice-session")
    adk_ids = (
        session_uuid("app", ADK_USER, "alice-adk"),
        user_uuid("app", ADK_USER),
        directory_uuid("app", ADK_USER),
    )
    assert sorted(erasure.agent_ids) == sorted(
        str(a)
        for a in (alice[0].id, alice[1].id, thread_uuid("alice-thread"), session_id, *adk_ids)
    )
    assert erasure.events >= events_before + 2
    assert store.erasures() == [erasure]
    assert "alice" not in repr(erasure)  # a pseudonym, no personal data
    assert store.forget("alice@example.com") is None  # nothing left to forget
    # Every read path of a forgotten agent: the redacted form, never a crash.
    for agent in alice:
        assert agent.id not in cache
        with pytest.raises(AgentForgotten) as caught:
            store.get(agent.id)
        assert caught.value.erasure_id == erasure.id
        with pytest.raises(AgentForgotten):
            cache.get(agent.id)
        with pytest.raises(AgentForgotten):
            store.get(agent.id, version=3)
        with pytest.raises(AgentForgotten):
            store.replay(agent.id)
        history = list(store.history(agent.id))
        assert len(history) == agent.version
        assert all(isinstance(e, RedactedEvent) for e in history)
        assert history[0].event_name == "Created" and history[0].erasure_id == erasure.id
        assert isinstance(store.latest(agent.id), RedactedEvent)
        inspection = inspect_agent(store, agent.id)
        assert "forgotten" in inspection.error
        assert inspection.last_events[0].type == f"{history[-1].event_name} (redacted)"
        assert verify_agent(store, agent.id).status == "forgotten"
        with pytest.raises(AgentForgotten):  # nothing new is written for it
            store.save(_touched(store, agent))
    # The integrations: the thread and the session read as gone; writing raises.
    config = cast(RunnableConfig, thread_config("alice-thread"))
    assert saver.get_tuple(config) is None and list(saver.list(config)) == []
    with pytest.raises(AgentForgotten):
        graph.invoke({"messages": [HumanMessage("ALICE0-AFTER")]}, config)
    assert asyncio.run(_session(world, "read")) == []
    with pytest.raises(AgentForgotten):
        asyncio.run(_session(world, "write"))
    assert asyncio.run(_adk(world, "read")) == []
    with pytest.raises(AgentForgotten):
        asyncio.run(_adk(world, "write"))
    # The other subjects' agents and the agent without subject: intact.
    for agent, secret in ((bob, "BOBONLY"), (plain, "PLAINTEXT")):
        loaded = store.get(agent.id)
        assert loaded.state.system_prompt == f"prompt {secret}-PROMPT"
        assert loaded.version == agent.version
    # The async store reads the same.
    assert asyncio.run(_async_reads(world, alice[0].id, bob.id)) == "ok"
    # Projections: the erasure reaches them; AgentStats keeps its counts, Transcripts
    # drops the rows; a view rebuilt from scratch sees empty payloads.
    assert stats.catch_up() == trans.catch_up() == 0
    rows = read_agent_stats(stats.view, top=None)
    after_stats = {r.agent_id: r.events for r in rows}
    assert after_stats == before_stats
    names = {r.agent_id: r.name for r in rows}  # a forgotten agent's name is dropped
    assert names[str(alice[0].id)] is None and names[str(bob.id)] == "bob chat"
    kept = transcripts(world.view)
    assert str(alice[0].id) not in kept and str(alice[1].id) not in kept
    assert kept[str(bob.id)] == 3
    if world.files:  # the view's file and WAL, while the workers still have it open
        view_bytes = file_bytes(world.files[2:4])
        assert b"BOBONLY-MESSAGE" in view_bytes and b"ALICE0-MESSAGE" not in view_bytes
    stats.close()
    trans.close()
    if world.files:  # (SQLite: a fresh view file)
        rebuilt_view = f"sqlite:///{tmp_path}/rebuilt.db"
        with ProjectionWorker(Transcripts, world.db, rebuilt_view, **shared) as rebuilt:
            rebuilt.catch_up()
        assert set(transcripts(rebuilt_view)) == {str(bob.id), str(plain.id)}
    # The copy taken before: read through the same key store, it is forgotten too.
    with AgentStore(backup_url, keys=world.keys, master_key=MASTER) as old:
        for agent in alice:
            with pytest.raises(AgentForgotten):
                old.get(agent.id)
        assert old.get(bob.id).state.system_prompt == "prompt BOBONLY-PROMPT"
    # No plaintext of the forgotten subject anywhere (nor of bob's), byte for byte.
    store.close()
    # (bob's messages are in the Transcripts view, as they should be: not searched there.)
    if world.files:
        events = file_bytes(world.files[:2]) + file_bytes(sorted((tmp_path / "backup").iterdir()))
        everything = events + file_bytes(world.files[2:])
    else:
        events = postgres_table_bytes(world.db, ["stored_events", "snaptail_snapshots"])
        everything = events
    assert b"PLAINTEXT-PROMPT" in events  # the search finds what is there
    for needle in (b"ALICE0-", b"ALICE1-", b"alice@example.com"):
        assert needle not in everything, needle
    for needle in (b"BOBONLY-", b"bob@example.com"):
        assert needle not in events, needle


def _touched(store: AgentStore, agent: Agent) -> Agent:
    """A forgotten agent object still in memory, given one more event."""
    agent.add_input("user", "ALICE0-AFTER")
    return agent


async def _session(world: World, what: str) -> list[Any]:
    """Write alice's OpenAI Agents session (``write``), or read it back."""
    async with AsyncAgentStore(world.db, keys=world.keys, master_key=MASTER) as store:
        session = SnaptailSession("alice-session", store, subjects=["alice@example.com"])
        if what == "write":
            await session.add_items([{"role": "user", "content": "ALICE0-OPENAI hello"}])
        return [item.get("content") for item in await session.get_items()]  # type: ignore[union-attr]


ADK_USER = "u-1"  # ADK's app scope lists user ids in clear: a pseudonym


async def _adk(world: World, what: str) -> list[Any]:
    """Write alice's ADK session (``write``: create it, append one event with session
    and user state), or read it back (its events; nothing if it is gone)."""
    async with AsyncAgentStore(world.db, keys=world.keys, master_key=MASTER) as store:
        service = SnaptailSessionService(store, subjects=lambda app, user: ["alice@example.com"])
        if what == "write":
            session = await service.create_session(
                app_name="app", user_id=ADK_USER, session_id="alice-adk",
                state={"topic": "ALICE0-ADKSTATE"},
            )  # fmt: skip
            event = AdkEvent(
                author="user",
                content=types.Content(role="user", parts=[types.Part(text="ALICE0-ADK hello")]),
                actions=EventActions(state_delta={"user:email": "ALICE0-USERSTATE"}),
            )
            await service.append_event(session, event)
        got = await service.get_session(app_name="app", user_id=ADK_USER, session_id="alice-adk")
        listed = await service.list_sessions(app_name="app", user_id=ADK_USER)
        user_state = await service.get_user_state(app_name="app", user_id=ADK_USER)
        if got is None:
            assert listed.sessions == [] and user_state == {}
            return []
        assert got.state["topic"] == "ALICE0-ADKSTATE" and user_state
        assert [s.id for s in listed.sessions] == ["alice-adk"]
        return [e.content.parts[0].text for e in got.events if e.content and e.content.parts]


async def _async_reads(world: World, forgotten: UUID, kept: UUID) -> str:
    async with AsyncAgentStore(world.db, keys=world.keys, master_key=MASTER) as store:
        try:
            await store.get(forgotten)
        except AgentForgotten:
            pass
        else:  # pragma: no cover
            return "loaded a forgotten agent"
        events: list[Any] = [e async for e in store.history(forgotten)]
        if not events or not all(isinstance(e, RedactedEvent) for e in events):
            return "history not redacted"
        if (await store.get(kept)).state.system_prompt != "prompt BOBONLY-PROMPT":
            return "other subject damaged"
        if len(await store.erasures()) != 1:
            return "no erasure record"
    return "ok"
