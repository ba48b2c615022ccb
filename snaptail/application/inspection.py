"""One agent's log, snapshots, load cost and memory, as plain values (``snaptail inspect``
prints them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from snaptail.application.budget import resolve_budget
from snaptail.application.directory import agent_name
from snaptail.application.store import AgentStore
from snaptail.domain.agent import Agent
from snaptail.domain.memory import MemoryUsage, format_bytes
from snaptail.domain.schema import event_name
from snaptail.domain.topics import agent_class_of
from snaptail.errors import AgentForgotten, AgentNotFound
from snaptail.infrastructure.recorder import SnapshotInfo
from snaptail.privacy.cipher import RedactedEvent
from snaptail.snapshots import SinceSnapshot, state_fingerprint


class InspectionStore(AgentStore):
    """An AgentStore that loads agents without enforcing memory budgets, so that an
    agent over its budget can be looked at (and reported) rather than refused."""

    enforces_budgets = False


@dataclass(frozen=True)
class SnapshotRow:
    version: int
    size: int
    valid: bool  # its fingerprint matches the running code


@dataclass(frozen=True)
class EventRow:
    version: int
    type: str
    time: datetime | None  # None: the event does not decode
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
    error: str = ""  # why the agent does not load ("" if it does)
    name: str = ""  # the name the agent was created with


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
    try:
        agent = store.get(agent_id)
    except AgentForgotten as gone:  # erased: its rows, redacted
        return _unloadable(store, agent_id, infos, last, str(gone))
    except AgentNotFound:
        raise
    except Exception as exc:  # report what can be read, and why it does not load
        return _unloadable(store, agent_id, infos, last, f"{type(exc).__name__}: {exc}")
    agent_class = type(agent)
    stats = store.load_stats(agent)
    loaded_from = stats.snapshot_version if stats else 0
    tail = stats.tail if stats else agent.version
    fingerprint = state_fingerprint(agent_class)
    snapshots = [
        SnapshotRow(info.originator_version, info.size, info.fingerprint == fingerprint)
        for info in infos
    ]
    event_bytes = _event_bytes(store, agent_id)
    last_events = _last_events(store, agent_id, last)
    memory = agent.memory_usage()
    if budget is None:
        budget = resolve_budget(agent_class, store.memory_budget)
    fell_back = f"the snapshot at version {loaded_from}" if loaded_from else "a full replay"
    warnings = [
        f"snapshot at version {version} not trusted: {why}; the load fell back to"
        f" {fell_back} and replaced it"
        for version, why in (stats.untrusted if stats else ())
    ]
    warnings += _warnings(store, agent, snapshots, loaded_from, tail, memory, budget)
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
        name=agent_name(store, agent_id),
    )


def _event_bytes(store: AgentStore, agent_id: UUID) -> int:
    """The bytes of the agent's stored events, archived and hot, read page by page
    (never decoded)."""
    archived = store.archive_reader.upto(agent_id)
    total = sum(len(row[2]) for row in store.archive_reader.rows(agent_id, 0, archived + 1))
    after: int | None = None
    while True:
        page = store.recorder.select_page(agent_id, gt=after, limit=1000)
        total += sum(len(s.state) for s in page)
        if len(page) < 1000:
            return total
        after = page[-1].originator_version


def _last_events(store: AgentStore, agent_id: UUID, last: int) -> list[EventRow]:
    """The newest ``last`` events; one that does not decode is listed by its topic."""
    rows = []
    for stored in store.recorder.select_page(agent_id, desc=True, limit=last):
        try:
            event = store.mapper.to_domain_event(stored)
        except Exception:
            name, time = f"{stored.topic} (does not decode)", None
        else:
            if isinstance(event, RedactedEvent):  # a forgotten agent's: no timestamp
                name, time = f"{event.event_name} (redacted)", None
            else:
                name, time = event_name(type(event)), event.timestamp
        rows.append(EventRow(stored.originator_version, name, time, len(stored.state)))
    return rows


def _unloadable(
    store: AgentStore, agent_id: UUID, infos: Sequence[SnapshotInfo], last: int, error: str
) -> Inspection:
    """An inspection of an agent that does not load: what its rows say, and why."""
    snapshot = store.recorder.select_for_load(agent_id, recent=0).snapshot
    agent_type, fingerprint = "?", None
    if snapshot is not None:
        agent_type = snapshot.topic.replace(":", ".")
        agent_class = agent_class_of(snapshot.topic)  # imports nothing
        try:
            fingerprint = None if agent_class is None else state_fingerprint(agent_class)
        except Exception:
            fingerprint = None
    return Inspection(
        agent_id=agent_id,
        agent_type=agent_type,
        version=store.event_count(agent_id),
        snapshots=[
            SnapshotRow(i.originator_version, i.size, i.fingerprint == fingerprint) for i in infos
        ],
        loaded_from=0,
        tail=0,
        load_ms=0.0,
        event_bytes=_event_bytes(store, agent_id),
        memory=MemoryUsage(0, {}),
        budget=None,
        last_events=_last_events(store, agent_id, last),
        warnings=[f"does not load: {error}"],
        error=error,
        name=agent_name(store, agent_id),
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
    since = SinceSnapshot(events=tail, bytes=store.bytes_since_snapshot(agent))
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
