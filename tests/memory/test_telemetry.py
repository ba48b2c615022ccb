"""Load telemetry: structured log lines, warnings before trouble, Prometheus metrics."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from snaptail import Agent, AgentStore, Never, metrics

FIELDS = ("agent", "type", "version", "snapshot_version", "tail", "events_read", "bytes_read", "ms")


def fields_of(record: logging.LogRecord) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", record.getMessage()))


def loads(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("agent loaded:")]


def grown(store: AgentStore, events: int) -> Agent:
    agent = Agent("telemetry")
    for i in range(events - 1):
        agent.set_metadata("step", str(i))
    store.save(agent)
    return agent


@pytest.fixture(autouse=True)
def metrics_off() -> Iterator[None]:
    metrics.disable()
    yield
    metrics.disable()


def test_every_load_logs_its_cost_at_debug_level(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with AgentStore(database_url, snapshot_every=20, recent_events=5) as store:
        agent = Agent("telemetry")
        for i in range(25):
            agent.set_metadata("step", str(i))
            store.save(agent)
        with caplog.at_level(logging.DEBUG, logger="snaptail.store"):
            loaded = store.get(agent.id)
    [record] = loads(caplog)
    assert record.levelno == logging.DEBUG
    found = fields_of(record)
    assert set(FIELDS) <= set(found)
    stats = store.load_stats(loaded)
    assert stats is not None
    assert found["agent"] == str(agent.id) and found["type"] == "Agent"
    assert int(found["version"]) == 26
    assert int(found["snapshot_version"]) == stats.snapshot_version == 20
    assert int(found["tail"]) == stats.tail == 6
    assert int(found["events_read"]) == stats.events_read
    assert int(found["bytes_read"]) == stats.bytes_read > 0
    assert "warn" not in found


def test_a_load_of_more_than_1000_events_logs_a_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with AgentStore(database_url, policy=Never(), recent_events=0) as store:
        agent = grown(store, 1_000)
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            store.get(agent.id)
        assert loads(caplog) == []  # 1,000 events: no warning
        agent.set_metadata("step", "one more")
        store.save(agent)
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            store.get(agent.id)
    [record] = loads(caplog)
    assert record.levelno == logging.WARNING
    found = fields_of(record)
    assert set(FIELDS) <= set(found)
    assert found["events_read"] == "1001" and found["warn"] == "events_read>1000"


def test_a_load_slower_than_slow_load_ms_logs_a_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        AgentStore(database_url, slow_load_ms=0) as slow,
        AgentStore(database_url, slow_load_ms=3_600_000) as patient,
    ):
        agent = grown(slow, 10)
        with caplog.at_level(logging.DEBUG, logger="snaptail.store"):
            patient.get(agent.id)
            slow.get(agent.id)
    quiet, loud = loads(caplog)
    assert quiet.levelno == logging.DEBUG and "warn" not in fields_of(quiet)
    assert loud.levelno == logging.WARNING and fields_of(loud)["warn"] == "ms>0"
    assert set(FIELDS) <= set(fields_of(loud))


def sample(registry: CollectorRegistry, name: str, agent_type: str = "Agent") -> float:
    value = registry.get_sample_value(name, {"agent_type": agent_type})
    return 0.0 if value is None else value


def test_metrics_record_loads_events_snapshot_age_and_memory(database_url: str) -> None:
    registry = CollectorRegistry()
    active = metrics.enable(registry)
    assert metrics.enable(registry) is active and metrics.active() is active
    with AgentStore(database_url, snapshot_every=10, recent_events=3) as store:
        agent = Agent("measured")
        for i in range(14):
            agent.set_metadata("step", str(i))
            store.save(agent)  # a snapshot at version 10; 5 events after it
        for _ in range(3):
            store.get(agent.id)
    assert sample(registry, "snaptail_load_seconds_count") == 3
    assert sample(registry, "snaptail_load_seconds_sum") > 0
    assert sample(registry, "snaptail_load_events_read_count") == 3
    assert sample(registry, "snaptail_load_events_read_sum") == 3 * 5
    assert sample(registry, "snaptail_snapshot_age_events_sum") == 3 * 5
    assert sample(registry, "snaptail_agent_memory_bytes_count") == 3
    assert sample(registry, "snaptail_agent_memory_bytes_sum") > 3 * 1_000

    metrics.disable()
    assert metrics.active() is None
    assert registry.get_sample_value("snaptail_load_seconds_count", {"agent_type": "Agent"}) is None


def test_store_metrics_true_enables_the_default_registry(database_url: str) -> None:
    with AgentStore(database_url, metrics=True) as store:
        agent = grown(store, 3)
        before = sample(REGISTRY, "snaptail_load_seconds_count")
        store.get(agent.id)
        assert sample(REGISTRY, "snaptail_load_seconds_count") == before + 1


def test_with_metrics_off_and_no_budget_a_load_never_measures_memory(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Agent) -> None:
        raise AssertionError("memory was measured")

    monkeypatch.setattr(Agent, "memory_usage", refuse)
    with AgentStore(database_url) as store:
        agent = grown(store, 5)
        assert store.get(agent.id).version == 5


def test_a_budget_check_records_one_memory_sample_per_load(database_url: str) -> None:
    registry = CollectorRegistry()
    metrics.enable(registry)
    with AgentStore(database_url, policy=Never(), recent_events=100) as unbounded:
        agent = Agent("shrunk-on-load")
        for i in range(60):
            agent.set_metadata("status", f"{i} " + "s" * 1_000)
        unbounded.save(agent)
    with AgentStore(database_url, policy=Never(), memory_budget="40KiB") as store:
        loaded = store.get(agent.id)  # over budget until its recent cache is halved
        assert len(loaded.recent_events) < 60
    assert sample(registry, "snaptail_agent_memory_bytes_count") == 1
    assert sample(registry, "snaptail_agent_memory_bytes_sum") <= 40 * 1024
