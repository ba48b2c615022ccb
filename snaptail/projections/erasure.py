"""What a projection worker does for encrypted agents and erasures (snaptail.privacy).

- Each batch's encrypted payloads are decrypted before the projection sees them; an
  event of a forgotten agent comes with :data:`REDACTED_STATE` (an empty msgpack map:
  every field decodes to its default) and its topic, id and version as stored.
- Before each batch, erasure records the projection has not seen are applied: the
  worker evicts those agents' keys, then calls :meth:`Projection.forget` in a view
  transaction that also records the erasure as applied (exactly once, like events).
  The same transaction replaces the error message of the projection's dead letters
  of those agents (a projection's exception may quote the event it failed on).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from uuid import UUID

from snaptail.errors import AgentForgotten
from snaptail.infrastructure.recorder import Position, PositionedNotification
from snaptail.privacy.cipher import SEALED, PayloadCipher, require_keys
from snaptail.privacy.keys import Erasure, KeyStore
from snaptail.privacy.registry import evict_agents
from snaptail.projections.base import Projection
from snaptail.projections.lock import ProjectionLock
from snaptail.projections.view import DEAD_LETTERS_TABLE, ViewDatabase

REDACTED_STATE = b"\x80"  # msgpack {}: what a projection sees of a forgotten agent's event
ERASURES_TABLE = "snaptail_projection_erasures"
_ERASURES_DDL = (
    f"CREATE TABLE IF NOT EXISTS {ERASURES_TABLE} (projection TEXT NOT NULL,"
    " erasure_id TEXT NOT NULL, PRIMARY KEY (projection, erasure_id))"
)
CHECK_INTERVAL = 1.0  # seconds between two reads of the erasure records

Read = Callable[[Position, int], list[PositionedNotification]]


def opening_reader(read: Read, cipher: PayloadCipher | None) -> Read:
    """``read`` whose batches have their encrypted payloads decrypted (redacted for a
    forgotten agent). Without ``cipher``, an encrypted payload raises
    :class:`~snaptail.errors.KeysRequired`."""

    def opened(after: Position, limit: int) -> list[PositionedNotification]:
        batch = read(after, limit)
        for i, n in enumerate(batch):
            state = n.state
            if state and state[0] == SEALED:
                batch[i] = _opened(cipher, n)
        return batch

    return opened


def _opened(cipher: PayloadCipher | None, n: PositionedNotification) -> PositionedNotification:
    agent_id = n.originator_id if isinstance(n.originator_id, UUID) else UUID(str(n.originator_id))
    if cipher is None:
        require_keys(agent_id, n.state)
        return n
    try:
        state = cipher.open_event(agent_id, n.originator_version, n.state)
    except AgentForgotten:
        state = REDACTED_STATE
    return dataclasses.replace(n, state=state)


class ErasureFeed:
    """Applies new erasure records to one projection (see the module's docstring)."""

    def __init__(self, keys: KeyStore, name: str) -> None:
        self.keys, self.name = keys, name
        self._checked = 0.0

    @staticmethod
    def setup(view: ViewDatabase) -> None:
        if view.read_only:
            return
        with view.transaction() as cur:
            cur.execute(_ERASURES_DDL)

    def apply(
        self, view: ViewDatabase, projection: Projection, lock: ProjectionLock, force: bool = False
    ) -> int:
        """Apply the erasures the projection has not seen; returns how many."""
        now = time.monotonic()
        if not force and now - self._checked < CHECK_INTERVAL:
            return 0
        self._checked = now
        erasures = self.keys.erasures()
        if not erasures:
            return 0
        with view.reading() as cur:
            cur.execute(
                f"SELECT erasure_id FROM {ERASURES_TABLE} WHERE projection = ?", (self.name,)
            )
            seen = {row[0] for row in cur.fetchall()}
        applied = 0
        for erasure in erasures:
            if erasure.id in seen:
                continue
            self._apply_one(view, projection, lock, erasure)
            applied += 1
        if applied:
            view.scrub()
        return applied

    def _apply_one(
        self, view: ViewDatabase, projection: Projection, lock: ProjectionLock, erasure: Erasure
    ) -> None:
        # Keys cached by this process are dropped first, so no later batch decrypts them.
        evict_agents([UUID(a) for a in erasure.agent_ids])
        with view.transaction() as cur:
            lock.check(cur)
            projection.forget(cur, erasure)
            cur.executemany(
                f"UPDATE {DEAD_LETTERS_TABLE} SET error = ? WHERE projection = ? AND agent_id = ?",
                [
                    (f"(redacted: agent forgotten, erasure {erasure.id})", self.name, agent_id)
                    for agent_id in erasure.agent_ids
                ],
            )
            cur.execute(
                f"INSERT INTO {ERASURES_TABLE} (projection, erasure_id) VALUES (?, ?)",
                (self.name, erasure.id),
            )
