"""A save whose reply is lost: the save id decides, never a guess (issue 18, items 4-5).

PostgreSQL through a real TCP proxy (``tests.tcp_proxy``) that forwards the INSERT,
drops its reply and then blackholes the server; SQLite through a recorder whose
commit succeeds and then reports an I/O error. In every case the command is stored
exactly once, and a save that cannot be resolved raises ``SaveOutcomeUnknown``
within seconds instead of a plain failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from eventsourcing.persistence import OperationalError

from snaptail import Agent, AgentStore, AsyncAgentStore, SaveOutcomeUnknown
from snaptail.infrastructure.sqlite import SQLiteAgentRecorder
from tests.tcp_proxy import Proxy

# Client-side limits small enough for a test (the defaults are documented in the
# README): no reply within 1 s fails the call; a connection is opened within 1 s.
LIMITS = "read_timeout=1&connect_timeout=1&pool_timeout=2&pool_size=1&max_overflow=1"


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[Proxy]:
    port = urlsplit(postgres_url).port or 5432
    proxy = Proxy(port)
    yield proxy
    proxy.close()


def proxied(postgres_url: str, proxy: Proxy) -> str:
    parts = urlsplit(postgres_url)
    netloc = parts.netloc.replace(f":{parts.port}", f":{proxy.port}")
    return parts._replace(netloc=netloc).geturl() + "&" + LIMITS


def inputs(store: AgentStore, agent_id: Any) -> list[str]:
    return [e.item.text for e in store.history(agent_id) if type(e).__name__ == "InputItemAdded"]


# -- PostgreSQL through the proxy ---------------------------------------------------


def test_an_update_whose_reply_was_lost_is_stored_once(postgres_url: str, proxy: Proxy) -> None:
    with AgentStore(proxied(postgres_url, proxy)) as store:
        agent = Agent("lost reply")
        store.save(agent)
        proxy.drop_after(b"once", seconds=3)
        started = time.monotonic()
        updated = store.update(agent.id, lambda a: a.add_input("user", "once"))
        assert proxy.forwarded_marker.is_set(), "the proxy saw the INSERT"
        assert updated.version == 2 and not updated.pending_events
        assert time.monotonic() - started < 20
    with AgentStore(postgres_url) as direct:
        assert inputs(direct, agent.id) == ["once"], "applied exactly once"


def test_a_blackholed_save_is_an_unknown_outcome_within_seconds(
    postgres_url: str, proxy: Proxy
) -> None:
    with AgentStore(proxied(postgres_url, proxy)) as store:
        agent = Agent("blackholed")
        store.save(agent)
        agent.add_input("user", "maybe")
        proxy.drop_after(b"maybe", seconds=30)
        started = time.monotonic()
        with pytest.raises(SaveOutcomeUnknown) as raised:
            store.save(agent)
        elapsed = time.monotonic() - started
        assert elapsed < 15, f"a clear error within seconds, not after {elapsed:.1f} s"
        assert str(agent.id) in str(raised.value) and "save_committed" in str(raised.value)
        assert agent.pending_events, "the agent keeps its events until the outcome is known"
    with AgentStore(postgres_url) as direct:
        assert direct.save_committed(raised.value.save_id), "it had committed"
        assert inputs(direct, agent.id) == ["maybe"]
        assert not direct.save_committed(str(raised.value.save_id).replace("-", "")[::-1])


def test_an_async_update_whose_reply_was_lost_is_stored_at_most_once(
    postgres_url: str, proxy: Proxy
) -> None:
    """The async save's transaction is pipelined: its reply lost, its COMMIT is never
    sent. The update either succeeds (stored once) or fails with nothing stored;
    a SaveOutcomeUnknown is resolved by its save id."""

    async def main() -> tuple[Any, BaseException | None]:
        async with AsyncAgentStore(proxied(postgres_url, proxy)) as store:
            agent = Agent("lost async reply")
            await store.save(agent)
            proxy.drop_after(b"once", seconds=3)
            try:
                updated = await store.update(agent.id, lambda a: a.add_input("user", "once"))
            except (OperationalError, SaveOutcomeUnknown) as exc:
                return agent.id, exc
            assert updated.version == 2
            return agent.id, None

    agent_id, error = asyncio.run(main())
    assert proxy.forwarded_marker.is_set()
    with AgentStore(postgres_url) as direct:
        stored = inputs(direct, agent_id)
        if isinstance(error, SaveOutcomeUnknown):
            assert stored == (["once"] if direct.save_committed(error.save_id) else [])
        else:
            assert stored == ([] if error else ["once"]), error


def test_a_timed_out_async_update_that_committed_says_so(postgres_url: str, proxy: Proxy) -> None:
    """``wait_for(update(...), 0.5)`` while the reply is lost: either the update is
    reported done (it committed) or the caller is told it timed out and nothing was
    stored. Never a timeout for a committed update (a retry would double it)."""

    async def main() -> tuple[Any, BaseException | None]:
        async with AsyncAgentStore(proxied(postgres_url, proxy)) as store:
            agent = Agent("timed out")
            await store.save(agent)
            proxy.drop_after(b"once", seconds=3)
            try:
                await asyncio.wait_for(
                    store.update(agent.id, lambda a: a.add_input("user", "once")), 0.5
                )
            except (TimeoutError, SaveOutcomeUnknown) as exc:
                return agent.id, exc
            return agent.id, None

    agent_id, error = asyncio.run(main())
    with AgentStore(postgres_url) as direct:
        stored = inputs(direct, agent_id)
    assert proxy.forwarded_marker.is_set()
    if isinstance(error, TimeoutError):
        assert stored == [], "a timeout is only reported for an update that did not commit"
    else:
        assert stored == ["once"], error


def test_the_postgres_limits_have_documented_defaults() -> None:
    from snaptail.infrastructure.urls import TCP_DEFAULTS, parse_postgres_url

    options = parse_postgres_url("postgresql://u@h/d")
    assert (options.read_timeout, options.statement_timeout) == (15.0, 10)
    assert options.idle_in_transaction_timeout == 60
    args = options.connect_args()
    assert {k: args[k] for k in TCP_DEFAULTS} == TCP_DEFAULTS
    mine = parse_postgres_url("postgresql://u@h/d?keepalives_idle=30&read_timeout=2.5")
    assert mine.connect_args()["keepalives_idle"] == "30" and mine.read_timeout == 2.5
    with pytest.raises(ValueError, match="read_timeout"):
        parse_postgres_url("postgresql://u@h/d?read_timeout=soon")


# -- SQLite: a commit that reports an error after it committed ------------------------


@pytest.fixture
def lost_commit(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The next insert commits, then raises ``OperationalError`` (as a late I/O error
    would); ``state['unreachable']`` more save-id checks fail before one answers."""
    state = {"armed": 0, "unreachable": 0, "inserts": 0}
    insert, committed = SQLiteAgentRecorder.insert_events, SQLiteAgentRecorder.save_committed

    def insert_events(self: SQLiteAgentRecorder, *args: Any, **kwargs: Any) -> Any:
        state["inserts"] += 1
        result = insert(self, *args, **kwargs)
        if state["armed"]:
            state["armed"] -= 1
            raise OperationalError("disk I/O error (after the commit)")
        return result

    def save_committed(self: SQLiteAgentRecorder, save_id: Any) -> bool:
        if state["unreachable"]:
            state["unreachable"] -= 1
            raise OperationalError("unable to open database file")
        return committed(self, save_id)

    monkeypatch.setattr(SQLiteAgentRecorder, "insert_events", insert_events)
    monkeypatch.setattr(SQLiteAgentRecorder, "save_committed", save_committed)
    return state


