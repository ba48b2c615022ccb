"""``SnaptailSessionService`` (Google ADK) against ADK's ``InMemorySessionService`` as the
reference, on SQLite and PostgreSQL: random scripts, concurrency, bounded reads, a
Runner with a scripted model stopped and resumed in a fresh process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("google.adk")

from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions, EventCompaction
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.sessions.in_memory_session_service import InMemorySessionService
from google.adk.sessions.session import Session
from google.genai import types

from snaptail import Agent, AgentStore, AsyncAgentStore, EveryNEvents, SnapshotPolicy
from snaptail.integrations.adk import SnaptailSessionService
from snaptail.integrations.adk_model import AdkDirectory, session_uuid

ROOT = Path(__file__).resolve().parents[2]
APP = "app"


def view(session: Session | None) -> Any:
    """What must match the reference: everything but the creation clock."""
    if session is None:
        return None
    data = session.model_dump(mode="json", exclude={"last_update_time"})
    if session.events:
        data["last_update_time"] = session.last_update_time
    return data


def listing(sessions: list[Session]) -> Any:
    return sorted((s.user_id, s.id, json.dumps(s.state, sort_keys=True)) for s in sessions)


def text_event(n: int, ts: float, delta: dict[str, Any] | None = None, **kw: Any) -> Event:
    return Event(
        invocation_id=f"inv{n}",
        author="user" if n % 2 else "agent",
        content=types.Content(role="user", parts=[types.Part(text=f"m{n}")]),
        timestamp=ts,
        actions=EventActions(state_delta=delta or {}),
        **kw,
    )


async def run_script(seed: int, url: str, steps: int = 120) -> None:
    rng = random.Random(seed)
    ours = SnaptailSessionService(url)
    ref = InMemorySessionService()
    users = ["u1", "u2", "u3"]
    ids = ["s1", "s2", "s3", "s4"]
    held: dict[tuple[str, str], tuple[Session, Session]] = {}
    clock = 1_000.0
    try:
        for step in range(steps):
            op = rng.choice(
                ["create", "append", "append", "append", "get", "list", "delete", "user"]
            )
            user, sid = rng.choice(users), rng.choice(ids)
            where = f"seed {seed} step {step} {op} {user}/{sid}"
            if op == "create":
                state = {"k": rng.randint(0, 9), "app:a": step, "user:u": step, "temp:t": 1}
                results: list[Session | None] = []
                for service in (ours, ref):
                    try:
                        results.append(
                            await service.create_session(
                                app_name=APP, user_id=user, session_id=sid, state=dict(state)
                            )
                        )
                    except AlreadyExistsError:
                        results.append(None)
                assert (results[0] is None) == (results[1] is None), where
                if results[0] is not None and results[1] is not None:
                    assert results[0].state == results[1].state, where
                    held[(user, sid)] = (results[0], results[1])
            elif op == "append" and (user, sid) in held:
                clock += rng.choice([0.5, 1.0, 2.0])
                delta = {
                    rng.choice(["k", "x", "app:a", "user:u", "temp:t"]): step,
                    rng.choice(["y", "app:b", "user:v"]): [step, {"n": step}],
                }
                partial = rng.random() < 0.1
                mine, theirs = held[(user, sid)]
                for service, session in ((ours, mine), (ref, theirs)):
                    event = text_event(step, clock, dict(delta), partial=partial)
                    event.id = f"e{step}"
                    try:
                        await service.append_event(session, event)
                    except Exception as exc:  # a deleted session
                        assert type(exc).__name__ == "SessionNotFoundError", (where, exc)
            elif op == "get":
                config = rng.choice(
                    [
                        None,
                        GetSessionConfig(num_recent_events=rng.randint(0, 6)),
                        GetSessionConfig(after_timestamp=clock - rng.choice([0, 1, 3, 10])),
                        GetSessionConfig(num_recent_events=3, after_timestamp=clock - 2),
                    ]
                )
                got = [
                    await s.get_session(app_name=APP, user_id=user, session_id=sid, config=config)
                    for s in (ours, ref)
                ]
                assert view(got[0]) == view(got[1]), where
                if got[0] is not None and got[1] is not None and config is None:
                    held[(user, sid)] = (got[0], got[1])
            elif op == "list":
                who = rng.choice([None, user])
                got_lists = [await s.list_sessions(app_name=APP, user_id=who) for s in (ours, ref)]
                assert listing(got_lists[0].sessions) == listing(got_lists[1].sessions), where
                assert all(not s.events for s in got_lists[0].sessions)
            elif op == "delete":
                for s in (ours, ref):
                    await s.delete_session(app_name=APP, user_id=user, session_id=sid)
                held.pop((user, sid), None)
            elif op == "user":
                states = [await s.get_user_state(app_name=APP, user_id=user) for s in (ours, ref)]
                assert states[0] == states[1], where
        for user in users:
            for sid in ids:
                got = [
                    await s.get_session(app_name=APP, user_id=user, session_id=sid)
                    for s in (ours, ref)
                ]
                assert view(got[0]) == view(got[1]), (seed, user, sid)
        # A fresh service (nothing cached) reads the same.
        async with SnaptailSessionService(url) as fresh:
            for user in users:
                for sid in ids:
                    got = [
                        await s.get_session(app_name=APP, user_id=user, session_id=sid)
                        for s in (fresh, ref)
                    ]
                    assert view(got[0]) == view(got[1]), (seed, user, sid, "fresh")
    finally:
        await ours.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_scripts_match_in_memory(database_url: str, seed: int) -> None:
    asyncio.run(run_script(seed, database_url))


async def _concurrent(url: str) -> None:
    async with SnaptailSessionService(url) as service:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        base = session.last_update_time

        # 20 tasks appending through one session object (as ADK's parallel branches).
        await asyncio.gather(
            *(
                service.append_event(session, text_event(i, base + i + 1, {f"k{i}": i}))
                for i in range(20)
            )
        )
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None
        assert sorted(e.invocation_id for e in got.events) == sorted(f"inv{i}" for i in range(20))
        assert len({e.id for e in got.events}) == 20
        assert all(got.state[f"k{i}"] == i for i in range(20))

        # 20 tasks, each with its own copy of the same version: one wins, the rest
        # are refused with ADK's StaleSessionError and then reload and retry.
        copies = [got.model_copy(deep=True) for _ in range(20)]
        for c in copies:
            c._storage_update_marker = got._storage_update_marker

        async def writer(i: int, copy: Session, other: SnaptailSessionService) -> int:
            refused = 0
            while True:
                try:
                    await other.append_event(copy, text_event(100 + i, base + 100 + i, {"last": i}))
                    return refused
                except StaleSessionError:
                    refused += 1
                    fresh = await other.get_session(app_name=APP, user_id="u", session_id="s")
                    assert fresh is not None
                    copy = fresh

        # Half the writers go through a second service on its own store (another
        # process's view of the same database).
        async with AsyncAgentStore(url) as own, SnaptailSessionService(own) as second:
            refusals = await asyncio.gather(
                *(writer(i, copies[i], service if i % 2 else second) for i in range(20))
            )
        assert sum(refusals) >= 19  # all but the first writer were refused at least once
        final = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert final is not None
        ids = [e.invocation_id for e in final.events]
        assert len(ids) == 40 and len(set(ids)) == 40
        assert sorted(ids[20:]) == sorted(f"inv{100 + i}" for i in range(20))
        assert final.state["last"] == int(final.events[-1].invocation_id[3:]) - 100


def test_twenty_concurrent_appends_lose_and_duplicate_nothing(database_url: str) -> None:
    asyncio.run(_concurrent(database_url))


async def _bounded(url: str) -> None:
    async with SnaptailSessionService(url) as service:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        for i in range(300):
            await service.append_event(session, text_event(i, 10.0 + i, {"n": i}))
        await service.store.snapshot(next(iter(service._held.agents)))
    # A fresh service: its loads start from the store, not from a cache.
    async with SnaptailSessionService(url) as fresh:
        read: list[int] = []
        history = fresh.store.history

        def counting(*args: Any, **kwargs: Any) -> Any:
            async def events() -> Any:
                async for e in history(*args, **kwargs):
                    read.append(e.originator_version)
                    yield e

            return events()

        fresh.store.history = counting  # type: ignore[method-assign]
        got = await fresh.get_session(
            app_name=APP, user_id="u", session_id="s", config=GetSessionConfig(num_recent_events=5)
        )
        assert got is not None and [e.invocation_id for e in got.events] == [
            f"inv{i}" for i in range(295, 300)
        ]
        assert len(read) <= 5
        read.clear()
        got = await fresh.get_session(
            app_name=APP,
            user_id="u",
            session_id="s",
            config=GetSessionConfig(after_timestamp=300.0),
        )
        assert got is not None and [e.timestamp for e in got.events] == [
            300.0 + i for i in range(10)
        ]
        assert len(read) <= 11  # the ten, and the one older event that ends the scan
        read.clear()
        got = await fresh.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None and len(got.events) == 300 and got.state["n"] == 299


def test_num_recent_events_and_after_timestamp_read_only_the_newest(database_url: str) -> None:
    asyncio.run(_bounded(database_url))


async def _unconfigured(url: str) -> None:
    async with SnaptailSessionService(url, unconfigured_recent_events=3) as service:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        for i in range(6):
            await service.append_event(session, text_event(i, 10.0 + i))
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None and [e.invocation_id for e in got.events] == ["inv3", "inv4", "inv5"]
        summary = Event(
            invocation_id="compact",
            author="user",
            timestamp=15.5,
            actions=EventActions(
                compaction=EventCompaction(
                    start_timestamp=10.0,
                    end_timestamp=15.0,
                    compacted_content=types.Content(role="model", parts=[types.Part(text="sum")]),
                )
            ),
        )
        await service.append_event(got, summary)
        for i in range(6, 10):
            await service.append_event(got, text_event(i, 10.0 + i))
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None
        assert [e.invocation_id for e in got.events] == ["compact", "inv7", "inv8", "inv9"]
        assert got.events[0].actions.compaction is not None
        # With a config, the config decides; history() still has everything.
        got = await service.get_session(
            app_name=APP, user_id="u", session_id="s", config=GetSessionConfig(num_recent_events=1)
        )
        assert got is not None and [e.invocation_id for e in got.events] == ["inv9"]
        everything = [e async for e in service.history(app_name=APP, user_id="u", session_id="s")]
        assert len(everything) == 11


def test_unconfigured_bound_keeps_the_newest_compaction(database_url: str) -> None:
    asyncio.run(_unconfigured(database_url))


async def _listing_and_user_reads(url: str) -> None:
    async with AsyncAgentStore(url) as store:
        service = SnaptailSessionService(store)
        for i in range(25):
            s = await service.create_session(
                app_name=APP, user_id=f"u{i % 2}", session_id=f"s{i:02d}", state={"i": i}
            )
            for j in range(3):
                await service.append_event(s, text_event(j, 100.0 + i * 10 + j, {"j": j}))
        await service.delete_session(app_name=APP, user_id="u0", session_id="s00")
        pages: list[list[str]] = []
        token = None
        while True:
            page = await service.list_sessions_page(app_name=APP, page_size=10, page_token=token)
            pages.append([s.id for s in page.sessions])
            token = page.next_page_token
            if token is None:
                break
        assert [len(p) for p in pages] == [10, 10, 4]
        assert [sid for p in pages for sid in p] == [f"s{i:02d}" for i in range(1, 25)]
        whole = await service.list_sessions(app_name=APP)
        assert [s.id for s in whole.sessions] == [f"s{i:02d}" for i in range(1, 25)]
        # A fresh service lists without reading any session's aggregate or events.
        fresh = SnaptailSessionService(store)
        loaded: list[Any] = []
        get, history = store.get, store.history

        async def recording_get(agent_id: Any, version: int | None = None) -> Any:
            loaded.append(agent_id)
            return await get(agent_id, version)

        def no_history(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("list_sessions read events")

        store.get = recording_get  # type: ignore[method-assign]
        store.history = no_history  # type: ignore[method-assign]
        listed = await fresh.list_sessions(app_name=APP)
        store.get, store.history = get, history  # type: ignore[method-assign]
        assert len(listed.sessions) == 24
        sessions = {session_uuid(APP, f"u{i % 2}", f"s{i:02d}") for i in range(25)}
        assert loaded and not sessions & set(loaded)
        newest = await service.get_user_events(
            app_name=APP, user_id="u1", recent_events=2, max_sessions=3
        )
        assert list(newest) == ["s23", "s21", "s19"]
        assert all(
            [e.invocation_id for e in events] == ["inv1", "inv2"] for events in newest.values()
        )
        assert store.url  # the service did not open (or close) the caller's store


def test_list_sessions_pages_and_user_reads(database_url: str) -> None:
    asyncio.run(_listing_and_user_reads(database_url))


def test_redelivered_event_is_stored_once(sqlite_url: str) -> None:
    async def go() -> None:
        async with SnaptailSessionService(sqlite_url) as service:
            session = await service.create_session(app_name=APP, user_id="u", session_id="s")
            event = text_event(1, session.last_update_time + 1, {"n": 1})
            await service.append_event(session, event)
            session.events.pop()  # as a caller retrying after a lost reply would
            await service.append_event(session, event.model_copy(deep=True))
            got = await service.get_session(app_name=APP, user_id="u", session_id="s")
            assert got is not None and len(got.events) == 1

    asyncio.run(go())


def test_bad_option_is_refused() -> None:
    from snaptail.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="unconfigured_recent_events"):
        SnaptailSessionService("sqlite:///:memory:", unconfigured_recent_events=-1)


def _turns() -> int:
    """200 turns in CI (HYPOTHESIS_PROFILE=ci) and with SNAPTAIL_SLOW=1, 40 otherwise;
    SNAPTAIL_ADK_TURNS overrides both."""
    if "SNAPTAIL_ADK_TURNS" in os.environ:
        return int(os.environ["SNAPTAIL_ADK_TURNS"])
    ci = os.environ.get("HYPOTHESIS_PROFILE") == "ci" or os.environ.get("SNAPTAIL_SLOW") == "1"
    return 200 if ci else 40


def _normal(session: Session) -> list[Any]:
    """A session's content without ids, clocks and invocation ids."""
    out = []
    for e in session.events:
        d = e.model_dump(
            mode="json", exclude_none=True, exclude={"id", "timestamp", "invocation_id"}
        )
        for part in (d.get("content") or {}).get("parts", []):
            for key in ("function_call", "function_response"):
                if key in part:
                    part[key].pop("id", None)
        out.append(d)
    return out


