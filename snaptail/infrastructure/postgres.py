"""The PostgreSQL recorder: ``eventsourcing.postgres`` plus snapshots and agent queries.

Events live in ``eventsourcing``'s own table (its notification ids, table lock and
LISTEN/NOTIFY subscriptions unchanged); snapshots live in ``snaptail_snapshots`` in
the same schema. :func:`open_postgres` turns a ``postgresql://`` URL (read by
:mod:`snaptail.infrastructure.urls`) into a recorder with a connection pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier

from snaptail.errors import DatabaseUnreachable
from snaptail.infrastructure.recorder import (
    SNAPSHOTS_TABLE,
    AgentRecorder,
    EventRow,
    LoadRows,
    SnapshotInfo,
    StoredSnapshot,
    snapshot_from_row,
    stored_events,
)
from snaptail.infrastructure.urls import PostgresOptions, describe_server, parse_postgres_url

# Any version is below this; stands in for "no upper bound" in queries.
NO_LIMIT = 2**62
# Key of the advisory lock that serialises table creation by concurrent processes.
CREATE_TABLES_LOCK = 0x736E6170  # "snap"


class PostgresAgentRecorder(PostgresApplicationRecorder, AgentRecorder):
    """Events in ``stored_events`` (as ``eventsourcing``), snapshots in their own table.

    A save writes its events, its snapshot (if any) and the pruning of old snapshots
    in one transaction. Saves without a snapshot take ``eventsourcing``'s own
    (pipelined) insert path.
    """

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        snapshots_table_name: str = SNAPSHOTS_TABLE,
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.check_identifier_length(snapshots_table_name)
        self.snapshots_table_name = snapshots_table_name
        schema = Identifier(datastore.schema)
        ev = SQL("{}.{}").format(schema, Identifier(events_table_name))
        sn = SQL("{}.{}").format(schema, Identifier(snapshots_table_name))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
                "topic text NOT NULL, fingerprint text NOT NULL, checksum bigint NOT NULL, "
                "state bytea NOT NULL, PRIMARY KEY (originator_id, originator_version))"
            ).format(sn)
        )
        self._sql_insert_snapshot = SQL(
            "INSERT INTO {} (originator_id, originator_version, topic, fingerprint, "
            "checksum, state) VALUES (%s, %s, %s, %s, %s, %s)"
        ).format(sn)
        # Retention: the newest K snapshots, and the newest of each of the last two
        # fingerprints (so the previous code version keeps one of its own).
        self._sql_prune = SQL(
            "DELETE FROM {sn} WHERE originator_id = %s AND originator_version < ("
            "SELECT originator_version FROM {sn} WHERE originator_id = %s "
            "ORDER BY originator_version DESC LIMIT 1 OFFSET %s) "
            "AND originator_version NOT IN (SELECT MAX(originator_version) FROM {sn} "
            "WHERE originator_id = %s GROUP BY fingerprint ORDER BY 1 DESC LIMIT 2)"
        ).format(sn=sn)
        self._sql_delete_all_snapshots = SQL("DELETE FROM {} WHERE originator_id = %s").format(sn)
        self._sql_delete_snapshot_versions = SQL(
            "DELETE FROM {} WHERE originator_id = %s AND originator_version = ANY(%s)"
        ).format(sn)
        self._sql_count_snapshots = SQL(
            "SELECT COUNT(*) AS n FROM {} WHERE originator_id = %s"
        ).format(sn)
        self._sql_select_snapshot = SQL(
            "SELECT originator_version, topic, fingerprint, checksum, state FROM {} "
            "WHERE originator_id = %s AND originator_version <= %s "
            "ORDER BY originator_version DESC LIMIT 1"
        ).format(sn)
        # LEAST ignores NULL: with no events at or below the bound the tail is empty.
        self._sql_select_tail = SQL(
            "SELECT originator_version, topic, state FROM {ev} "
            "WHERE originator_id = %s AND originator_version <= %s "
            "AND originator_version > LEAST(%s, (SELECT MAX(originator_version) FROM {ev} "
            "WHERE originator_id = %s AND originator_version <= %s) - %s) "
            "ORDER BY originator_version"
        ).format(ev=ev)
        self._sql_select_page = SQL(
            "SELECT originator_version, topic, state FROM {} WHERE originator_id = %s"
        ).format(ev)
        self._sql_max_version = SQL(
            "SELECT MAX(originator_version) AS v FROM {} WHERE originator_id = %s"
        ).format(ev)
        self._sql_snapshot_infos = SQL(
            "SELECT originator_version, fingerprint, octet_length(state) AS size FROM {} "
            "WHERE originator_id = %s ORDER BY originator_version DESC"
        ).format(sn)
        # A skip scan over the primary key: one index probe per distinct agent.
        self._sql_originator_ids = SQL(
            "WITH RECURSIVE ids(id) AS ("
            "(SELECT originator_id FROM {ev} WHERE originator_id {op} %s "
            "ORDER BY originator_id LIMIT 1) "
            "UNION ALL "
            "SELECT (SELECT originator_id FROM {ev} WHERE originator_id > ids.id "
            "ORDER BY originator_id LIMIT 1) "
            "FROM ids WHERE ids.id IS NOT NULL) "
            "SELECT id FROM ids WHERE id IS NOT NULL LIMIT %s"
        )
        self._events_table = ev

    # -- tables ---------------------------------------------------------------------

    def create_table(self) -> None:
        """Create the schema (if missing), tables, types and functions, one process
        at a time.

        Concurrent ``CREATE ... IF NOT EXISTS`` can still collide in PostgreSQL's
        catalogues, so creation holds an advisory lock on a connection of its own.
        """
        kwargs = dict(_connect_kwargs(self.datastore))
        kwargs.pop("row_factory", None)
        schema = self.datastore.schema
        with psycopg.connect(autocommit=True, **kwargs) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_TABLES_LOCK,))
            try:
                # Checked first: CREATE SCHEMA needs a privilege even if it exists.
                found = conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
                ).fetchone()
                if found is None:
                    conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
                super().create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))

    def close(self) -> None:
        """Close the connection pool."""
        self.datastore.close()

    # -- writing --------------------------------------------------------------------

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        ids: Sequence[int] | None
        if not snapshots:
            ids = super().insert_events(stored_events, **kwargs)
        else:
            ids = self._insert_events_and_snapshots(stored_events, snapshots, keep_snapshots)
        return ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_events_and_snapshots(
        self,
        stored_events: Sequence[StoredEvent],
        snapshots: Sequence[StoredSnapshot],
        keep_snapshots: int | None,
    ) -> Sequence[int] | None:
        # Pipelined, as eventsourcing's own insert: every statement goes out in one
        # round trip; an error is kept until the pipeline has closed (so psycopg
        # does not warn), then raised, and the transaction is rolled back.
        ids: Sequence[int] | None = []
        error: Exception | None = None
        with self.datastore.get_connection() as conn:
            with (
                conn.pipeline() as pipeline,
                conn.transaction(),
                conn.cursor() as events_curs,
                conn.cursor() as snapshots_curs,
            ):
                try:
                    if stored_events:
                        # Takes the table lock and notifies listeners.
                        self._insert_stored_events(events_curs, stored_events)
                    for snapshot in snapshots:
                        self._write_snapshot(snapshots_curs, snapshot, keep_snapshots)
                    pipeline.sync()
                    if stored_events:
                        ids = self._fetch_ids_after_insert_events(events_curs, stored_events)
                except Exception as exc:
                    error = exc
            if error is not None:
                raise error
        return ids

    def _write_snapshot(
        self, curs: Cursor[DictRow], snapshot: StoredSnapshot, keep: int | None
    ) -> None:
        for statement, params in self.snapshot_writes(snapshot, keep):
            curs.execute(statement, params, prepare=True)

    def snapshot_writes(
        self, snapshot: StoredSnapshot, keep: int | None
    ) -> list[tuple[Composed, tuple[Any, ...]]]:
        """The statements that store a snapshot and prune older ones of its agent
        down to ``keep`` (run by this recorder and by the async one)."""
        key = snapshot.originator_id
        writes: list[tuple[Composed, tuple[Any, ...]]] = [
            (
                self._sql_insert_snapshot,
                (
                    key,
                    snapshot.originator_version,
                    snapshot.topic,
                    snapshot.fingerprint,
                    snapshot.checksum,
                    snapshot.state,
                ),
            )
        ]
        if keep is not None:
            writes.append((self._sql_prune, (key, key, max(keep, 1) - 1, key)))
        return writes

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_snapshot(self, snapshot: StoredSnapshot, *, keep_snapshots: int | None) -> bool:
        try:
            with self.datastore.transaction(commit=True) as curs:
                self._write_snapshot(curs, snapshot, keep_snapshots)
        except IntegrityError:
            return False
        return True

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def delete_snapshots(
        self, originator_id: UUID, *, keep: int, versions: Sequence[int] = ()
    ) -> int:
        with self.datastore.transaction(commit=True) as curs:
            before = _count(curs.execute(self._sql_count_snapshots, (originator_id,)))
            if versions:
                curs.execute(self._sql_delete_snapshot_versions, (originator_id, list(versions)))
            if keep == 0:
                curs.execute(self._sql_delete_all_snapshots, (originator_id,))
            else:
                key = originator_id
                curs.execute(self._sql_prune, (key, key, keep - 1, key))
            return before - _count(curs.execute(self._sql_count_snapshots, (originator_id,)))

    # -- reading --------------------------------------------------------------------

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_for_load(
        self,
        originator_id: UUID,
        *,
        lte: int | None = None,
        recent: int = 0,
        snapshot_lte: int | None = None,
    ) -> LoadRows:
        upper, snap_upper = load_bounds(lte, snapshot_lte)
        # Read committed is enough: events are only ever appended, and the tail
        # query computes its bounds within one statement. Binary results: bytea
        # arrives as bytes, not hex text (half the transfer and decoding). The
        # transaction commits: a rollback would drop the prepared statements.
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            snapshot = None
            if snap_upper > 0:
                curs.execute(self._sql_select_snapshot, (originator_id, snap_upper), prepare=True)
                row = curs.fetchone()
                if row is not None:
                    snapshot = snapshot_from_row(originator_id, row)
            curs.execute(
                self._sql_select_tail,
                tail_params(originator_id, upper, snapshot, recent),
                prepare=True,
            )
            events: list[EventRow] = curs.fetchall()  # (version, topic, state) tuples
        return LoadRows(snapshot=snapshot, events=events)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None:
        if lte < 1:
            return None
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(self._sql_select_snapshot, (originator_id, lte), prepare=True)
            row = curs.fetchone()
        return None if row is None else snapshot_from_row(originator_id, row)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
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
        statement, params = self.page_query(originator_id, gt, lt, desc, limit, topics)
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(statement, params, prepare=True)
            return stored_events(originator_id, curs.fetchall())

    def page_query(
        self,
        originator_id: UUID,
        gt: int | None,
        lt: int | None,
        desc: bool,
        limit: int,
        topics: Sequence[str],
    ) -> tuple[Composed, list[Any]]:
        """The statement and parameters of :meth:`select_page`."""
        statement: Composed = self._sql_select_page
        params: list[Any] = [originator_id]
        if gt is not None:
            statement += SQL(" AND originator_version > %s")
            params.append(gt)
        if lt is not None:
            statement += SQL(" AND originator_version < %s")
            params.append(lt)
        if topics:
            statement += SQL(" AND topic = ANY(%s)")
            params.append(list(topics))
        statement += SQL(" ORDER BY originator_version")
        if desc:
            statement += SQL(" DESC")
        statement += SQL(" LIMIT %s")
        params.append(limit)
        return statement, params

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def max_version(self, originator_id: UUID) -> int | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            row = curs.execute(self._sql_max_version, (originator_id,), prepare=True).fetchone()
        value = None if row is None else row["v"]
        return None if value is None else int(value)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_snapshot_infos(self, originator_id: UUID) -> Sequence[SnapshotInfo]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            rows = curs.execute(self._sql_snapshot_infos, (originator_id,)).fetchall()
        return [
            SnapshotInfo(row["originator_version"], row["fingerprint"], row["size"]) for row in rows
        ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def originator_ids(self, *, after: UUID | None = None, limit: int = 1000) -> Sequence[UUID]:
        # ">=" the nil UUID includes every id; ">" a given id starts after it.
        op = SQL(">") if after is not None else SQL(">=")
        statement = self._sql_originator_ids.format(ev=self._events_table, op=op)
        start = after if after is not None else UUID(int=0)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            rows = curs.execute(statement, (start, limit)).fetchall()
        return [_as_uuid(row["id"]) for row in rows]


def load_bounds(lte: int | None, snapshot_lte: int | None) -> tuple[int, int]:
    """The upper version bounds of a load's events and of its snapshot."""
    upper = lte if lte is not None else NO_LIMIT
    return upper, min(upper, snapshot_lte) if snapshot_lte is not None else upper


