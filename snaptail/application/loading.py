"""Building a loaded agent from its snapshot and the rows after it (replay of the tail,
the recent-event cache), what the load cost, and what the store remembers about it
(:class:`Bookkeeping`, kept in the store's own :class:`AgentBooks`, never on the agent)."""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from uuid import UUID

from snaptail.application.arguments import DEFAULT_MAX_ROW_BYTES, check_rows, too_deep
from snaptail.domain.agent import Agent
from snaptail.domain.recent import RecentEvents
from snaptail.errors import DamagedLog
from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.recorder import EventRow


@dataclass(frozen=True)
class LoadStats:
    """What one load of an agent read and cost."""

    snapshot_version: int
    tail: int
    events_read: int
    bytes_read: int
    ms: float
    # (version, why) of each newer snapshot the load did not trust and passed over
    untrusted: tuple[tuple[int, str], ...] = ()
    snapshot_bytes: int = 0  # the stored size of the snapshot loaded (0: none)


_new = object.__new__
_data = itemgetter(2)  # an event row's stored bytes
_setattr = object.__setattr__


class Bookkeeping:
    """What a store remembers about an agent it loaded or saved: the version of the
    agent's newest stored snapshot and its size (0 if none or not known), the event
    bytes saved since, the last load's stats, and whether the memory budget is
    shedding it right now."""

    __slots__ = (
        "bytes_since", "last_load", "ref", "shedding", "snapshot_bytes", "snapshot_version",
    )  # fmt: skip

    def __init__(
        self,
        ref: weakref.ref[Agent],
        snapshot_version: int,
        bytes_since: int,
        last_load: LoadStats | None,
    ) -> None:
        self.ref = ref  # the agent (weakly): an id is reused once its object is gone
        self.snapshot_version = snapshot_version
        # Known from a save's snapshot; a loaded snapshot's is in ``last_load``
        # (see :func:`snapshot_size`).
        self.snapshot_bytes = 0
        self.bytes_since = bytes_since
        self.last_load = last_load
        self.shedding = False

    def snapshotted(self, version: int, size: int) -> None:
        """A snapshot of ``size`` bytes was stored at ``version``: no bytes since."""
        self.snapshot_version = version
        self.snapshot_bytes = size
        self.bytes_since = 0


class AgentBooks:
    """A store's :class:`Bookkeeping` per agent object, held beside the agents (keyed by
    object identity): agents are not hashable, and nothing of the store's is stored on
    them. A record goes when its agent is freed (its weak reference's callback), so a
    load leaves nothing behind for the cyclic collector to count."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[int, Bookkeeping] = {}

    def find(self, agent: Agent) -> Bookkeeping | None:
        """The agent's record, or None if this store never loaded or saved it."""
        books = self._by_id.get(id(agent))
        if books is None or books.ref() is not agent:
            return None
        return books

    def of(self, agent: Agent) -> Bookkeeping:
        """The agent's record (a fresh one for an agent this store never saw)."""
        books = self._by_id.get(id(agent))
        if books is None or books.ref() is not agent:
            books = self.record(agent, 0, 0, None)
        return books

    def record(
        self, agent: Agent, snapshot_version: int, bytes_since: int, last_load: LoadStats | None
    ) -> Bookkeeping:
        """A new record for ``agent`` (replacing any it had)."""
        by_id = self._by_id
        key = id(agent)
        # The callback, called with the reference as its one argument, is
        # ``by_id.pop(key, ref)``: the reference is only the default. A callback runs
        # as the agent is freed, before its id can be another object's.
        books = by_id[key] = Bookkeeping(
            weakref.ref(agent, partial(by_id.pop, key)), snapshot_version, bytes_since,
            last_load,
        )  # fmt: skip
        return books

    def __len__(self) -> int:
        """Records held: one per live agent this store loaded or saved."""
        return len(self._by_id)


def snapshot_size(track: Bookkeeping) -> int:
    """The stored size of the agent's newest snapshot, as far as the store knows
    (0: none, or not known)."""
    if track.snapshot_bytes:
        return track.snapshot_bytes
    last = track.last_load
    if last is not None and last.snapshot_version == track.snapshot_version:
        return last.snapshot_bytes
    return 0


