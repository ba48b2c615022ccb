"""The manifest table in the hot database, and the SQL the archive runs on either backend.

``snaptail_archive_segments`` has one row per segment: the agent, its version range,
event count, the lowest and highest position of its events, codec version, SHA-256,
bytes, location and file name, and ``state``: ``written`` (the file is complete and
verified, the rows are still hot: readers ignore the row) or ``done`` (the rows left
the hot table in the transaction that set it). Readers only ever use ``done`` rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from snaptail.archive.codec import ArchivedRow
from snaptail.infrastructure.recorder import AgentRecorder, DirectCursor, Position

MANIFEST_TABLE = "snaptail_archive_segments"
# The projection positions table (snaptail.projections.view.TRACKING_TABLE: the
# projections package sits above this one; tests/archive/test_archive.py checks they agree).
TRACKING_TABLE = "snaptail_projection_tracking"
WRITTEN, DONE = "written", "done"
GUARD = "snaptail_archived_versions_guard"


@dataclass(frozen=True)
class Segment:
    """One manifest row."""

    agent_id: UUID
    first: int
    last: int
    events: int
    min_position: Position
    max_position: Position
    codec: int
    checksum: str
    bytes: int
    location: str
    file: str
    state: str

    def describe(self) -> str:
        return f"agent {self.agent_id} versions {self.first}-{self.last} ({self.file})"


_COLUMNS = (
    "originator_id, first_version, last_version, events, min_tx, min_nid, max_tx, max_nid,"
    " codec, checksum, bytes, location, file, state, created_at"
)


class ArchiveDB:
    """The archive's SQL on the recorder's own connections (``?`` placeholders), through
    the recorder's :class:`~snaptail.infrastructure.recorder.DirectSQL` (what the two
    backends say differently)."""

    def __init__(self, recorder: AgentRecorder) -> None:
        self.sql = sql = recorder.direct_sql()
        self.events, self.snapshots = sql.events, sql.snapshots
        self.manifest, self.tracking = sql.table(MANIFEST_TABLE), sql.table(TRACKING_TABLE)
        self._exists = False

    # -- connections ----------------------------------------------------------------

    def transaction(self, write: bool = False) -> AbstractContextManager[DirectCursor]:
        return self.sql.transaction(write)

    def key(self, agent_id: UUID) -> Any:
        """The agent id as the events table stores it."""
        return self.sql.key(agent_id)

    # -- the manifest table ---------------------------------------------------------

    def create(self) -> None:
        """The manifest table, and a trigger that refuses to insert an event at an
        archived version: a writer holding an agent loaded long ago would otherwise
        write versions that left the hot table without meeting their rows (no primary
        key conflict). The insert fails as a duplicate would (a ConcurrencyError for
        the store's caller)."""
        with self.transaction(write=True) as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.manifest} (originator_id TEXT NOT NULL,"
                " first_version BIGINT NOT NULL, last_version BIGINT NOT NULL,"
                " events BIGINT NOT NULL, min_tx BIGINT NOT NULL, min_nid BIGINT NOT NULL,"
                " max_tx BIGINT NOT NULL, max_nid BIGINT NOT NULL, codec INTEGER NOT NULL,"
                " checksum TEXT NOT NULL, bytes BIGINT NOT NULL, location TEXT NOT NULL,"
                " file TEXT NOT NULL, state TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
                " PRIMARY KEY (originator_id, first_version))"
            )
            self.sql.guard_versions(cur, GUARD, self.manifest, "last_version", f"state = '{DONE}'")
        self._exists = True

    def exists(self) -> bool:
        """Whether the manifest table exists (remembered once true)."""
        if self._exists:
            return True
        with self.transaction() as cur:
            self._exists = self.sql.table_exists(cur, MANIFEST_TABLE)
        return self._exists

    def archived_upto(self, agent_id: UUID) -> int:
        """The newest archived version of the agent (0: none)."""
        if not self.exists():
            return 0
        with self.transaction() as cur:
            cur.execute(
                f"SELECT MAX(last_version) FROM {self.manifest} WHERE originator_id=? AND state=?",
                (agent_id.hex, DONE),
            )
            row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def segments(
        self, agent_id: UUID | None = None, state: str | None = DONE
    ) -> list[Segment]:
        """Manifest rows (of one agent, or all), in agent and version order."""
        if not self.exists():
            return []
        where, params = [], []
        if agent_id is not None:
            where.append("originator_id=?")
            params.append(agent_id.hex)
        if state is not None:
            where.append("state=?")
            params.append(state)
        sql = f"SELECT {_COLUMNS} FROM {self.manifest}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY originator_id, first_version"
        with self.transaction() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        return [_segment(row) for row in rows]

    def insert_segment(self, segment: Segment) -> None:
        with self.transaction(write=True) as cur:
            cur.execute(
                f"INSERT INTO {self.manifest} ({_COLUMNS}) VALUES"
                " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    segment.agent_id.hex, segment.first, segment.last, segment.events,
                    *segment.min_position, *segment.max_position, segment.codec,
                    segment.checksum, segment.bytes, segment.location, segment.file,
                    segment.state, time.time(),
                ),
            )  # fmt: skip

    def delete_segment_row(self, segment: Segment) -> None:
        with self.transaction(write=True) as cur:
            cur.execute(
                f"DELETE FROM {self.manifest} WHERE originator_id=? AND first_version=?"
                " AND state=?",
                (segment.agent_id.hex, segment.first, WRITTEN),
            )

    def finish(self, segment: Segment) -> int:
        """Delete the segment's hot rows and mark it done, in one transaction.
        Returns how many rows were deleted; raises (rolling back) unless that is the
        segment's event count."""
        with self.transaction(write=True) as cur:
            cur.execute(
                f"DELETE FROM {self.events} WHERE originator_id=? AND originator_version>=?"
                " AND originator_version<=?",
                (self.key(segment.agent_id), segment.first, segment.last),
            )
            deleted = cur.rowcount
            if deleted != segment.events:
                raise RuntimeError(
                    f"{segment.describe()}: {deleted} hot rows found to delete, expected"
                    f" {segment.events}; nothing deleted"
                )
            cur.execute(
                f"UPDATE {self.manifest} SET state=? WHERE originator_id=? AND first_version=?",
                (DONE, segment.agent_id.hex, segment.first),
            )
        return deleted

    def hot_count(self, agent_id: UUID, first: int, last: int) -> int:
        with self.transaction() as cur:
            cur.execute(
                f"SELECT COUNT(*) FROM {self.events} WHERE originator_id=?"
                " AND originator_version>=? AND originator_version<=?",
                (self.key(agent_id), first, last),
            )
            row = cur.fetchone()
        return int(row[0]) if row else 0

    # -- what the plan reads --------------------------------------------------------

    def oldest_snapshot(self, agent_id: UUID) -> int | None:
        with self.transaction() as cur:
            cur.execute(
                f"SELECT MIN(originator_version) FROM {self.snapshots} WHERE originator_id=?",
                (self.key(agent_id),),
            )
            row = cur.fetchone()
        return None if not row or row[0] is None else int(row[0])

    def projection_floor(self) -> Position | None:
        """The lowest position of any projection (or partition) tracked in this
        database; None if none is."""
        with self.transaction() as cur:
            if not self.sql.table_exists(cur, TRACKING_TABLE):
                return None
            cur.execute(f"SELECT transaction_id, notification_id FROM {self.tracking}")
            positions = [Position(int(r[0]), int(r[1])) for r in cur.fetchall()]
        return min(positions) if positions else None

    def horizon(self) -> Position | None:
        """PostgreSQL: the last position every reader can see now (rows of
        transactions older than the oldest one still running; a projection reader
        returns nothing beyond it). Rows past it must stay hot, or a projection from
        zero would meet them in the archive before older rows become visible in the
        hot table. SQLite: None (every committed row is visible)."""
        return self.sql.horizon()

    def first_after(self, agent_id: UUID, floor: Position) -> int | None:
        """The agent's lowest version whose position is after ``floor``."""
        after, params = self.sql.after(floor)
        with self.transaction() as cur:
            cur.execute(
                f"SELECT MIN(originator_version) FROM {self.events} WHERE originator_id=?"
                f" AND {after}",
                (self.key(agent_id), *params),
            )
            row = cur.fetchone()
        return None if not row or row[0] is None else int(row[0])

    def rows(self, agent_id: UUID, gt: int, lte: int) -> list[ArchivedRow]:
        """The agent's hot rows ``gt < version <= lte`` with their positions."""
        with self.transaction() as cur:
            cur.execute(
                f"SELECT originator_version, topic, state, {self.sql.position_columns}"
                f" FROM {self.events}"
                " WHERE originator_id=? AND originator_version>? AND originator_version<=?"
                " ORDER BY originator_version",
                (self.key(agent_id), gt, lte),
            )
            return [(int(v), str(t), bytes(s), int(n), int(x)) for v, t, s, n, x in cur.fetchall()]

    def hot_bytes(self) -> int:
        """Bytes of the events table's payloads (topic + state) in the hot database."""
        with self.transaction() as cur:
            fn = self.sql.length_function
            cur.execute(f"SELECT COALESCE(SUM({fn}(state) + {fn}(topic)), 0) FROM {self.events}")
            row = cur.fetchone()
        return int(row[0]) if row else 0


def _segment(row: Sequence[Any]) -> Segment:
    (agent, first, last, events, min_tx, min_nid, max_tx, max_nid, codec, checksum, size,
     location, file, state, _) = row  # fmt: skip
    return Segment(
        UUID(agent), int(first), int(last), int(events), Position(int(min_tx), int(min_nid)),
        Position(int(max_tx), int(max_nid)), int(codec), str(checksum), int(size),
        str(location), str(file), str(state),
    )  # fmt: skip