def tail_params(
    originator_id: UUID, upper: int, snapshot: StoredSnapshot | None, recent: int
) -> tuple[Any, ...]:
    """The parameters of the load's tail query (events after the snapshot, and
    enough before it to give ``recent`` events)."""
    after = snapshot.originator_version if snapshot else 0
    return (originator_id, upper, after, originator_id, upper, recent)


def _count(curs: Cursor[DictRow]) -> int:
    row = curs.fetchone()
    assert row is not None
    return int(row["n"])


def _connect_kwargs(datastore: PostgresDatastore) -> dict[str, Any]:
    """The pool's keyword arguments for ``psycopg.connect`` (the live dict)."""
    kwargs = datastore.pool.kwargs
    assert isinstance(kwargs, dict)
    return kwargs


def _as_uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


# -- opening from a URL -------------------------------------------------------------


def open_postgres(url: str, **options: object) -> PostgresAgentRecorder:
    """Open a pooled recorder for ``url``, creating its schema's tables if missing.

    The schema itself is created when it does not exist (and the user may).
    """
    settings = parse_postgres_url(url, **options)
    conninfo = settings.conninfo
    _probe(settings)
    datastore = PostgresDatastore(
        dbname=conninfo["dbname"],
        host=conninfo.get("host", ""),
        port=conninfo.get("port", ""),
        user=conninfo.get("user", ""),
        password=conninfo.get("password", ""),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        connect_timeout=settings.pool_timeout,  # eventsourcing: the pool's wait
        lock_timeout=settings.lock_timeout,
        schema=settings.schema,
    )
    # The pool connects with exactly the URL's parameters: what it leaves out, libpq
    # takes from PGUSER, PGHOST... and its defaults (eventsourcing passes all five).
    kwargs = _connect_kwargs(datastore)
    for name in ("host", "port", "user", "password"):
        kwargs.pop(name, None)
    kwargs.update(conninfo)
    kwargs["connect_timeout"] = settings.connect_timeout
    try:
        recorder = PostgresAgentRecorder(datastore)
        recorder.create_table()
    except BaseException:
        datastore.close()
        raise
    return recorder


def _probe(settings: PostgresOptions) -> None:
    """Connect once, within ``connect_timeout``: a server that cannot be reached is a
    :class:`~snaptail.errors.DatabaseUnreachable` naming it and the cause, not a pool
    timing out ``pool_timeout`` seconds later."""
    try:
        psycopg.connect(**settings.connect_args()).close()
    except psycopg.OperationalError as exc:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise DatabaseUnreachable(describe_server(settings.conninfo), cause) from None


def settings_of(recorder: PostgresAgentRecorder) -> Mapping[str, object]:
    """The pool settings a recorder runs with (for tests and diagnostics)."""
    pool = recorder.datastore.pool
    return {
        "schema": recorder.datastore.schema,
        "pool_size": pool.min_size,
        "max_overflow": pool.max_size - pool.min_size,
        "pool_timeout": pool.timeout,
        "connect_timeout": _connect_kwargs(recorder.datastore).get("connect_timeout"),
        "lock_timeout": recorder.datastore.lock_timeout,
    }


__all__ = ["PostgresAgentRecorder", "open_postgres", "settings_of"]
