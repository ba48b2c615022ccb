"""``AgentStore``: saves agents, loads them from the latest snapshot plus a short tail.

Thin: the logic is :class:`~snaptail.application.engine.Engine`'s steps, run here by
the blocking driver on the sync recorder (``AsyncAgentStore`` runs the same steps
with the async driver).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from snaptail.application import arguments
from snaptail.application.drivers import Steps, drive
from snaptail.application.engine import (
    DEFAULT_KEEP_SAVE_IDS,
    Engine,
    PageWalk,
    as_agent_id,
    check_version,
)
from snaptail.application.loading import LoadStats
from snaptail.application.retry import RetryPolicy
from snaptail.domain.agent import Agent
from snaptail.domain.memory import MIB
from snaptail.domain.replay import apply_events
from snaptail.errors import AgentNotFound, DamagedLog, InvalidArgument, storage_error
from snaptail.infrastructure.backends import open_recorder
from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.recorder import (
    AgentRecorder,
    Partition,
    Position,
    PositionedNotification,
    SnapshotInfo,
    StoredSnapshot,
)
from snaptail.infrastructure.subscription import EventsWaiter
from snaptail.infrastructure.urls import resolve_url
from snaptail.privacy.forget import add_subjects, forget_subject
from snaptail.privacy.keys import Erasure, KeyStore, KeyWrapper
from snaptail.snapshots import SnapshotPolicy
from snaptail.snapshots.trust import CORRUPT, STALE, judge_snapshot

if TYPE_CHECKING:
    from snaptail.archive.reader import ArchiveReader
    from snaptail.archive.runner import ArchiveReport, Progress

logger = logging.getLogger("snaptail.store")

__all__ = ["AgentStore", "StoreBase"]

T = TypeVar("T")

# Agent ids read per page by :meth:`AgentStore.agent_ids`.
AGENT_ID_PAGE = 1000


def known_versions(current: Mapping[UUID, Agent | None]) -> dict[UUID, int]:
    """The versions of what a ``get_many`` caller holds (0: known to be missing)."""
    return {agent_id: 0 if agent is None else agent.version for agent_id, agent in current.items()}


class StoreBase:
    """What ``AgentStore`` and ``AsyncAgentStore`` share without I/O: the settings
    (read through properties), the snapshot policy per type, load stats."""

    _engine: Engine
    url: str
    # Where archive segments are read from (default: where the run wrote them).
    archive_location: str | None = None
    _archive_reader: ArchiveReader | None = None
    # Subclasses for looking set these False (see Engine.enforces_budgets).
    enforces_budgets = True
    repairs_snapshots = True

    @property
    def mapper(self) -> MsgspecMapper:
        """The codec of events (topics, encoded sizes)."""
        return self._engine.mapper

    @property
    def policy(self) -> SnapshotPolicy:
        return self._engine.policy

    @property
    def policies(self) -> Mapping[type[Agent], SnapshotPolicy]:
        return self._engine.policies

    @property
    def recent_events(self) -> int:
        return self._engine.recent_events

    @property
    def keep_snapshots(self) -> int:
        return self._engine.keep_snapshots

    @property
    def max_event_bytes(self) -> int:
        return self._engine.max_event_bytes

    @property
    def max_row_bytes(self) -> int:
        return self._engine.max_row_bytes

    @property
    def slow_load_ms(self) -> float | None:
        return self._engine.slow_load_ms

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of saves and reads (see ``snaptail.application.retry``)."""
        return self._engine.retry

    @property
    def keep_save_ids(self) -> timedelta:
        """How long save ids are kept (see :meth:`AgentStore.save_committed`)."""
        return self._engine.keep_save_ids

    @property
    def memory_budget(self) -> int | None:
        return self._engine.memory_budget

    @memory_budget.setter
    def memory_budget(self, value: int | None) -> None:
        self._engine.memory_budget = value

    def policy_for(self, agent_type: type[Agent]) -> SnapshotPolicy:
        """The snapshot policy for ``agent_type``: its entry in ``policies`` (or its
        nearest base class's), else the store's ``policy``."""
        return self._engine.policy_for(agent_type)

    @property
    def keys(self) -> KeyStore | None:
        """The key store of agents with data subjects (None: none configured)."""
        return self._engine.keys

    def open_snapshot(self, agent_id: UUID, version: int, data: bytes) -> bytes:
        """A stored snapshot's bytes, decrypted if they are encrypted."""
        return self._engine.open_snapshot(agent_id, version, data)

    def load_stats(self, agent: Agent) -> LoadStats | None:
        """What the load that built ``agent`` read and cost (None if this store did
        not load it)."""
        return self._engine.load_stats(agent)

    def bytes_since_snapshot(self, agent: Agent) -> int:
        """Encoded event bytes this store saved for ``agent`` since its last snapshot."""
        return self._engine.bytes_since_snapshot(agent)

    # -- the archive (blocking: the async store runs these off the loop) ------------

    def _sync_recorder(self) -> AgentRecorder:
        raise NotImplementedError

    def _sync_run(self, steps: Steps[T]) -> T:
        return drive(steps, self._sync_recorder(), self._engine.retry)

    @property
    def archive_reader(self) -> ArchiveReader:
        """Reads this store's archived events (see README "Archive")."""
        reader = self._archive_reader
        if reader is None:
            from snaptail.archive.reader import ArchiveReader

            reader = self._archive_reader = ArchiveReader(
                self._sync_recorder(), self.archive_location
            )
        return reader

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
        agent = self._replay_all(agent_id, version)
        if version is None:  # the next load should not need the archive
            try:
                recorder = self._sync_recorder()
                found = recorder.select_snapshot(agent_id, lte=agent.version)
                if found is not None and found.originator_version == agent.version:
                    judged = judge_snapshot(found, self._engine.open_snapshot)
                    if judged.agent is None and judged.kind in {CORRUPT, STALE}:
                        recorder.delete_snapshots(
                            agent_id, keep=self.keep_snapshots, versions=[agent.version]
                        )
                self._sync_run(self._engine.snapshot_now(agent))
            except Exception as exc:  # the load succeeded: never fail it here
                logger.warning("no fresh snapshot after a load from the archive: %s", exc)
        return agent

    def _found_many(
        self,
        found: Mapping[UUID, Agent | AgentNotFound | DamagedLog | None],
        current: Mapping[UUID, Agent | None],
    ) -> dict[UUID, Agent]:
        """``get_many``'s answer from :meth:`Engine.load_many`'s: the caller's agent
        where it is current, each failed load tried in the archive as ``get`` does;
        agents not found left out."""
        agents: dict[UUID, Agent] = {}
        for agent_id, result in found.items():
            if result is None:
                held = current.get(agent_id)
                if held is not None:
                    agents[agent_id] = held
                continue
            if isinstance(result, Agent):
                agents[agent_id] = result
                continue
            try:
                agents[agent_id] = self._get_archived(agent_id, None, result)
            except AgentNotFound:
                continue
        return agents

    def _replay_all(self, agent_id: UUID | str, version: int | None) -> Agent:
        """A replay through the archive and the hot table (blocking)."""
        agent_id = as_agent_id(agent_id)
        check_version(agent_id, "version", version, 1)
        before = None if version is None else version + 1
        walk = self._engine.walk(agent_id, None, before, False, None, 500)
        agent = apply_events(None, self._history(walk))
        return self._sync_run(self._engine.replayed(agent_id, version, agent))

    def _history(self, walk: PageWalk) -> Iterator[Any]:
        """History: archived events (if any) and hot ones. An archive run that commits
        during the walk moves rows it has not reached: then it goes on from the last
        event given, archive first."""
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
            yield from self._history(self._walk_like(walk, after, before))

    def _walk_like(self, walk: PageWalk, after: int | None, before: int | None) -> PageWalk:
        return PageWalk(
            walk.agent_id, after, before, walk.reverse, walk.topics, walk.page_size,
            self._engine.decode,
        )  # fmt: skip

    def _archived_history(self, walk: PageWalk, upto: int) -> Iterator[Any]:
        """History of an agent whose versions up to ``upto`` are archived: the
        archive's part and the hot table's part, in the order asked."""
        agent_id, after, before = walk.agent_id, walk.after or 0, walk.before
        hot = None
        if before is None or before > upto + 1:
            hot = self._walk_like(walk, upto, before)
        lt = upto + 1 if before is None else min(before, upto + 1)
        if walk.reverse and hot is not None:
            yield from self._hot_history(hot)
        decode = self._engine.decode
        for version, topic, state, _, _ in self.archive_reader.rows(
            agent_id, after, lt, walk.reverse, walk.topics
        ):
            yield decode(StoredEvent(agent_id, version, topic, state))
        if not walk.reverse and hot is not None:
            yield from self._hot_history(hot)

    def _hot_history(self, walk: PageWalk) -> Iterator[Any]:
        while (page := self._sync_run(walk.page())) is not None:
            yield from page

    def _latest_archived(self, agent_id: UUID, topics: tuple[str, ...]) -> Any | None:
        """The newest archived event of ``topics`` (None: none, or nothing archived)."""
        upto = self.archive_reader.upto(agent_id)
        rows = self.archive_reader.rows(agent_id, 0, upto + 1, True, topics) if upto else ()
        for version, topic, state, _, _ in rows:
            return self._engine.decode(StoredEvent(agent_id, version, topic, state))
        return None

    def archive(
        self,
        to: str,
        *,
        keep_events: int = 0,
        older_than: timedelta | None = None,
        dry_run: bool = False,
        wait: float = 0.0,
        progress: Callable[[Progress], None] | None = None,
        view_positions: Sequence[Position] = (),
    ) -> ArchiveReport:
        """Move events nothing hot needs into archive segments at ``to`` (a directory
        or fsspec URL); see README "Archive" and ``snaptail archive run``. Blocking."""
        from snaptail.archive.runner import run_archive

        report = run_archive(
            self._sync_recorder(), self.url, to, recent_events=self.recent_events,
            keep_events=keep_events, older_than=older_than, dry_run=dry_run, wait=wait,
            view_positions=view_positions, progress=progress, mapper=self.mapper,
        )  # fmt: skip
        if not dry_run:  # maintenance: old save ids go with it
            self._sync_run(self._engine.prune_save_ids())
        return report

    def vacuum_archived(self) -> tuple[int, int]:
        """Give back the space archived rows held (bytes before, after). Blocking."""
        from snaptail.archive.runner import vacuum

        return vacuum(self._sync_recorder(), self.url)


