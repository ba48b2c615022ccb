"""``AgentStore``: saves agents, loads them from the latest snapshot plus a short tail."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import resolve_topic

from snaptail.domain.agent import MIB, Agent
from snaptail.domain.errors import AgentNotFound, ConcurrencyError, EventTooLarge
from snaptail.domain.memory import parse_size
from snaptail.domain.recent import RecentEvents, Undecoded
from snaptail.domain.replay import apply_events
from snaptail.domain.schema import event_name
from snaptail.infrastructure.budget import enforce_budget, observe_memory, resolve_budget
from snaptail.infrastructure.database import open_recorder, resolve_url
from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.recorder import AgentRecorder, LoadRows, StoredSnapshot
from snaptail.infrastructure.telemetry import report_load
from snaptail.snapshots import (
    EveryNEvents,
    SinceSnapshot,
    SnapshotPolicy,
    checksum,
    decode_state,
    encode_state,
    state_fingerprint,
)
from snaptail.snapshots.codec import upcastable

logger = logging.getLogger("snaptail.store")

TAgent = TypeVar("TAgent", bound=Agent)

# Warn when one load reads more events than this, and each time an agent
# accumulates this many more events since its last snapshot.
WARN_EVENTS = 1000


@dataclass(frozen=True)
class LoadStats:
    """What one load of an agent read and cost."""

    snapshot_version: int
    tail: int
    events_read: int
    bytes_read: int
    ms: float


@dataclass
class SavePlan:
    """What one save writes: per agent its new events and their bytes, then the
    encoded events and snapshots (built before any I/O)."""

    batches: list[tuple[Agent, list[Any], int]]
    stored: list[StoredEvent]
    snapshots: list[StoredSnapshot]


@dataclass
class _Tracking:
    """What the store remembers about a loaded agent (kept on the agent object)."""

    snapshot_version: int
    bytes_since: int
    last_load: LoadStats | None = None


def _tracking(agent: Agent) -> _Tracking:
    track = agent.__dict__.get("_snaptail")
    if track is None:
        track = _Tracking(snapshot_version=0, bytes_since=0)
        agent.__dict__["_snaptail"] = track
    return cast(_Tracking, track)


def _tail_load_ms(track: _Tracking, events_since: int) -> float | None:
    """What loading the agent from its last snapshot costs: the last load's measured
    time, scaled up to the events appended since. None if not measured since the
    last snapshot."""
    last = track.last_load
    if last is None or last.snapshot_version != track.snapshot_version:
        return None
    if last.tail and events_since > last.tail:
        return last.ms * events_since / last.tail
    return last.ms


class AgentStore:
    """Stores agents' events and snapshots; loads agents without reading their full log.

    ``url`` is ``sqlite:///FILE`` (default ``./snaptail.db``, or
    ``$SNAPTAIL_DATABASE_URL``), ``:memory:`` or ``postgresql://...``.
    ``snapshot_every`` events a snapshot is written with the save that crosses it
    (or pass a ``policy``, and ``policies={AgentType: policy}`` for agent types,
    subclasses included, that need another); ``keep_snapshots`` newest snapshots are
    kept per agent;
    ``recent_events`` bounds each loaded agent's cache of its newest events;
    ``max_event_bytes`` bounds one encoded event. ``memory_budget`` (bytes or
    ``"2MiB"``) bounds each loaded agent (an agent type's own ``memory_budget`` wins);
    ``slow_load_ms`` makes slower loads log a warning; ``metrics=True`` turns on
    Prometheus metrics (``snaptail.metrics``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        snapshot_every: int = 100,
        recent_events: int = 100,
        policy: SnapshotPolicy | None = None,
        policies: Mapping[type[Agent], SnapshotPolicy] | None = None,
        keep_snapshots: int = 2,
        max_event_bytes: int = MIB,
        memory_budget: int | str | None = None,
        slow_load_ms: float | None = None,
        metrics: bool = False,
        **options: Any,
    ) -> None:
        if recent_events < 0:
            raise ValueError(f"recent_events must be >= 0, got {recent_events}")
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots must be >= 1, got {keep_snapshots}")
        self.memory_budget = None if memory_budget is None else parse_size(memory_budget)
        self.url = resolve_url(url)
        self.recorder: AgentRecorder = open_recorder(self.url, **options)
        self.mapper = MsgspecMapper()
        self.policy: SnapshotPolicy = policy or EveryNEvents(snapshot_every)
        self.policies: dict[type[Agent], SnapshotPolicy] = dict(policies or {})
        self.recent_events = recent_events
        self.keep_snapshots = keep_snapshots
        self.max_event_bytes = max_event_bytes
        self.slow_load_ms = slow_load_ms
        if metrics:
            from snaptail import metrics as prometheus

            prometheus.enable()

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        close = getattr(self.recorder, "close", None) or getattr(
            getattr(self.recorder, "datastore", None), "close", None
        )
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- saving ---------------------------------------------------------------------

    def save(self, *agents: Agent) -> None:
        """Store the agents' new events (and any snapshot due) in one transaction.

        Only new events are written. On a version conflict nothing is written,
        :class:`ConcurrencyError` is raised, and the agents keep their new events.
        """
        plan = self._plan_save(agents)
        if plan is None:
            return
        try:
            self.recorder.insert_events(
                plan.stored, snapshots=plan.snapshots, keep_snapshots=self.keep_snapshots
            )
        except IntegrityError as exc:
            raise self._conflict(plan) from exc
        self._saved(plan)
        for agent, _, _ in plan.batches:
            self._check_memory(agent, can_shed=True, saving=True)

    def _plan_save(self, agents: Sequence[Agent]) -> SavePlan | None:
        """Encode the agents' new events and any snapshot due (no I/O); None if
        there is nothing to write."""
        plan = SavePlan([], [], [])
        for agent in agents:
            pending = list(agent.pending_events)
            if not pending:
                continue
            encoded = [self._encode(agent, event) for event in pending]
            new_bytes = sum(len(s.state) for s in encoded)
            plan.batches.append((agent, pending, new_bytes))
            plan.stored.extend(encoded)
            snapshot = self._due_snapshot(agent, new_bytes)
            if snapshot is not None:
                plan.snapshots.append(snapshot)
        return plan if plan.stored else None

    @staticmethod
    def _conflict(plan: SavePlan) -> ConcurrencyError:
        """The error for a save whose events conflicted with stored ones."""
        agent, pending, _ = plan.batches[0]
        others = ", ".join(str(a.id) for a, _, _ in plan.batches[1:])
        return ConcurrencyError(
            agent.id,
            pending[0].originator_version,
            f"saved together with {others}" if others else "",
        )

    def _saved(self, plan: SavePlan) -> None:
        """Update the agents after their events were committed (no I/O)."""
        snapshotted = {s.originator_id: s.originator_version for s in plan.snapshots}
        for agent, pending, new_bytes in plan.batches:
            del agent.pending_events[: len(pending)]
            self._after_save(agent, pending, new_bytes, snapshotted.get(agent.id))

    def _check_memory(self, agent: Agent, *, can_shed: bool, saving: bool) -> None:
        """Keep the agent within its memory budget, if one applies (see budget.py)."""
        budget = resolve_budget(type(agent), self.memory_budget)
        if budget is not None:
            enforce_budget(self, agent, budget, can_shed=can_shed, saving=saving)
        elif not saving:
            observe_memory(agent)

    def _encode(self, agent: Agent, event: Any) -> StoredEvent:
        stored = self.mapper.to_stored_event(event)
        if len(stored.state) > self.max_event_bytes:
            fields = {k: v for k, v in vars(event).items() if k not in {"originator_id"}}
            sizes = {k: len(self.mapper._encoder.encode(v)) for k, v in fields.items()}
            raise EventTooLarge(
                agent.id,
                event_name(type(event)),
                max(sizes, key=sizes.__getitem__),
                len(stored.state),
                self.max_event_bytes,
            )
        return stored

    def _due_snapshot(self, agent: Agent, new_bytes: int) -> StoredSnapshot | None:
        track = _tracking(agent)
        events_since = agent.version - track.snapshot_version
        since = SinceSnapshot(
            events=events_since,
            bytes=track.bytes_since + new_bytes,
            load_ms=_tail_load_ms(track, events_since),
        )
        if not self.policy_for(type(agent)).should_snapshot(since):
            return None
        return self._take_snapshot(agent)

    def policy_for(self, agent_type: type[Agent]) -> SnapshotPolicy:
        """The snapshot policy for ``agent_type``: its entry in ``policies`` (or its
        nearest base class's), else the store's ``policy``."""
        if self.policies:
            for cls in agent_type.__mro__:
                policy = self.policies.get(cls)
                if policy is not None:
                    return policy
        return self.policy

    def _take_snapshot(self, agent: Agent) -> StoredSnapshot | None:
        try:
            data = encode_state(agent)
        except Exception as exc:  # a snapshot must never fail a save
            logger.warning(
                "snapshot skipped: agent=%s version=%s reason=%s", agent.id, agent.version, exc
            )
            return None
        return StoredSnapshot(
            originator_id=agent.id,
            originator_version=agent.version,
            topic=self.mapper.topic_of(type(agent)),
            fingerprint=state_fingerprint(type(agent)),
            checksum=checksum(data),
            state=data,
        )

    def _after_save(
        self,
        agent: Agent,
        events: list[Any],
        new_bytes: int,
        snapshot_version: int | None,
    ) -> None:
        track = _tracking(agent)
        before = agent.version - len(events) - track.snapshot_version
        if snapshot_version is not None:
            track.snapshot_version = snapshot_version
            track.bytes_since = 0
        else:
            track.bytes_since += new_bytes
        since = agent.version - track.snapshot_version
        if since // WARN_EVENTS > max(before, 0) // WARN_EVENTS:
            logger.warning(
                "agent has many events since its last snapshot: agent=%s version=%s "
                "snapshot_version=%s events_since_snapshot=%s",
                agent.id,
                agent.version,
                track.snapshot_version,
                since,
            )
        recent = agent.recent_events
        if recent.maxlen != self.recent_events:
            recent.resize(self.recent_events)
        recent.extend(events)

    def snapshot(self, agent_id: UUID) -> int:
        """Take a snapshot of the agent's current state now; returns its version."""
        agent = self.get(agent_id)
        if agent.pending_events:  # recorded by the load to keep its memory budget
            self.save(agent)
        snapshot = self._take_snapshot(agent)
        if snapshot is None:
            raise ValueError(f"agent {agent_id}: its state cannot be encoded")
        self.recorder.insert_snapshot(snapshot, keep_snapshots=self.keep_snapshots)
        return agent.version

    # -- loading --------------------------------------------------------------------

    def get(self, agent_id: UUID, version: int | None = None) -> Agent:
        """Load an agent: latest valid snapshot (at or before ``version``) plus the
        events after it. Never replays events older than the snapshot."""
        steps = self._load_steps(agent_id, version)
        request = next(steps)
        while True:
            try:
                request = steps.send(self.recorder.select_for_load(agent_id, **request))
            except StopIteration as done:
                loaded: tuple[Agent, list[tuple[int, str]]] = done.value
                break
        agent, untrusted = loaded
        if untrusted:
            self._replace_untrusted(agent, untrusted)
        self._check_memory(agent, can_shed=version is None, saving=False)
        return agent

    def _load_steps(
        self, agent_id: UUID, version: int | None
    ) -> Generator[dict[str, Any], LoadRows, tuple[Agent, list[tuple[int, str]]]]:
        """The logic of a load, without its I/O: yields the keyword arguments of each
        ``select_for_load`` it needs, is sent the rows, and returns the agent and the
        snapshots it passed over as untrusted ((version, why) pairs). The sync and the
        async store drive it."""
        if version is not None and version < 1:
            raise ValueError(f"agent {agent_id}: version must be >= 1, got {version}")
        started = time.perf_counter()
        rows = yield {"lte": version, "recent": self.recent_events}
        agent: Agent | None = None
        untrusted: list[tuple[int, str]] = []  # (version, why) of snapshots passed over
        while rows.snapshot is not None:
            agent, why = self._trusted(rows.snapshot)
            if agent is not None:
                break
            untrusted.append((rows.snapshot.originator_version, why))
            rows = yield {
                "lte": version,
                "recent": self.recent_events,
                "snapshot_lte": rows.snapshot.originator_version - 1,
            }
        stored_events = rows.events
        if agent is None and not stored_events:
            raise AgentNotFound(agent_id, version)
        snapshot_version = agent.version if agent is not None else 0
        # Rows at or before the snapshot were read only to fill the recent cache:
        # they are decoded when first accessed, not now.
        replay_from = 0
        while (
            replay_from < len(stored_events)
            and stored_events[replay_from].originator_version <= snapshot_version
        ):
            replay_from += 1
        to_event = self.mapper.to_domain_event
        tail_events = [to_event(s) for s in stored_events[replay_from:]]
        agent = apply_events(agent, tail_events)
        assert agent is not None
        tail = len(tail_events)
        tail_bytes = sum(len(s.state) for s in stored_events[replay_from:])
        cached: list[Any] = [Undecoded(s, to_event) for s in stored_events[:replay_from]]
        cached.extend(tail_events)
        agent.__dict__["_recent_events"] = RecentEvents(self.recent_events, cached)
        stats = LoadStats(
            snapshot_version=snapshot_version,
            tail=tail,
            events_read=len(stored_events),
            bytes_read=tail_bytes
            + sum(len(s.state) for s in stored_events[:replay_from])
            + (len(rows.snapshot.state) if rows.snapshot else 0),
            ms=(time.perf_counter() - started) * 1000,
        )
        agent.__dict__["_snaptail"] = _Tracking(snapshot_version, tail_bytes, stats)
        report_load(agent, stats, self.slow_load_ms)
        return agent, untrusted

    @staticmethod
    def load_stats(agent: Agent) -> LoadStats | None:
        """What the load that built ``agent`` read and cost (None if not loaded)."""
        return _tracking(agent).last_load

    def _trusted(self, snapshot: StoredSnapshot) -> tuple[Agent | None, str]:
        """Decode a snapshot, or return (None, why) if it must not be trusted."""
        try:
            agent_class = cast(type[Agent], resolve_topic(snapshot.topic))
        except Exception as exc:
            return None, f"agent type {snapshot.topic!r} not found ({exc})"
        if checksum(snapshot.state) != snapshot.checksum:
            return None, "checksum mismatch (corrupted bytes)"
        if snapshot.fingerprint != state_fingerprint(agent_class) and not upcastable(
            agent_class, snapshot.state
        ):
            return None, "fingerprint does not match the running code"
        try:
            agent = decode_state(
                agent_class, snapshot.originator_id, snapshot.originator_version, snapshot.state
            )
        except Exception as exc:  # a bad snapshot must never fail a load
            return None, f"bytes do not decode ({exc})"
        return agent, ""

    def _replace_untrusted(self, agent: Agent, untrusted: Sequence[tuple[int, str]]) -> None:
        """Delete the snapshots a load passed over, store a fresh one of the state it
        built instead, and log ONE warning saying what happened (never raises)."""
        track = _tracking(agent)
        fresh = f"fresh snapshot written at version {agent.version}"
        try:
            self.recorder.delete_snapshots(
                agent.id, keep=self.keep_snapshots, versions=[v for v, _ in untrusted]
            )
            snapshot = self._take_snapshot(agent)
            if snapshot is None:
                fresh = "no fresh snapshot (state does not encode)"
            elif self.recorder.insert_snapshot(snapshot, keep_snapshots=self.keep_snapshots):
                track.snapshot_version = agent.version
                track.bytes_since = 0
            else:
                fresh = f"fresh snapshot NOT written (one exists at version {agent.version})"
        except Exception as exc:
            fresh = f"fresh snapshot NOT written ({type(exc).__name__}: {exc})"
        logger.warning(
            "snapshot not trusted: agent=%s type=%s reasons=%s loaded_from=%s; %s",
            agent.id,
            type(agent).__qualname__,
            "; ".join(f"version {v}: {why}" for v, why in untrusted),
            f"snapshot at version {track.last_load.snapshot_version}"
            if track.last_load and track.last_load.snapshot_version
            else "full replay",
            fresh,
        )

    def replay(self, agent_id: UUID, version: int | None = None) -> Agent:
        """Rebuild the agent from its full log, ignoring snapshots (reads page by page).

        For verification and tests; ``get()`` is the way to load an agent.
        """
        agent: Agent | None = None
        before = None if version is None else version + 1
        agent = apply_events(agent, self.history(agent_id, before=before))
        if agent is None:
            raise AgentNotFound(agent_id, version)
        return agent

    # -- reading the log ------------------------------------------------------------

    def history(
        self,
        agent_id: UUID,
        after: int | None = None,
        before: int | None = None,
        reverse: bool = False,
        types: Iterable[type[Any] | str] | None = None,
        page_size: int = 500,
    ) -> Iterator[Any]:
        """Yield the agent's events with ``after < version < before``, oldest first
        (newest first if ``reverse``), optionally only of the given event ``types``.

        Reads ``page_size`` events at a time; never holds the whole log.
        """
        requests = self._page_requests(after, before, reverse, types, page_size)
        request = next(requests)
        to_event = self.mapper.to_domain_event
        while True:
            page = self.recorder.select_page(agent_id, **request)
            for stored in page:
                yield to_event(stored)
            try:
                request = requests.send(page)
            except StopIteration:
                return

    def _page_requests(
        self,
        after: int | None,
        before: int | None,
        reverse: bool,
        types: Iterable[type[Any] | str] | None,
        page_size: int,
    ) -> Generator[dict[str, Any], Sequence[StoredEvent], None]:
        """The paging of :meth:`history` without its I/O: yields the keyword arguments
        of each ``select_page``, is sent the page read, stops after the last page."""
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        topics = self._topics(types)
        gt, lt = after, before
        while True:
            page = yield {"gt": gt, "lt": lt, "desc": reverse, "limit": page_size, "topics": topics}
            if len(page) < page_size:
                return
            if reverse:
                lt = page[-1].originator_version
            else:
                gt = page[-1].originator_version

    def latest(self, agent_id: UUID, *types: type[Any] | str) -> Any | None:
        """The agent's newest event of one of ``types`` (any type if none given)."""
        page = self.recorder.select_page(
            agent_id, desc=True, limit=1, topics=self._topics(types or None)
        )
        return self.mapper.to_domain_event(page[0]) if page else None

    def event_count(self, agent_id: UUID) -> int:
        """How many events the agent has: its version, read from the index."""
        return self.recorder.max_version(agent_id) or 0

    def _topics(self, types: Iterable[type[Any] | str] | None) -> tuple[str, ...]:
        if not types:
            return ()
        return tuple(t if isinstance(t, str) else self.mapper.topic_of(t) for t in types)
