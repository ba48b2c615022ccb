"""The store's logic, written once: each operation (load, save, update, snapshot, a page
of history, replay) is a generator of I/O-free steps, run by exactly one sync driver
(:func:`drive`) and one async driver (:func:`drive_async`).

A step generator yields a :class:`Request` (one recorder call, typed on both recorder
interfaces) and is sent its result, or has its error thrown in; it returns the
operation's result. ``AgentStore`` and ``AsyncAgentStore`` only open a recorder and
hand it, with an :class:`Engine`'s steps, to their driver. This is httpx's shape: the
logic in one place, the I/O in two thin drivers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent

from snaptail.application import arguments
from snaptail.application.budget import enforce_budget, observe_memory, resolve_budget
from snaptail.application.drivers import (
    DeleteSnapshots,
    InsertEvents,
    InsertSnapshot,
    Pause,
    PruneSaves,
    ReadAgentIds,
    ReadForLoad,
    ReadHead,
    ReadManyForLoad,
    ReadNewestNotification,
    ReadPage,
    ReadSaveCommitted,
    ReadSnapshot,
    ReadSnapshotInfos,
    Steps,
)
from snaptail.application.loading import (
    AgentBooks,
    LoadStats,
    build_agent,
    snapshot_size,
    tail_load_ms,
)
from snaptail.application.retry import RetryPolicy, is_retryable
from snaptail.application.telemetry import WARN_EVENTS, report_load, tail_outweighs
from snaptail.domain.agent import Agent
from snaptail.domain.guard import refuse_if_broken
from snaptail.domain.memory import MIB, parse_size
from snaptail.domain.replay import apply_events
from snaptail.domain.schema import event_name
from snaptail.errors import (
    AgentNotFound,
    ConcurrencyError,
    DamagedLog,
    EventTooLarge,
    InvalidArgument,
    SaveOutcomeExpired,
    SaveOutcomeUnknown,
    VersionNotFound,
)
from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.recorder import (
    LoadRows,
    SnapshotInfo,
    StoredSnapshot,
    new_save_id,
    save_id_time,
    save_ids_before,
)
from snaptail.privacy.cipher import PayloadCipher, require_keys
from snaptail.privacy.keys import KeyStore, KeyWrapper, open_key_store
from snaptail.snapshots import (
    EveryNEvents,
    SinceSnapshot,
    SnapshotPolicy,
    checksum,
    encode_state,
    state_fingerprint,
)
from snaptail.snapshots.fingerprint import check_handler_reads
from snaptail.snapshots.trust import CORRUPT, NEWER, STALE, judge_snapshot

logger = logging.getLogger("snaptail.store")

# The largest version a database column (a signed 64-bit integer) holds.
MAX_VERSION = 2**63 - 1


# -- arguments --------------------------------------------------------------------------


def as_agent_id(value: object) -> UUID:
    """An agent id from a UUID or its string form; anything else is refused by name."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            raise ValueError(f"not an agent id (a UUID): {value!r}") from None
    raise TypeError(
        f"an agent id is a UUID or its string form, got {type(value).__name__} {value!r}"
    )