def test_sqlite_a_save_whose_commit_reported_an_error_is_not_doubled(
    sqlite_url: str, lost_commit: dict[str, int]
) -> None:
    with AgentStore(sqlite_url) as store:
        agent = Agent("late error")
        store.save(agent)
        agent.add_input("user", "once")
        lost_commit["armed"] = 1
        store.save(agent)  # the retry meets its own rows: done, not a conflict
        assert not agent.pending_events
        assert inputs(store, agent.id) == ["once"]
        lost_commit["armed"] = 1
        updated = store.update(agent.id, lambda a: a.add_input("user", "twice?"))
        assert inputs(store, agent.id) == ["once", "twice?"]
        assert updated.version == 3


def test_sqlite_an_unresolvable_save_is_an_unknown_outcome_and_update_resolves_it(
    sqlite_url: str, lost_commit: dict[str, int]
) -> None:
    with AgentStore(sqlite_url) as store:
        agent = Agent("unknown")
        store.save(agent)
        agent.add_input("user", "maybe")
        lost_commit["armed"] = store.retry.attempts
        lost_commit["unreachable"] = 100
        with pytest.raises(SaveOutcomeUnknown) as raised:
            store.save(agent)
        lost_commit["unreachable"] = 0
        assert store.save_committed(raised.value.save_id)
        assert inputs(store, agent.id) == ["maybe"]
        # update(): its save's outcome unknown, resolved by the save id once the
        # database answers: the command is not applied again.
        lost_commit["armed"] = store.retry.attempts
        lost_commit["unreachable"] = 2  # the save's own check, then the first of update's
        calls = []

        def command(a: Agent) -> None:
            calls.append(a.version)
            a.add_input("user", "update")

        updated = store.update(agent.id, command)
        assert calls == [2], "applied once"
        assert inputs(store, agent.id) == ["maybe", "update"]
        assert updated.version == 3 and not updated.pending_events


