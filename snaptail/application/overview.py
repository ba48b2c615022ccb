"""Read-only questions about a database, for consoles and dashboards (``snaptail ui``).

Everything here reads; nothing writes. :class:`ReadOnlyStore` loads agents like
:class:`~snaptail.application.inspection.InspectionStore` (no memory budget enforced,
so an agent over its budget can be looked at) and, unlike a plain store, never
replaces an untrusted snapshot it passed over: it only reports it.

The functions take a store and use its recorder, so that callers above the
application layer (the web console) need no recorder of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import msgspec

from snaptail.application.engine import MAX_VERSION
from snaptail.application.inspection import InspectionStore
from snaptail.application.maintenance import Verdict, sample_agent_ids, verify_agent
from snaptail.application.store import AgentStore
from snaptail.infrastructure.recorder import SnapshotInfo, StoredSnapshot
from snaptail.snapshots.trust import judge_snapshot

logger = logging.getLogger("snaptail.overview")

__all__ = [
    "ReadOnlyStore",
    "SnapshotCheck",
    "agent_id_page",
    "check_newest_snapshot",
    "event_time",
    "head_notification",
    "newest_snapshot",
    "snapshot_infos",
    "verify_sample",
]


class ReadOnlyStore(InspectionStore):
    """A store for looking: loads without enforcing memory budgets, and a load that
    passes over a corrupt or stale snapshot logs it without writing a fresh one."""

    repairs_snapshots = False


def snapshot_infos(store: AgentStore, agent_id: UUID) -> Sequence[SnapshotInfo]:
    """The agent's stored snapshots, newest first, without their bytes."""
    return store.recorder.select_snapshot_infos(agent_id)


def newest_snapshot(store: AgentStore, agent_id: UUID) -> StoredSnapshot | None:
    """The agent's newest stored snapshot row (trusted or not), None if it has none."""
    return store.recorder.select_snapshot(agent_id, lte=MAX_VERSION)


@dataclass(frozen=True)
class SnapshotCheck:
    """The newest snapshot of one agent as a load would judge it.

    ``status``: ``ok`` (a load uses it), ``stale`` (written by other code),
    ``corrupt`` (bad checksum or does not decode), ``newer`` (written by newer code)
    or ``missing`` (the agent has no snapshot); ``why`` says why it is not used."""

    agent_id: UUID
    version: int | None
    fingerprint: str
    status: str
    why: str = ""


def check_newest_snapshot(store: AgentStore, agent_id: UUID) -> SnapshotCheck:
    """Judge the agent's newest snapshot (decodes it, as a load would; writes nothing)."""
    snapshot = newest_snapshot(store, agent_id)
    if snapshot is None:
        return SnapshotCheck(agent_id, None, "", "missing", "no snapshot stored")
    judgement = judge_snapshot(snapshot)
    status = "ok" if judgement.agent is not None else judgement.kind
    return SnapshotCheck(
        agent_id, snapshot.originator_version, snapshot.fingerprint, status, judgement.why
    )


def agent_id_page(
    store: AgentStore, *, after: UUID | None = None, limit: int = 100
) -> Sequence[UUID]:
    """Up to ``limit`` agent ids after ``after``, in id order (every agent with events
    or snapshots, read from the event database's index)."""
    return store.recorder.originator_ids(after=after, limit=limit)


def head_notification(store: AgentStore) -> int:
    """The newest notification id in the event log (0 if the log is empty)."""
    return store.recorder.max_notification_id() or 0


class _Stamped(msgspec.Struct):
    timestamp: datetime | None = None


def event_time(store: AgentStore, notification_id: int) -> datetime | None:
    """When the first event at or after ``notification_id`` was recorded (None: no
    such event, or it has no timestamp). Decodes one field of one row."""
    rows = store.recorder.select_notifications(notification_id, limit=1)
    if not rows:
        return None
    try:
        return msgspec.msgpack.decode(rows[0].state, type=_Stamped).timestamp
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def verify_sample(store: AgentStore, n: int, seed: int | None = None) -> list[Verdict]:
    """``snaptail snapshots verify --sample N``: rebuild ``n`` agents drawn at random
    from their logs and compare each with its newest snapshot. Reads only."""
    return [verify_agent(store, agent_id) for agent_id in sample_agent_ids(store, n, seed)]
