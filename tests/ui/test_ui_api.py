"""The console's JSON API (and its HTML pages' status codes) on SQLite and PostgreSQL:
every endpoint, bad input, read-only, escaping, the token and the bind rule."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from examples.chat_agent import ChatPlatformAgent
from snaptail import AgentStore
from snaptail.application.overview import snapshot_infos
from snaptail.cli import app as cli_app
from snaptail.projections import (
    AgentStats,
    Projection,
    ProjectionWorker,
    ViewCursor,
    read_agent_stats,
)
from snaptail.projections.agent_stats import STATS_TABLE
from snaptail.projections.view import open_view
from snaptail.ui import check_bind, create_app, is_loopback
from tests.ui_support import HTML_MESSAGE, XSS_NAME, Fleet, seed_fleet

LOCAL = "http://127.0.0.1"


@pytest.fixture
def fleet(database_url: str) -> Fleet:
    return seed_fleet(database_url)


@pytest.fixture
def client(fleet: Fleet) -> Iterator[TestClient]:
    with TestClient(create_app(fleet.url), base_url=LOCAL) as c:
        yield c


def ok(client: TestClient, path: str) -> Any:
    r = client.get(path)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def refused(client: TestClient, path: str, status: int, *words: str) -> None:
    r = client.get(path)
    assert r.status_code == status, (path, r.text)
    message = r.json()["error"]
    for word in words:
        assert word in message, (path, message)


# -- fleet ------------------------------------------------------------------------------


def test_fleet_lists_every_agent_from_the_read_model(client: TestClient, fleet: Fleet) -> None:
    data = ok(client, "/api/v1/fleet")
    rows = {UUID(a["id"]): a for a in data["agents"]}
    assert set(rows) == set(fleet.names)
    assert {i: a["name"] for i, a in rows.items()} == fleet.names
    assert [a["events"] for a in data["agents"]] == sorted(
        (a["events"] for a in data["agents"]), reverse=True
    )
    with AgentStore(fleet.url) as store:
        for agent_id, row in rows.items():
            assert row["events"] == store.event_count(agent_id)
    assert rows[fleet.big]["tokens"] > 0 and rows[fleet.big]["cost_usd"] > 0
    assert rows[fleet.session]["kind"] == "OpenAI Agents session"
    assert rows[fleet.chat]["kind"] == "ChatPlatformAgent"
    assert rows[fleet.small]["status"] == "paused"
    totals = data["totals"]
    assert totals["agents"] == 4
    assert totals["events"] == sum(a["events"] for a in data["agents"])
    assert totals["bytes"] == sum(a["bytes"] for a in data["agents"])
    assert data["top_events"][0]["id"] == str(fleet.big)
    assert data["read_model"]["state"] == "current"


@pytest.mark.parametrize("sort", ["name", "id", "type", "events", "bytes", "tokens", "cost",
                                  "last", "status"])  # fmt: skip
def test_fleet_sorts_by_each_column_both_ways(client: TestClient, sort: str) -> None:
    up = [a["id"] for a in ok(client, f"/api/v1/fleet?sort={sort}&order=asc")["agents"]]
    down = [a["id"] for a in ok(client, f"/api/v1/fleet?sort={sort}&order=desc")["agents"]]
    assert up == list(reversed(down))
    if sort == "name":
        names = [a["name"].lower() for a in ok(client, "/api/v1/fleet?sort=name")["agents"]]
        assert names == sorted(names)


def test_fleet_searches_by_name_or_id_prefix_and_pages(client: TestClient, fleet: Fleet) -> None:
    found = ok(client, "/api/v1/fleet?q=SUPPORT")["agents"]
    assert [a["id"] for a in found] == [str(fleet.chat)]
    prefix = str(fleet.small)[:6]
    assert str(fleet.small) in [a["id"] for a in ok(client, f"/api/v1/fleet?q={prefix}")["agents"]]
    assert ok(client, "/api/v1/fleet?q=%25")["agents"] == []  # LIKE wildcards are literal
    assert ok(client, "/api/v1/fleet?q=zzz")["totals"]["agents"] == 0
    first = ok(client, "/api/v1/fleet?per_page=3&sort=id&order=asc")
    second = ok(client, "/api/v1/fleet?per_page=3&sort=id&order=asc&page=2")
    assert first["pages"] == 2 and len(first["agents"]) == 3 and len(second["agents"]) == 1
    every = [a["id"] for a in first["agents"] + second["agents"]]
    assert every == sorted(str(i) for i in fleet.names)


@pytest.mark.parametrize(
    ("query", "status", "word"),
    [
        ("sort=colour", 400, "sort must be one of"),
        ("order=up", 400, "order must be asc or desc"),
        ("page=0", 400, "page must be between"),
        ("page=two", 400, "page must be a whole number"),
        ("per_page=100000", 400, "per_page must be between"),
        ("page=9", 404, "past the last page"),
    ],
)
def test_fleet_refuses_bad_arguments(
    client: TestClient, query: str, status: int, word: str
) -> None:
    refused(client, f"/api/v1/fleet?{query}", status, word)
    assert client.get(f"/?{query}").status_code == status  # the page too, as an error page


def test_fleet_says_when_the_read_model_is_missing_or_behind(database_url: str) -> None:
    fleet = seed_fleet(database_url, catch_up=False)
    with TestClient(create_app(fleet.url), base_url=LOCAL) as client:
        model = ok(client, "/api/v1/fleet")["read_model"]
        assert model["state"] == "missing"
        assert "snaptail worker run snaptail.projections:AgentStats" in model["message"]
        assert "worker run" in client.get("/").text
        with ProjectionWorker(AgentStats, fleet.url) as worker:
            worker.catch_up()
        assert ok(client, "/api/v1/fleet")["read_model"]["state"] == "current"
        with AgentStore(fleet.url) as store:
            agent = store.get(fleet.small)
            agent.add_input("user", "again")
            store.save(agent)
        model = ok(client, "/api/v1/fleet")["read_model"]
        assert model["state"] == "behind" and model["lag_events"] == 1
        assert "no worker is running it" in model["message"]


# -- one agent --------------------------------------------------------------------------


def test_agent_shows_identity_snapshot_memory_and_usage(client: TestClient, fleet: Fleet) -> None:
    data = ok(client, f"/api/v1/agents/{fleet.big}")
    with AgentStore(fleet.url) as store:
        agent = store.get(fleet.big)
        newest = snapshot_infos(store, fleet.big)[0].originator_version
    assert (data["name"], data["version"], data["status"]) == (XSS_NAME, agent.version,
                                                               agent.status)  # fmt: skip
    snap = data["snapshot"]
    assert snap["trusted"] and snap["newest_version"] == newest >= 200
    assert snap["tail"] == agent.version - newest
    assert snap["last_load"]["events_read"] >= snap["tail"]
    assert data["memory"]["total"] == sum(p["bytes"] for p in data["memory"]["parts"])
    assert data["usage"]["input_tokens"] == agent.state.usage.input_tokens
    assert "ToolCallCompleted" in data["event_types"]
    chat = ok(client, f"/api/v1/agents/{fleet.chat}")
    assert "threads" in [f["field"] for f in chat["state"]]  # a user type's own fields
    small = ok(client, f"/api/v1/agents/{fleet.small}")
    assert small["snapshot"]["status"] == "missing" and small["status"] == "paused"


def test_timeline_pages_newest_first_to_the_start(client: TestClient, fleet: Fleet) -> None:
    with AgentStore(fleet.url) as store:
        head = store.event_count(fleet.big)
    seen: list[int] = []
    path = f"/api/v1/agents/{fleet.big}/events?limit=100"
    while True:
        page = ok(client, path)
        seen += [e["version"] for e in page["events"]]
        if page["next_before"] is None:
            break
        path = f"/api/v1/agents/{fleet.big}/events?limit=100&before={page['next_before']}"
    assert seen == list(range(head, 0, -1))


def test_timeline_filters_by_type_and_cuts_large_payloads(client: TestClient, fleet: Fleet) -> None:
    page = ok(client, f"/api/v1/agents/{fleet.big}/events?type=ToolCallCompleted&limit=200")
    assert page["events"] and {e["type"] for e in page["events"]} == {"ToolCallCompleted"}
    cut = [e for e in page["events"] if e["cut"]]
    assert cut, "the workload's tool outputs are larger than the preview"
    full = ok(client, f"/api/v1/agents/{fleet.big}/events/{cut[0]['version']}")
    assert not full["cut"] and len(full["payload"]) == cut[0]["payload_chars"]
    assert full["payload"].startswith(cut[0]["payload"])


@pytest.mark.parametrize(
    ("suffix", "status", "word"),
    [
        ("events?before=abc", 400, "before must be a whole number"),
        ("events?before=1", 400, "before must be between 2"),
        ("events?before=99999", 400, "before must be between"),
        ("events?limit=0", 400, "limit must be between"),
        ("events?type=Nonsense", 400, "not an event type"),
        ("events/0", 400, "version must be >= 1"),
        ("events/x", 400, "version must be a whole number"),
        ("events/99999", 404, "beyond its head"),
        ("at/99999", 404, "beyond its head"),
        ("at/-3", 400, "version must be >= 1"),
    ],
)
def test_agent_endpoints_refuse_bad_input(
    client: TestClient, fleet: Fleet, suffix: str, status: int, word: str
) -> None:
    refused(client, f"/api/v1/agents/{fleet.big}/{suffix}", status, word)


def test_the_api_index_lists_every_endpoint(client: TestClient) -> None:
    endpoints = ok(client, "/api/v1")["endpoints"]
    assert len(endpoints) == 8 and all(path.startswith("/api/v1/") for path in endpoints)


def test_unknown_or_malformed_agent_ids(client: TestClient) -> None:
    unknown = uuid4()
    for path in (f"/api/v1/agents/{unknown}", f"/api/v1/agents/{unknown}/events",
                 f"/api/v1/agents/{unknown}/at/1"):  # fmt: skip
        refused(client, path, 404, str(unknown), "not found")
    refused(client, "/api/v1/agents/ae6f828b", 400, "not an agent id")
    page = client.get(f"/agents/{unknown}")
    assert page.status_code == 404 and "not found" in page.text and "Traceback" not in page.text


def test_time_travel_is_get_at_version_with_the_change(client: TestClient, fleet: Fleet) -> None:
    with AgentStore(fleet.url) as store:
        head = store.event_count(fleet.big)
        version = head - 1  # the HTML message: an input item
        past = store.get(fleet.big, version=version)
    data = ok(client, f"/api/v1/agents/{fleet.big}/at/{version}")
    assert data["version"] == version and data["head"] == head
    assert 0 < data["load"]["snapshot_version"] <= version  # a kept snapshot served it
    assert data["event"]["type"] == "InputItemAdded"
    paths = [c["path"] for c in data["changes"]]
    assert any(p.startswith("state.window") for p in paths), paths
    assert any(HTML_MESSAGE.replace('"', '\\"') in c["after"] for c in data["changes"])
    fields = {f["field"]: f["value"] for f in data["state"]}
    assert fields["name"] == f'"{XSS_NAME}"'
    assert fields["paused"] == str(past.state.paused).lower()
    assert ok(client, f"/api/v1/agents/{fleet.big}/at/1")["changes"] == []


# -- projections and snapshots ----------------------------------------------------------


class FailsOnErrors(Projection):
    name = "FailsOnErrors"

    def handle(self, view: ViewCursor, notification: Any) -> None:
        if notification.topic.endswith(".ErrorRecorded"):
            raise ValueError("cannot count <errors>")


def test_projections_show_position_lag_and_dead_letters(client: TestClient, fleet: Fleet) -> None:
    with ProjectionWorker(FailsOnErrors, fleet.url, skip_failed=True) as worker:
        worker.catch_up()
    data = ok(client, "/api/v1/projections")
    rows = {p["name"]: p for p in data["projections"]}
    assert rows["AgentStats"]["lag_events"] == 0
    assert rows["AgentStats"]["position"] == data["head"]
    assert rows["AgentStats"]["worker"] is None
    letters = rows["FailsOnErrors"]["dead_letters"]
    assert letters and letters[0]["agent_id"] == str(fleet.big)
    assert "cannot count <errors>" in letters[0]["error"]
    with AgentStore(fleet.url) as store:
        agent = store.get(fleet.chat)
        agent.add_input("user", "one more")
        store.save(agent)
    rows = {p["name"]: p for p in ok(client, "/api/v1/projections")["projections"]}
    assert rows["AgentStats"]["lag_events"] == 1 and rows["AgentStats"]["lag_seconds"] >= 0
    page = client.get("/projections")
    assert "cannot count &lt;errors&gt;" in page.text


def test_projections_name_the_worker_holding_the_lock(client: TestClient, fleet: Fleet) -> None:
    worker = ProjectionWorker(AgentStats, fleet.url)
    try:
        assert worker.lock.try_acquire()
        rows = {p["name"]: p for p in ok(client, "/api/v1/projections")["projections"]}
        holder = rows["AgentStats"]["worker"]
        assert holder is not None
        assert ("PostgreSQL backend" in holder) if "postgresql" in fleet.url else (
            "process" in holder
        )
    finally:
        worker.close()
    rows = {p["name"]: p for p in ok(client, "/api/v1/projections")["projections"]}
    assert rows["AgentStats"]["worker"] is None


def test_snapshots_per_type_and_the_agents_not_used(client: TestClient, fleet: Fleet) -> None:
    data = ok(client, "/api/v1/snapshots")
    kinds = {t["kind"]: t for t in data["types"]}
    assert set(kinds) == {"agent", "ChatPlatformAgent", "OpenAI Agents session"}
    assert all(t["fingerprint"] for t in kinds.values())
    problems = {UUID(p["id"]): p["status"] for p in data["problems"]}
    assert problems[fleet.small] == "missing" and fleet.big not in problems
    paged = ok(client, "/api/v1/snapshots?limit=2")
    assert paged["checked"] == 2 and paged["next_after"]
    rest = ok(client, f"/api/v1/snapshots?limit=2&after={paged['next_after']}")
    assert rest["checked"] == 2
    refused(client, "/api/v1/snapshots?after=nope", 400, "not an agent id")
    refused(client, "/api/v1/snapshots?limit=0", 400, "limit must be between")


def test_verify_a_sample(client: TestClient, fleet: Fleet) -> None:
    data = ok(client, "/api/v1/snapshots/verify?sample=4")
    assert {UUID(v["id"]) for v in data["verdicts"]} == set(fleet.names)
    assert {v["status"] for v in data["verdicts"]} <= {"ok", "none"}
    refused(client, "/api/v1/snapshots/verify?sample=0", 400, "sample must be between")
    refused(client, "/api/v1/snapshots/verify?sample=500", 400, "sample must be between")


# -- safety -----------------------------------------------------------------------------


def _connect(url: str) -> Any:
    """A DB-API connection to the database ``url`` names (its schema on PostgreSQL)."""
    if url.startswith("sqlite:///"):
        return sqlite3.connect(url.removeprefix("sqlite:///"))
    import psycopg

    from snaptail.infrastructure.urls import parse_postgres_url

    return psycopg.connect(**parse_postgres_url(url).connect_args())


def _digest(url: str) -> str:
    """Every row of the event, snapshot and AgentStats tables, hashed."""
    conn = _connect(url)
    try:
        digest = hashlib.sha256()
        for table in ("stored_events", "snaptail_snapshots", STATS_TABLE):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall():
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def test_nothing_is_written_even_past_a_corrupt_snapshot(database_url: str) -> None:
    """A plain load replaces a corrupt snapshot; the console's loads must not (on
    SQLite it also opens the files read-only; PostgreSQL has only ReadOnlyStore)."""
    fleet = seed_fleet(database_url)
    conn = _connect(database_url)
    marker = "?" if database_url.startswith("sqlite") else "%s"
    changed = 0
    ids: tuple[Any, ...] = (fleet.big.hex, str(fleet.big)) if marker == "?" else (fleet.big,)
    for stored_id in ids:  # however the backend keeps ids
        cur = conn.execute("UPDATE snaptail_snapshots SET checksum = checksum + 1 "
                           f"WHERE originator_id = {marker}", (stored_id,))  # fmt: skip
        changed += cur.rowcount
    conn.commit()
    conn.close()
    assert changed >= 1
    before = _digest(database_url)
    with TestClient(create_app(database_url), base_url=LOCAL) as client:
        snaps = ok(client, "/api/v1/snapshots")
        assert {UUID(p["id"]): p["status"] for p in snaps["problems"]}[fleet.big] == "corrupt"
        agent = ok(client, f"/api/v1/agents/{fleet.big}")
        assert agent["snapshot"]["status"] == "corrupt" and not agent["snapshot"]["trusted"]
        for path_ in ("/", f"/agents/{fleet.big}", f"/agents/{fleet.big}/at/5", "/projections",
                      "/snapshots", "/snapshots/verify?sample=4"):  # fmt: skip
            assert client.get(path_).status_code == 200, path_
        for method in ("post", "put", "delete", "patch"):
            r = getattr(client, method)("/api/v1/fleet")
            assert r.status_code == 405 and "only reads" in r.json()["error"]
    assert _digest(database_url) == before


def test_values_from_the_log_are_escaped(client: TestClient, fleet: Fleet) -> None:
    for path in ("/", f"/agents/{fleet.big}", f"/agents/{fleet.big}/at/262",
                 f"/agents/{fleet.big}/events/262", "/snapshots"):  # fmt: skip
        html = client.get(path).text
        assert XSS_NAME not in html and "<img src=x" not in html, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/").text
    assert "&lt;img src=x" in client.get(f"/agents/{fleet.big}/events/262").text
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_a_token_is_required_on_every_request(sqlite_url: str) -> None:
    seed_fleet(sqlite_url)
    app = create_app(sqlite_url, token="s3cret")
    with TestClient(app, base_url="http://192.0.2.10:8765") as client:
        for path in ("/", "/api/v1/fleet", "/static/console.css", "/projections"):
            r = client.get(path)
            assert r.status_code == 401, path
        assert "needs its token" in client.get("/api/v1/fleet").json()["error"]
        assert client.get("/api/v1/fleet", headers={"Authorization": "Bearer wrong"}
                          ).status_code == 401  # fmt: skip
        assert client.get("/api/v1/fleet", headers={"Authorization": "Bearer s3cret"}
                          ).status_code == 200  # fmt: skip
        r = client.get("/?token=s3cret&sort=bytes", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/?sort=bytes"
        assert "token" not in r.headers["location"]
        client.cookies.set("snaptail_ui_token", "s3cret")
        assert client.get("/").status_code == 200


def test_without_a_token_only_loopback_host_names_are_served(sqlite_url: str) -> None:
    seed_fleet(sqlite_url)
    with TestClient(create_app(sqlite_url), base_url="http://evil.example") as client:
        assert client.get("/api/v1/fleet").status_code == 400  # DNS rebinding
    with TestClient(create_app(sqlite_url), base_url="http://localhost:8765") as client:
        assert client.get("/api/v1/fleet").status_code == 200


def test_a_non_loopback_bind_needs_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(ValueError, match="not a loopback address, without a token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "s3cret")
    check_bind("127.0.0.1", None)
    result = CliRunner().invoke(cli_app, ["ui", "--host", "0.0.0.0"], env={"SNAPTAIL_UI_TOKEN": ""})
    assert result.exit_code == 2
    assert "--token" in result.output and "Traceback" not in result.output


def test_ui_without_its_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "snaptail.ui", None)  # import fails as if missing
    result = CliRunner().invoke(cli_app, ["ui"])
    assert result.exit_code == 1
    assert "pip install 'snaptail[ui]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_command_line_loads_no_web_library() -> None:
    code = (
        "import sys, snaptail.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'jinja2', 'uvicorn', 'snaptail.ui')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the read model's new columns -------------------------------------------------------


def test_agent_stats_upgrades_a_table_from_before_names(database_url: str) -> None:
    view = open_view(database_url)
    try:
        with view.transaction() as cur:  # the table as the first release made it, a row in it
            cur.execute(str(AgentStats.tables[0]))
            cur.execute(
                f"INSERT INTO {STATS_TABLE} VALUES (?, 'x:Agent', 7, 70, 'Created', NULL, 7, "
                "1, 2, 0, 0)",
                (str(uuid4()),),
            )
        assert "name" not in view.columns(STATS_TABLE)
    finally:
        view.close()
    fleet = seed_fleet(database_url)
    view = open_view(database_url)
    try:
        assert {"name", "cost_usd"} <= view.columns(STATS_TABLE)
    finally:
        view.close()
    with TestClient(create_app(fleet.url), base_url=LOCAL) as client:
        data = ok(client, "/api/v1/fleet")
    names = {UUID(a["id"]): a["name"] for a in data["agents"]}
    assert names == {**fleet.names, **{i: None for i in names if i not in fleet.names}}
    assert data["totals"]["agents"] == 5  # the old row counted once in the kept totals
    assert data["totals"]["events"] == sum(a["events"] for a in data["agents"])
    assert data["totals"]["tokens"] == sum(a["tokens"] for a in data["agents"])


def test_agent_stats_keeps_a_user_agent_types_name_across_batches(database_url: str) -> None:
    """The type named by the created event stays the row's type (the fleet's kind
    and the per-type figures rest on it) when later batches bring other events."""
    with AgentStore(database_url) as store:
        created = ChatPlatformAgent("support-bot")
        store.save(created)
        with ProjectionWorker(AgentStats, database_url) as worker:
            worker.catch_up()
        chat = store.get(created.id)
        chat.add_input("user", "an inherited event")
        store.save(chat)
        with ProjectionWorker(AgentStats, database_url) as worker:
            worker.catch_up()
            rows = read_agent_stats(worker.view, top=None)
    assert [(r.agent_type, r.events) for r in rows] == [
        ("examples.chat_agent:ChatPlatformAgent", 2)
    ]


def test_ui_refuses_a_database_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    result = CliRunner().invoke(cli_app, ["ui", "--db", f"sqlite:///{missing}"])
    assert result.exit_code == 1
    assert "no such database" in result.output and "Traceback" not in result.output
    assert not missing.exists()