def check_version(agent_id: UUID, name: str, value: object, lowest: int) -> None:
    """``value`` is None or an int (not a bool) from ``lowest`` to :data:`MAX_VERSION`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= MAX_VERSION:
        raise ValueError(
            f"agent {agent_id}: {name} must be >= {lowest} (an int up to 2**63-1), got {value!r}"
        )


def require_head(agent_id: UUID, reached: int, below: int | None = None) -> Steps[None]:
    """A read asked for versions past ``reached`` (up to ``below``, exclusive): raise
    :class:`DamagedLog` if the log goes further (the event after ``reached`` is missing)."""
    head = (yield ReadHead(agent_id)) or 0
    if head > reached and (below is None or reached + 1 < below):
        raise DamagedLog(agent_id, reached + 1, f"the log goes on to version {head}")


# -- the settings and the steps -----------------------------------------------------------

# The keyword arguments of a store that are the engine's; the others go to the recorder.
ENGINE_SETTINGS = frozenset(
    {
        "snapshot_every",
        "recent_events",
        "policy",
        "policies",
        "keep_snapshots",
        "max_event_bytes",
        "max_row_bytes",
        "memory_budget",
        "slow_load_ms",
        "metrics",
        "retry",
        "keys",
        "master_key",
        "keep_save_ids",
    }
)

# Save ids (the ambiguous-commit rule's witnesses, see retry.py) are kept this long by
# default, then pruned: by a store's first save and then hourly, at most PRUNE_BATCH
# rows per save (a full batch: the next save prunes again).
DEFAULT_KEEP_SAVE_IDS = timedelta(days=7)
SHORTEST_KEEP_SAVE_IDS = timedelta(hours=1)
PRUNE_EVERY = 3600.0
PRUNE_BATCH = 10_000
# A save id younger than keep_save_ids minus this, and not stored, was not committed
# (the pruning process's clock may be this much ahead of ours).
CLOCK_SLACK = timedelta(minutes=10)


class Engine:
    """A store's settings and the steps of each of its operations (see the module)."""

    def __init__(
        self,
        *,
        snapshot_every: int | None = None,
        recent_events: int = 100,
        policy: SnapshotPolicy | None = None,
        policies: Mapping[type[Agent], SnapshotPolicy] | None = None,
        keep_snapshots: int = 2,
        max_event_bytes: int = MIB,
        max_row_bytes: int = arguments.DEFAULT_MAX_ROW_BYTES,
        memory_budget: int | str | None = None,
        slow_load_ms: float | None = None,
        metrics: bool = False,
        retry: RetryPolicy | None = None,
        keys: KeyStore | str | None = None,
        master_key: KeyWrapper | bytes | str | None = None,
        keep_save_ids: timedelta = DEFAULT_KEEP_SAVE_IDS,
    ) -> None:
        if not isinstance(keep_save_ids, timedelta) or keep_save_ids < SHORTEST_KEEP_SAVE_IDS:
            raise InvalidArgument(
                "keep_save_ids",
                f"must be a timedelta of at least {SHORTEST_KEEP_SAVE_IDS} (a save's"
                f" outcome is asked about within it), got {keep_save_ids!r}",
            )
        self.keep_save_ids = keep_save_ids
        self._prune_at = 0.0  # time.monotonic() of the next prune of save ids
        arguments.check_store_arguments(
            snapshot_every=snapshot_every,
            recent_events=recent_events,
            keep_snapshots=keep_snapshots,
            max_event_bytes=max_event_bytes,
            max_row_bytes=max_row_bytes,
            slow_load_ms=slow_load_ms,
        )
        if recent_events < 0:
            raise ValueError(f"recent_events must be >= 0, got {recent_events}")
        if snapshot_every is not None and policy is not None:
            raise ValueError(
                f"give snapshot_every ({snapshot_every}) or policy ({policy!r}), not both:"
                f" snapshot_every=N is policy=EveryNEvents(N)"
            )
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots must be >= 1, got {keep_snapshots}")
        self.memory_budget = None if memory_budget is None else parse_size(memory_budget)
        # The key store first: a missing or wrong master key fails before the database
        # opens. With one, events and snapshots of agents with data subjects are
        # encrypted (snaptail.privacy).
        self.keys: KeyStore | None = open_key_store(keys, master_key)
        self.own_keys = keys is None or isinstance(keys, str)
        self.mapper = MsgspecMapper()
        if self.keys is not None:
            self.mapper.payload_cipher = PayloadCipher(self.keys)
        self.policy: SnapshotPolicy = policy or EveryNEvents(
            100 if snapshot_every is None else snapshot_every
        )
        self.policies: dict[type[Agent], SnapshotPolicy] = dict(policies or {})
        self.recent_events = recent_events
        self.keep_snapshots = keep_snapshots
        self.max_event_bytes = max_event_bytes
        self.max_row_bytes = max_row_bytes
        self.slow_load_ms = slow_load_ms
        self.retry = retry or RetryPolicy()
        self.books = AgentBooks()
        # Switched off by stores for looking (inspection, the console): a load then
        # keeps no memory budget (it measures), and writes no fresh snapshot over an
        # untrusted one (it logs).
        self.enforces_budgets = True
        self.repairs_snapshots = True
        if metrics:
            from snaptail.application import metrics as prometheus

            prometheus.enable()

    @classmethod
    def split(cls, settings: Mapping[str, Any]) -> tuple[Engine, dict[str, Any]]:
        """An engine from the store settings among ``settings``; the rest (recorder
        options) returned."""
        engine = cls(**{k: v for k, v in settings.items() if k in ENGINE_SETTINGS})
        return engine, {k: v for k, v in settings.items() if k not in ENGINE_SETTINGS}

    def policy_for(self, agent_type: type[Agent]) -> SnapshotPolicy:
        """The snapshot policy for ``agent_type``: its entry in ``policies`` (or its
        nearest base class's), else the type's own ``snapshot_policy``, else the
        store's ``policy``."""
        if self.policies:
            for cls in agent_type.__mro__:
                policy = self.policies.get(cls)
                if policy is not None:
                    return policy
        own: SnapshotPolicy | None = agent_type.snapshot_policy
        return self.policy if own is None else own

    def load_stats(self, agent: Agent) -> LoadStats | None:
        books = self.books.find(agent)
        return None if books is None else books.last_load

    def bytes_since_snapshot(self, agent: Agent) -> int:
        books = self.books.find(agent)
        return 0 if books is None else books.bytes_since

    # -- saving -------------------------------------------------------------------------

    def save(self, agents: Sequence[Agent]) -> Steps[None]:
        """Store the agents' new events (and any snapshot due) in one transaction
        identified by a save id: a retry after a lost reply asks whether that save
        committed instead of guessing (see :mod:`snaptail.application.retry`)."""
        arguments.check_agents(agents)
        for agent in agents:
            refuse_if_broken(agent)
            check_handler_reads(type(agent))
        batches: list[tuple[Agent, list[Any], int]] = []  # agent, new events, their bytes
        stored: list[StoredEvent] = []
        snapshots: list[StoredSnapshot] = []
        for agent in agents:
            pending = list(agent.pending_events)
            if not pending:
                continue
            encoded = [self._encode(agent, event) for event in pending]
            new_bytes = sum(len(s.state) for s in encoded)
            batches.append((agent, pending, new_bytes))
            stored.extend(encoded)
            snapshot = self._due_snapshot(agent, new_bytes)
            if snapshot is not None:
                snapshots.append(snapshot)
        if not stored:
            return
        save_id = new_save_id()
        insert = InsertEvents(stored, snapshots, self.keep_snapshots, save_id)
        try:
            yield from self.retry.commit(
                insert, ReadSaveCommitted(save_id), Pause, save_id, [a.id for a, _, _ in batches]
            )
        except IntegrityError as exc:
            raise (yield from self._conflict(batches)) from exc
        # Committed: from here on nothing may raise, or a caller would apply the
        # command again.
        snapshotted = {s.originator_id: s for s in snapshots}
        for agent, pending, new_bytes in batches:
            del agent.pending_events[: len(pending)]
            self._after_save(agent, pending, new_bytes, snapshotted.get(agent.id))
        for agent, _, _ in batches:
            try:
                yield from self._memory(agent, can_shed=True, saving=True)
            except Exception as exc:
                logger.warning(
                    "saved, but keeping the memory budget failed (left for the next save or"
                    " load): agent=%s version=%s pending=%s error=%s: %s",
                    agent.id,
                    agent.version,
                    len(agent.pending_events),
                    type(exc).__name__,
                    exc,
                )
        if time.monotonic() >= self._prune_at:
            try:
                yield from self._prune_saves()
            except Exception as exc:  # committed: never fail the save for this
                self._prune_at = time.monotonic() + PRUNE_EVERY
                logger.warning(
                    "saved, but pruning old save ids failed (tried again in an hour): %s: %s",
                    type(exc).__name__,
                    exc,
                )

    def _prune_saves(self) -> Steps[int]:
        """One batch of save ids older than ``keep_save_ids`` deleted; the next prune is
        due in an hour, or at once if the batch was full."""
        cutoff = save_ids_before(time.time() - self.keep_save_ids.total_seconds())
        deleted = int((yield PruneSaves(cutoff, PRUNE_BATCH)))
        self._prune_at = 0.0 if deleted >= PRUNE_BATCH else time.monotonic() + PRUNE_EVERY
        return deleted

    def prune_save_ids(self) -> Steps[int]:
        """Every save id older than ``keep_save_ids`` deleted, a batch per transaction."""
        total = 0
        while True:
            deleted = yield from self._prune_saves()
            total += deleted
            if deleted < PRUNE_BATCH:
                return total

    def _conflict(self, batches: Sequence[tuple[Agent, list[Any], int]]) -> Steps[ConcurrencyError]:
        """The error for a save that met another writer's rows: names the agent whose
        stored version is not the one this writer had (the first agent if none)."""
        index, found = 0, None
        for i, (agent, pending, _) in enumerate(batches):
            try:
                stored = (yield ReadHead(agent.id)) or 0
            except Exception:  # the error is about the conflict, not this read
                continue
            if stored != pending[0].originator_version - 1:
                index, found = i, stored
                break
        agent, pending, _ = batches[index]
        others = ", ".join(str(a.id) for a, _, _ in batches if a is not agent)
        return ConcurrencyError(
            agent.id,
            pending[0].originator_version,
            f"saved together with {others}" if others else "",
            stored_version=found,
        )

    def _memory(self, agent: Agent, *, can_shed: bool, saving: bool) -> Steps[None]:
        """Keep the agent within its memory budget, if one applies (see budget.py)."""
        budget = resolve_budget(type(agent), self.memory_budget)
        if budget is not None:
            yield from enforce_budget(
                agent,
                self.books.of(agent),
                budget,
                can_shed=can_shed,
                save=self._save_one if saving else None,
                snapshot=self.snapshot_now,
            )
        elif not saving:
            observe_memory(agent)

    def _save_one(self, agent: Agent) -> Steps[None]:
        yield from self.save([agent])

    def _encode(self, agent: Agent, event: Any) -> StoredEvent:
        stored = self.mapper.to_stored_event(event)
        if len(stored.state) > self.max_event_bytes:
            fields = {k: v for k, v in vars(event).items() if k not in {"originator_id"}}
            sizes = {k: self.mapper.encoded_size(v) for k, v in fields.items()}
            raise EventTooLarge(
                agent.id,
                event_name(type(event)),
                max(sizes, key=sizes.__getitem__),
                len(stored.state),
                self.max_event_bytes,
            )
        return stored

    def _due_snapshot(self, agent: Agent, new_bytes: int) -> StoredSnapshot | None:
        track = self.books.of(agent)
        events_since = agent.version - track.snapshot_version
        since = SinceSnapshot(
            events=events_since,
            bytes=track.bytes_since + new_bytes,
            load_ms=tail_load_ms(track, events_since),
            snapshot_bytes=snapshot_size(track) or None,
        )
        if not self.policy_for(type(agent)).should_snapshot(since):
            return None
        return self.take_snapshot(agent)

    def take_snapshot(self, agent: Agent) -> StoredSnapshot | None:
        """The agent's state as a snapshot row (None, logged, if it does not encode)."""
        try:
            data = encode_state(agent)
            cipher = self.mapper.payload_cipher
            if cipher is not None:  # encrypted as the agent's events are
                data = cipher.seal_snapshot(agent.id, agent.version, data)
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
        self, agent: Agent, events: list[Any], new_bytes: int, snapshot: StoredSnapshot | None
    ) -> None:
        track = self.books.of(agent)
        before = agent.version - len(events) - track.snapshot_version
        if snapshot is not None:
            track.snapshotted(snapshot.originator_version, len(snapshot.state))
        else:
            track.bytes_since += new_bytes
        since = agent.version - track.snapshot_version
        if since // WARN_EVENTS > max(before, 0) // WARN_EVENTS and tail_outweighs(
            track.bytes_since, snapshot_size(track)
        ):
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

    def snapshot_now(self, agent: Agent) -> Steps[None]:
        """Store a snapshot at the agent's version, unless it has one or unsaved events."""
        track = self.books.of(agent)
        if agent.pending_events or track.snapshot_version == agent.version:
            return
        snapshot = self.take_snapshot(agent)
        if snapshot is None:
            return
        yield InsertSnapshot(snapshot, self.keep_snapshots)
        track.snapshotted(agent.version, len(snapshot.state))

    def update(
        self, agent_id: UUID | str, command: Callable[[Agent], object], retries: int
    ) -> Steps[Agent]:
        """Load, apply ``command``, save; on a conflict, again (up to ``retries`` more
        times). A save whose outcome is unknown is resolved by its save id before the
        command is applied again: never twice."""
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        attempt = 0
        waits = self.retry.waits()
        while True:
            try:
                agent = yield from self.load(agent_id, None)
                command(agent)
                yield from self.save([agent])
            except SaveOutcomeUnknown as unknown:
                # Asked by its save id before the command is applied again: never twice.
                if (
                    yield from self.retry.resolve(
                        unknown, ReadSaveCommitted(unknown.save_id), Pause
                    )
                ):
                    logger.info(
                        "update's save committed although its reply was lost: agent=%s save_id=%s",
                        agent_id,
                        unknown.save_id,
                    )
                    return (yield from self.load(agent_id, None))
                if attempt >= retries:
                    raise
                attempt += 1
                continue
            except ConcurrencyError as error:
                if attempt >= retries:
                    raise
                attempt += 1
                logger.info(
                    "update conflicted, applying the command again: agent=%s attempt=%s "
                    "stored_version=%s",
                    agent_id,
                    attempt,
                    error.stored_version,
                )
                continue
            except Exception as exc:
                # A lost connection before anything committed (a save that may have
                # committed is SaveOutcomeUnknown, above): the retry policy's call.
                wait = next(waits, None) if is_retryable(exc) else None
                if wait is None:
                    raise
                logger.info(
                    "update failed (%s: %s), trying again in %.2f s: agent=%s",
                    type(exc).__name__,
                    exc,
                    wait,
                    agent_id,
                )
                yield Pause(wait)
                continue
            return agent

    def snapshot(self, agent_id: UUID | str) -> Steps[int]:
        agent = yield from self.load(agent_id, None)
        if agent.pending_events:  # recorded by the load to keep its memory budget
            yield from self.save([agent])
        snapshot = self.take_snapshot(agent)
        if snapshot is None:
            raise ValueError(f"agent {agent_id}: its state cannot be encoded")
        yield InsertSnapshot(snapshot, self.keep_snapshots)
        return agent.version

    # -- loading -------------------------------------------------------------------------

    def load(self, agent_id: UUID | str, version: int | None) -> Steps[Agent]:
        """Latest trusted snapshot at or before ``version`` plus the events after it."""
        agent_id = as_agent_id(agent_id)
        if version is not None:
            check_version(agent_id, "version", version, 1)
        started = time.perf_counter()
        rows = yield ReadForLoad(agent_id, version, self.recent_events)
        return (yield from self._build(agent_id, version, rows, started))

    def load_many(
        self, agent_ids: Iterable[UUID | str], known: Mapping[UUID, int]
    ) -> Steps[dict[UUID, Agent | AgentNotFound | DamagedLog | None]]:
        """The latest versions of several agents, their rows read by ONE recorder call
        (one read transaction), each then built exactly as :meth:`load` builds it.
        In the order asked (duplicates once): the agent; None if its stored version
        (0: none) is its version in ``known`` (not read); or the
        :class:`AgentNotFound` / :class:`DamagedLog` its load raised (the store tries
        the archive for those, as ``get`` does). Any other error is raised."""
        ids = list(dict.fromkeys(as_agent_id(a) for a in agent_ids))
        if not ids:
            return {}
        started = time.perf_counter()
        rows_by_id = yield ReadManyForLoad(ids, self.recent_events, known)
        # Each load's measured time (LoadStats.ms): its build plus its share of the read.
        read_share = (time.perf_counter() - started) / len(ids)
        found: dict[UUID, Agent | AgentNotFound | DamagedLog | None] = {}
        for agent_id in ids:
            rows = rows_by_id[agent_id]
            if rows is None:
                found[agent_id] = None
                continue
            try:
                found[agent_id] = yield from self._build(
                    agent_id, None, rows, time.perf_counter() - read_share
                )
            except (AgentNotFound, DamagedLog) as error:
                found[agent_id] = error
        return found

    def _build(
        self, agent_id: UUID, version: int | None, rows: LoadRows, started: float
    ) -> Steps[Agent]:
        """The rest of a load after its first read: the snapshot judged (older ones
        read if it is not trusted), the events applied, the books kept."""
        candidate = rows.snapshot
        if candidate is not None and len(candidate.state) > self.max_row_bytes:
            self._check_snapshot_size(agent_id, candidate)
        judgement = None if candidate is None else judge_snapshot(candidate, self.open_snapshot)
        agent: Agent | None = None if judgement is None else judgement.agent
        untrusted: list[tuple[int, str, str]] = []  # (version, why, kind) passed over
        if judgement is not None and agent is None:
            while candidate is not None and judgement is not None:
                agent = judgement.agent
                if agent is not None:
                    break
                untrusted.append((candidate.originator_version, judgement.why, judgement.kind))
                candidate = yield ReadSnapshot(agent_id, candidate.originator_version - 1)
                if candidate is not None:
                    self._check_snapshot_size(agent_id, candidate)
                judgement = (
                    None if candidate is None else judge_snapshot(candidate, self.open_snapshot)
                )
            # Read the events after the snapshot found (or all of them) once; a row at
            # or before the version of ``agent`` is only used for the recent cache.
            rows = yield ReadForLoad(
                agent_id, version, self.recent_events, agent.version if agent is not None else 0
            )
        event_rows = rows.events  # (version, topic, state) tuples
        if agent is None and not event_rows:
            raise AgentNotFound(agent_id, version)
        agent, stats = build_agent(
            agent_id,
            agent,
            len(rows.snapshot.state) if rows.snapshot else 0,
            event_rows,
            self.mapper,
            self.recent_events,
            started,
            self.books,
            tuple((v, why) for v, why, _ in untrusted) if untrusted else (),
            max_row_bytes=self.max_row_bytes,
        )
        if version is not None and agent.version < version:
            yield from require_head(agent_id, agent.version)
            raise VersionNotFound(agent_id, version, agent.version)
        report_load(agent, stats, self.slow_load_ms)
        if untrusted:
            if self.repairs_snapshots:
                yield from self._replace_untrusted(agent, untrusted)
            else:
                logger.info(
                    "read-only load passed over untrusted snapshot(s): agent=%s %s",
                    agent.id,
                    "; ".join(f"version {v}: {why}" for v, why, _ in untrusted),
                )
        if self.enforces_budgets and (
            self.memory_budget is not None or type(agent).memory_budget is not None
        ):
            yield from self._memory(agent, can_shed=version is None, saving=False)
        else:
            observe_memory(agent)
        return agent

    def open_snapshot(self, agent_id: UUID, version: int, data: bytes) -> bytes:
        """A stored snapshot's bytes, decrypted if they are encrypted."""
        cipher = self.mapper.payload_cipher
        if cipher is None:
            require_keys(agent_id, data)
            return data
        return cipher.open_snapshot(agent_id, version, data)

    def _check_snapshot_size(self, agent_id: UUID, snapshot: StoredSnapshot) -> None:
        arguments.check_row_size(
            agent_id, snapshot.originator_version, len(snapshot.state), self.max_row_bytes,
            "snapshot",
        )  # fmt: skip

    def decode(self, stored: StoredEvent) -> Any:
        """One stored event, its size and nesting checked (:class:`RowUnreadable`)."""
        if len(stored.state) > self.max_row_bytes:
            arguments.check_row_size(
                UUID(str(stored.originator_id)), stored.originator_version,
                len(stored.state), self.max_row_bytes, "event",
            )  # fmt: skip
        try:
            return self.mapper.to_domain_event(stored)
        except RecursionError:
            agent_id = UUID(str(stored.originator_id))
            raise arguments.too_deep(agent_id, stored.originator_version) from None

    def _replace_untrusted(
        self, agent: Agent, untrusted: Sequence[tuple[int, str, str]]
    ) -> Steps[None]:
        """After a load passed over snapshots: delete the corrupt ones, and if any was
        corrupt or stale, store a fresh snapshot of the state the load built (replacing
        a stale one at that very version); log ONE warning. Snapshots written by newer
        code are left alone and only logged at INFO (expected during a rolling deploy).
        Never raises."""
        track = self.books.of(agent)
        kinds = {kind for _, _, kind in untrusted}
        loaded_from = (
            f"snapshot at version {track.last_load.snapshot_version}"
            if track.last_load and track.last_load.snapshot_version
            else "full replay"
        )
        reasons = "; ".join(f"version {v}: {why}" for v, why, _ in untrusted)
        if kinds <= {NEWER}:
            logger.info(
                "snapshot of newer code left in place: agent=%s type=%s reasons=%s loaded_from=%s",
                agent.id,
                type(agent).__qualname__,
                reasons,
                loaded_from,
            )
            return
        fresh = f"fresh snapshot written at version {agent.version}"
        replaced = [
            v
            for v, _, kind in untrusted
            if kind == CORRUPT or (kind == STALE and v == agent.version)
        ]
        try:
            if replaced:
                yield DeleteSnapshots(agent.id, self.keep_snapshots, replaced)
            snapshot = self.take_snapshot(agent)
            if snapshot is None:
                fresh = "no fresh snapshot (state does not encode)"
            elif (yield InsertSnapshot(snapshot, self.keep_snapshots)):
                track.snapshotted(agent.version, len(snapshot.state))
            else:
                fresh = f"fresh snapshot NOT written (one exists at version {agent.version})"
        except Exception as exc:
            fresh = f"fresh snapshot NOT written ({type(exc).__name__}: {exc})"
        logger.warning(
            "snapshot not trusted: agent=%s type=%s reasons=%s loaded_from=%s; %s",
            agent.id,
            type(agent).__qualname__,
            reasons,
            loaded_from,
            fresh,
        )

    def replay(self, agent_id: UUID | str, version: int | None) -> Steps[Agent]:
        """Rebuild the agent from its full log page by page, ignoring snapshots."""
        agent_id = as_agent_id(agent_id)
        check_version(agent_id, "version", version, 1)
        before = None if version is None else version + 1
        walk = self.walk(agent_id, None, before, False, None, 500)
        agent: Agent | None = None
        while (page := (yield from walk.page())) is not None:
            agent = apply_events(agent, page)
        return (yield from self.replayed(agent_id, version, agent))

    def replayed(self, agent_id: UUID, version: int | None, agent: Agent | None) -> Steps[Agent]:
        """The end of a replay: the agent it built, or the error why there is none."""
        if agent is None:
            raise AgentNotFound(agent_id, version)
        if version is not None and agent.version < version:
            yield from require_head(agent_id, agent.version)
            raise VersionNotFound(agent_id, version, agent.version)
        return agent

    # -- reading the log -------------------------------------------------------------------

    def walk(
        self,
        agent_id: UUID | str,
        after: int | None,
        before: int | None,
        reverse: bool,
        types: Iterable[type[Any] | str] | None,
        page_size: int,
    ) -> PageWalk:
        """The paging of ``history()``, its arguments checked."""
        agent_id = as_agent_id(agent_id)
        check_version(agent_id, "after", after, 0)
        check_version(agent_id, "before", before, 1)
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        return PageWalk(
            agent_id, after, before, reverse, self.topics(types), page_size, self.decode
        )

    def latest(self, agent_id: UUID | str, types: Sequence[type[Any] | str]) -> Steps[Any | None]:
        page = yield ReadPage(as_agent_id(agent_id), desc=True, limit=1, topics=self.topics(types))
        return self.decode(page[0]) if page else None

    def event_count(self, agent_id: UUID | str) -> Steps[int]:
        return (yield ReadHead(as_agent_id(agent_id))) or 0

    def snapshot_infos(self, agent_id: UUID | str) -> Steps[Sequence[SnapshotInfo]]:
        return (yield ReadSnapshotInfos(as_agent_id(agent_id)))  # type: ignore[no-any-return]

    def rows(
        self,
        agent_id: UUID | str,
        after: int | None,
        before: int | None,
        reverse: bool,
        types: Iterable[type[Any] | str] | None,
        limit: int,
    ) -> Steps[Sequence[StoredEvent]]:
        agent_id = as_agent_id(agent_id)
        check_version(agent_id, "after", after, 0)
        check_version(agent_id, "before", before, 1)
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        return (  # type: ignore[no-any-return]
            yield ReadPage(agent_id, after, before, reverse, limit, self.topics(types))
        )

    def put_snapshot(self, snapshot: StoredSnapshot, keep: int | None) -> Steps[bool]:
        return bool((yield InsertSnapshot(snapshot, keep)))

    def newest_position(self) -> Steps[int]:
        return (yield ReadNewestNotification()) or 0

    def save_committed(self, save_id: UUID | str) -> Steps[bool]:
        """Whether the save committed; :class:`SaveOutcomeExpired` when its id is not
        stored and is old enough to have been pruned (never False then: a command
        would be applied twice)."""
        if not isinstance(save_id, UUID):
            save_id = UUID(str(save_id))
        if (yield ReadSaveCommitted(save_id)):
            return True
        made = save_id_time(save_id)
        if made is not None:
            age = timedelta(seconds=time.time() - made)
            if age > self.keep_save_ids - CLOCK_SLACK:
                when = datetime.fromtimestamp(made, UTC).replace(tzinfo=None)
                raise SaveOutcomeExpired(save_id, when, self.keep_save_ids)
        return False

    def agent_ids(self, after: UUID | None, limit: int) -> Steps[Sequence[UUID]]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        return (yield ReadAgentIds(after, limit))  # type: ignore[no-any-return]

    def prune_snapshots(self, agent_id: UUID | str, keep: int) -> Steps[int]:
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        return (yield DeleteSnapshots(as_agent_id(agent_id), keep))  # type: ignore[no-any-return]

    def topics(self, types: Iterable[type[Any] | str] | None) -> tuple[str, ...]:
        if types is None:
            return ()
        types = arguments.check_types(types)
        if not types:
            return ()
        return tuple(t if isinstance(t, str) else self.mapper.topic_of(t) for t in types)


