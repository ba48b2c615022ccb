"""The workload generator (deterministic, realistic) and the `snaptail bench` commands
(smoke runs on tiny logs: output shape only, never timings)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
from typer.testing import CliRunner

from snaptail import Agent, AgentStore
from snaptail.cli import app
from snaptail.workload import (
    LARGE_WEBHOOK_BYTES,
    TOOL_OUTPUT_MAX,
    TURN_EVENTS,
    WEBHOOK_BYTES,
    Workload,
    plain_events,
)

runner = CliRunner()


def _encoded(seed: int, events: int) -> list[bytes]:
    return [msgspec.msgpack.encode(record) for record in plain_events(seed, events)]


def test_same_seed_gives_identical_encoded_events() -> None:
    first = _encoded(7, 600)
    assert len(first) == 601  # the creation event, then exactly 600
    assert first == _encoded(7, 600)
    assert first != _encoded(8, 600)


def test_driven_agents_with_the_same_seed_store_the_same_payloads(sqlite_url: str) -> None:
    store = AgentStore(sqlite_url)
    agents = [Agent(name="agent"), Agent(name="agent")]
    for agent in agents:
        Workload(seed=3).drive(agent, 300, save=store.save, batch=50)
    payloads = []
    for agent in agents:
        events = list(store.history(agent.id))
        payloads.append(
            [
                (type(e).__name__, {k: v for k, v in vars(e).items() if k not in _ENVELOPE})
                for e in events
            ]
        )
    assert payloads[0] == payloads[1]
    assert agents[0].state == agents[1].state
    store.close()


_ENVELOPE = {"originator_id", "originator_version", "timestamp"}


def test_drive_records_exactly_the_events_asked_for_in_batches(sqlite_url: str) -> None:
    store = AgentStore(sqlite_url)
    agent = Agent(name="agent")
    saved: list[int] = []

    def save(a: Agent) -> None:
        saved.append(len(a.pending_events))
        store.save(a)

    workload = Workload(seed=1)
    assert workload.drive(agent, 250, save=save, batch=100) == 250
    assert saved == [101, 100, 50]  # the creation event goes with the first save
    assert store.event_count(agent.id) == 251
    # A turn cut short is resumed by the next call, on the same agent.
    workload.drive(agent, 123, save=store.save, batch=100)
    assert store.event_count(agent.id) == 374
    assert store.get(agent.id).state == agent.state
    store.close()


def test_turns_have_the_documented_sizes() -> None:
    workload = Workload(seed=11)
    agent = Agent(name="agent")
    sizes = [workload.turn(agent) for _ in range(300)]
    low = min(bounds[0] for bounds in TURN_EVENTS.values())
    high = max(bounds[1] for bounds in TURN_EVENTS.values())
    assert low <= min(sizes) and max(sizes) <= high
    assert any(size >= 20 for size in sizes) and any(size <= 15 for size in sizes)
    assert agent.version == 1 + sum(sizes)


def test_event_mix_and_payload_sizes_are_realistic() -> None:
    records = list(plain_events(5, 20_000))
    kinds = Counter(kind for kind, _ in records)
    for kind in (
        "WebhookReceived",
        "InputItemAdded",
        "OutputItemAdded",
        "LlmRequestStarted",
        "LlmRequestFinished",
        "ToolCallRequested",
        "ToolCallCompleted",
        "ToolApprovalRequested",
        "ToolApprovalDecided",
        "MetadataSet",
        "ParticipantJoined",
        "ErrorRecorded",
        "ContextCompacted",
    ):
        assert kinds[kind] > 0, kind
    assert kinds["LlmRequestStarted"] == kinds["LlmRequestFinished"]
    webhooks = [len(p["payload"]) for k, p in records if k == "WebhookReceived"]
    ordinary = [size for size in webhooks if size <= WEBHOOK_BYTES[1] + 200]
    large = [size for size in webhooks if size > WEBHOOK_BYTES[1] + 200]
    assert min(webhooks) >= WEBHOOK_BYTES[0] - 200
    assert 0 < len(large) < 0.1 * len(webhooks)
    assert max(large) <= LARGE_WEBHOOK_BYTES[1] + 200
    assert len(ordinary) > 0.9 * len(webhooks)
    outputs = [
        len(p["output"]) for k, p in records if k == "ToolCallCompleted" and p["output"] is not None
    ]
    errors = [p for k, p in records if k == "ToolCallCompleted" and p["error"] is not None]
    assert 1_000 <= statistics.median(outputs) <= 5_000  # a few KB
    assert max(outputs) > 20_000  # with a long tail
    assert max(outputs) <= TOOL_OUTPUT_MAX
    assert 0 < len(errors) < 0.15 * (len(outputs) + len(errors))
    webhook = next(p for k, p in records if k == "WebhookReceived")
    assert json.loads(webhook["payload"])["type"] == "event_callback"


# -- the CLI ----------------------------------------------------------------------------


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _positive(record: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = record[key]
        assert isinstance(value, int | float) and value > 0, (key, record)


def test_bench_intervals_json_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "intervals.png"
    result = runner.invoke(
        app,
        [
            "bench",
            "intervals",
            "--quick",
            "--events",
            "150,300",
            "--intervals",
            "none,20,50",
            "--json",
            "--plot",
            str(plot),
            "--target-ms",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    records = _json_lines(result.stdout)
    measurements = [r for r in records if r["kind"] == "measurement"]
    assert [(r["interval"], r["events"]) for r in measurements] == [
        (None, 150),
        (None, 300),
        (20, 150),
        (20, 300),
        (50, 150),
        (50, 300),
    ]
    for r in measurements:
        _positive(
            r,
            "append_events_per_s",
            "load_ms_p50",
            "load_ms_p95",
            "load_peak_bytes",
            "resident_bytes",
            "snapshot_bytes",
            "storage_bytes",
        )
        assert r["load_ms_p95"] >= r["load_ms_p50"]
        if r["interval"] is None:
            assert r["snapshots_written"] == 0 == r["snapshots_kept"]
        else:
            assert r["snapshots_written"] >= r["events"] // r["interval"] - 1
            assert 1 <= r["snapshots_kept"] <= 2
    (recommendation,) = [r for r in records if r["kind"] == "recommendation"]
    assert recommendation["recommended_interval"] >= 1
    _positive(recommendation, "fold_ms_per_event", "base_load_ms", "snapshot_write_ms")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_scale_json_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "scale.png"
    result = runner.invoke(
        app,
        ["bench", "scale", "--quick", "--events", "150,300", "--json", "--plot", str(plot)],
    )
    assert result.exit_code == 0, result.output
    records = _json_lines(result.stdout)
    loads = [r for r in records if r["kind"] == "load"]
    systems = {r["system"] for r in loads}
    assert systems == {
        "snaptail",
        "snaptail-no-recent",
        "stock",
        "stock-full",
        "load-everything",
        "floor",
        "floor-no-recent",
    }
    assert len(loads) == 2 * len(systems)
    for r in loads:
        assert not r["stopped"]
        _positive(r, "load_ms_p50", "load_ms_p95", "load_peak_bytes", "resident_bytes")
    appends = [r for r in records if r["kind"] == "append"]
    assert sorted((r["system"], r["events"]) for r in appends) == [
        ("floor", 150),
        ("floor", 300),
        ("floor-events", 150),
        ("floor-events", 300),
        ("snaptail", 150),
        ("snaptail", 300),
        ("stock", 150),
        ("stock", 300),
    ]
    for r in appends:
        _positive(r, "append_events_per_s", "storage_bytes")
    tiny = [r for r in records if r["kind"] == "tiny-load"]
    assert sorted(r["system"] for r in tiny) == ["floor-no-recent", "snaptail-no-recent"]
    for r in tiny:
        _positive(r, "load_ms_p50", "load_ms_p95", "load_runs")
    targets = [r for r in records if r["kind"] == "target"]
    assert len(targets) == 9
    assert all(isinstance(t["met"], bool) and t["measured"] > 0 for t in targets)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_bad_arguments() -> None:
    result = runner.invoke(app, ["bench", "intervals", "--intervals", "ten"])
    assert result.exit_code != 0
    result = runner.invoke(app, ["bench", "scale", "--events", "0"])
    assert result.exit_code != 0


def test_the_floor_writer_stores_the_rows_snaptail_stores(tmp_path: Path) -> None:
    """The append floor is a fair one: the same event rows (payloads equal but for
    timestamps) and a snapshot row at the same versions."""
    import sqlite3

    from snaptail.bench.systems import FloorWriter
    from snaptail.infrastructure.recorder import SNAPSHOTS_TABLE

    def rows(path: Path) -> tuple[list[Any], list[int]]:
        with sqlite3.connect(path) as c:
            events = [
                (version, topic, _without_timestamp(msgspec.msgpack.decode(state)))
                for version, topic, state in c.execute(
                    "SELECT originator_version, topic, state FROM stored_events "
                    "ORDER BY originator_version"
                )
            ]
            snapshots = [
                v for (v,) in c.execute(f"SELECT originator_version FROM {SNAPSHOTS_TABLE}")
            ]
        return events, sorted(snapshots)

    with AgentStore(f"sqlite:///{tmp_path / 'ours.db'}", snapshot_every=50) as store:
        Workload(seed=5).drive(Agent(name="agent"), 240, save=store.save, batch=40)
    floor = FloorWriter(tmp_path / "floor.db", 50)
    Workload(seed=5).drive(Agent(name="agent"), 240, save=floor.save, batch=40)
    floor.close()
    ours, floor_rows = rows(tmp_path / "ours.db"), rows(tmp_path / "floor.db")
    assert len(ours[0]) == 241
    assert ours == floor_rows


def _without_timestamp(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "timestamp"}
