"""What the store remembers about a loaded agent, and what one load read and cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from snaptail.domain.agent import Agent


@dataclass(frozen=True)
class LoadStats:
    """What one load of an agent read and cost."""

    snapshot_version: int
    tail: int
    events_read: int
    bytes_read: int
    ms: float


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
