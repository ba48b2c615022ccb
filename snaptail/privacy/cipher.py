"""Encryption of an agent's stored payloads (event and snapshot bytes) with its data key.

A sealed payload is ``0xC1 0x01 nonce(12) ciphertext+tag(16)``: AES-256-GCM under the
agent's data key, the associated data binding it to its agent id, version and kind
(event or snapshot), so a sealed row copied to another agent or version does not
open. 0xC1 is the one byte msgpack never uses, so a sealed payload is told from a
plain one by its first byte, and the rows of agents without subjects stay plain.
Everything around the payload (topic, agent id, version, sizes) stays in the clear.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from snaptail.errors import AgentForgotten, DamagedLog, KeysRequired
from snaptail.privacy.keys import Erasure, KeyStore, aesgcm, invalid_tag
from snaptail.privacy.registry import register_cache

SEALED = 0xC1  # never a msgpack first byte
FORMAT = 0x01
HEADER = bytes((SEALED, FORMAT))
_NONCE = 12
_EVENT = b"e"
_SNAPSHOT = b"s"
DEFAULT_KEY_TTL = 30.0  # seconds a data key (or "no subject") is trusted from the cache
_MAX_CACHED = 100_000


def is_sealed(data: bytes) -> bool:
    """True if ``data`` is a sealed (encrypted) payload."""
    return bool(data) and data[0] == SEALED


@dataclass(frozen=True)
class RedactedEvent:
    """What ``history()``, ``latest()`` and the recent-event cache give for an event
    of a forgotten agent: where it was, never what it said."""

    originator_id: UUID
    originator_version: int
    topic: str
    size: int  # stored bytes (sealed)
    erasure_id: str
    forgotten_at: str

    @property
    def event_name(self) -> str:
        return self.topic.rpartition(":")[2].rpartition(".")[2]

    def mutate(self, agent: Any) -> Any:
        """A replay cannot apply it: raises :class:`AgentForgotten`."""
        raise AgentForgotten(self.originator_id, self.erasure_id, self.forgotten_at)


# The associated data: kind and agent id (17 bytes), then the version (8, big-endian).
_row_aad = struct.Struct(">17sq").pack
_BODY = 2 + _NONCE  # where the ciphertext starts
Row = tuple[int, str, bytes]  # (version, topic, stored data): a recorder's EventRow


def _aad(kind: bytes, agent_id: UUID, version: int) -> bytes:
    return _row_aad(kind + agent_id.bytes, version)


class PayloadCipher:
    """Seals and opens payloads with each agent's data key from ``keys``.

    Keys (and the answer "this agent has no subject") are cached for ``key_ttl``
    seconds: an erasure made by another process takes effect here within that time
    (:meth:`evict` makes it immediate in this one).
    """

    def __init__(self, keys: KeyStore, key_ttl: float = DEFAULT_KEY_TTL) -> None:
        self.keys = keys
        self.key_ttl = key_ttl
        self._cache: dict[UUID, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        register_cache(self)

    def _key(self, agent_id: UUID) -> Any:
        now = time.monotonic()
        entry = self._cache.get(agent_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        found = self.keys.agent_key(agent_id)
        value: Any = aesgcm(found) if isinstance(found, bytes) else found
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[agent_id] = (now + self.key_ttl, value)
        return value

    def evict(self, agent_id: UUID) -> bool:
        """Forget the cached key of ``agent_id`` (after an erasure, a new subject)."""
        with self._lock:
            return self._cache.pop(agent_id, None) is not None

    def has_key(self, agent_id: UUID) -> bool:
        """True if the agent's payloads are sealed when stored."""
        key = self._key(agent_id)
        if isinstance(key, Erasure):
            raise AgentForgotten(agent_id, key.id, key.at)
        return key is not None

    def _seal(self, kind: bytes, agent_id: UUID, version: int, data: bytes) -> bytes:
        key = self._key(agent_id)
        if key is None:
            return data
        if isinstance(key, Erasure):
            raise AgentForgotten(agent_id, key.id, key.at)
        nonce = os.urandom(_NONCE)
        sealed: bytes = key.encrypt(nonce, data, _aad(kind, agent_id, version))
        return HEADER + nonce + sealed

    def _open(self, kind: bytes, agent_id: UUID, version: int, data: bytes) -> bytes:
        if not data or data[0] != SEALED:
            return data
        key = self._key(agent_id)
        if isinstance(key, Erasure):
            raise AgentForgotten(agent_id, key.id, key.at)
        what = "snapshot" if kind == _SNAPSHOT else "event"
        if key is None:
            raise DamagedLog(
                agent_id,
                version,
                f"its {what} is encrypted but the key store has no key"
                " for this agent (another key store?)",
            )
        if len(data) < 2 + _NONCE + 16 or data[1] != FORMAT:
            raise DamagedLog(agent_id, version, f"its encrypted {what} is cut short or unknown")
        try:
            view = memoryview(data)  # (no copy of a 64 KB snapshot to pass its ciphertext)
            plain: bytes = key.decrypt(view[2:_BODY], view[_BODY:], _aad(kind, agent_id, version))
            return plain
        except invalid_tag():
            raise DamagedLog(
                agent_id,
                version,
                f"its encrypted {what} does not authenticate (altered bytes"
                " or a row of another agent or version)",
            ) from None

    def seal_event(self, agent_id: UUID, version: int, data: bytes) -> bytes:
        """``data`` sealed if the agent has a data key, else as is. Raises
        :class:`AgentForgotten` for a forgotten agent (nothing is written for it)."""
        return self._seal(_EVENT, agent_id, version, data)

    def open_event(self, agent_id: UUID, version: int, data: bytes) -> bytes:
        """The plaintext of ``data`` (unchanged if not sealed). Raises
        :class:`AgentForgotten` if its key was deleted, :class:`DamagedLog` if the
        bytes do not authenticate."""
        return self._open(_EVENT, agent_id, version, data)

    def seal_snapshot(self, agent_id: UUID, version: int, data: bytes) -> bytes:
        return self._seal(_SNAPSHOT, agent_id, version, data)

    def open_snapshot(self, agent_id: UUID, version: int, data: bytes) -> bytes:
        return self._open(_SNAPSHOT, agent_id, version, data)

    def open_rows(self, agent_id: UUID, rows: Sequence[Row]) -> list[Row]:
        """The agent's event ``rows`` ``(version, topic, data)`` with each sealed
        ``data`` opened (:meth:`open_event`; plain rows as they are): what a load does
        with its tail, the key looked up once and no Python call per row but the
        cipher's own. Raises as :meth:`open_event` does, for the first row that fails."""
        key = self._key(agent_id)
        if key is not None and not isinstance(key, Erasure):
            decrypt, prefix = key.decrypt, _EVENT + agent_id.bytes
            try:  # (an empty, short or altered row raises: the loop below says why)
                return [
                    (v, t, d)
                    if d[0] != SEALED
                    else (v, t, decrypt(d[2:_BODY], d[_BODY:], _row_aad(prefix, v)))
                    if d[1] == FORMAT
                    else _unknown_format()
                    for v, t, d in rows
                ]
            except Exception:
                pass
        return [(v, t, self._open(_EVENT, agent_id, v, d)) for v, t, d in rows]


def _unknown_format() -> Row:
    raise ValueError("a sealed payload of an unknown format")


def require_keys(agent_id: UUID, data: bytes) -> None:
    """Raise :class:`KeysRequired` if ``data`` is sealed (read without a key store)."""
    if data and data[0] == SEALED:
        raise KeysRequired(agent_id, "its stored data is encrypted and no key store is open")
