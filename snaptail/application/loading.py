"""Building a loaded agent from its snapshot and the rows after it (replay of the tail,
the recent-event cache), what the load cost, and what the store remembers about it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from snaptail.domain.agent import Agent
from snaptail.domain.recent import RecentEvents, Undecoded
from snaptail.domain.replay import apply_events
from snaptail.errors import DamagedLog


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


@dataclass
class Tracking:
    """What the store remembers about a loaded agent (kept on the agent object)."""

    snapshot_version: int
    bytes_since: int
    last_load: LoadStats | None = None


TRACKING_ATTRIBUTE = "_snaptail"


def tracking(agent: Agent) -> Tracking:
    """The agent's tracking record (a fresh one for an agent the store never saw)."""
    track = agent.__dict__.get(TRACKING_ATTRIBUTE)
    if track is None:
        track = Tracking(snapshot_version=0, bytes_since=0)
        agent.__dict__[TRACKING_ATTRIBUTE] = track
    return cast(Tracking, track)


def tail_load_ms(track: Tracking, events_since: int) -> float | None:
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
    stored_events: Sequence[StoredEvent],
    to_event: Callable[[StoredEvent], Any],
    recent_events: int,
    started: float,
    untrusted: tuple[tuple[int, str], ...] = (),
) -> Agent:
    """The agent decoded from its snapshot (None: no trusted one) with the events after
    it applied; ``stored_events`` may start earlier, to fill the recent-event cache of
    ``recent_events`` events. Records the load's stats (``started``: its
    ``time.perf_counter()``) in the agent's tracking. ``stored_events`` is not empty
    when ``snapshot_agent`` is None."""
    snapshot_version = snapshot_agent.version if snapshot_agent is not None else 0
    # Rows at or before the snapshot were read only to fill the recent cache:
    # they are decoded when first accessed, not now.
    replay_from = 0
    while (
        replay_from < len(stored_events)
        and stored_events[replay_from].originator_version <= snapshot_version
    ):
        replay_from += 1
    require_consecutive(agent_id, stored_events, replay_from, snapshot_version)
    tail_events = [to_event(s) for s in stored_events[replay_from:]]
    agent = cast(Agent | None, apply_events(snapshot_agent, tail_events))
    assert agent is not None
    tail_bytes = sum(len(s.state) for s in stored_events[replay_from:])
    cached: list[Any] = [Undecoded(s, to_event) for s in stored_events[:replay_from]]
    cached.extend(tail_events)
    agent.recent_events = RecentEvents(recent_events, cached)
    stats = LoadStats(
        snapshot_version=snapshot_version,
        tail=len(tail_events),
        events_read=len(stored_events),
        bytes_read=tail_bytes
        + sum(len(s.state) for s in stored_events[:replay_from])
        + snapshot_bytes,
        ms=(time.perf_counter() - started) * 1000,
        untrusted=untrusted,
    )
    agent.__dict__[TRACKING_ATTRIBUTE] = Tracking(snapshot_version, tail_bytes, stats)
    return agent


def require_consecutive(
    agent_id: UUID, rows: Sequence[StoredEvent], replay_from: int, snapshot_version: int
) -> None:
    """Raise :class:`DamagedLog` if the rows a load read skip a version, or if its
    replay does not start right after the snapshot (at 1 without one)."""
    if replay_from < len(rows) and rows[replay_from].originator_version != snapshot_version + 1:
        found = rows[replay_from].originator_version
        raise DamagedLog(agent_id, snapshot_version + 1, f"the next stored event is {found}")
    for before, after in itertools.pairwise(rows):
        if after.originator_version != before.originator_version + 1:
            raise DamagedLog(
                agent_id,
                before.originator_version + 1,
                f"the next stored event is {after.originator_version}",
            )
