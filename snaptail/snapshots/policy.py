"""When to take a snapshot: policies decided at save time, combinable with ``|``.

A policy sees :class:`SinceSnapshot` (what has accumulated since the agent's last
snapshot) and answers yes or no. ``EveryNEvents(100) | EveryNBytes(1_000_000)``
snapshots when either says yes. Any object with a ``should_snapshot(since)`` method
is a policy; wrap it in :class:`AnyOf` to combine it with others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SinceSnapshot:
    """What has accumulated since an agent's last snapshot, as seen at save time.

    ``events`` and ``bytes`` count the stored events after the snapshot, including
    those being saved. ``load_ms`` is the cost of loading the agent from that
    snapshot, as measured by the store's last ``get()`` of the agent and scaled up
    to the events since; None when the agent was not loaded since its last snapshot
    (a new agent, or one snapshotted since it was loaded). ``snapshot_bytes`` is
    that snapshot's stored size; None when the agent has none or the store has not
    read or written it since it loaded the agent.
    """

    events: int
    bytes: int
    load_ms: float | None = None
    snapshot_bytes: int | None = None


@runtime_checkable
class SnapshotPolicy(Protocol):
    """Decides, at save time, whether to snapshot the agent being saved."""

    def should_snapshot(self, since: SinceSnapshot) -> bool: ...


class Combinable:
    """Mixin: ``a | b`` is the policy that snapshots when ``a`` or ``b`` would."""

    def should_snapshot(self, since: SinceSnapshot) -> bool:
        raise NotImplementedError

    def __or__(self, other: SnapshotPolicy) -> AnyOf:
        return AnyOf(self, other)

    def __ror__(self, other: SnapshotPolicy) -> AnyOf:
        return AnyOf(other, self)


@dataclass(frozen=True, init=False)
class AnyOf(Combinable):
    """Snapshot when any of ``policies`` says so (nested ``AnyOf`` are flattened)."""

    policies: tuple[SnapshotPolicy, ...]

    def __init__(self, *policies: SnapshotPolicy) -> None:
        flat: list[SnapshotPolicy] = []
        for policy in policies:
            if not isinstance(policy, SnapshotPolicy):
                raise TypeError(f"not a snapshot policy (no should_snapshot): {policy!r}")
            flat.extend(policy.policies if isinstance(policy, AnyOf) else (policy,))
        object.__setattr__(self, "policies", tuple(flat))

    def should_snapshot(self, since: SinceSnapshot) -> bool:
        return any(policy.should_snapshot(since) for policy in self.policies)


@dataclass(frozen=True)
class EveryNEvents(Combinable):
    """Snapshot once ``n`` events have been stored since the last snapshot."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"EveryNEvents needs n >= 1, got {self.n}")

    def should_snapshot(self, since: SinceSnapshot) -> bool:
        return since.events >= self.n


@dataclass(frozen=True)
class EveryNBytes(Combinable):
    """Snapshot once the events stored since the last snapshot reach ``n`` bytes
    (encoded size): a few large webhook payloads count as much as many small events."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"EveryNBytes needs n >= 1, got {self.n}")

    def should_snapshot(self, since: SinceSnapshot) -> bool:
        return since.bytes >= self.n


@dataclass(frozen=True)
class GrowWithState(Combinable):
    """Snapshot once ``n`` events have been stored since the last snapshot *and* they
    weigh at least ``ratio`` times that snapshot. For an agent whose state grows
    without bound (an index, a directory of sessions): each snapshot costs time in
    proportion to the state, and this spaces them in proportion too, so the cost of
    snapshots per saved event stays flat instead of growing with the state, and a
    load replays a tail no heavier than ``ratio`` snapshots. A small state is
    snapshotted every ``n`` events, as by :class:`EveryNEvents`; so is an agent whose
    snapshot size the store does not know (not loaded from a snapshot since)."""

    n: int = 100
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"GrowWithState needs n >= 1, got {self.n}")
        if not self.ratio > 0:
            raise ValueError(f"GrowWithState needs ratio > 0, got {self.ratio}")

    def should_snapshot(self, since: SinceSnapshot) -> bool:
        if since.events < self.n:
            return False
        size = since.snapshot_bytes
        return size is None or since.bytes >= self.ratio * size


@dataclass(frozen=True)
class LoadSlowerThan(Combinable):
    """Snapshot when loading the agent from its last snapshot costs more than ``ms``
    milliseconds, as measured by the store when it last loaded the agent (and scaled
    to the events appended since). Agents never loaded since their last snapshot
    are not measured: combine with :class:`EveryNEvents` to bound those too."""

    ms: float

    def __post_init__(self) -> None:
        if self.ms <= 0:
            raise ValueError(f"LoadSlowerThan needs ms > 0, got {self.ms}")

    def should_snapshot(self, since: SinceSnapshot) -> bool:
        return since.load_ms is not None and since.load_ms > self.ms


@dataclass(frozen=True)
class Never(Combinable):
    """Never snapshot automatically; ``store.snapshot(agent_id)`` still works."""

    def should_snapshot(self, since: SinceSnapshot) -> bool:
        return False
