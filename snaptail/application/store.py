"""``AgentStore``: saves agents, loads them from the latest snapshot plus a short tail."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent

from snaptail.application import arguments
from snaptail.application.budget import enforce_budget, observe_memory, resolve_budget
from snaptail.application.loading import LoadStats, build_agent, tail_load_ms, tracking
from snaptail.application.telemetry import WARN_EVENTS, report_load
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
    VersionNotFound,
)
from snaptail.infrastructure.backends import open_recorder
from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.recorder import AgentRecorder, LoadRows, StoredSnapshot
from snaptail.infrastructure.urls import resolve_url
from snaptail.privacy.cipher import PayloadCipher, require_keys
from snaptail.privacy.forget import add_subjects, forget_subject
from snaptail.privacy.keys import Erasure, KeyStore, KeyWrapper, open_key_store
from snaptail.snapshots import (
    EveryNEvents,
    SinceSnapshot,
    SnapshotPolicy,
    checksum,
    encode_state,
    state_fingerprint,
)
from snaptail.snapshots.trust import CORRUPT, NEWER, STALE, Judgement, judge_snapshot

if TYPE_CHECKING:
    from snaptail.archive.reader import ArchiveReader
    from snaptail.archive.runner import ArchiveReport, Progress

logger = logging.getLogger("snaptail.store")

TAgent = TypeVar("TAgent", bound=Agent)
T = TypeVar("T")


class AgentStore:
    """Stores agents' events and snapshots; loads agents without reading their full log.

    ``url`` is ``sqlite:///FILE`` (default ``./snaptail.db``, or
    ``$SNAPTAIL_DATABASE_URL``), ``:memory:`` or ``postgresql://...``.
    ``snapshot_every`` events (default 100) a snapshot is written with the save that
    crosses it (or pass a ``policy`` instead, and ``policies={AgentType: policy}`` for agent types,
    subclasses included, that need another); ``keep_snapshots`` newest snapshots are
    kept per agent;
    ``recent_events`` bounds each loaded agent's cache of its newest events;
    ``max_event_bytes`` bounds one encoded event, ``max_row_bytes`` (default 64 MiB)
    one stored row a read decodes. ``memory_budget`` (bytes or
    ``"2MiB"``) bounds each loaded agent (an agent type's own ``memory_budget`` wins);
    ``slow_load_ms`` makes slower loads log a warning; ``metrics=True`` turns on
    Prometheus metrics (``snaptail.metrics``). ``keys`` is the key store of agents
    with data subjects (a URL or a KeyStore; default ``$SNAPTAIL_KEYS_URL``, else none),
    ``master_key`` its master key (default from the environment): see
    :meth:`add_subject` and :meth:`forget`.
    """

    def __init__(
        self,
        url: str | None = None,
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
        keys: KeyStore | str | None = None,
        master_key: KeyWrapper | bytes | str | None = None,
        **options: Any,
    ) -> None:
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
        self.url = resolve_url(url)
        arguments.check_url(self.url)
        # The key store first: a missing or wrong master key fails before the database opens.
        self.keys: KeyStore | None = open_key_store(keys, master_key)
        self._own_keys = not hasattr(keys, "agent_key")
        self.recorder: AgentRecorder = open_recorder(self.url, **options)
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
        # Where archive segments are read from (default: where the run wrote them).
        self.archive_location: str | None = None
        if metrics:
            from snaptail.application import metrics as prometheus

            prometheus.enable()

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        close = getattr(self.recorder, "close", None) or getattr(
            getattr(self.recorder, "datastore", None), "close", None
        )
        if close is not None:
            close()
        if self.keys is not None and self._own_keys:
            self.keys.close()

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
        :class:`ConcurrencyError` (naming the agent that conflicted) is raised, and
        the agents keep their new events. An agent whose handler raised
        (:class:`~snaptail.AgentBroken`) is refused before anything is written. Once
        the transaction has committed, this never raises: later work (the memory
        budget) that fails is logged and left for the next save or load.
        """
        run_steps(self._save_steps(agents), self.recorder)

    def _save_steps(self, agents: Sequence[Agent]) -> Steps[None]:
        """The logic of :meth:`save` (its I/O yielded; see :class:`Call`)."""
        arguments.check_agents(agents)
        for agent in agents:
            refuse_if_broken(agent)
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
        try:
            yield Call(
                "insert_events",
                (stored,),
                {"snapshots": snapshots, "keep_snapshots": self.keep_snapshots},
                write=True,
            )
        except IntegrityError as exc:
            # A retried insert (after a lost connection) may meet the rows its own
            # first attempt committed: then the save is done, not a conflict.
            if not (yield from self._already_stored(stored)):
                raise (yield from self._conflict(batches)) from exc
            logger.info(
                "save already committed (a retried insert met its own rows): agents=%s",
                ",".join(str(a.id) for a, _, _ in batches),
            )
        # Committed: from here on nothing may raise, or a caller would apply the
        # command again.
        snapshotted = {s.originator_id: s.originator_version for s in snapshots}
        for agent, pending, new_bytes in batches:
            del agent.pending_events[: len(pending)]
            self._after_save(agent, pending, new_bytes, snapshotted.get(agent.id))
        for agent, _, _ in batches:
            try:
                blocking = self._memory_step(agent, can_shed=True, saving=True)
                if blocking is not None:
                    yield blocking
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

    def _already_stored(self, stored: Sequence[StoredEvent]) -> Steps[bool]:
        """True if the store holds exactly ``stored`` (same versions, types, bytes)."""
        by_agent: dict[UUID, list[StoredEvent]] = {}
        for event in stored:
            by_agent.setdefault(UUID(str(event.originator_id)), []).append(event)
        for agent_id, events in by_agent.items():
            found = yield Call(
                "select_page",
                (agent_id,),
                {
                    "gt": events[0].originator_version - 1,
                    "lt": events[-1].originator_version + 1,
                    "limit": len(events) + 1,
                },
            )
            if [(e.originator_version, e.topic, bytes(e.state)) for e in found] != [
                (e.originator_version, e.topic, bytes(e.state)) for e in events
            ]:
                return False
        return True

    def _conflict(self, batches: Sequence[tuple[Agent, list[Any], int]]) -> Steps[ConcurrencyError]:
        """The error for a save that met another writer's rows: names the agent whose
        stored version is not the one this writer had (the first agent if none)."""
        index, found = 0, None
        for i, (agent, pending, _) in enumerate(batches):
            try:
                stored = (yield Call("max_version", (agent.id,))) or 0
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

    def _memory_step(self, agent: Agent, *, can_shed: bool, saving: bool) -> Blocking | None:
        """:meth:`_check_memory` as a blocking call to yield when a budget applies (it
        may snapshot and save); without one it is a measurement at most, done here
        (None: nothing to yield; no sub-generator on every load)."""
        if resolve_budget(type(agent), self.memory_budget) is None:
            self._check_memory(agent, can_shed=can_shed, saving=saving)
            return None
        return Blocking(self._check_memory, agent, can_shed=can_shed, saving=saving)

    def _check_memory(self, agent: Agent, *, can_shed: bool, saving: bool) -> None:
        """Keep the agent within its memory budget, if one applies (see budget.py)."""
        budget = resolve_budget(type(agent), self.memory_budget)
        if budget is not None:
            enforce_budget(
                agent,
                budget,
                can_shed=can_shed,
                save=self.save if saving else None,
                snapshot=self._snapshot_now,
            )
        elif not saving:
            observe_memory(agent)

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
        track = tracking(agent)
        events_since = agent.version - track.snapshot_version
        since = SinceSnapshot(
            events=events_since,
            bytes=track.bytes_since + new_bytes,
            load_ms=tail_load_ms(track, events_since),
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
        self,
        agent: Agent,
        events: list[Any],
        new_bytes: int,
        snapshot_version: int | None,
    ) -> None:
        track = tracking(agent)
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

    def _snapshot_now(self, agent: Agent) -> None:
        """Store a snapshot at the agent's version, unless it has one or unsaved events."""
        track = tracking(agent)
        if agent.pending_events or track.snapshot_version == agent.version:
            return
        snapshot = self._take_snapshot(agent)
        if snapshot is None:
            return
        self.recorder.insert_snapshot(snapshot, keep_snapshots=self.keep_snapshots)
        track.snapshot_version = agent.version
        track.bytes_since = 0

    def update(
        self, agent_id: UUID | str, command: Callable[[Agent], object], *, retries: int = 3
    ) -> Agent:
        """Load the agent, apply ``command(agent)`` and save it; on a
        :class:`ConcurrencyError` reload it and apply ``command`` again, up to
        ``retries`` more times (then the error is raised). Returns the saved agent.

        ``command`` must only record events on the agent it is given: it runs once
        per attempt, and only the attempt that saved is stored.
        """
        return run_steps(self._update_steps(agent_id, command, retries), self.recorder)

    def _update_steps(
        self, agent_id: UUID | str, command: Callable[[Agent], object], retries: int
    ) -> Steps[Agent]:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        attempt = 0
        while True:
            agent = yield from self._get_steps(agent_id, None)
            command(agent)
            try:
                yield from self._save_steps([agent])
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
            return agent

    def snapshot(self, agent_id: UUID | str) -> int:
        """Take a snapshot of the agent's current state now; returns its version."""
        return run_steps(self._snapshot_steps(agent_id), self.recorder)

    def _snapshot_steps(self, agent_id: UUID | str) -> Steps[int]:
        agent = yield from self._get_steps(agent_id, None)
        if agent.pending_events:  # recorded by the load to keep its memory budget
            yield from self._save_steps([agent])
        snapshot = self._take_snapshot(agent)
        if snapshot is None:
            raise ValueError(f"agent {agent_id}: its state cannot be encoded")
        yield Call(
            "insert_snapshot", (snapshot,), {"keep_snapshots": self.keep_snapshots}, write=True
        )
        return agent.version

    # -- data subjects (snaptail.privacy) --------------------------------------------

    def add_subject(self, agent: Agent | UUID | str, *subjects: str) -> tuple[str, ...]:
        """Make ``subjects`` (ids of people, such as ``"user-42"``) data subjects of the
        agent, before its first save: its events and snapshots are then stored
        encrypted, and :meth:`forget` of any of them erases them. Returns the agent's
        subject references (pseudonyms: the raw ids are stored nowhere)."""
        agent_id = agent.id if isinstance(agent, Agent) else as_agent_id(agent)
        cipher = self.mapper.payload_cipher
        return add_subjects(self.recorder, self.keys, cipher, agent_id, subjects)

    def forget(self, subject: str) -> Erasure | None:
        """Erase ``subject``'s data: delete its key and its agents' data keys, evict
        those agents from this process's caches and record the erasure (None: no key
        of that subject). README: "Forgetting a person"."""
        return forget_subject(self.recorder, self.keys, self.mapper.payload_cipher, subject)

    def erasures(self) -> list[Erasure]:
        """The key store's erasure records, oldest first (none without a key store)."""
        return [] if self.keys is None else self.keys.erasures()

    def open_snapshot(self, agent_id: UUID, version: int, data: bytes) -> bytes:
        """A stored snapshot's bytes, decrypted if they are encrypted."""
        cipher = self.mapper.payload_cipher
        if cipher is None:
            require_keys(agent_id, data)
            return data
        return cipher.open_snapshot(agent_id, version, data)

    # -- loading --------------------------------------------------------------------

    def get(self, agent_id: UUID | str, version: int | None = None) -> Agent:
        """Load an agent: latest valid snapshot (at or before ``version``) plus the
        events after it. Never replays events older than the snapshot.

        ``agent_id`` is a UUID or its string form (on every backend). A ``version``
        older than every snapshot whose events were archived (or a load that trusts
        none of the snapshots the archive left) replays from the archive."""
        try:
            return self._get_hot(agent_id, version)
        except (AgentNotFound, DamagedLog) as error:
            return self._get_archived(agent_id, version, error)

    def _get_hot(self, agent_id: UUID | str, version: int | None) -> Agent:
        # The steps of _get_steps, run here without a generator while the newest
        # snapshot is trusted (or there is none): the common load, and its overhead.
        agent_id = as_agent_id(agent_id)
        _check_version(agent_id, "version", version, 1)
        started = time.perf_counter()
        recorder = self.recorder
        rows = recorder.select_for_load(agent_id, lte=version, recent=self.recent_events)
        snapshot = rows.snapshot
        if snapshot is not None and len(snapshot.state) > self.max_row_bytes:
            self._check_snapshot_size(agent_id, snapshot)
        judgement = None if snapshot is None else judge_snapshot(snapshot, self.open_snapshot)
        if judgement is not None and judgement.agent is None:
            first = (started, rows, judgement)
            return run_steps(self._get_steps(agent_id, version, first), recorder)
        event_rows = rows.events
        if judgement is None and not event_rows:
            raise AgentNotFound(agent_id, version)
        agent = build_agent(
            agent_id,
            None if judgement is None else judgement.agent,
            0 if snapshot is None else len(snapshot.state),
            event_rows,
            self.mapper,
            self.recent_events,
            started,
            max_row_bytes=self.max_row_bytes,
        )
        if version is not None and agent.version < version:
            run_steps(self._require_head(agent_id, agent.version), recorder)
            raise VersionNotFound(agent_id, version, agent.version)
        stats = tracking(agent).last_load
        assert stats is not None
        report_load(agent, stats, self.slow_load_ms)
        blocking = self._memory_step(agent, can_shed=version is None, saving=False)
        if blocking is not None:
            blocking()
        return agent

    def _get_steps(
        self,
        agent_id: UUID | str,
        version: int | None,
        first: tuple[float, LoadRows, Judgement] | None = None,
    ) -> Steps[Agent]:
        """The logic of :meth:`get` (its I/O yielded; see :class:`Call`). ``first``:
        (start time, rows read, judgement of their snapshot) of a load begun by
        :meth:`get`, whose snapshot was not trusted."""
        if first is None:
            agent_id = as_agent_id(agent_id)
            _check_version(agent_id, "version", version, 1)
            started = time.perf_counter()
            rows = yield Call(
                "select_for_load", (agent_id,), {"lte": version, "recent": self.recent_events}
            )
            if rows.snapshot is not None:
                self._check_snapshot_size(agent_id, rows.snapshot)
            snapshot = rows.snapshot
            judgement = None if snapshot is None else judge_snapshot(snapshot, self.open_snapshot)
        else:
            agent_id = as_agent_id(agent_id)
            started, rows, judgement = first
        agent: Agent | None = None
        untrusted: list[tuple[int, str, str]] = []  # (version, why, kind) passed over
        candidate = rows.snapshot
        while candidate is not None and judgement is not None:
            agent = judgement.agent
            if agent is not None:
                break
            untrusted.append((candidate.originator_version, judgement.why, judgement.kind))
            candidate = yield Call(
                "select_snapshot", (agent_id,), {"lte": candidate.originator_version - 1}
            )
            if candidate is not None:
                self._check_snapshot_size(agent_id, candidate)
            judgement = None if candidate is None else judge_snapshot(candidate, self.open_snapshot)
        if untrusted:
            # Read the events after the snapshot found (or all of them) once; a row at
            # or before the version of ``agent`` is only used for the recent cache.
            rows = yield Call(
                "select_for_load",
                (agent_id,),
                {
                    "lte": version,
                    "recent": self.recent_events,
                    "snapshot_lte": agent.version if agent is not None else 0,
                },
            )
        event_rows = rows.events  # (version, topic, state) tuples
        if agent is None and not event_rows:
            raise AgentNotFound(agent_id, version)
        agent = build_agent(
            agent_id,
            agent,
            len(rows.snapshot.state) if rows.snapshot else 0,
            event_rows,
            self.mapper,
            self.recent_events,
            started,
            tuple((v, why) for v, why, _ in untrusted) if untrusted else (),
            max_row_bytes=self.max_row_bytes,
        )
        if version is not None and agent.version < version:
            yield from self._require_head(agent_id, agent.version)
            raise VersionNotFound(agent_id, version, agent.version)
        stats = tracking(agent).last_load
        assert stats is not None
        report_load(agent, stats, self.slow_load_ms)
        if untrusted:
            yield Blocking(self._replace_untrusted, agent, untrusted)
        blocking = self._memory_step(agent, can_shed=version is None, saving=False)
        if blocking is not None:
            yield blocking
        return agent

    def _get_archived(self, agent_id: UUID | str, version: int | None, error: Exception) -> Agent:
        """A load the hot table cannot answer: replayed from the archive if the agent
        has archived events (logged), else ``error`` raised."""
        agent_id = as_agent_id(agent_id)
        if not self.archive_reader.upto(agent_id):
            raise error
        # Time travel below the hot range is expected (INFO); a latest load is not.
        logger.log(
            logging.INFO if version is not None else logging.WARNING,
            "loading from the archive (no trusted snapshot at or before the version"
            " asked covers the hot events): agent=%s version=%s reason=%s",
            agent_id, version, error,
        )  # fmt: skip
        agent = self.replay(agent_id, version)
        if version is None:  # the next load should not need the archive
            try:
                found = self.recorder.select_snapshot(agent_id, lte=agent.version)
                if found is not None and found.originator_version == agent.version:
                    judged = judge_snapshot(found)
                    if judged.agent is None and judged.kind in {CORRUPT, STALE}:
                        self.recorder.delete_snapshots(
                            agent_id, keep=self.keep_snapshots, versions=[agent.version]
                        )
                self._snapshot_now(agent)
            except Exception as exc:  # the load succeeded: never fail it here
                logger.warning("no fresh snapshot after a load from the archive: %s", exc)
        return agent

    @property
    def archive_reader(self) -> ArchiveReader:
        """Reads this store's archived events (see README "Archive")."""
        reader = self.__dict__.get("_archive_reader")
        if reader is None:
            from snaptail.archive.reader import ArchiveReader

            reader = self.__dict__["_archive_reader"] = ArchiveReader(
                self.recorder, self.archive_location
            )
        return cast("ArchiveReader", reader)

    def archive(
        self,
        to: str,
        *,
        keep_events: int = 0,
        older_than: timedelta | None = None,
        dry_run: bool = False,
        wait: float = 0.0,
        progress: Callable[[Progress], None] | None = None,
    ) -> ArchiveReport:
        """Move events nothing hot needs into archive segments at ``to`` (a directory
        or fsspec URL); see README "Archive" and ``snaptail archive run``."""
        from snaptail.archive.runner import run_archive

        return run_archive(
            self.recorder, self.url, to, recent_events=self.recent_events,
            keep_events=keep_events, older_than=older_than, dry_run=dry_run, wait=wait,
            progress=progress, mapper=self.mapper,
        )  # fmt: skip

    def _check_snapshot_size(self, agent_id: UUID, snapshot: StoredSnapshot) -> None:
        arguments.check_row_size(
            agent_id, snapshot.originator_version, len(snapshot.state), self.max_row_bytes,
            "snapshot",
        )  # fmt: skip

    @staticmethod
    def load_stats(agent: Agent) -> LoadStats | None:
        """What the load that built ``agent`` read and cost (None if not loaded)."""
        return tracking(agent).last_load

    def _replace_untrusted(self, agent: Agent, untrusted: Sequence[tuple[int, str, str]]) -> None:
        """After a load passed over snapshots: delete the corrupt ones, and if any was
        corrupt or stale, store a fresh snapshot of the state the load built (replacing
        a stale one at that very version); log ONE warning. Snapshots written by newer
        code are left alone and only logged at INFO (expected during a rolling deploy).
        Never raises."""
        track = tracking(agent)
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
                self.recorder.delete_snapshots(
                    agent.id, keep=self.keep_snapshots, versions=replaced
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
            reasons,
            loaded_from,
            fresh,
        )

    def replay(self, agent_id: UUID | str, version: int | None = None) -> Agent:
        """Rebuild the agent from its full log, ignoring snapshots (reads page by page).

        For verification and tests; ``get()`` is the way to load an agent.
        """
        agent_id = as_agent_id(agent_id)
        _check_version(agent_id, "version", version, 1)
        agent: Agent | None = None
        before = None if version is None else version + 1
        agent = apply_events(agent, self.history(agent_id, before=before))
        return run_steps(self._replayed(agent_id, version, agent), self.recorder)

    def _replayed(self, agent_id: UUID, version: int | None, agent: Agent | None) -> Steps[Agent]:
        """The end of a replay: the agent it built, or the error why there is none."""
        if agent is None:
            raise AgentNotFound(agent_id, version)
        if version is not None and agent.version < version:
            yield from self._require_head(agent_id, agent.version)
            raise VersionNotFound(agent_id, version, agent.version)
        return agent

    def _require_head(self, agent_id: UUID, reached: int, below: int | None = None) -> Steps[None]:
        """A read asked for versions past ``reached`` (up to ``below``, exclusive):
        raise if the log goes further (the event after ``reached`` is missing)."""
        yield from require_head(agent_id, reached, below)

    # -- reading the log ------------------------------------------------------------

    def history(
        self,
        agent_id: UUID | str,
        after: int | None = None,
        before: int | None = None,
        reverse: bool = False,
        types: Iterable[type[Any] | str] | None = None,
        page_size: int = 500,
    ) -> Iterator[Any]:
        """Yield the agent's events with ``after < version < before``, oldest first
        (newest first if ``reverse``), optionally only of the given event ``types``.

        Reads ``page_size`` events at a time; never holds the whole log. Without
        ``types``, a version missing from the stored log raises
        :class:`~snaptail.DamagedLog` when the iteration reaches it.
        """
        yield from self._history(self._walk(agent_id, after, before, reverse, types, page_size))

    def _history(self, walk: PageWalk) -> Iterator[Any]:
        """:meth:`history`: archived events (if any) and hot ones. An archive run that
        commits during the walk moves rows it has not reached: then it goes on from
        the last event given, archive first."""
        upto = self.archive_reader.upto(walk.agent_id)
        if upto and (walk.after or 0) < upto:
            events = self._archived_history(walk, upto)
        else:
            events = self._hot_history(walk)
        last: int | None = None
        try:
            for event in events:
                last = event.originator_version
                yield event
        except DamagedLog:
            if self.archive_reader.upto(walk.agent_id) <= upto:
                raise
            after, before = walk.after, walk.before
            if last is not None:
                before, after = (last, after) if walk.reverse else (before, last)
            yield from self._history(
                PageWalk(walk.agent_id, after, before, walk.reverse, walk.topics, walk.page_size)
            )

    def _archived_history(self, walk: PageWalk, upto: int) -> Iterator[Any]:
        """:meth:`history` of an agent whose versions up to ``upto`` are archived:
        the archive's part and the hot table's part, in the order asked."""
        agent_id, after, before = walk.agent_id, walk.after or 0, walk.before
        hot = None
        if before is None or before > upto + 1:
            hot = PageWalk(agent_id, upto, before, walk.reverse, walk.topics, walk.page_size)
        lt = upto + 1 if before is None else min(before, upto + 1)
        if walk.reverse and hot is not None:
            yield from self._hot_history(hot)
        for version, topic, state, _, _ in self.archive_reader.rows(
            agent_id, after, lt, walk.reverse, walk.topics
        ):
            yield self._decode(StoredEvent(agent_id, version, topic, state))
        if not walk.reverse and hot is not None:
            yield from self._hot_history(hot)

    def _hot_history(self, walk: PageWalk) -> Iterator[Any]:
        to_event = self._decode
        while (request := walk.next_request()) is not None:
            page = self.recorder.select_page(walk.agent_id, **request)
            checks = walk.accept(page)
            reply: Any = None
            while True:
                try:
                    item = checks.send(reply)
                except StopIteration:
                    break
                reply = None
                if isinstance(item, Call):
                    reply = getattr(self.recorder, item.method)(*item.args, **item.kwargs)
                else:
                    yield to_event(item)

    def _decode(self, stored: StoredEvent) -> Any:
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

    def _walk(
        self,
        agent_id: UUID | str,
        after: int | None,
        before: int | None,
        reverse: bool,
        types: Iterable[type[Any] | str] | None,
        page_size: int,
    ) -> PageWalk:
        """The paging of :meth:`history`, its arguments checked."""
        agent_id = as_agent_id(agent_id)
        _check_version(agent_id, "after", after, 0)
        _check_version(agent_id, "before", before, 1)
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        return PageWalk(agent_id, after, before, reverse, self._topics(types), page_size)

    def latest(self, agent_id: UUID | str, *types: type[Any] | str) -> Any | None:
        """The agent's newest event of one of ``types`` (any type if none given)."""
        agent_id, topics = as_agent_id(agent_id), self._topics(types or None)
        page = self.recorder.select_page(agent_id, desc=True, limit=1, topics=topics)
        return self._decode(page[0]) if page else self._latest_archived(agent_id, topics)

    def _latest_archived(self, agent_id: UUID, topics: tuple[str, ...]) -> Any | None:
        """The newest archived event of ``topics`` (None: none, or nothing archived)."""
        upto = self.archive_reader.upto(agent_id)
        rows = self.archive_reader.rows(agent_id, 0, upto + 1, True, topics) if upto else ()
        for version, topic, state, _, _ in rows:
            return self._decode(StoredEvent(agent_id, version, topic, state))
        return None

    def event_count(self, agent_id: UUID | str) -> int:
        """How many events the agent has: its version, read from the index."""
        return self.recorder.max_version(as_agent_id(agent_id)) or 0

    def _topics(self, types: Iterable[type[Any] | str] | None) -> tuple[str, ...]:
        if types is None:
            return ()
        types = arguments.check_types(types)
        if not types:
            return ()
        return tuple(t if isinstance(t, str) else self.mapper.topic_of(t) for t in types)


# The largest version a database column (a signed 64-bit integer) holds.
MAX_VERSION = 2**63 - 1


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


def _check_version(agent_id: UUID, name: str, value: object, lowest: int) -> None:
    """``value`` is None or an int (not a bool) from ``lowest`` to :data:`MAX_VERSION`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= MAX_VERSION:
        raise ValueError(
            f"agent {agent_id}: {name} must be >= {lowest} (an int up to 2**63-1), got {value!r}"
        )


class Call:
    """One recorder call the store's logic needs: ``method(*args, **kwargs)`` on the
    sync recorder (``AgentStore``) or awaited on the async one (``AsyncAgentStore``).
    ``write`` marks a call that commits (the async store never abandons it halfway).
    A plain class with slots: every load and save builds one (a frozen dataclass's
    ``__init__`` cost 0.4 us of a 25 us load)."""

    __slots__ = ("args", "kwargs", "method", "write")

    def __init__(
        self,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        write: bool = False,
    ) -> None:
        self.method, self.args, self.write = method, args, write
        self.kwargs: Mapping[str, Any] = {} if kwargs is None else kwargs

    def __repr__(self) -> str:
        return f"Call({self.method!r}, {self.args!r}, {dict(self.kwargs)!r}, write={self.write})"


class Blocking:
    """A call of the sync store's own code that does its own I/O (rare paths: replacing
    untrusted snapshots, shedding memory); the async store runs it off the loop."""

    __slots__ = ("args", "func", "kwargs")

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.func, self.args, self.kwargs = func, args, kwargs

    def __call__(self) -> Any:
        return self.func(*self.args, **self.kwargs)


# The logic of a store operation: yields the I/O it needs, is sent each result (or
# has the error thrown in), returns the operation's result. Written once, driven by
# run_steps (sync) and by AsyncAgentStore.
Steps = Generator[Call | Blocking, Any, T]


def run_steps(steps: Steps[T], recorder: AgentRecorder) -> T:
    """Drive ``steps`` with blocking calls on ``recorder``."""
    send, throw = steps.send, steps.throw
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            request = send(result) if error is None else throw(error)
        except StopIteration as done:
            return cast(T, done.value)
        try:
            if isinstance(request, Call):
                result = getattr(recorder, request.method)(*request.args, **request.kwargs)
            else:
                result = request()
            error = None
        except Exception as exc:
            result, error = None, exc


def require_head(agent_id: UUID, reached: int, below: int | None = None) -> Steps[None]:
    """A read asked for versions past ``reached`` (up to ``below``, exclusive): raise
    :class:`DamagedLog` if the log goes further (the event after ``reached`` is missing)."""
    head = (yield Call("max_version", (agent_id,))) or 0
    if head > reached and (below is None or reached + 1 < below):
        raise DamagedLog(agent_id, reached + 1, f"the log goes on to version {head}")


class PageWalk:
    """The paging of ``history()``: the bounds of each page to read, and the checks
    that no event is missing. Without a type filter the versions are consecutive, so
    a gap is a lost event; at the ``before`` end, the head (one index read) tells a
    gap from the end of the log."""

    def __init__(
        self,
        agent_id: UUID,
        after: int | None,
        before: int | None,
        reverse: bool,
        topics: tuple[str, ...],
        page_size: int,
    ) -> None:
        self.agent_id = agent_id
        self.after, self.before, self.reverse = after, before, reverse
        self.topics, self.page_size = topics, page_size
        self.gt, self.lt = after, before
        self.step = 0 if topics else -1 if reverse else 1
        self.expected: int | None = None if reverse else (after or 0) + 1
        self.done = False

    def next_request(self) -> dict[str, Any] | None:
        """The keyword arguments of the next ``select_page`` (None: no more pages)."""
        if self.done:
            return None
        return {"gt": self.gt, "lt": self.lt, "desc": self.reverse,
                "limit": self.page_size, "topics": self.topics}  # fmt: skip

    def accept(self, page: Sequence[StoredEvent]) -> Generator[Any, Any, None]:
        """The page's events in order, with the :class:`Call` of a head check where
        one is needed (send its result back); raises :class:`DamagedLog` at a gap."""
        step, before, agent_id = self.step, self.before, self.agent_id
        for stored in page:
            found = stored.originator_version
            if step < 0 and self.expected is None and before is not None and found < before - 1:
                yield from require_head(agent_id, found, below=before)
            if step and self.expected is not None and found != self.expected:
                raise DamagedLog(agent_id, self.expected, f"the next stored event is {found}")
            self.expected = found + step
            yield stored
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
