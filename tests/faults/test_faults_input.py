"""Issue 11, "Input and configuration": a mistake is an error, never accepted silently."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from snaptail import (
    Agent,
    AgentNotFound,
    AgentStore,
    EveryNEvents,
    InvalidCommand,
    InvalidEventPayload,
    TokenUsage,
)
from tests.conftest import POSTGRES_URL, require_postgres

# Removed as the faults are fixed (issue 11).


# -- AgentStore's keyword arguments ---------------------------------------------------


@pytest.mark.parametrize("option", ["snapshot_evry", "pool_sizes", "lock_timout"])
def test_an_unknown_keyword_is_refused_on_every_backend(database_url: str, option: str) -> None:
    with pytest.raises((TypeError, ValueError), match=option):
        options: dict[str, Any] = {option: 10}
        AgentStore(database_url, **options)


def test_a_postgres_only_option_is_refused_on_sqlite(sqlite_url: str) -> None:
    with pytest.raises((TypeError, ValueError), match="pool_size"):
        AgentStore(sqlite_url, pool_size=4)


def test_snapshot_every_together_with_policy_is_an_error(sqlite_url: str) -> None:
    with pytest.raises((TypeError, ValueError), match="snapshot_every"):
        AgentStore(sqlite_url, snapshot_every=10, policy=EveryNEvents(5))


# -- URLs -----------------------------------------------------------------------------


def test_sqlite_url_with_a_host_part_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="sqlite://relative"):
        AgentStore("sqlite://relative")
    assert not any(tmp_path.iterdir())


def test_sqlite_url_query_is_refused_or_honoured_never_part_of_the_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        AgentStore("sqlite:///rel.db?mode=ro").close()
    except ValueError as error:
        assert "mode" in str(error)
    assert not (tmp_path / "rel.db?mode=ro").exists()


def test_sqlite_url_lock_timeout_parameter_is_honoured(tmp_path: Path) -> None:
    with AgentStore(f"sqlite:///{tmp_path / 'a.db'}?lock_timeout=3") as store:
        assert store.recorder.datastore.pool.lock_timeout == 3  # type: ignore[attr-defined]
    assert (tmp_path / "a.db").exists()


def _pg_url(**query: str) -> str:
    require_postgres()
    return POSTGRES_URL + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def test_pghost_and_pguser_are_used_when_the_url_omits_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_postgres()
    monkeypatch.setenv("PGHOST", "no-such-host.invalid")
    with pytest.raises(Exception, match=r"no-such-host\.invalid"):
        AgentStore("postgresql:///test?connect_timeout=2&pool_timeout=2")
    monkeypatch.delenv("PGHOST")
    monkeypatch.setenv("PGUSER", "no_such_role_snaptail")
    with pytest.raises(Exception, match="no_such_role_snaptail"):
        AgentStore("postgresql://127.0.0.1/test?connect_timeout=2&pool_timeout=2")


@pytest.mark.skipif(
    not os.path.exists("/var/run/postgresql/.s.PGSQL.5432"), reason="no Unix socket here"
)
def test_a_unix_socket_host_works(postgres_url: str) -> None:
    query = postgres_url.partition("?")[2]
    with AgentStore(f"postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/test?{query}") as store:
        agent = Agent("over a socket")
        store.save(agent)
        assert store.get(agent.id).version == 1


def test_a_schema_name_needing_quotes_is_quoted_or_refused_clearly() -> None:
    require_postgres()
    import psycopg

    url = _pg_url(schema="Weird-Name")
    try:
        with AgentStore(url) as store:
            agent = Agent("weird")
            store.save(agent)
            assert store.get(agent.id).version == 1
    except ValueError as error:
        assert "schema" in str(error) and "Weird-Name" in str(error)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "Weird-Name" CASCADE')


def test_an_unreachable_server_is_named_with_its_cause() -> None:
    with pytest.raises(Exception) as caught:
        AgentStore("postgresql://postgres@127.0.0.1:1/somedb?connect_timeout=2")
    message = str(caught.value)
    for part in ("127.0.0.1", "1", "somedb"):
        assert part in message, message
    assert "port 1" in message or ":1" in message
    assert "refused" in message.lower(), message


# -- agent ids and versions -----------------------------------------------------------


def test_a_str_id_works_the_same_on_both_backends(database_url: str) -> None:
    with AgentStore(database_url) as store:
        agent = Agent("by text")
        agent.add_label("x")
        store.save(agent)
        text = str(agent.id)
        assert store.get(text).id == agent.id  # type: ignore[arg-type]
        assert store.event_count(text) == 2  # type: ignore[arg-type]
        assert [e.originator_version for e in store.history(text)] == [1, 2]  # type: ignore[arg-type]
        assert store.latest(text) is not None  # type: ignore[arg-type]
        assert store.replay(text).version == 2  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["not-a-uuid", "", 42])
def test_a_malformed_id_is_not_a_driver_error(database_url: str, bad: Any) -> None:
    with AgentStore(database_url) as store:
        store.save(Agent("someone"))
        with pytest.raises((AgentNotFound, ValueError, TypeError)) as caught:
            store.get(bad)
        assert repr(bad) in str(caught.value) or str(bad) in str(caught.value)
        with pytest.raises((AgentNotFound, ValueError, TypeError)):
            list(store.history(bad))


@pytest.mark.parametrize("version", [2**63, 2.5, True, "3"])
def test_a_version_out_of_range_or_not_an_int_is_refused(database_url: str, version: Any) -> None:
    with AgentStore(database_url) as store:
        agent = Agent("versions")
        store.save(agent)
        with pytest.raises((ValueError, TypeError), match="version"):
            store.get(agent.id, version=version)
        with pytest.raises((ValueError, TypeError), match="version"):
            store.replay(agent.id, version=version)


def test_an_unknown_uuid_is_agent_not_found(database_url: str) -> None:
    with AgentStore(database_url) as store, pytest.raises(AgentNotFound):
        store.get(uuid4())


# -- command arguments ----------------------------------------------------------------


def _in_flight() -> tuple[Agent, Any]:
    agent = Agent("commands")
    return agent, agent.start_llm_request()


def _named(error: BaseException, agent: Agent, event: str, field: str) -> None:
    message = str(error)
    assert str(agent.id) in message, message
    assert event in message, message
    assert field in message, message


@pytest.mark.parametrize(
    "usage, field",
    [
        (TokenUsage(cost_usd=Decimal("NaN")), "cost_usd"),
        (TokenUsage(cost_usd=Decimal("Infinity")), "cost_usd"),
        (TokenUsage(cost_usd=Decimal("-Infinity")), "cost_usd"),
        (TokenUsage(cost_usd=Decimal("sNaN")), "cost_usd"),
        (TokenUsage(cost_usd=Decimal("-0.01")), "cost_usd"),
        (TokenUsage(input_tokens=-1), "input_tokens"),
        (TokenUsage(output_tokens=-5), "output_tokens"),
        (TokenUsage(cached_tokens=-1), "cached_tokens"),
    ],
)
def test_bad_token_usage_is_refused(usage: TokenUsage, field: str) -> None:
    agent, request = _in_flight()
    with pytest.raises((InvalidEventPayload, InvalidCommand)) as caught:
        agent.finish_llm_request(request, usage)
    _named(caught.value, agent, "LlmRequestFinished", field)
    assert agent.state.llm_request == request  # nothing was recorded


def test_a_negative_duration_is_refused() -> None:
    agent = Agent("durations")
    agent.request_tool_call("c1", "search", {})
    with pytest.raises((InvalidEventPayload, InvalidCommand)) as caught:
        agent.complete_tool_call("c1", output="x", duration_ms=-5)
    _named(caught.value, agent, "ToolCallCompleted", "duration_ms")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, Decimal("NaN")])
def test_nan_and_infinities_are_refused_anywhere_in_a_payload(value: Any) -> None:
    agent = Agent("floats")
    with pytest.raises(InvalidEventPayload) as caught:
        agent.request_tool_call("c1", "search", {"query": {"limit": [1, value]}})
    _named(caught.value, agent, "ToolCallRequested", "arguments")
    with pytest.raises(InvalidEventPayload) as caught:
        agent.set_model_options("gpt", {"temperature": value})
    _named(caught.value, agent, "ModelOptionsSet", "options")
    assert agent.version == 1


def test_wrong_types_name_agent_event_and_field() -> None:
    agent, request = _in_flight()
    cases: list[tuple[Callable[[], object], str, str]] = [
        (lambda: agent.join("u1"), "ParticipantJoined", "participant"),  # type: ignore[arg-type]
        (lambda: agent.set_model_options("m", [1, 2]), "ModelOptionsSet", "options"),  # type: ignore[arg-type]
        (lambda: agent.request_tool_call("c1", "t", None), "ToolCallRequested", "arguments"),  # type: ignore[arg-type]
        (
            lambda: agent.finish_llm_request(request, {"input_tokens": 3}),  # type: ignore[arg-type]
            "LlmRequestFinished",
            "usage",
        ),
    ]
    for command, event_name, field in cases:
        with pytest.raises((InvalidEventPayload, InvalidCommand)) as caught:
            command()
        _named(caught.value, agent, event_name, field)
    assert agent.version == 2


def test_a_payload_nested_1000_deep_is_refused_by_name() -> None:
    agent = Agent("deep")
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(1000):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(InvalidEventPayload) as caught:
        agent.request_tool_call("c1", "t", nested)
    _named(caught.value, agent, "ToolCallRequested", "arguments")
    assert "deep" in str(caught.value) or "nest" in str(caught.value)
