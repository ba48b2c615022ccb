"""The decision whether a stored snapshot may be used to load an agent."""

from __future__ import annotations

from typing import Protocol, cast
from uuid import UUID

from eventsourcing.utils import resolve_topic

from snaptail.domain.agent import Agent
from snaptail.snapshots.codec import checksum, decode_state, upcastable
from snaptail.snapshots.fingerprint import state_fingerprint


class SnapshotRecord(Protocol):
    """A stored snapshot as a recorder returns it."""

    @property
    def originator_id(self) -> UUID: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def checksum(self) -> int: ...
    @property
    def state(self) -> bytes: ...


def trust_snapshot(snapshot: SnapshotRecord) -> tuple[Agent | None, str]:
    """Decode a snapshot, or return (None, why) if it must not be trusted: its agent
    type is gone, its bytes are corrupted, it was written by other code (and cannot
    be upcast) or it does not decode. Never raises."""
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
