"""Snapshot maintenance over a whole database: prune to the retention rule, and verify
each agent's newest snapshot against a rebuild from its log.

Both page through the agents (``recorder.originator_ids``) and hold one agent at a
time; ``on_agent`` is called after each agent (for a progress bar).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from uuid import UUID

from snaptail.application.store import AgentStore
from snaptail.domain.compare import agent_differences, describe
from snaptail.domain.replay import apply_events
from snaptail.errors import AgentForgotten, AgentNotFound
from snaptail.infrastructure.recorder import SnapshotInfo
from snaptail.snapshots.trust import trust_snapshot

PAGE = 1000

OnAgent = Callable[[UUID], None]


def agent_ids(store: AgentStore, page: int = PAGE) -> Iterator[UUID]:
    """Every agent id in the database, in id order, read ``page`` at a time."""
    return store.agent_ids(page=page)


def count_agents(store: AgentStore) -> int:
    """How many agents the database holds (pages through the ids, holds none)."""
    return sum(1 for _ in agent_ids(store))


@dataclass(frozen=True)
class PruneReport:
    agents: int
    deleted: int
    keep: int


def prune_snapshots(
    store: AgentStore,
    keep: int | None = None,
    on_agent: OnAgent | None = None,
    *,
    dry_run: bool = False,
) -> PruneReport:
    """Delete all but the newest ``keep`` (default: the store's ``keep_snapshots``)
    snapshots of every agent; each agent is one transaction. ``dry_run``: count what
    would be deleted, write nothing."""
    keep = store.keep_snapshots if keep is None else keep
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    agents = deleted = 0
    for agent_id in agent_ids(store):
        if dry_run:
            deleted += would_prune(store.snapshot_infos(agent_id), keep)
        else:
            deleted += store.prune_snapshots(agent_id, keep)
        agents += 1
        if on_agent is not None:
            on_agent(agent_id)
    return PruneReport(agents=agents, deleted=deleted, keep=keep)


def would_prune(infos: Sequence[SnapshotInfo], keep: int) -> int:
    """How many of one agent's snapshots (``infos``, newest first) the retention rule
    deletes: those older than the ``keep``-th newest, except the newest snapshot of
    each of the two newest fingerprints (the recorders' pruning, as a count)."""
    versions = sorted((i.originator_version for i in infos), reverse=True)
    if len(versions) <= keep:
        return 0
    cutoff = versions[keep - 1]
    newest: dict[str, int] = {}
    for info in infos:
        newest[info.fingerprint] = max(newest.get(info.fingerprint, 0), info.originator_version)
    protected = set(sorted(newest.values(), reverse=True)[:2])
    return sum(1 for v in versions if v < cutoff and v not in protected)


@dataclass(frozen=True)
class Verdict:
    """The newest snapshot of one agent, compared with a rebuild from its log.

    ``status`` is ``ok``, ``mismatch`` (decoded, but some attributes differ from the
    rebuild, in value or type: ``fields`` names them, ``detail`` gives both values),
    ``forgotten`` (its data was erased by ``store.forget``),
    ``untrusted`` (a load would not use it: ``detail`` says why), ``error`` (its log
    cannot be read or replayed: ``detail`` says why) or ``none`` (the agent has no
    snapshot).
    """

    agent_id: UUID
    agent_type: str
    snapshot_version: int | None
    status: str
    fields: tuple[str, ...] = ()
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in {"mismatch", "untrusted", "error"}


def verify_agent(store: AgentStore, agent_id: UUID) -> Verdict:
    """Compare the agent's newest snapshot with :meth:`AgentStore.replay` at its version
    (every attribute, NaN-safe), then replay the events after it as a load would. A log
    that cannot be read or replayed gives status ``error`` (``detail`` says why); an
    unknown id raises :class:`~snaptail.AgentNotFound`."""
    agent_type = "?"
    version: int | None = None
    try:
        rows = store.recorder.select_for_load(agent_id, recent=0)
        snapshot = rows.snapshot
        if snapshot is None:
            replayed = store.replay(agent_id)  # raises AgentNotFound for an unknown id
            return Verdict(agent_id, type(replayed).__qualname__, None, "none")
        version = snapshot.originator_version
        agent_type = snapshot.topic.rpartition(":")[2] or snapshot.topic
        decoded, why = trust_snapshot(snapshot, store.open_snapshot)
        if decoded is None:
            return Verdict(agent_id, agent_type, version, "untrusted", detail=why)
        replayed = store.replay(agent_id, version=version)
        differences = agent_differences(decoded, replayed)
        if differences:
            fields = tuple(d.path.lstrip("_") for d in differences)
            return Verdict(
                agent_id, agent_type, version, "mismatch", fields, detail=describe(differences)
            )
        apply_events(replayed, store.history(agent_id, after=version))  # the tail a load reads
    except AgentForgotten as gone:  # erased on purpose: not a failure
        return Verdict(agent_id, agent_type, version, "forgotten", detail=str(gone))
    except AgentNotFound:
        raise
    except Exception as exc:  # every other failure is this agent's verdict
        why = f"{type(exc).__name__}: {exc}"
        return Verdict(agent_id, agent_type, version, "error", detail=why)
    return Verdict(agent_id, agent_type, version, "ok")


def sample_agent_ids(store: AgentStore, n: int, seed: int | None = None) -> list[UUID]:
    """``n`` agent ids drawn uniformly at random from the whole database (reservoir
    sampling over the id pages: holds ``n`` ids, reads each id once)."""
    if n < 1:
        raise ValueError(f"sample size must be >= 1, got {n}")
    rnd = random.Random(seed)
    chosen: list[UUID] = []
    for seen, agent_id in enumerate(agent_ids(store)):
        if seen < n:
            chosen.append(agent_id)
        else:
            slot = rnd.randrange(seen + 1)
            if slot < n:
                chosen[slot] = agent_id
    return sorted(chosen)


def verify_snapshots(
    store: AgentStore, ids: Iterable[UUID] | None = None, on_agent: OnAgent | None = None
) -> Iterator[Verdict]:
    """Verify the newest snapshot of each of ``ids`` (default: every agent)."""
    for agent_id in agent_ids(store) if ids is None else ids:
        yield verify_agent(store, agent_id)
        if on_agent is not None:
            on_agent(agent_id)