class AgentStore(StoreBase):
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
    :meth:`add_subject` and :meth:`forget`. ``retry`` is the retry policy
    (:class:`~snaptail.RetryPolicy`). ``keep_save_ids`` (default 7 days, at least an
    hour) is how long a save's id is kept for :meth:`save_committed`.
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
        retry: RetryPolicy | None = None,
        keys: KeyStore | str | None = None,
        master_key: KeyWrapper | bytes | str | None = None,
        keep_save_ids: timedelta = DEFAULT_KEEP_SAVE_IDS,
        **options: Any,
    ) -> None:
        self._engine = Engine(
            snapshot_every=snapshot_every,
            recent_events=recent_events,
            policy=policy,
            policies=policies,
            keep_snapshots=keep_snapshots,
            max_event_bytes=max_event_bytes,
            max_row_bytes=max_row_bytes,
            memory_budget=memory_budget,
            slow_load_ms=slow_load_ms,
            metrics=metrics,
            retry=retry,
            keys=keys,
            master_key=master_key,
            keep_save_ids=keep_save_ids,
        )
        self._engine.enforces_budgets = self.enforces_budgets
        self._engine.repairs_snapshots = self.repairs_snapshots
        self.url = resolve_url(url)
        arguments.check_url(self.url)
        self._recorder: AgentRecorder = open_recorder(self.url, **options)

    @property
    def recorder(self) -> AgentRecorder:
        """The recorder (for snaptail's own recorder-level code and tests; applications
        use the store's methods)."""
        return self._recorder

    def _run(self, steps: Steps[T]) -> T:
        return drive(steps, self._recorder, self._engine.retry)

    def _sync_recorder(self) -> AgentRecorder:
        return self._recorder

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        self._recorder.close()
        keys = self._engine.keys
        if keys is not None and self._engine.own_keys:
            keys.close()

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
        budget) that fails is logged and left for the next save or load. When the
        connection fails during the commit and the database cannot be asked whether
        it committed, :class:`~snaptail.SaveOutcomeUnknown` (with the save's id) is
        raised instead of a plain failure.
        """
        self._run(self._engine.save(agents))

    def save_committed(self, save_id: UUID | str) -> bool:
        """Whether the save ``save_id`` (from :class:`~snaptail.SaveOutcomeUnknown`)
        committed its rows. Save ids are kept ``keep_save_ids`` (7 days by default):
        for an older save whose id is not stored this raises
        :class:`~snaptail.errors.SaveOutcomeExpired` (it cannot tell), never False."""
        return self._run(self._engine.save_committed(save_id))

    def prune_save_ids(self) -> int:
        """Delete the save ids older than ``keep_save_ids`` now; returns how many.
        Saves do this themselves (a store's first save, then hourly) and so does
        :meth:`archive`: for maintenance jobs."""
        return self._run(self._engine.prune_save_ids())

    def update(
        self, agent_id: UUID | str, command: Callable[[Agent], object], *, retries: int = 3
    ) -> Agent:
        """Load the agent, apply ``command(agent)`` and save it; on a
        :class:`ConcurrencyError` reload it and apply ``command`` again, up to
        ``retries`` more times (then the error is raised). Returns the saved agent.

        ``command`` must only record events on the agent it is given: it runs once
        per attempt, and only the attempt that saved is stored. A save whose outcome
        is unknown (its connection failed during the commit) is resolved by its save
        id before ``command`` is applied again, so it is never stored twice.
        """
        return self._run(self._engine.update(agent_id, command, retries))

    def snapshot(self, agent_id: UUID | str) -> int:
        """Take a snapshot of the agent's current state now; returns its version."""
        return self._run(self._engine.snapshot(agent_id))

    # -- data subjects (snaptail.privacy) --------------------------------------------

    def add_subject(self, agent: Agent | UUID | str, *subjects: str) -> tuple[str, ...]:
        """Make ``subjects`` (ids of people, such as ``"user-42"``) data subjects of the
        agent, before its first save: its events and snapshots are then stored
        encrypted, and :meth:`forget` of any of them erases them. Returns the agent's
        subject references (pseudonyms: the raw ids are stored nowhere)."""
        agent_id = agent.id if isinstance(agent, Agent) else as_agent_id(agent)
        cipher = self.mapper.payload_cipher
        return add_subjects(self._recorder, self.keys, cipher, agent_id, subjects)

    def forget(self, subject: str) -> Erasure | None:
        """Erase ``subject``'s data: delete its key and its agents' data keys, evict
        those agents from this process's caches and record the erasure (None: no key
        of that subject). README: "Forgetting a person"."""
        return forget_subject(self._recorder, self.keys, self.mapper.payload_cipher, subject)

    def erasures(self) -> list[Erasure]:
        """The key store's erasure records, oldest first (none without a key store)."""
        return [] if self.keys is None else self.keys.erasures()

    # -- loading --------------------------------------------------------------------

    def get(self, agent_id: UUID | str, version: int | None = None) -> Agent:
        """Load an agent: latest valid snapshot (at or before ``version``) plus the
        events after it. Never replays events older than the snapshot.

        ``agent_id`` is a UUID or its string form (on every backend). A ``version``
        older than every snapshot whose events were archived (or a load that trusts
        none of the snapshots the archive left) replays from the archive."""
        try:
            return self._run(self._engine.load(agent_id, version))
        except (AgentNotFound, DamagedLog) as error:
            return self._get_archived(agent_id, version, error)

    def get_many(
        self,
        agent_ids: Iterable[UUID | str],
        *,
        current: Mapping[UUID, Agent | None] | None = None,
    ) -> dict[UUID, Agent]:
        """Load the latest versions of several agents, reading their rows in ONE read
        transaction; each is loaded as :meth:`get` loads it (snapshot trust, archive
        fallback, errors for damaged rows). Returns agent id -> agent in the order
        asked; an id with no agent is absent from the dict (no error).

        ``current``: what the caller holds (a cache): an agent whose stored version
        is still its version is returned as is, only its version read; an id mapped
        to None (found missing before) is left out if it still has no events."""
        current = current or {}
        found = self._run(self._engine.load_many(agent_ids, known_versions(current)))
        return self._found_many(found, current)

    def replay(self, agent_id: UUID | str, version: int | None = None) -> Agent:
        """Rebuild the agent from its full log, ignoring snapshots (reads page by page).

        For verification and tests; ``get()`` is the way to load an agent.
        """
        return self._replay_all(agent_id, version)

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
        yield from self._history(
            self._engine.walk(agent_id, after, before, reverse, types, page_size)
        )

    def history_pages(
        self,
        agent_id: UUID | str,
        after: int | None = None,
        before: int | None = None,
        reverse: bool = False,
        types: Iterable[type[Any] | str] | None = None,
        page_size: int = 500,
    ) -> Iterator[list[Any]]:
        """:meth:`history` a page (a list of up to ``page_size`` events) at a time."""
        events = self.history(agent_id, after, before, reverse, types, page_size)
        while page := list(itertools.islice(events, page_size)):
            yield page

    def latest(self, agent_id: UUID | str, *types: type[Any] | str) -> Any | None:
        """The agent's newest event of one of ``types`` (any type if none given)."""
        found = self._run(self._engine.latest(agent_id, types))
        if found is not None:
            return found
        return self._latest_archived(as_agent_id(agent_id), self._engine.topics(types))

    def event_count(self, agent_id: UUID | str) -> int:
        """How many events the agent has: its version, read from the index."""
        return self._run(self._engine.event_count(agent_id))

    # -- the fleet and its snapshots ----------------------------------------------

    def agent_ids(
        self, after: UUID | str | None = None, *, page: int = AGENT_ID_PAGE
    ) -> Iterator[UUID]:
        """Every stored agent's id, in id order (after ``after``), read ``page`` ids at
        a time."""
        cursor = None if after is None else as_agent_id(after)
        while True:
            ids = self._run(self._engine.agent_ids(cursor, page))
            yield from ids
            if len(ids) < page:
                return
            cursor = ids[-1]

    def read_rows(
        self,
        agent_id: UUID | str,
        *,
        after: int | None = None,
        before: int | None = None,
        reverse: bool = False,
        types: Iterable[type[Any] | str] | None = None,
        limit: int = 500,
    ) -> Sequence[StoredEvent]:
        """One page of the agent's events as stored (version, topic, encoded state),
        not decoded: for integrations that read part of a payload themselves. No gap
        check (see :meth:`history`)."""
        return self._run(self._engine.rows(agent_id, after, before, reverse, types, limit))

    def newest_position(self) -> int:
        """The notification id of the newest event in the whole log (0 if none): where
        a projection that has caught up stands."""
        return self._run(self._engine.newest_position())

    # -- the whole log in position order (projection workers) ----------------------

    def events_after(
        self, position: Position, limit: int, *, partition: Partition | None = None
    ) -> list[PositionedNotification]:
        """Up to ``limit`` events of the hot table after ``position``, in position order
        (of ``partition``'s agents only, if given), payloads as stored: what a projection
        worker reads. Never returns an event a later call could find before one it
        returned. Not retried: the worker has its own reconnect loop (archived events:
        :attr:`archive_reader`)."""
        if limit < 1:
            raise InvalidArgument("limit", f"must be >= 1, got {limit}")
        try:
            return self._recorder.select_after(position, limit, partition=partition)
        except Exception as exc:
            raise storage_error(f"reading events after position {position}", exc)  # noqa: B904 (its cause is set)

    def events_held_back(self, position: Position, upto: int) -> bool:
        """Whether an event at or below notification id ``upto`` lies after
        ``position`` but :meth:`events_after` cannot return it yet (PostgreSQL: its
        transaction is younger than the oldest one still running, which could still
        commit rows before it). A reader that must have read everything up to ``upto``
        waits while this is true. Not retried (see :meth:`events_after`)."""
        try:
            return self._recorder.held_back(position, upto)
        except Exception as exc:
            raise storage_error(f"checking for events held back after position {position}", exc)  # noqa: B904 (its cause is set)

    def new_events_waiter(self) -> EventsWaiter:
        """What a reader of :meth:`events_after` waits on between reads: woken by a save
        in this process (SQLite) or by the database's NOTIFY (PostgreSQL), else by its
        timeout. Close it when done."""
        try:
            return self._recorder.new_events_waiter()
        except Exception as exc:
            raise storage_error("opening a waiter for new events", exc)  # noqa: B904 (its cause is set)

    def prepare_partitions(self, count: int) -> bool:
        """Prepare :meth:`events_after` reads of ``count`` partitions (on PostgreSQL an
        expression index, built once; True if it was built now)."""
        try:
            return self._recorder.ensure_partition_index(count)
        except Exception as exc:
            raise storage_error(f"preparing reads of {count} partitions", exc)  # noqa: B904 (its cause is set)

    def put_snapshot(self, snapshot: StoredSnapshot, *, keep: int | None = None) -> bool:
        """Store a snapshot row as given (False if one exists at its version), pruning
        its agent's older ones down to ``keep``. For tools and benchmarks: the store
        takes its own snapshots."""
        return self._run(self._engine.put_snapshot(snapshot, keep))

    def snapshot_infos(self, agent_id: UUID | str) -> Sequence[SnapshotInfo]:
        """The agent's stored snapshots, newest first, without their bytes."""
        return self._run(self._engine.snapshot_infos(agent_id))

    def prune_snapshots(self, agent_id: UUID | str, keep: int) -> int:
        """Delete all but the agent's newest ``keep`` snapshots (and the newest of each
        of its last two fingerprints; ``keep=0``: all); returns how many were deleted."""
        return self._run(self._engine.prune_snapshots(agent_id, keep))