def test_runner_resumed_in_fresh_process_matches_in_memory(sqlite_url: str) -> None:
    from examples.adk_agent import APP as EX_APP
    from examples.adk_agent import run_turns

    turns = _turns()
    half = turns // 2
    script = (
        "import asyncio, sys\n"
        "from examples.adk_agent import run_turns\n"
        "from snaptail.integrations.adk import SnaptailSessionService\n"
        "async def main(url, first, last):\n"
        "    async with SnaptailSessionService(url) as s:\n"
        "        await run_turns(s, 'ada', 's1', first, last)\n"
        "asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))\n"
    )
    for first, last in ((0, half), (half, turns)):
        done = subprocess.run(
            [sys.executable, "-c", script, sqlite_url, str(first), str(last)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    async def compare() -> None:
        ref = InMemorySessionService()
        await run_turns(ref, "ada", "s1", 0, turns)
        expected = await ref.get_session(app_name=EX_APP, user_id="ada", session_id="s1")
        async with SnaptailSessionService(sqlite_url) as ours:
            got = await ours.get_session(app_name=EX_APP, user_id="ada", session_id="s1")
        assert expected is not None and got is not None
        assert got.state == expected.state
        assert _normal(got) == _normal(expected)
        assert got.state["user:notes"] == turns // 3

    asyncio.run(compare())


# -- sessions built without re-validation, decoded events kept (issue 22) -------------


def _validated(session: Session) -> Session:
    """The same session through pydantic's validation (what ADK's services return)."""
    again = Session.model_validate(session.model_dump())
    again._storage_update_marker = session._storage_update_marker
    return again


def _same_object(ours: Session) -> None:
    reference = _validated(ours)
    assert ours == reference
    assert ours.model_fields_set == reference.model_fields_set
    assert ours.__pydantic_private__ == reference.__pydantic_private__
    assert ours.__pydantic_extra__ == reference.__pydantic_extra__
    assert ours.model_dump_json() == reference.model_dump_json()
    assert type(ours.last_update_time) is float and type(ours.state) is dict


def test_sessions_equal_validated_ones_and_events_are_copies(database_url: str) -> None:
    async def go() -> None:
        async with SnaptailSessionService(database_url) as service:
            ref = InMemorySessionService()
            events = [text_event(n, 1.9e9 + n, {"x": n}) for n in range(5)]
            for svc in (service, ref):
                s = await svc.create_session(
                    app_name=APP,
                    user_id="u",
                    session_id="s",
                    state={"k": {"n": [1]}, "app:a": 1, "user:b": 2},
                )
                for event in events:
                    await svc.append_event(s, event.model_copy(deep=True))
            config = GetSessionConfig(num_recent_events=3)
            got = await service.get_session(
                app_name=APP, user_id="u", session_id="s", config=config
            )
            want = await ref.get_session(app_name=APP, user_id="u", session_id="s", config=config)
            assert got is not None and want is not None
            _same_object(got)
            assert view(got) == view(want)
            listed = (await service.list_sessions(app_name=APP, user_id="u")).sessions
            assert len(listed) == 1
            _same_object(listed[0])
            expected = (await ref.list_sessions(app_name=APP, user_id="u")).sessions
            assert listing(listed) == listing(expected)
            assert listed[0].last_update_time == got.last_update_time

            # What a caller changes in what it got is not seen by the next call (the
            # decoded events are kept, and copied).
            got.events[-1].content.parts[0].text = "changed"  # type: ignore[union-attr,index]
            got.events[-1].actions.state_delta["x"] = "changed"
            got.state["k"]["n"].append(2)
            listed[0].state["k"]["n"].append(3)
            again = await service.get_session(
                app_name=APP, user_id="u", session_id="s", config=config
            )
            assert again is not None and view(again) == view(want)
            relisted = (await service.list_sessions(app_name=APP, user_id="u")).sessions
            assert listing(relisted) == listing(expected)

    asyncio.run(go())


def _rich_events() -> list[Event]:
    """Events with every kind of field ADK stores: nested models, lists, dicts, a set,
    bytes, enums, a compaction, nested state."""
    return [
        text_event(0, 1.0, {"k": {"n": [1, {"deep": True}]}, "app:a": [1]}),
        Event(
            invocation_id="inv",
            author="model",
            content=types.Content(
                role="model",
                parts=[
                    types.Part(text="t"),
                    types.Part.from_bytes(data=b"\x00img", mime_type="image/png"),
                    types.Part(function_call=types.FunctionCall(name="f", args={"a": [1, 2]})),
                ],
            ),
            turn_complete=True,
            finish_reason=types.FinishReason.STOP,
            actions=EventActions(
                artifact_delta={"file": 0},
                transfer_to_agent="agent",
                escalate=True,
                compaction=EventCompaction(
                    start_timestamp=0.0,
                    end_timestamp=1.0,
                    compacted_content=types.Content(role="model", parts=[types.Part(text="s")]),
                ),
            ),
            long_running_tool_ids={"tool1", "tool2"},
            error_code="error_code",
            grounding_metadata=types.GroundingMetadata(
                web_search_queries=["q"],
                search_entry_point=types.SearchEntryPoint(sdk_blob=b"blob"),
            ),
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=1, candidates_token_count=1, total_token_count=2
            ),
            custom_metadata={"custom": {"nested": ["v"]}},
            input_transcription=types.Transcription(text="in", finished=True),
        ),
    ]


def _mutable_parts(value: Any, into: dict[int, Any]) -> dict[int, Any]:
    """Every list, dict, set and model in ``value``, by id (kept alive in ``into``)."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        into[id(value)] = value
        into[id(value.__pydantic_fields_set__)] = value.__pydantic_fields_set__
        for item in value.__dict__.values():
            _mutable_parts(item, into)
    elif isinstance(value, (list, set)):
        into[id(value)] = value
        for item in value:
            _mutable_parts(item, into)
    elif isinstance(value, dict):
        into[id(value)] = value
        for item in value.values():
            _mutable_parts(item, into)
    return into


def _pairs(a: Any, b: Any) -> Any:
    """The models at the same place in two trees, side by side."""
    from pydantic import BaseModel

    if isinstance(a, BaseModel):
        yield a, b
        for name, item in a.__dict__.items():
            yield from _pairs(item, b.__dict__[name])
    elif isinstance(a, list):
        for x, y in zip(a, b, strict=True):
            yield from _pairs(x, y)
    elif isinstance(a, dict):
        for key, item in a.items():
            yield from _pairs(item, b[key])


def test_kept_events_are_copied_as_model_copy_deep_copies_them() -> None:
    from snaptail.integrations.adk import _copier

    for event in _rich_events():
        kept = Event.model_validate_json(event.model_dump_json(exclude_none=True))
        copier = _copier(kept)
        assert copier is not None
        ours, theirs = copier(), kept.model_copy(deep=True)
        assert ours == theirs == kept
        assert ours.model_dump_json() == theirs.model_dump_json()
        for mine, reference in _pairs(ours, theirs):
            assert type(mine) is type(reference)
            assert mine.__pydantic_fields_set__ == reference.__pydantic_fields_set__
            assert mine.__pydantic_private__ == reference.__pydantic_private__
            assert mine.__pydantic_extra__ == reference.__pydantic_extra__
        # Nothing mutable is shared with the kept event or with another copy.
        kept_parts = _mutable_parts(kept, {})
        again = copier()
        assert not set(_mutable_parts(ours, {})) & (
            set(kept_parts) | set(_mutable_parts(again, {}))
        )
        # Changing a copy everywhere leaves the kept event as it was.
        before = kept.model_dump_json()
        for part in _mutable_parts(ours, {}).values():
            if isinstance(part, list):
                part.append("x")
            elif isinstance(part, (dict, set)):
                part.clear()
        ours.author = "changed"
        assert kept.model_dump_json() == before
        assert copier() == theirs


def test_listing_orders_equal_update_times_by_user_then_session(database_url: str) -> None:
    async def go() -> None:
        async with SnaptailSessionService(database_url) as service:
            for user in ("u1", "u0"):
                for sid in ("b", "c", "a"):
                    s = await service.create_session(app_name=APP, user_id=user, session_id=sid)
                    ts = 400.0 if (user, sid) == ("u1", "c") else 500.0
                    await service.append_event(s, text_event(0, ts))
            listed = (await service.list_sessions(app_name=APP)).sessions
            assert [(s.user_id, s.id) for s in listed] == [
                ("u1", "c"),
                ("u0", "a"),
                ("u0", "b"),
                ("u0", "c"),
                ("u1", "a"),
                ("u1", "b"),
            ]
            paged: list[tuple[str, str]] = []
            token = None
            while True:
                page = await service.list_sessions_page(app_name=APP, page_size=4, page_token=token)
                paged += [(s.user_id, s.id) for s in page.sessions]
                token = page.next_page_token
                if token is None:
                    break
            assert paged == [(s.user_id, s.id) for s in listed]

    asyncio.run(go())


def test_listed_sessions_change_independently(sqlite_url: str) -> None:
    async def go() -> None:
        async with SnaptailSessionService(sqlite_url) as service:
            for sid in ("s1", "s2"):
                await service.create_session(
                    app_name=APP, user_id="u", session_id=sid, state={"k": sid}
                )
            first, second = (await service.list_sessions(app_name=APP, user_id="u")).sessions
            await service.append_event(first, text_event(0, 2e9, {"k": "new"}))
            first.state = {"replaced": True}
            first.app_name = "other"
            assert second._storage_update_marker is None
            assert first._storage_update_marker is not None
            _same_object(second)
            assert (second.app_name, second.state) == (APP, {"k": "s2"})
            assert second.events == [] and len(first.events) == 1

    asyncio.run(go())


def test_returned_state_is_the_callers_to_change(sqlite_url: str) -> None:
    """Flat state is copied dict by dict, nested state deeply: changing what a read
    returned changes no other read's state, listed or got."""

    async def go() -> None:
        async with SnaptailSessionService(sqlite_url) as service:
            state = {"k": 1, "nested": {"a": [1, 2]}, "user:u": "x"}
            await service.create_session(app_name=APP, user_id="u", session_id="n", state=state)
            await service.create_session(app_name=APP, user_id="u", session_id="f", state={"k": 1})
            for _ in range(2):
                for listed in (await service.list_sessions(app_name=APP, user_id="u")).sessions:
                    if listed.id == "n":
                        listed.state["nested"]["a"].append(3)
                    listed.state["k"] = 2
                    listed.state["user:u"] = "changed"
                for sid in ("n", "f"):
                    got = await service.get_session(app_name=APP, user_id="u", session_id=sid)
                    assert got is not None and got.state["k"] == 1
                    got.state["k"] = 3
                    if sid == "n":
                        assert got.state["nested"] == {"a": [1, 2]}
                        assert got.state["user:u"] == "x"
                        got.state["nested"]["a"].clear()

    asyncio.run(go())


@pytest.mark.parametrize("enabled", [True, False])
def test_listing_and_full_reads_leave_the_cyclic_collector_as_it_was(
    sqlite_url: str, enabled: bool
) -> None:
    import gc

    async def go() -> None:
        async with SnaptailSessionService(sqlite_url) as service:
            for sid in ("s1", "s2"):
                s = await service.create_session(app_name=APP, user_id="u", session_id=sid)
                await service.append_event(s, text_event(0, 2e9))
            (gc.enable if enabled else gc.disable)()
            try:
                listed = await service.list_sessions(app_name=APP, user_id="u")
                assert len(listed.sessions) == 2
                assert gc.isenabled() is enabled
                got = await service.get_session(app_name=APP, user_id="u", session_id="s1")
                assert got is not None and len(got.events) == 1
                assert gc.isenabled() is enabled
            finally:
                gc.enable()

    asyncio.run(go())


# -- the shared store (issue 22) ---------------------------------------------------------


def test_services_on_one_url_share_one_store_across_event_loops(database_url: str) -> None:
    import gc
    import threading

    from snaptail.integrations.shared import leased_urls, wait_closed

    pair = [SnaptailSessionService(database_url), SnaptailSessionService(database_url)]
    first = pair[0]
    assert first.store is pair[1].store
    url = first.store.url
    assert leased_urls()[url] == 2

    async def create() -> Session:
        return await first.create_session(app_name=APP, user_id="u", session_id="s")

    session = asyncio.run(create())  # one event loop ...
    errors: list[BaseException] = []

    def append(i: int) -> None:  # ... then others, each on its own thread and loop
        async def main() -> None:
            got = await pair[1].get_session(app_name=APP, user_id="u", session_id="s")
            assert got is not None
            while True:
                try:
                    await pair[1].append_event(got, text_event(i, got.last_update_time + 1))
                    return
                except StaleSessionError:
                    got = await pair[1].get_session(app_name=APP, user_id="u", session_id="s")
                    assert got is not None

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not [t for t in threads if t.is_alive()], "a thread hung"
    assert errors == []

    async def read() -> Session | None:
        return await first.get_session(app_name=APP, user_id=session.user_id, session_id="s")

    got = asyncio.run(read())
    assert got is not None
    assert sorted(e.invocation_id for e in got.events) == sorted(f"inv{i}" for i in range(6))
    asyncio.run(first.close())
    assert leased_urls()[url] == 1
    asyncio.run(first.close())  # a second close gives nothing back twice
    assert leased_urls()[url] == 1
    store = pair[1].store
    pair.pop()
    gc.collect()
    assert url not in leased_urls(), "a collected service gives its hold back"
    wait_closed()
    with pytest.raises(RuntimeError, match="not open"):
        store.recorder  # noqa: B018 - the last hold closed the store


def test_an_explicit_store_is_left_open(sqlite_url: str) -> None:
    from snaptail.integrations.shared import leased_urls

    async def go() -> None:
        async with AsyncAgentStore(sqlite_url) as store:
            async with SnaptailSessionService(store) as service:
                assert service.store is store and store.url not in leased_urls()
                await service.create_session(app_name=APP, user_id="u", session_id="s")
            assert await store.event_count(session_uuid(APP, "u", "s")) == 2  # made, started

    asyncio.run(go())


def test_get_session_reads_its_three_aggregates_in_one_call_and_sees_other_writers(
    database_url: str,
) -> None:
    async def go() -> None:
        async with AsyncAgentStore(database_url) as mine, AsyncAgentStore(database_url) as theirs:
            reader, writer = SnaptailSessionService(mine), SnaptailSessionService(theirs)
            made = await writer.create_session(app_name=APP, user_id="u", session_id="s")
            await writer.append_event(made, text_event(1, 1.0))
            calls: list[str] = []
            recorder: Any = mine.recorder
            for name in ("select_many_for_load", "select_for_load", "max_version"):
                method = getattr(recorder, name)

                def counted(*args: Any, _m: Any = method, _n: str = name, **kw: Any) -> Any:
                    calls.append(_n)
                    return _m(*args, **kw)

                setattr(recorder, name, counted)
            config = GetSessionConfig(num_recent_events=20)
            first = await reader.get_session(
                app_name=APP, user_id="u", session_id="s", config=config
            )
            assert first is not None and len(first.events) == 1
            assert calls == ["select_many_for_load"]  # cold: one read for all three
            calls.clear()
            warm = await reader.get_session(
                app_name=APP, user_id="u", session_id="s", config=config
            )
            assert view(warm) == view(first) and calls == ["select_many_for_load"]
            # Another service appends (with user and app state): the reader sees it all.
            delta = {"user:lang": "fr", "app:mode": "x", "k": 1}
            latest = await writer.get_session(app_name=APP, user_id="u", session_id="s")
            assert latest is not None
            await writer.append_event(latest, text_event(2, 2.0, delta))
            calls.clear()
            seen = await reader.get_session(
                app_name=APP, user_id="u", session_id="s", config=config
            )
            assert calls == ["select_many_for_load"]
            theirs_now = await writer.get_session(
                app_name=APP, user_id="u", session_id="s", config=config
            )
            assert view(seen) == view(theirs_now)
            assert seen is not None and len(seen.events) == 2
            assert seen.state["user:lang"] == "fr" and seen.state["app:mode"] == "x"

    asyncio.run(go())


def test_reads_on_a_shared_sqlite_store_run_on_the_callers_loop(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a shared store's reads skip the home loop (its calls run on the
    store's threads from any loop) and load into a cache of their own, so no read ever
    holds an aggregate a write changes in place; writes, and every call on PostgreSQL,
    go through the home loop."""
    import threading

    from snaptail.integrations import adk, shared

    homed: list[str] = []
    real = shared.call_on_home

    async def counting(operation: Any) -> Any:
        homed.append(operation.__qualname__)
        return await real(operation)

    monkeypatch.setattr(adk, "call_on_home", counting)
    sqlite = database_url.startswith("sqlite")

    async def go() -> None:
        async with SnaptailSessionService(database_url) as service:
            made = await service.create_session(app_name=APP, user_id="u", session_id="s")
            await service.append_event(made, text_event(1, 1.0, {"k": 1}))
            assert homed == [
                "SnaptailSessionService._create_session",
                "SnaptailSessionService._append_event",
            ]
            homed.clear()
            loaded_on: list[str] = []
            get_many = service.store.get_many

            async def spy(*args: Any, **kwargs: Any) -> Any:
                loaded_on.append(threading.current_thread().name)
                return await get_many(*args, **kwargs)

            service.store.get_many = spy  # type: ignore[method-assign]
            config = GetSessionConfig(num_recent_events=5)
            got = await service.get_session(
                app_name=APP, user_id="u", session_id="s", config=config
            )
            listed = await service.list_sessions(app_name=APP, user_id="u")
            assert got is not None and got.state == {"k": 1} and len(got.events) == 1
            assert [s.id for s in listed.sessions] == ["s"]
            here = threading.current_thread().name
            if sqlite:
                assert homed == [] and set(loaded_on) == {here}
                read = service._read_held.agents
                written = service._held.agents
                assert session_uuid(APP, "u", "s") in read
                assert all(read[i] is not written.get(i) for i in read)
            else:
                assert homed == [
                    "SnaptailSessionService._get_session",
                    "SnaptailSessionService._list_page",
                ]
                assert here not in loaded_on
            # A write after the read is seen by the next read (its cache is checked).
            await service.append_event(got, text_event(2, 2.0, {"k": 2}))
            again = await service.get_session(
                app_name=APP, user_id="u", session_id="s", config=config
            )
            assert again is not None and again.state == {"k": 2} and len(again.events) == 2

    asyncio.run(go())


def test_reads_beside_writes_on_other_threads_see_only_committed_sessions(
    database_url: str,
) -> None:
    """Readers on their own threads and loops (direct reads on SQLite) while a writer
    appends: every session read is one that was committed, its state matching its
    newest event (never a write's unsaved change, never half of one)."""
    import threading

    service = SnaptailSessionService(database_url)
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0, 0]

    async def write() -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        for i in range(60):
            await service.append_event(session, text_event(i, 10.0 + i, {"n": i, "user:n": i}))

    def read(slot: int) -> None:
        async def main() -> None:
            config = GetSessionConfig(num_recent_events=3)
            while not stop.is_set():
                got = await service.get_session(
                    app_name=APP, user_id="u", session_id="s", config=config
                )
                if got is None or not got.events:
                    continue
                newest = int(got.events[-1].invocation_id[3:])
                assert got.state["n"] == newest, (got.state, newest)
                assert got.state["user:n"] >= newest
                assert got.last_update_time == got.events[-1].timestamp
                reads[slot] += 1

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    try:
        asyncio.run(write())  # opens the store (a first call goes through the home loop)
        asyncio.run(service.delete_session(app_name=APP, user_id="u", session_id="s"))
        threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(2)]
        for thread in threads:
            thread.start()
        asyncio.run(write())
        stop.set()
        for thread in threads:
            thread.join(60)
        assert not [t for t in threads if t.is_alive()], "a reader hung"
        assert errors == []
        assert all(reads), reads
    finally:
        stop.set()
        asyncio.run(service.close())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_directory_keeps_listing_order_through_snapshots(database_url: str, seed: int) -> None:
    """A user's directory holds its sessions oldest update first (ties by session id)
    whatever order the updates arrive in (list_sessions pages are slices of it), and a
    load from snapshot + tail gives that order as a full replay does."""
    rng = random.Random(seed)
    times: dict[str, float] = {}
    policies: dict[type[Agent], SnapshotPolicy] = {AdkDirectory: EveryNEvents(5)}
    with AgentStore(database_url, policies=policies) as store:
        directory = AdkDirectory.for_user(APP, "u")
        for step in range(240):
            sid = f"s{rng.randrange(30):02d}"
            if sid in times and rng.random() < 0.15:
                directory.unlist_session(sid)
                del times[sid]
            else:
                when = float(rng.choice(range(1, 12)))  # out of order, and ties
                directory.list_session(sid, when, {"step": step}, reset=sid not in times)
                times[sid] = when
            if rng.random() < 0.3:
                store.save(directory)
        store.save(directory)
        assert store.snapshot_infos(directory.id)
        expected = sorted(times, key=lambda s: (times[s], s))
        assert list(directory.state.sessions) == expected
    with AgentStore(database_url, policies=policies) as store:
        loaded = cast("AdkDirectory", store.get(directory.id))
        stats = store.load_stats(loaded)
        assert stats is not None and stats.snapshot_version > 0
        assert list(loaded.state.sessions) == expected
        replayed = cast("AdkDirectory", store.replay(directory.id))
        assert list(replayed.state.sessions) == expected


def test_a_page_token_skips_no_session_changed_between_pages(database_url: str) -> None:
    """A page token is the listing key of the page's last session: the next page is
    every session listed after it, so sessions updated or deleted between two pages
    make none skipped (an updated one is listed again at its new place)."""

    from snaptail.errors import InvalidArgument

    async def go() -> None:
        async with SnaptailSessionService(database_url) as service:
            for i in range(10):
                s = await service.create_session(
                    app_name=APP, user_id=f"u{i % 2}", session_id=f"s{i}"
                )
                await service.append_event(s, text_event(0, 100.0 + i))
            page = await service.list_sessions_page(app_name=APP, page_size=4)
            assert [s.id for s in page.sessions] == ["s0", "s1", "s2", "s3"]
            for sid, when in (("s1", 200.0), ("s5", 201.0)):
                got = await service.get_session(app_name=APP, user_id="u1", session_id=sid)
                assert got is not None
                await service.append_event(got, text_event(1, when))
            await service.delete_session(app_name=APP, user_id="u0", session_id="s6")
            rest: list[str] = []
            token = page.next_page_token
            while token is not None:
                page = await service.list_sessions_page(app_name=APP, page_size=4, page_token=token)
                rest += [s.id for s in page.sessions]
                token = page.next_page_token
            assert rest == ["s4", "s7", "s8", "s9", "s1", "s5"]
            one = await service.list_sessions_page(app_name=APP, user_id="u1", page_size=2)
            assert [s.id for s in one.sessions] == ["s3", "s7"]
            assert one.next_page_token is not None
            after = await service.list_sessions_page(
                app_name=APP, user_id="u1", page_token=one.next_page_token
            )
            assert [s.id for s in after.sessions] == ["s9", "s1", "s5"]
            for bad in ("4", "not a token", "WzEsMiwzXQ=="):  # the last: [1,2,3]
                with pytest.raises(InvalidArgument, match="page_token"):
                    await service.list_sessions_page(app_name=APP, page_token=bad)

    asyncio.run(go())