def tail_load_ms(track: Bookkeeping, events_since: int) -> float | None:
    """What loading the agent from its last snapshot costs: the last load's measured
    time, scaled up to the events appended since. None if not measured since the
    last snapshot."""
    last = track.last_load
    if last is None or last.snapshot_version != track.snapshot_version:
        return None
    if last.tail and events_since > last.tail:
        return last.ms * events_since / last.tail
    return last.ms


def build_agent(
    agent_id: UUID,
    snapshot_agent: Agent | None,
    snapshot_bytes: int,
    rows: Sequence[EventRow],
    mapper: MsgspecMapper,
    recent_events: int,
    started: float,
    books: AgentBooks,
    untrusted: tuple[tuple[int, str], ...] = (),
    *,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
) -> tuple[Agent, LoadStats]:
    """The agent decoded from its snapshot (None: no trusted one) with the event rows
    after it applied; ``rows`` may start earlier, to fill the recent-event cache of
    ``recent_events`` events. Records the load's stats (``started``: its
    ``time.perf_counter()``) in ``books``; returns the agent and them. ``rows`` is not empty when
    ``snapshot_agent`` is None."""
    snapshot_version = snapshot_agent.version if snapshot_agent is not None else 0
    # Rows at or before the snapshot were read only to fill the recent cache.
    count = len(rows)
    replay_from = 0
    while replay_from < count and rows[replay_from][0] <= snapshot_version:
        replay_from += 1
    require_consecutive(agent_id, rows, replay_from, snapshot_version)
    # (No copy of the rows when all of them are the tail: the common case.)
    tail = rows[replay_from:] if replay_from else rows
    tail_bytes = sum(map(len, map(_data, tail)))
    read_bytes = tail_bytes + snapshot_bytes
    if replay_from:
        read_bytes += sum(map(len, map(_data, rows[:replay_from])))
    # One comparison: only a load whose rows total more than the limit looks at each.
    if read_bytes - snapshot_bytes > max_row_bytes:
        check_rows(agent_id, rows, read_bytes - snapshot_bytes, max_row_bytes)
    try:
        # (annotated, not cast(): a cast builds ``Agent | None`` and calls a function)
        agent: Agent | None = mapper.replay_rows(snapshot_agent, agent_id, tail)
    except RecursionError:
        raise too_deep(agent_id, _too_deep_version(mapper, agent_id, tail)) from None
    assert agent is not None
    # The cache keeps the rows as read; each is decoded when first accessed. (A fresh
    # agent's cache is already the empty one: Agent.recent_events makes it when asked.)
    if recent_events:
        agent.recent_events = RecentEvents(
            recent_events, rows, partial(mapper.decode_event, agent_id)
        )
    # LoadStats(...) without the frozen dataclass's __init__ (one object.__setattr__
    # per field, 1.4 us): its __dict__ set at once, the same object (0.5 us).
    stats = _new(LoadStats)
    _setattr(
        stats,
        "__dict__",
        {
            "snapshot_version": snapshot_version,
            "tail": count - replay_from,
            "events_read": count,
            "bytes_read": read_bytes,
            "ms": (time.perf_counter() - started) * 1000,
            "untrusted": untrusted,
            "snapshot_bytes": snapshot_bytes,
        },
    )
    books.record(agent, snapshot_version, tail_bytes, stats)
    return agent, stats


def _too_deep_version(
    mapper: MsgspecMapper, agent_id: UUID, rows: Sequence[EventRow]
) -> int | None:
    """The version of the first row that does not decode for its nesting."""
    for version, topic, data in rows:
        try:
            mapper.decode_event(agent_id, version, topic, data)
        except RecursionError:
            return version
        except Exception:
            continue
    return None


def require_consecutive(
    agent_id: UUID, rows: Sequence[EventRow], replay_from: int, snapshot_version: int
) -> None:
    """Raise :class:`DamagedLog` if the rows a load read skip a version, or if its
    replay does not start right after the snapshot (at 1 without one)."""
    if replay_from < len(rows) and rows[replay_from][0] != snapshot_version + 1:
        found = rows[replay_from][0]
        raise DamagedLog(agent_id, snapshot_version + 1, f"the next stored event is {found}")
    # Rows come in version order, each version once (the primary key): they are
    # consecutive exactly when the last is as far from the first as their count says.
    if not rows or rows[-1][0] - rows[0][0] == len(rows) - 1:
        return
    for before, after in itertools.pairwise(rows):
        if after[0] != before[0] + 1:
            raise DamagedLog(agent_id, before[0] + 1, f"the next stored event is {after[0]}")
