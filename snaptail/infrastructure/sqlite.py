"""The SQLite recorder: ``eventsourcing.sqlite`` plus snapshots and agent queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    OperationalError,
    StoredEvent,
    Subscription,
)
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteDatastore,
)

from snaptail.errors import LockTimeout
from snaptail.infrastructure.recorder import (
    SNAPSHOTS_TABLE,
    AgentRecorder,
    LoadRows,
    SnapshotInfo,
    StoredSnapshot,
    snapshot_from_row,
    stored_events,
)
from snaptail.infrastructure.subscription import (
    DEFAULT_POLL_INTERVAL,
    SQLiteSubscription,
    commit_signal,
)


def _key(originator_id: UUID | str) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


class SQLiteAgentRecorder(SQLiteApplicationRecorder, AgentRecorder):
    """Events in ``stored_events`` (as ``eventsourcing``), snapshots in their own table.

    A save writes its events, its snapshot (if any) and the pruning of old snapshots
    in one transaction.
    """

    def __init__(
        self,
        datastore: SQLiteDatastore,
        events_table_name: str = "stored_events",
        snapshots_table_name: str = SNAPSHOTS_TABLE,
    ) -> None:
        self.snapshots_table_name = snapshots_table_name
        super().__init__(datastore, events_table_name)
        self._commit_signal = commit_signal(datastore.pool.db_name)
        ev, sn = self.events_table_name, self.snapshots_table_name
        self._insert_many = f"INSERT INTO {ev} VALUES (?,?,?,?)"
        self._insert_snapshot = f"INSERT INTO {sn} VALUES (?,?,?,?,?,?)"
        # Retention: the newest K snapshots, and the newest of each of the last two
        # fingerprints (so the previous code version keeps one of its own).
        self._prune = (
            f"DELETE FROM {sn} WHERE originator_id=? AND originator_version < ("
            f"SELECT originator_version FROM {sn} WHERE originator_id=? "
            "ORDER BY originator_version DESC LIMIT 1 OFFSET ?) "
            f"AND originator_version NOT IN (SELECT MAX(originator_version) FROM {sn} "
            "WHERE originator_id=? GROUP BY fingerprint ORDER BY 1 DESC LIMIT 2)"
        )
        self._select_snapshot = (
            f"SELECT originator_version, topic, fingerprint, checksum, state FROM {sn} "
            "WHERE originator_id=? AND originator_version<=? "
            "ORDER BY originator_version DESC LIMIT 1"
        )
        self._select_tail = (
            f"SELECT originator_version, topic, state FROM {ev} "
            "WHERE originator_id=? AND originator_version<=? AND originator_version > MIN(?, "
            f"(SELECT MAX(originator_version) FROM {ev} "
            "WHERE originator_id=? AND originator_version<=?) - ?) "
            "ORDER BY originator_version"
        )

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {self.snapshots_table_name} ("
            "originator_id TEXT, originator_version INTEGER, topic TEXT, "
            "fingerprint TEXT, checksum INTEGER, state BLOB, "
            "PRIMARY KEY (originator_id, originator_version)) WITHOUT ROWID"
        )
        return statements

    # -- writing --------------------------------------------------------------------

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        try:
            with self.datastore.transaction(commit=True) as c:
                ids = self._insert_events(c, stored_events, **kwargs)
                for snapshot in snapshots:
                    self._write_snapshot(c, snapshot, keep_snapshots)
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
            agent_ids = dict.fromkeys(_as_uuid(s.originator_id) for s in stored_events)
            timeout = self.datastore.pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT
            raise LockTimeout(list(agent_ids), timeout, str(exc)) from exc
        if stored_events:
            self._commit_signal.notify()  # wake subscribers in this process
        return ids

    def subscribe(
        self,
        gt: int | None = None,
        topics: Sequence[str] = (),
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Subscription[ApplicationRecorder]:
        """Notifications after ``gt``, then new ones as they are committed (see
        :class:`~snaptail.infrastructure.subscription.SQLiteSubscription`)."""
        return SQLiteSubscription(
            self, self.datastore.pool.db_name, gt, topics, poll_interval=poll_interval
        )

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        c.executemany(
            self._insert_many,
            [
                (_key(s.originator_id), s.originator_version, s.topic, s.state)
                for s in stored_events
            ],
        )
        # The write lock is held: the rows just inserted have the highest rowids,
        # one after another.
        c.execute(self.select_max_notification_id_statement)
        last = int(c.fetchone()[0])
        return list(range(last - len(stored_events) + 1, last + 1))

    def _write_snapshot(self, c: SQLiteCursor, snapshot: StoredSnapshot, keep: int | None) -> None:
        key = _key(snapshot.originator_id)
        c.execute(
            self._insert_snapshot,
            (
                key,
                snapshot.originator_version,
                snapshot.topic,
                snapshot.fingerprint,
                snapshot.checksum,
                snapshot.state,
            ),
        )
        if keep is not None:
            c.execute(self._prune, (key, key, max(keep, 1) - 1, key))

    def insert_snapshot(self, snapshot: StoredSnapshot, *, keep_snapshots: int | None) -> bool:
        try:
            with self.datastore.transaction(commit=True) as c:
                self._write_snapshot(c, snapshot, keep_snapshots)
        except IntegrityError:
            return False
        return True

    def delete_snapshots(
        self, originator_id: UUID, *, keep: int, versions: Sequence[int] = ()
    ) -> int:
        key = _key(originator_id)
        sn = self.snapshots_table_name
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"SELECT COUNT(*) FROM {sn} WHERE originator_id=?", (key,))
            before = int(c.fetchone()[0])
            for v in versions:
                c.execute(
                    f"DELETE FROM {sn} WHERE originator_id=? AND originator_version=?",
                    (key, v),
                )
            if keep == 0:
                c.execute(f"DELETE FROM {sn} WHERE originator_id=?", (key,))
            else:
                c.execute(self._prune, (key, key, keep - 1, key))
            c.execute(f"SELECT COUNT(*) FROM {sn} WHERE originator_id=?", (key,))
            return before - int(c.fetchone()[0])

    # -- reading --------------------------------------------------------------------

    def select_for_load(
        self,
        originator_id: UUID,
        *,
        lte: int | None = None,
        recent: int = 0,
        snapshot_lte: int | None = None,
    ) -> LoadRows:
        key = _key(originator_id)
        upper = lte if lte is not None else 2**62
        snap_upper = min(upper, snapshot_lte) if snapshot_lte is not None else upper
        with self.datastore.transaction(commit=False) as c:
            snapshot = None
            if snap_upper > 0:
                c.execute(self._select_snapshot, (key, snap_upper))
                row = c.fetchone()
                if row is not None:
                    snapshot = snapshot_from_row(originator_id, row)
            after = snapshot.originator_version if snapshot else 0
            c.execute(self._select_tail, (key, upper, after, key, upper, recent))
            events = stored_events(originator_id, c.fetchall())
        return LoadRows(snapshot=snapshot, events=events)

    def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None:
        if lte < 1:
            return None
        with self.datastore.transaction(commit=False) as c:
            c.execute(self._select_snapshot, (_key(originator_id), lte))
            row = c.fetchone()
        return None if row is None else snapshot_from_row(originator_id, row)

    def select_page(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lt: int | None = None,
        desc: bool = False,
        limit: int = 500,
        topics: Sequence[str] = (),
    ) -> Sequence[StoredEvent]:
        statement = (
            f"SELECT originator_version, topic, state FROM {self.events_table_name} "
            "WHERE originator_id=?"
        )
        params: list[Any] = [_key(originator_id)]
        if gt is not None:
            statement += " AND originator_version>?"
            params.append(gt)
        if lt is not None:
            statement += " AND originator_version<?"
            params.append(lt)
        if topics:
            statement += f" AND topic IN ({','.join('?' * len(topics))})"
            params.extend(topics)
        statement += f" ORDER BY originator_version {'DESC' if desc else 'ASC'} LIMIT ?"
        params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            return stored_events(originator_id, c.fetchall())

    def max_version(self, originator_id: UUID) -> int | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT MAX(originator_version) FROM {self.events_table_name} "
                "WHERE originator_id=?",
                (_key(originator_id),),
            )
            value = c.fetchone()[0]
        return None if value is None else int(value)

    def select_snapshot_infos(self, originator_id: UUID) -> Sequence[SnapshotInfo]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT originator_version, fingerprint, LENGTH(state) FROM "
                f"{self.snapshots_table_name} WHERE originator_id=? "
                "ORDER BY originator_version DESC",
                (_key(originator_id),),
            )
            return [SnapshotInfo(row[0], row[1], row[2]) for row in c.fetchall()]

    def originator_ids(self, *, after: UUID | None = None, limit: int = 1000) -> Sequence[UUID]:
        statement = f"SELECT DISTINCT originator_id FROM {self.events_table_name}"
        params: list[Any] = []
        if after is not None:
            statement += " WHERE originator_id>?"
            params.append(_key(after))
        statement += " ORDER BY originator_id LIMIT ?"
        params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            return [UUID(row[0]) for row in c.fetchall()]


def _as_uuid(originator_id: UUID | str) -> UUID:
    return originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