class PageWalk:
    """The paging of ``history()``: each :meth:`page` reads the next page and checks
    that no event is missing. Without a type filter the versions are consecutive, so
    a gap is a lost event; at the ``before`` end, the head (one index read) tells a
    gap from the end of the log. The events before a gap are returned first; the
    next :meth:`page` raises."""

    def __init__(
        self,
        agent_id: UUID,
        after: int | None,
        before: int | None,
        reverse: bool,
        topics: tuple[str, ...],
        page_size: int,
        decode: Callable[[StoredEvent], Any],
    ) -> None:
        self.agent_id = agent_id
        self.after, self.before, self.reverse = after, before, reverse
        self.topics, self.page_size = topics, page_size
        self.gt, self.lt = after, before
        self.step = 0 if topics else -1 if reverse else 1
        self.expected: int | None = None if reverse else (after or 0) + 1
        self.done = False
        self.error: DamagedLog | None = None
        self.to_event = decode

    def page(self) -> Steps[list[Any] | None]:
        """The next page's events (None: no more)."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if self.done:
            return None
        rows = yield ReadPage(
            self.agent_id, self.gt, self.lt, self.reverse, self.page_size, self.topics
        )
        events: list[Any] = []
        try:
            yield from self._check(rows, events)
        except DamagedLog as exc:
            self.done = True
            if not events:
                raise
            self.error = exc  # what precedes a gap is given before the error
        return events

    def _check(self, page: Sequence[StoredEvent], events: list[Any]) -> Steps[None]:
        step, before, agent_id, to_event = self.step, self.before, self.agent_id, self.to_event
        for stored in page:
            found = stored.originator_version
            if step < 0 and self.expected is None and before is not None and found < before - 1:
                yield from require_head(agent_id, found, below=before)
            if step and self.expected is not None and found != self.expected:
                raise DamagedLog(agent_id, self.expected, f"the next stored event is {found}")
            self.expected = found + step
            events.append(to_event(stored))
        if len(page) < self.page_size:
            self.done = True
            expected = self.expected
            if step < 0 and expected is not None and expected >= (self.after or 0) + 1:
                raise DamagedLog(agent_id, expected, f"the log stops at {expected + 1}")
            if step > 0 and before is not None and expected is not None and expected < before:
                yield from require_head(agent_id, expected - 1, below=before)
        elif self.reverse:
            self.lt = page[-1].originator_version
        else:
            self.gt = page[-1].originator_version
