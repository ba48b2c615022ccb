"""Snapshots: when to take them, how they are encoded, and when to trust them."""

from snaptail.snapshots.codec import SnapshotDecodeError, checksum, decode_state, encode_state
from snaptail.snapshots.fingerprint import fingerprint_settings, state_fingerprint
from snaptail.snapshots.policy import (
    AnyOf,
    EveryNBytes,
    EveryNEvents,
    GrowWithState,
    LoadSlowerThan,
    Never,
    SinceSnapshot,
    SnapshotPolicy,
)

__all__ = [
    "AnyOf",
    "EveryNBytes",
    "EveryNEvents",
    "GrowWithState",
    "LoadSlowerThan",
    "Never",
    "SinceSnapshot",
    "SnapshotDecodeError",
    "SnapshotPolicy",
    "checksum",
    "decode_state",
    "encode_state",
    "fingerprint_settings",
    "state_fingerprint",
]
