"""Optional Prometheus metrics (``pip install snaptail[metrics]``).

Off by default, and then free: the store checks one module global per load. Turn
them on with ``snaptail.metrics.enable()`` (or ``AgentStore(metrics=True)``), then
expose ``prometheus_client``'s registry as usual (``start_http_server``...).

Metrics, each labelled by ``agent_type``:

* ``snaptail_load_seconds`` (histogram): time to load one agent;
* ``snaptail_load_events_read`` (histogram): events read by one load;
* ``snaptail_snapshot_age_events`` (histogram): events replayed after the snapshot
  a load started from (its tail: what a snapshot would have saved);
* ``snaptail_agent_memory_bytes`` (histogram): ``memory_bytes()`` of agents, measured
  at load and save when a memory budget applies, else at load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Histogram

_EVENT_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)
_LOAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BYTE_BUCKETS = tuple(float(2**n) for n in range(10, 31, 2))  # 1 KiB .. 1 GiB


class SnaptailMetrics:
    """The metric objects, registered in one ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Histogram

        self.registry = registry
        self.load_seconds = Histogram(
            "snaptail_load_seconds",
            "Time to load one agent (snapshot + tail).",
            ["agent_type"],
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self.load_events = Histogram(
            "snaptail_load_events_read",
            "Events read by one load.",
            ["agent_type"],
            buckets=_EVENT_BUCKETS,
            registry=registry,
        )
        self.snapshot_age = Histogram(
            "snaptail_snapshot_age_events",
            "Events replayed after the snapshot a load started from.",
            ["agent_type"],
            buckets=_EVENT_BUCKETS,
            registry=registry,
        )
        self.memory = Histogram(
            "snaptail_agent_memory_bytes",
            "Bytes a loaded agent holds (Agent.memory_bytes()).",
            ["agent_type"],
            buckets=_BYTE_BUCKETS,
            registry=registry,
        )

    def collectors(self) -> tuple[Histogram, ...]:
        return (self.load_seconds, self.load_events, self.snapshot_age, self.memory)

    def observe_load(self, agent_type: str, seconds: float, events_read: int, tail: int) -> None:
        self.load_seconds.labels(agent_type).observe(seconds)
        self.load_events.labels(agent_type).observe(events_read)
        self.snapshot_age.labels(agent_type).observe(tail)

    def observe_memory(self, agent_type: str, size: int) -> None:
        self.memory.labels(agent_type).observe(size)


_active: SnaptailMetrics | None = None


def enable(registry: Any = None) -> SnaptailMetrics:
    """Start recording metrics into ``registry`` (default: prometheus_client's global
    ``REGISTRY``). Enabling again with the same registry returns the same metrics;
    with another registry, metrics move there."""
    global _active
    try:
        from prometheus_client import REGISTRY
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "snaptail metrics need prometheus-client: pip install 'snaptail[metrics]'"
        ) from exc
    target = REGISTRY if registry is None else registry
    if _active is not None and _active.registry is target:
        return _active
    disable()
    _active = SnaptailMetrics(target)
    return _active


def disable() -> None:
    """Stop recording and unregister snaptail's metrics from their registry."""
    global _active
    if _active is None:
        return
    for collector in _active.collectors():
        _active.registry.unregister(collector)
    _active = None


def active() -> SnaptailMetrics | None:
    """The enabled metrics, or None when metrics are off."""
    return _active
