"""The manifest table in the hot database, and the SQL the archive runs on either backend.

``snaptail_archive_segments`` has one row per segment: the agent, its version range,
event count, the lowest and highest position of its events, codec version, SHA-256,
bytes, location and file name, and ``state``: ``written`` (the file is complete and
verified, the rows are still hot: readers ignore the row) or ``done`` (the rows left
the hot table in the transaction that set it). Readers only ever use ``done`` rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from snaptail.archive.codec import ArchivedRow
from snaptail.infrastructure.recorder import AgentRecorder, Position
from snaptail.infrastructure.sqlite import SQLiteAgentRecorder

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


def advisory_key(schema: str, name: str) -> int:
    """A signed 64-bit advisory lock key (as the projection locks compute theirs)."""
    digest = hashlib.blake2b(f"snaptail/{schema}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class ArchiveDB:
    """The archive's SQL on the recorder's own connections (``?`` placeholders)."""

    def __init__(self, recorder: AgentRecorder) -> None:
        self.recorder = recorder
        self.sqlite = isinstance(recorder, SQLiteAgentRecorder)
        events = recorder.events_table_name  # type: ignore[attr-defined]
        snapshots = recorder.snapshots_table_name  # type: ignore[attr-defined]
        if self.sqlite:
            self.schema = ""
            self.events, self.snapshots = events, snapshots
            self.manifest, self.tracking = MANIFEST_TABLE, TRACKING_TABLE
        else:
            self.schema = recorder.datastore.schema  # type: ignore[attr-defined]
            q = f'"{self.schema}".'
            self.events, self.snapshots = f"{q}{events}", f"{q}{snapshots}"
            self.manifest, self.tracking = f"{q}{MANIFEST_TABLE}", f"{q}{TRACKING_TABLE}"
        self._exists = False

    # -- connections ----------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, write: bool = False) -> Iterator[Cursor]:
        if self.sqlite:
            with self.recorder.datastore.transaction(commit=write) as c:  # type: ignore[attr-defined]
                raw = c.sqlite_cursor
                raw.row_factory = None
                yield Cursor(raw, "?")
        else:
            from psycopg.rows import tuple_row

            with (
                self.recorder.datastore.get_connection() as conn,  # type: ignore[attr-defined]
                conn.transaction(force_rollback=not write),
                conn.cursor(row_factory=tuple_row) as cur,
            ):
                yield Cursor(cur, "%s")

    def key(self, agent_id: UUID) -> Any:
        """The agent id as the events table stores it."""
        return agent_id.hex if self.sqlite else agent_id

    # -- the manifest table ---------------------------------------------------------

    def create(self) -> None:
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
            statements = self._guard_sql()
            if not self.sqlite:  # CREATE TRIGGER locks the table: only when missing
                cur.execute(
                    "SELECT 1 FROM pg_trigger WHERE tgname = ? AND tgrelid = ?::regclass",
                    (GUARD, self.events),
                )
                if cur.fetchone() is not None:
                    statements = statements[:-1]
            for statement in statements:
                cur.execute(statement)
        self._exists = True

    def _guard_sql(self) -> list[str]:
        """A trigger that refuses to insert an event at an archived version: a writer
        holding an agent loaded long ago would otherwise write versions that left the
        hot table without meeting their rows (no primary key conflict). The insert
        fails as a duplicate would (a ConcurrencyError for the store's caller)."""
        archived = (
            f"SELECT MAX(last_version) FROM {self.manifest} WHERE originator_id = {{id}}"
            f" AND state = '{DONE}'"
        )
        if self.sqlite:
            return [
                f"CREATE TRIGGER IF NOT EXISTS {GUARD} BEFORE INSERT ON {self.events} "
                f"WHEN NEW.originator_version <= ({archived.format(id='NEW.originator_id')}) "
                "BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: the version is archived');"
                " END"
            ]
        # PostgreSQL: one check per INSERT statement over its new rows (a transition
        # table), not a PL/pgSQL call per row.
        function = f'"{self.schema}".{GUARD}'
        archived_pg = (
            f"SELECT 1 FROM new_rows n JOIN {self.manifest} m ON m.originator_id ="
            " replace(n.originator_id::text, '-', '') AND m.state = 'done'"
            " AND n.originator_version <= m.last_version"
        )
        return [
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF EXISTS ({archived_pg}) THEN"
            " RAISE EXCEPTION 'an inserted event is at an archived version (agent and"
            " version in the archive manifest)' USING ERRCODE = 'unique_violation'; END IF;"
            " RETURN NULL; END $$",
            f"CREATE TRIGGER {GUARD} AFTER INSERT ON {self.events}"
            f" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        ]

    def exists(self) -> bool:
        """Whether the manifest table exists (remembered once true)."""
        if self._exists:
            return True
        with self.transaction() as cur:
            if self.sqlite:
                cur.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (MANIFEST_TABLE,)
                )
            else:
                cur.execute("SELECT to_regclass(?) IS NOT NULL", (self.manifest,))
            row = cur.fetchone()
        self._exists = bool(row and row[0])
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
            if self.sqlite:
                cur.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TRACKING_TABLE,)
                )
            else:
                cur.execute("SELECT to_regclass(?) IS NOT NULL", (self.tracking,))
            row = cur.fetchone()
            if not row or not row[0]:
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
        if self.sqlite:
            return None
        with self.transaction() as cur:
            cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            row = cur.fetchone()
        return Position(int(row[0]) - 1, 2**63 - 1)

    def first_after(self, agent_id: UUID, floor: Position) -> int | None:
        """The agent's lowest version whose position is after ``floor``."""
        if self.sqlite:
            sql = (
                f"SELECT MIN(originator_version) FROM {self.events} WHERE originator_id=?"
                " AND rowid>?"
            )
            params: tuple[Any, ...] = (self.key(agent_id), floor.notification_id)
        else:
            sql = (
                f"SELECT MIN(originator_version) FROM {self.events} WHERE originator_id=?"
                " AND (transaction_id, notification_id) > (?::text::xid8, ?::bigint)"
            )
            params = (agent_id, floor.transaction_id, floor.notification_id)
        with self.transaction() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        return None if not row or row[0] is None else int(row[0])

    def rows(self, agent_id: UUID, gt: int, lte: int) -> list[ArchivedRow]:
        """The agent's hot rows ``gt < version <= lte`` with their positions."""
        position = "rowid, 0" if self.sqlite else "notification_id, transaction_id::text::bigint"
        with self.transaction() as cur:
            cur.execute(
                f"SELECT originator_version, topic, state, {position} FROM {self.events}"
                " WHERE originator_id=? AND originator_version>? AND originator_version<=?"
                " ORDER BY originator_version",
                (self.key(agent_id), gt, lte),
            )
            return [(int(v), str(t), bytes(s), int(n), int(x)) for v, t, s, n, x in cur.fetchall()]

    def hot_bytes(self) -> int:
        """Bytes of the events table's payloads (topic + state) in the hot database."""
        with self.transaction() as cur:
            fn = "LENGTH" if self.sqlite else "octet_length"
            cur.execute(f"SELECT COALESCE(SUM({fn}(state) + {fn}(topic)), 0) FROM {self.events}")
            row = cur.fetchone()
        return int(row[0]) if row else 0


class Cursor:
    """A DB-API cursor whose statements use ``?`` placeholders on either backend."""

    def __init__(self, cursor: Any, placeholder: str) -> None:
        self._cursor = cursor
        self._placeholder = placeholder

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if self._placeholder != "?":
            sql = sql.replace("%", "%%").replace("?", self._placeholder)
        self._cursor.execute(sql, params)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


def _segment(row: Sequence[Any]) -> Segment:
    (agent, first, last, events, min_tx, min_nid, max_tx, max_nid, codec, checksum, size,
     location, file, state, _) = row  # fmt: skip
    return Segment(
        UUID(agent), int(first), int(last), int(events), Position(int(min_tx), int(min_nid)),
        Position(int(max_tx), int(max_nid)), int(codec), str(checksum), int(size),
        str(location), str(file), str(state),
    )  # fmt: skip
