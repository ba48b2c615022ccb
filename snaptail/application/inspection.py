"""One agent's log, snapshots, load cost and memory, as plain values (``snaptail inspect``
prints them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from snaptail.application.budget import resolve_budget
from snaptail.application.loading import tracking
from snaptail.application.store import AgentStore
from snaptail.domain.agent import Agent
from snaptail.domain.memory import MemoryUsage, format_bytes
from snaptail.domain.schema import event_name
from snaptail.snapshots import SinceSnapshot, state_fingerprint


class InspectionStore(AgentStore):
    """An AgentStore that loads agents without enforcing memory budgets, so that an
    agent over its budget can be looked at (and reported) rather than refused."""

    def _check_memory(self, agent: Agent, *, can_shed: bool, saving: bool) -> None:
        return None


@dataclass(frozen=True)
class SnapshotRow:
    version: int
    size: int
    valid: bool  # its fingerprint matches the running code


@dataclass(frozen=True)
class EventRow:
    version: int
    type: str
    time: datetime
    size: int


@dataclass(frozen=True)
class Inspection:
    """What ``inspect_agent`` found; ``warnings`` is empty for a healthy agent."""

    agent_id: UUID
    agent_type: str
    version: int
    snapshots: list[SnapshotRow]
    loaded_from: int  # the version of the snapshot the load used (0: none)
    tail: int
    load_ms: float
    event_bytes: int
    memory: MemoryUsage
    budget: int | None
    last_events: list[EventRow]
    warnings: list[str]


def inspect_agent(
    store: AgentStore, agent_id: UUID, last: int = 20, budget: int | None = None
) -> Inspection:
    """Inspect one agent. Reads the log page by page to sum its bytes (never holds it).

    Snapshots are listed as found before the agent is loaded (a load that had to fall
    back past an invalid snapshot may write a fresh one).

    ``budget`` overrides the agent type's and the store's memory budget. Pass an
    :class:`InspectionStore` to inspect agents that are over their budget.
    """
    infos = store.recorder.select_snapshot_infos(agent_id)  # as found, before loading
    agent = store.get(agent_id)
    agent_class = type(agent)
    stats = store.load_stats(agent)
    loaded_from = stats.snapshot_version if stats else 0
    tail = stats.tail if stats else agent.version
    fingerprint = state_fingerprint(agent_class)
    snapshots = [
        SnapshotRow(info.originator_version, info.size, info.fingerprint == fingerprint)
        for info in infos
    ]
    event_bytes = 0
    after: int | None = None
    while True:
        page = store.recorder.select_page(agent_id, gt=after, limit=1000)
        event_bytes += sum(len(s.state) for s in page)
        if len(page) < 1000:
            break
        after = page[-1].originator_version
    newest = store.recorder.select_page(agent_id, desc=True, limit=last)
    last_events = [
        EventRow(
            version=stored.originator_version,
            type=event_name(type(event)),
            time=event.timestamp,
            size=len(stored.state),
        )
        for stored in newest
        for event in (store.mapper.to_domain_event(stored),)
    ]
    memory = agent.memory_usage()
    if budget is None:
        budget = resolve_budget(agent_class, store.memory_budget)
    warnings = _warnings(store, agent, snapshots, loaded_from, tail, memory, budget)
    return Inspection(
        agent_id=agent_id,
        agent_type=f"{agent_class.__module__}.{agent_class.__qualname__}",
        version=agent.version,
        snapshots=snapshots,
        loaded_from=loaded_from,
        tail=tail,
        load_ms=stats.ms if stats else 0.0,
        event_bytes=event_bytes,
        memory=memory,
        budget=budget,
        last_events=last_events,
        warnings=warnings,
    )


def _warnings(
    store: AgentStore,
    agent: Agent,
    snapshots: list[SnapshotRow],
    loaded_from: int,
    tail: int,
    memory: MemoryUsage,
    budget: int | None,
) -> list[str]:
    found = []
    if snapshots and not any(s.valid for s in snapshots):
        found.append(
            f"no valid snapshot: all {len(snapshots)} were written by other code (fingerprint"
            " mismatch); every load replays the full log until a new one is taken"
        )
    elif snapshots and loaded_from == 0:
        found.append("no valid snapshot: none of the stored snapshots could be used")
    since = SinceSnapshot(events=tail, bytes=tracking(agent).bytes_since)
    if store.policy.should_snapshot(since):
        found.append(
            f"tail past its policy: {tail} events since the last snapshot"
            f" ({'none' if loaded_from == 0 else f'version {loaded_from}'}); the snapshot"
            f" policy {store.policy!r} wanted one by now"
        )
    if budget is not None and memory.total > budget:
        found.append(
            f"over its memory budget: {format_bytes(memory.total)} held, budget"
            f" {format_bytes(budget)}; largest parts: {memory.describe()}"
        )
    return found