def test_an_integration_resolves_an_unknown_outcome_before_writing_again(
    sqlite_url: str, lost_commit: dict[str, int]
) -> None:
    """The OpenAI session's write: its save's outcome unknown, the save id is checked
    once the database answers, and the items are not added twice."""
    from snaptail.integrations.openai_agents import SnaptailSession

    async def main() -> list[Any]:
        async with AsyncAgentStore(sqlite_url) as store:
            session = SnaptailSession("s", store)
            await session.add_items([{"role": "user", "content": "first"}])
            lost_commit["armed"] = store.retry.attempts
            lost_commit["unreachable"] = 1  # the save's own check fails; the session's answers
            await session.add_items([{"role": "user", "content": "once"}])
            return await SnaptailSession("s", store).get_items()

    items = asyncio.run(main())
    assert [i["content"] for i in items] == ["first", "once"]


def test_the_adk_service_resolves_an_unknown_outcome_before_writing_again(
    sqlite_url: str, lost_commit: dict[str, int]
) -> None:
    """An ADK append whose save's outcome is unknown: the save id is checked once the
    database answers (the store's retry policy), and the event is stored once."""
    from google.adk.events.event import Event
    from google.genai import types

    from snaptail.integrations.adk import SnaptailSessionService

    def event(text: str, ts: float) -> Event:
        content = types.Content(role="user", parts=[types.Part(text=text)])
        return Event(author="user", invocation_id=text, content=content, timestamp=ts)

    async def main() -> list[str]:
        async with AsyncAgentStore(sqlite_url) as store:
            service = SnaptailSessionService(store)
            session = await service.create_session(app_name="a", user_id="u", session_id="s")
            await service.append_event(session, event("first", session.last_update_time + 1))
            lost_commit["armed"] = store.retry.attempts
            lost_commit["unreachable"] = 1  # the save's own check fails; the service's answers
            await service.append_event(session, event("once", session.last_update_time + 1))
            assert lost_commit["unreachable"] == 0, "the save's outcome was unknown"
            lost_commit["armed"] = 0
            assert [e.invocation_id for e in session.events] == ["first", "once"]
            await service.append_event(session, event("next", session.last_update_time + 1))
            got = await SnaptailSessionService(store).get_session(
                app_name="a", user_id="u", session_id="s"
            )
            assert got is not None
            return [e.invocation_id for e in got.events]

    assert asyncio.run(main()) == ["first", "once", "next"]
