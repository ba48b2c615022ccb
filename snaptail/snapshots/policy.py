"""When to take a snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SinceSnapshot:
    """What has accumulated since an agent's last snapshot."""

    events: int
    bytes: int
    load_ms: float | None = None


class SnapshotPolicy(Protocol):
    """Decides, at save time, whether to snapshot the agent being saved."""

    def should_snapshot(self, since: SinceSnapshot) -> bool: ...


@dataclass(frozen=True)
class EveryNEvents:
    """Snapshot once ``n`` events have been stored since the last snapshot."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"EveryNEvents needs n >= 1, got {self.n}")

    def should_snapshot(self, since: SinceSnapshot) -> bool:
        return since.events >= self.n


@dataclass(frozen=True)
class Never:
    """Never snapshot automatically; ``store.snapshot(agent_id)`` still works."""

    def should_snapshot(self, since: SinceSnapshot) -> bool:
        return False
