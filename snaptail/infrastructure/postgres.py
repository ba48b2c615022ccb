"""The PostgreSQL recorder: ``eventsourcing.postgres`` plus snapshots and agent queries.

Events live in ``eventsourcing``'s table layout plus one column, ``transaction_id``
(the writing transaction's ``pg_current_xact_id()``); snapshots live in
``snaptail_snapshots`` in the same schema. Saves take no table lock: writers of
different agents run concurrently, and two writers of one agent at one version
still collide on the primary key (one gets ``IntegrityError``).

Notification ids come from a sequence, so they no longer follow commit order. Gap-free
readers (:meth:`PostgresAgentRecorder.select_after`, :meth:`~PostgresAgentRecorder.subscribe`,
projection workers) read in (transaction id, notification id) order and only rows of
transactions older than the oldest one still running (``pg_snapshot_xmin``): once a
position is passed, no transaction can still commit rows behind it.

:func:`open_postgres` turns a ``postgresql://`` URL into a recorder with a connection
pool (URLs are read by :mod:`snaptail.infrastructure.urls`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Notification,
    StoredEvent,
    Subscription,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier

from snaptail.errors import DatabaseUnreachable, SchemaOutdated
from snaptail.infrastructure import sql
from snaptail.infrastructure.pg_connection import with_deadline
from snaptail.infrastructure.postgres_pool import ExplainingDatastore
from snaptail.infrastructure.recorder import (
    SAVES_TABLE,
    SNAPSHOTS_TABLE,
    START,
    AgentRecorder,
    DirectCursor,
    DirectSQL,
    EventRow,
    LoadRows,
    Partition,
    Position,
    PositionedNotification,
    SnapshotInfo,
    StoredSnapshot,
    advisory_key,
    load_bounds,
    snapshot_from_row,
    stored_events,
)
from snaptail.infrastructure.subscription import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_POLL_INTERVAL,
    CommitSignal,
    EventsWaiter,
    PagedSubscription,
)
from snaptail.infrastructure.urls import PostgresOptions, describe_server, parse_postgres_url

logger = logging.getLogger("snaptail.postgres")

# Key of the advisory lock that serialises table creation by concurrent processes.
CREATE_TABLES_LOCK = 0x736E6170  # "snap"
# Key of the advisory lock that serialises index builds (CONCURRENTLY). Not the one
# above: such a build waits for every older transaction, and one blocked on the lock
# its builder holds would never end.
INDEX_BUILD_LOCK = 0x736E6171
# Saves of up to this many events insert VALUES rows; larger ones, arrays.
SMALL_INSERT = 8
# Saves committed within this many seconds share one NOTIFY (see _Notifier).
NOTIFY_INTERVAL = 0.01
TRANSACTION_COLUMN = "transaction_id"


def partition_sql(column: str = "originator_id") -> str:
    """SQL for :func:`~snaptail.infrastructure.recorder.partition_key` of a uuid column."""
    return (
        f"(('x' || substr({column}::text, 3, 6))::bit(24)::int "
        f"# ('x' || right({column}::text, 6))::bit(24)::int)"
    )


def still_current(known: Mapping[UUID, int], newest: Iterable[Sequence[Any]]) -> set[UUID]:
    """The agents of ``known`` (agent id -> the version held) whose newest stored
    version, from ``newest`` rows of (agent id, version), is the one held (an agent
    with no row has none: 0)."""
    stored = {row[0]: row[1] for row in newest}
    return {
        agent_id for agent_id, version in known.items() if (stored.get(agent_id) or 0) == version
    }


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
        # Called inside each save's transaction, after its rows are written and
        # before it commits (tests use it to hold transactions open).
        self.in_transaction_hook: Callable[[], None] | None = None
        # The pool's client-side deadline on replies (urls.PostgresOptions.read_timeout).
        self.read_timeout = 0.0
        schema = Identifier(datastore.schema)
        ev = SQL("{}.{}").format(schema, Identifier(events_table_name))
        sn = SQL("{}.{}").format(schema, Identifier(snapshots_table_name))
        # eventsourcing's events table, plus the writing transaction's id.
        index = self.create_table_statement_index
        create_events = self.sql_create_statements[index].as_string()
        assert "notification_id bigserial, " in create_events, create_events
        self.sql_create_statements[index] = Composed(
            [
                SQL(  # type: ignore[misc]  # not a literal, but built from one
                    create_events.replace(
                        "notification_id bigserial, ",
                        "notification_id bigserial, "
                        f"{TRANSACTION_COLUMN} xid8 NOT NULL DEFAULT pg_current_xact_id(), ",
                    )
                )
            ]
        )
        self.sql_create_statements.append(self.transaction_index_statement())
        # The alias matters: unaliased, the cast output would be named transaction_id
        # and ORDER BY would sort by it instead of following the index.
        self._sql_select_after = (
            f"SELECT notification_id, {TRANSACTION_COLUMN}::text::bigint AS txid, originator_id, "
            "originator_version, topic, state FROM {ev} "
            f"WHERE ({TRANSACTION_COLUMN}, notification_id) > (%s::text::xid8, %s::bigint) "
            f"AND {TRANSACTION_COLUMN} < pg_snapshot_xmin(pg_current_snapshot())"
        )
        self._notify_statement = SQL("NOTIFY {}").format(Identifier(self.channel_name))
        self._notifier: _Notifier | None = None
        self._sql_insert_events = (
            SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(%b::{}[], %b::bigint[], %b::text[], %b::bytea[]) "
                "RETURNING notification_id"
            )
            .format(ev, Identifier(datastore.originator_id_type))
            .as_bytes(None)
        )
        row = SQL("(%b::{}, %b::bigint, %b::text, %b::bytea)").format(
            Identifier(datastore.originator_id_type)
        )
        self._sql_insert_values = [
            SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) VALUES {} "
                "RETURNING notification_id"
            )
            .format(ev, SQL(", ").join([row] * n))
            .as_bytes(None)
            for n in range(1, SMALL_INSERT + 1)
        ]
        self._select_after_queries: dict[str, bytes] = {}
        self._sql_index_order = (
            "SELECT set_config('enable_bitmapscan', 'off', true), "
            "set_config('enable_sort', 'off', true)"
        )
        self._sql_position_of = SQL(
            f"SELECT {TRANSACTION_COLUMN}::text::bigint FROM {{}} "
            "WHERE notification_id <= %s ORDER BY notification_id DESC LIMIT 1"
        ).format(ev)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
                "topic text NOT NULL, fingerprint text NOT NULL, checksum bigint NOT NULL, "
                "state bytea NOT NULL, PRIMARY KEY (originator_id, originator_version))"
            ).format(sn)
        )
        saves = SQL("{}.{}").format(schema, Identifier(SAVES_TABLE))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (save_id uuid PRIMARY KEY, "
                "originator_id uuid NOT NULL, originator_version bigint NOT NULL)"
            ).format(saves)
        )
        # A save's id goes in with its events: one statement (a data-modifying WITH).
        self._sql_save_prefix = (
            SQL("WITH saved AS (INSERT INTO {} VALUES (%b::uuid, %b::uuid, %b::bigint)) ")
            .format(saves)
            .as_bytes(None)
        )
        self.sql_save_committed = SQL("SELECT 1 AS found FROM {} WHERE save_id = %s").format(saves)
        # Time-ordered ids only (the version digit of the text form is 7): see prune_saves.
        self.sql_prune_saves = SQL(
            "DELETE FROM {0} WHERE save_id IN (SELECT save_id FROM {0} WHERE save_id < %s"
            " AND substr(save_id::text, 15, 1) = '7' LIMIT %s)"
        ).format(saves)
        self._saves_table = f"{datastore.schema}.{SAVES_TABLE}"
        self._sql_insert_snapshot = SQL(
            "INSERT INTO {} (originator_id, originator_version, topic, fingerprint, "
            "checksum, state) VALUES (%s, %s, %s, %s, %s, %s)"
        ).format(sn)
        # The statements SQLite says alike (snaptail.infrastructure.sql).
        self._sql_prune = _sql(sql.prune_snapshots(sql.POSTGRES)).format(sn=sn)
        self._sql_delete_all_snapshots = SQL("DELETE FROM {} WHERE originator_id = %s").format(sn)
        self._sql_delete_snapshot_versions = SQL(
            "DELETE FROM {} WHERE originator_id = %s AND originator_version = ANY(%s)"
        ).format(sn)
        self._sql_count_snapshots = SQL(
            "SELECT COUNT(*) AS n FROM {} WHERE originator_id = %s"
        ).format(sn)
        self.sql_select_snapshot = _sql(sql.select_snapshot(sql.POSTGRES)).format(sn=sn)
        self.sql_select_tail = _sql(sql.select_tail(sql.POSTGRES)).format(ev=ev)
        # The newest version of each of several agents in one round trip: how a
        # get_many learns which of the agents it holds are still current. One MAX per
        # id, each an index probe from the end; a GROUP BY over "= ANY" would read every
        # row of every agent (2.5 ms against 0.07 for a 10,000-event agent, EXPLAIN
        # ANALYZE).
        self.sql_max_versions = SQL(
            "SELECT i.id, (SELECT MAX(originator_version) FROM {} WHERE originator_id = i.id)"
            " FROM unnest(%s::{}[]) AS i(id)"
        ).format(ev, Identifier(datastore.originator_id_type))
        self.sql_max_version = SQL(
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
        self._page_queries: dict[tuple[bool, bool, bool, bool], Composed] = {}

    # -- tables ---------------------------------------------------------------------

    def transaction_index_statement(self, *, concurrently: bool = False) -> Composed:
        """The index gap-free readers scan: (transaction id, notification id)."""
        return SQL(
            "CREATE INDEX {how} IF NOT EXISTS {index} ON {schema}.{table} "
            "({column}, notification_id)"
        ).format(
            how=SQL("CONCURRENTLY") if concurrently else SQL(""),
            index=Identifier(self.transaction_index_name),
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            column=Identifier(TRANSACTION_COLUMN),
        )

    @property
    def transaction_index_name(self) -> str:
        return f"{self.events_table_name}_transaction_idx"

    def has_transaction_column(self, conn: psycopg.Connection[Any]) -> bool | None:
        """True/False: whether the events table has ``transaction_id``; None: no table."""
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            (self.datastore.schema, self.events_table_name),
        ).fetchall()
        if not rows:
            return None
        return any(row[0] == TRANSACTION_COLUMN for row in rows)

    def create_table(self) -> None:
        """Create the schema (if missing), tables, types and functions, one process
        at a time.

        Concurrent ``CREATE ... IF NOT EXISTS`` can still collide in PostgreSQL's
        catalogues, so creation holds an advisory lock on a connection of its own.
        When everything exists (its last object, the transaction index, is created
        in the same transaction as the tables) nothing is locked or run: a
        ``CREATE INDEX IF NOT EXISTS`` locks the table even when the index exists,
        and would deadlock with a partition index being built ``CONCURRENTLY``.
        """
        kwargs = plain_connect_kwargs(self.datastore)
        schema = self.datastore.schema
        with psycopg.connect(autocommit=True, **kwargs) as conn:
            if self._index_exists(conn, self.transaction_index_name) and conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (self._saves_table,)
            ).fetchone() == (True,):
                self.datastore.register_type_adapters()
                return
            conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_TABLES_LOCK,))
            try:
                # Checked first: CREATE SCHEMA needs a privilege even if it exists.
                found = conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
                ).fetchone()
                if found is None:
                    conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
                if self.has_transaction_column(conn) is False:
                    raise SchemaOutdated(schema, self.events_table_name)
                super().create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))

    def upgrade(self) -> list[str]:
        """Bring an events table created by an older snaptail (saves serialised by a
        table lock, no ``transaction_id``) to this version; returns the steps taken.

        Safe to repeat and to interrupt. Existing rows get transaction id 0: they were
        committed in notification id order (the table lock saw to that), so positions
        (0, n) keep their meaning, including projection positions stored as n. Adding
        the column is a catalogue change (no rewrite); the index is built
        ``CONCURRENTLY``, so writers are held only for the ``ALTER TABLE``. Stop
        older writers and workers first: they assume the table lock.
        """
        steps: list[str] = []
        kwargs = plain_connect_kwargs(self.datastore)
        table = SQL("{}.{}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        column = Identifier(TRANSACTION_COLUMN)
        with psycopg.connect(autocommit=True, **kwargs) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (CREATE_TABLES_LOCK,))
            try:
                if self.has_transaction_column(conn) is None:
                    return steps  # no events table: create_table makes a new one
                if not self.has_transaction_column(conn):
                    with conn.transaction():
                        conn.execute(
                            SQL("ALTER TABLE {} ADD COLUMN {} xid8 NOT NULL DEFAULT '0'").format(
                                table, column
                            )
                        )
                        conn.execute(
                            SQL(
                                "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT pg_current_xact_id()"
                            ).format(table, column)
                        )
                    steps.append(
                        f"added {TRANSACTION_COLUMN} to {self.datastore.schema}."
                        f"{self.events_table_name} (existing rows: 0)"
                    )
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (CREATE_TABLES_LOCK,))
            statement = self.transaction_index_statement(concurrently=True)
            if self._build_index(conn, self.transaction_index_name, statement):
                steps.append(f"built index {self.transaction_index_name}")
        return steps

    def ensure_partition_index(self, count: int) -> bool:
        """Build (once, ``CONCURRENTLY``) the index that lets the workers of a
        projection split ``count`` ways read only their own slice's rows: on
        (partition key modulo ``count``, transaction id, notification id). Returns
        True if it was built now. Writers then maintain one more index."""
        kwargs = plain_connect_kwargs(self.datastore)
        name = f"{self.events_table_name}_part{count}_idx"
        statement = SQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {}.{} "
            f"(({partition_sql()} % {int(count)}), {TRANSACTION_COLUMN}, notification_id)"
        ).format(
            Identifier(name), Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        with psycopg.connect(autocommit=True, **kwargs) as conn:
            return self._build_index(conn, name, statement)

    def _build_index(self, conn: psycopg.Connection[Any], name: str, statement: Composed) -> bool:
        """Build index ``name`` unless a valid one exists (an invalid one, left by an
        interrupted ``CONCURRENTLY`` build, is dropped first). True if built.

        One process at a time: the others try the lock and wait outside any
        transaction (a ``CREATE INDEX CONCURRENTLY`` waits for every older
        transaction, and one blocked on a lock its builder holds would never end).
        """
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (INDEX_BUILD_LOCK,)).fetchone()[
            0
        ]:  # type: ignore[index]
            threading.Event().wait(0.1)
        try:
            return self._build_index_locked(conn, name, statement)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (INDEX_BUILD_LOCK,))

    def _index_exists(self, conn: psycopg.Connection[Any], name: str) -> bool | None:
        """True: a valid index ``name``; False: an invalid one; None: none."""
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (self.datastore.schema, name),
        ).fetchone()
        return None if row is None else bool(row[0])

    def _build_index_locked(
        self, conn: psycopg.Connection[Any], name: str, statement: Composed
    ) -> bool:
        valid = self._index_exists(conn, name)
        if valid:
            return False
        if valid is not None:
            conn.execute(
                SQL("DROP INDEX CONCURRENTLY {}.{}").format(
                    Identifier(self.datastore.schema), Identifier(name)
                )
            )
        conn.execute(statement)
        return True

    def max_notification_id(self) -> int | None:
        """The newest notification id (``eventsourcing``'s query, without its own
        retries: callers follow snaptail's retry policy)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.max_notification_id_statement)
            row = curs.fetchone()
        return None if row is None else row["max"]

    def new_events_waiter(self) -> EventsWaiter:
        """LISTENs on the events table's channel (saves NOTIFY it after they commit)."""
        return PostgresWaiter(plain_connect_kwargs(self.datastore), self.channel_name)

    def direct_sql(self) -> DirectSQL:
        return PostgresDirectSQL(
            self.datastore, self.events_table_name, self.snapshots_table_name
        )

    def close(self) -> None:
        """Close the connection pool (and the notifier's connection)."""
        if self._notifier is not None:
            self._notifier.close()
        self.datastore.close()

    # -- writing --------------------------------------------------------------------

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        snapshots: Sequence[StoredSnapshot] = (),
        keep_snapshots: int | None = None,
        save_id: UUID | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        ids: Sequence[int] | None = self._insert_events_and_snapshots(
            stored_events, snapshots, keep_snapshots, save_id
        )
        if stored_events:
            self.notify_after_commit()
        return ids

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        save_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Insert; unlike ``eventsourcing``, take no table lock (readers order rows by
        transaction id instead, see the module docstring) and do not NOTIFY inside
        the transaction (see :meth:`notify_after_commit`)."""
        for statement, params in self.insert_writes(stored_events, save_id):
            curs.execute(statement, params, prepare=True)

    def insert_writes(
        self, stored_events: Sequence[StoredEvent], save_id: UUID | None = None
    ) -> list[tuple[Any, Any]]:
        """The statements (and parameters) that insert ``stored_events`` (and the row
        of ``save_id``) inside a save's transaction; the async recorder sends the same
        ones."""
        writes: list[tuple[Any, Any]] = []
        if self.datastore.lock_timeout:
            # Bounds the wait for a concurrent writer of the same agent and version.
            writes.append((self.lock_table_statements[0], None))
        # Binary parameters (no bytea escaping, no composite type to format): a few
        # rows as VALUES (scalars dump fastest), more as four arrays.
        n = len(stored_events)
        if n <= SMALL_INSERT:
            params: list[Any] = []
            for e in stored_events:
                params += (e.originator_id, e.originator_version, e.topic, e.state)
            writes.append((self._sql_insert_values[n - 1], params))
        else:
            arrays = [
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ]
            writes.append((self._sql_insert_events, arrays))
        if save_id is not None:
            statement, params = writes[-1]
            first = stored_events[0]
            writes[-1] = (
                self._sql_save_prefix + statement,
                [save_id, first.originator_id, first.originator_version, *params],
            )
        return writes

    def notify_after_commit(self) -> None:
        """Wake listeners once a save has committed (see :class:`_Notifier`)."""
        if self._notifier is None:
            kwargs = plain_connect_kwargs(self.datastore)
            self._notifier = _Notifier(kwargs, self._notify_statement)
        self._notifier.poke()

    def _insert_events_and_snapshots(
        self,
        stored_events: Sequence[StoredEvent],
        snapshots: Sequence[StoredSnapshot],
        keep_snapshots: int | None,
        save_id: UUID | None = None,
    ) -> Sequence[int] | None:
        # Not retried here: a save's retries follow the store's retry policy, which
        # knows the ambiguous-commit rule (snaptail.application.retry).
        if not snapshots and not self.datastore.lock_timeout and stored_events:
            return self._insert_events_only(stored_events, save_id)
        return self._insert_pipelined(stored_events, snapshots, keep_snapshots, save_id)

    def _insert_events_only(
        self, stored_events: Sequence[StoredEvent], save_id: UUID | None = None
    ) -> list[int]:
        """Most saves: one INSERT statement, its own transaction (one round trip)."""
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as curs,
        ):
            if self.in_transaction_hook is None:
                self._insert_stored_events(curs, stored_events, save_id)  # type: ignore[arg-type]
                return [row[0] for row in curs.fetchall()]
            with conn.transaction():  # the same statement, held open by the hook
                self._insert_stored_events(curs, stored_events, save_id)  # type: ignore[arg-type]
                ids = [row[0] for row in curs.fetchall()]
                self.in_transaction_hook()
            return ids

    def _insert_pipelined(
        self,
        stored_events: Sequence[StoredEvent],
        snapshots: Sequence[StoredSnapshot],
        keep_snapshots: int | None,
        save_id: UUID | None = None,
    ) -> Sequence[int] | None:
        # Pipelined, as eventsourcing's own insert: every statement goes out in one
        # round trip; an error is kept until the pipeline has closed (so psycopg
        # does not warn), then raised, and the transaction is rolled back.
        ids: Sequence[int] | None = []
        error: Exception | None = None
        with self.datastore.get_connection() as conn:
            try:
                with (
                    conn.pipeline() as pipeline,
                    conn.transaction(),
                    conn.cursor() as events_curs,
                    conn.cursor() as snapshots_curs,
                ):
                    try:
                        if stored_events:
                            self._insert_stored_events(events_curs, stored_events, save_id)
                        for snapshot in snapshots:
                            self._write_snapshot(snapshots_curs, snapshot, keep_snapshots)
                        pipeline.sync()
                        if stored_events:
                            ids = self._fetch_ids_after_insert_events(events_curs, stored_events)
                        if self.in_transaction_hook is not None:
                            self.in_transaction_hook()
                    except Exception as exc:
                        error = exc
                        if isinstance(exc, psycopg.errors.PipelineAborted):
                            # A later statement met the pipeline already aborted: the
                            # statement that failed (a conflict's unique violation) says
                            # why. Unretried, the cause must not hide behind this.
                            try:
                                pipeline.sync()
                            except Exception as cause:
                                error = cause
            except Exception:
                # Closing the transaction met the pipeline that the failed statement
                # had aborted (its error arrived while a later statement was sent):
                # that statement's error is the cause, not "pipeline aborted".
                if error is None:
                    raise
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

    def insert_snapshot(self, snapshot: StoredSnapshot, *, keep_snapshots: int | None) -> bool:
        try:
            with self.datastore.transaction(commit=True) as curs:
                self._write_snapshot(curs, snapshot, keep_snapshots)
        except IntegrityError:
            return False
        return True

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
            return self._load_rows(curs, originator_id, upper, snap_upper, recent)

    def select_many_for_load(
        self,
        originator_ids: Sequence[UUID],
        *,
        recent: int = 0,
        known: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, LoadRows | None]:
        upper, snap_upper = load_bounds(None, None)
        known = known or {}
        found: dict[UUID, LoadRows | None] = {}
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            checked = {i: known[i] for i in originator_ids if i in known}
            current: set[UUID] = set()
            if checked:
                curs.execute(self.sql_max_versions, (list(checked),), prepare=True)
                current = still_current(checked, curs.fetchall())
            loaded = False  # each agent read no earlier than the ones before it
            for agent_id in originator_ids:
                fresh = agent_id in current
                if fresh and loaded:  # current before that load: asked again after it
                    row = curs.execute(self.sql_max_version, (agent_id,), prepare=True).fetchone()
                    fresh = ((row[0] if row else None) or 0) == checked[agent_id]
                if fresh:
                    found[agent_id] = None
                else:
                    found[agent_id] = self._load_rows(curs, agent_id, upper, snap_upper, recent)
                    loaded = True
        return found

    def _load_rows(
        self,
        curs: psycopg.Cursor[tuple[Any, ...]],
        originator_id: UUID,
        upper: int,
        snap_upper: int,
        recent: int,
    ) -> LoadRows:
        """One agent's load rows, read on ``curs`` (inside the caller's transaction)."""
        snapshot = None
        if snap_upper > 0:
            curs.execute(self.sql_select_snapshot, (originator_id, snap_upper), prepare=True)
            row = curs.fetchone()
            if row is not None:
                snapshot = snapshot_from_row(originator_id, row)
        curs.execute(
            self.sql_select_tail, tail_params(originator_id, upper, snapshot, recent), prepare=True
        )
        events: list[EventRow] = curs.fetchall()  # (version, topic, state) tuples
        return LoadRows(snapshot=snapshot, events=events)

    def select_snapshot(self, originator_id: UUID, *, lte: int) -> StoredSnapshot | None:
        if lte < 1:
            return None
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(self.sql_select_snapshot, (originator_id, lte), prepare=True)
            row = curs.fetchone()
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
        shape = (gt is not None, lt is not None, bool(topics), desc)
        statement = self._page_queries.get(shape)
        if statement is None:
            text = sql.select_page(
                sql.POSTGRES, gt=shape[0], lt=shape[1], topics=int(shape[2]), desc=desc
            )
            statement = self._page_queries[shape] = _sql(text).format(ev=self._events_table)
        params: list[Any] = [originator_id]
        if gt is not None:
            params.append(gt)
        if lt is not None:
            params.append(lt)
        if topics:
            params.append(list(topics))
        params.append(limit)
        return statement, params

    def max_version(self, originator_id: UUID) -> int | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            row = curs.execute(self.sql_max_version, (originator_id,), prepare=True).fetchone()
        value = None if row is None else row["v"]
        return None if value is None else int(value)

    def save_committed(self, save_id: UUID) -> bool:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.sql_save_committed, (save_id,), prepare=True)
            return curs.fetchone() is not None

    def prune_saves(self, before: UUID, limit: int) -> int:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.sql_prune_saves, (before, limit))
            return int(curs.rowcount)

    def select_snapshot_infos(self, originator_id: UUID) -> Sequence[SnapshotInfo]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            rows = curs.execute(self._sql_snapshot_infos, (originator_id,)).fetchall()
        return [
            SnapshotInfo(row["originator_version"], row["fingerprint"], row["size"]) for row in rows
        ]

    def originator_ids(self, *, after: UUID | None = None, limit: int = 1000) -> Sequence[UUID]:
        # ">=" the nil UUID includes every id; ">" a given id starts after it.
        op = SQL(">") if after is not None else SQL(">=")
        statement = self._sql_originator_ids.format(ev=self._events_table, op=op)
        start = after if after is not None else UUID(int=0)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            rows = curs.execute(statement, (start, limit)).fetchall()
        return [_as_uuid(row["id"]) for row in rows]

    # -- gap-free reading -----------------------------------------------------------

    def select_after(
        self,
        position: Position,
        limit: int,
        *,
        topics: Sequence[str] = (),
        partition: Partition | None = None,
    ) -> list[PositionedNotification]:
        """Up to ``limit`` events after ``position`` in (transaction id, notification id)
        order, from transactions that ended before the oldest one still running.

        What this returns never changes: no transaction can commit rows behind the
        last position returned. A transaction that stays open holds readers back (not
        only writers of snaptail: any transaction in the cluster that has an id).
        """
        statement = self._sql_select_after
        params: list[Any] = [position.transaction_id, position.notification_id]
        if topics:
            statement += " AND topic = ANY(%s)"
            params.append(list(topics))
        if partition is not None and partition.count > 1:
            # The count is part of the text, as in the partition index it matches.
            statement += f" AND {partition_sql()} %% {int(partition.count)} = %s"
            params.append(partition.index)
        statement += f" ORDER BY {TRANSACTION_COLUMN}, notification_id LIMIT %s"
        params.append(limit)
        query = self._select_after_queries.get(statement)
        if query is None:
            composed = SQL(statement).format(ev=self._events_table)  # type: ignore[arg-type]
            query = self._select_after_queries[statement] = composed.as_bytes(None)
        # The rows come in index order and the scan stops at the limit. With
        # estimates that guess few rows (new tables, the partition condition) the
        # planner would rather collect every row after the position and sort them,
        # batch after batch: ruled out for this transaction.
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline(),
            conn.transaction(),
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(self._sql_index_order, prepare=True)
            curs.execute(query, params, prepare=True)
            rows = curs.fetchall()
        return [
            PositionedNotification(row[2], row[3], row[4], row[5], row[0], row[1]) for row in rows
        ]

    def held_back(self, position: Position, upto: int) -> bool:
        """Whether a committed event at or below notification id ``upto`` lies after
        ``position`` in a transaction at or past the oldest one still running (so
        :meth:`select_after` does not return it yet)."""
        query = SQL(
            "SELECT EXISTS (SELECT 1 FROM {} "
            f"WHERE ({TRANSACTION_COLUMN}, notification_id) > (%s::text::xid8, %s::bigint) "
            f"AND notification_id <= %s "
            f"AND {TRANSACTION_COLUMN} >= pg_snapshot_xmin(pg_current_snapshot()))"
        ).format(self._events_table)
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            row = curs.execute(
                query, (position.transaction_id, position.notification_id, upto)
            ).fetchone()
        return bool(row and row[0])

    def position_of(self, notification_id: int | None) -> Position:
        """The position just after notification ``notification_id`` (or the nearest
        lower id present): where a reader that has seen it continues."""
        if not notification_id:
            return START
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            row = curs.execute(self._sql_position_of, (notification_id,)).fetchone()
        if row is None:
            return START
        return Position(int(next(iter(row.values()))), notification_id)

    def subscribe(
        self,
        gt: int | None = None,
        topics: Sequence[str] = (),
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Subscription[ApplicationRecorder]:
        """Notifications after notification ``gt`` in gap-free order (see
        :class:`PostgresSubscription`)."""
        return PostgresSubscription(self, gt, topics, poll_interval=poll_interval)


class PostgresDirectSQL(DirectSQL):
    """:class:`DirectSQL` of a PostgreSQL schema (tables qualified by it, agent ids
    as ``uuid``, a row's position its transaction id and notification id)."""

    position_columns = f"notification_id, {TRANSACTION_COLUMN}::text::bigint"
    length_function = "octet_length"

    def __init__(self, datastore: PostgresDatastore, events: str, snapshots: str) -> None:
        super().__init__(datastore.schema, events, snapshots)
        self.datastore = datastore

    @contextlib.contextmanager
    def transaction(self, write: bool = False) -> Iterator[DirectCursor]:
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(force_rollback=not write),
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            yield DirectCursor(cur, "%s")

    def key(self, agent_id: UUID) -> Any:
        return agent_id

    def table_exists(self, cursor: DirectCursor, name: str) -> bool:
        cursor.execute("SELECT to_regclass(?) IS NOT NULL", (self.table(name),))
        row = cursor.fetchone()
        return bool(row and row[0])

    def after(self, floor: Position) -> tuple[str, tuple[Any, ...]]:
        return (
            f"({TRANSACTION_COLUMN}, notification_id) > (?::text::xid8, ?::bigint)",
            (floor.transaction_id, floor.notification_id),
        )

    def horizon(self) -> Position | None:
        """Rows of transactions older than the oldest one still running."""
        with self.transaction() as cur:
            cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            row = cur.fetchone()
        return Position(int(row[0]) - 1, 2**63 - 1)

    def guard_versions(
        self, cursor: DirectCursor, name: str, table: str, last: str, condition: str
    ) -> None:
        """One check per INSERT statement over its new rows (a transition table), not
        a PL/pgSQL call per row. CREATE TRIGGER locks the table: only when missing."""
        cursor.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = ? AND tgrelid = ?::regclass",
            (name, self.events),
        )
        missing = cursor.fetchone() is None
        function = f'"{self.schema}".{name}'
        found = (
            f"SELECT 1 FROM new_rows n JOIN {table} m ON m.originator_id ="
            f" replace(n.originator_id::text, '-', '') AND m.{condition}"
            f" AND n.originator_version <= m.{last}"
        )
        cursor.execute(
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF EXISTS ({found}) THEN"
            " RAISE EXCEPTION 'an inserted event is at an archived version (agent and"
            " version in the archive manifest)' USING ERRCODE = 'unique_violation'; END IF;"
            " RETURN NULL; END $$"
        )
        if missing:
            cursor.execute(
                f"CREATE TRIGGER {name} AFTER INSERT ON {self.events} REFERENCING NEW TABLE"
                f" AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
            )

    @contextlib.contextmanager
    def exclusive(
        self, *, file: str, key: str, wait: float, busy: Callable[[str, float], Exception]
    ) -> Iterator[None]:
        deadline = time.monotonic() + max(wait, 0.0)
        number = advisory_key(self.schema, key)
        where = f"pg_advisory_lock({number})"
        kwargs = plain_connect_kwargs(self.datastore)
        with psycopg.connect(**kwargs, autocommit=True) as conn:
            while True:
                row: Any = conn.execute("SELECT pg_try_advisory_lock(%s)", (number,)).fetchone()
                if row and row[0]:
                    break
                if time.monotonic() >= deadline:
                    raise busy(where, wait)
                time.sleep(0.05)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (number,))

    def vacuum_events(self) -> tuple[int, int]:
        """``VACUUM`` (the space is reused by new rows; the file shrinks only with
        ``VACUUM FULL``, which locks the table)."""
        kwargs = plain_connect_kwargs(self.datastore)
        with psycopg.connect(**kwargs, autocommit=True) as conn:
            before = self._size(conn)
            conn.execute(f"VACUUM {self.events}".encode())
            return before, self._size(conn)

    def _size(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            "SELECT pg_total_relation_size(%s::regclass)", (self.events,)
        ).fetchone()
        return int(row[0]) if row else 0


class _Notifier:
    """Sends ``NOTIFY`` for committed saves, from a thread and connection of its own.

    A transaction that NOTIFYs takes a database-wide lock from its commit until it
    ends, WAL flush included: inside the saves it would serialise every commit in
    the cluster again (measured here: 8 writers at about the rate of 1). Sent from
    this thread, saves do not wait for it, and the saves of each ``NOTIFY_INTERVAL``
    share one (a NOTIFY is a transaction of the server's too: one per save would
    double the server's transactions). A NOTIFY gets a transaction id and writes a
    commit record, so with synchronous commit each one would wait for a WAL flush
    holding that lock: this connection turns synchronous commit off (a NOTIFY lost
    in a server crash only delays listeners). Listeners also poll, so a NOTIFY lost
    with a connection only delays them. It never fails a save.
    """

    def __init__(self, connect_kwargs: Mapping[str, Any], statement: Composed) -> None:
        self._kwargs = dict(connect_kwargs)
        self._statement = statement
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="snaptail-notify", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wanted.set()

    def close(self) -> None:
        self._closed = True
        self._stopping.set()
        self._wanted.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            self._wanted.wait()
            if self._closed:
                break
            self._wanted.clear()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(autocommit=True, **self._kwargs)
                    # A NOTIFY is a transaction with an id: with synchronous commit
                    # its commit would wait for a WAL flush, holding the cluster's
                    # notify lock. Losing one in a crash only delays listeners.
                    conn.execute("SET synchronous_commit = off")
                conn.execute(self._statement)
                self._stopping.wait(NOTIFY_INTERVAL)  # later saves share the next one
            except psycopg.Error as exc:
                logger.warning("NOTIFY after a committed save failed: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
                threading.Event().wait(0.1)  # do not spin while the server is away
        if conn is not None:
            conn.close()


class PostgresSubscription(PagedSubscription):
    """Yields notifications after notification ``gt`` in (transaction id, notification id)
    order (:meth:`PostgresAgentRecorder.select_after`), then waits for more.

    A thread LISTENs on the recorder's channel (on a connection of its own) and wakes
    the reader at each NOTIFY; without notifications it polls every
    ``poll_interval`` seconds, which also covers the moment when a long transaction
    that held readers back ends. Notification ids may come out of numeric order;
    positions (:attr:`PositionedNotification.position`) never decrease.
    """

    def __init__(
        self,
        recorder: PostgresAgentRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        super().__init__(
            recorder, gt, topics, CommitSignal(), poll_interval=poll_interval, page_size=page_size
        )
        self._pg = recorder
        self._position = recorder.position_of(gt)
        kwargs = plain_connect_kwargs(recorder.datastore)
        self._listener = psycopg.connect(autocommit=True, **kwargs)
        self._listener.execute(SQL("LISTEN {}").format(Identifier(recorder.channel_name)))
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        try:
            while not self._has_been_stopped:
                for _ in self._listener.notifies(timeout=0.1, stop_after=1):
                    self._signal.notify()
        except psycopg.Error:
            pass  # the reader keeps polling
        finally:
            self._listener.close()

    def _read_page(self) -> Sequence[Notification]:
        page: list[PositionedNotification] = self._pg.select_after(
            self._position, self._page_size, topics=self._topics
        )
        if page:
            self._position = page[-1].position
            self._last_notification_id = page[-1].id
        return page

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._thread.join()


class PostgresWaiter(EventsWaiter):
    """Woken by the NOTIFY of a committed save, on a LISTEN connection of its own."""

    def __init__(self, connect_kwargs: Mapping[str, Any], channel: str) -> None:
        self._kwargs, self._channel = dict(connect_kwargs), channel
        self._conn = self._listen()

    def _listen(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(autocommit=True, **self._kwargs)
        conn.execute(SQL("LISTEN {}").format(Identifier(self._channel)))
        return conn

    @property
    def broken(self) -> bool:  # type: ignore[override]
        return bool(self._conn.broken or self._conn.closed)

    def reconnect(self) -> None:
        self._conn.close()
        self._conn = self._listen()

    def wait(self, mark: int, timeout: float) -> None:
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            pass

    def close(self) -> None:
        self._conn.close()


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


def _sql(text: str) -> SQL:
    """A statement of snaptail.infrastructure.sql (built from literals only)."""
    return SQL(text)  # type: ignore[arg-type]


def plain_connect_kwargs(datastore: PostgresDatastore) -> dict[str, Any]:
    """``psycopg.connect`` keywords for a connection of the recorder's own beside the
    pool (tables, index builds, NOTIFY, LISTEN): the pool's settings, tuple rows, and
    no statement timeout (an index build may take long)."""
    kwargs = dict(_connect_kwargs(datastore))
    kwargs.pop("row_factory", None)
    if "options" in kwargs:
        kwargs["options"] += " -c statement_timeout=0"
    return kwargs


def _as_uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


# -- opening from a URL -------------------------------------------------------------


def open_postgres(url: str, **options: object) -> PostgresAgentRecorder:
    """Open a pooled recorder for ``url``, creating its schema's tables if missing.

    The schema itself is created when it does not exist (and the user may). Raises
    :class:`SchemaOutdated` for an events table that needs :func:`migrate_postgres`.
    """
    recorder = _new_recorder(url, options)
    try:
        recorder.create_table()
    except BaseException:
        recorder.close()
        raise
    return recorder


def migrate_postgres(url: str, **options: object) -> list[str]:
    """Upgrade the schema ``url`` names to this version's tables, once; returns what
    it did (nothing when the schema is up to date or new). See
    :meth:`PostgresAgentRecorder.upgrade`."""
    recorder = _new_recorder(url, options)
    try:
        steps = recorder.upgrade()
        recorder.create_table()
    finally:
        recorder.close()
    return steps


def _new_recorder(url: str, options: Mapping[str, object]) -> PostgresAgentRecorder:
    settings = parse_postgres_url(url, **options)
    conninfo = settings.conninfo
    _probe(settings)
    datastore = ExplainingDatastore(
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
        idle_in_transaction_session_timeout=settings.idle_in_transaction_timeout,
    )
    datastore.settings = settings
    # The pool connects with exactly the URL's parameters: what it leaves out, libpq
    # takes from PGUSER, PGHOST... and its defaults (eventsourcing passes all five);
    # plus the limits of urls.PostgresOptions (TCP, statement, read deadline).
    kwargs = _connect_kwargs(datastore)
    for name in ("host", "port", "user", "password"):
        kwargs.pop(name, None)
    args = settings.connect_args()
    args["options"] += "".join(f" -c {k}={v}" for k, v in settings.session_settings().items())
    kwargs.update(args)
    datastore.pool.connection_class = with_deadline(settings.read_timeout)[0]
    try:
        recorder = PostgresAgentRecorder(datastore)
    except BaseException:
        datastore.close()
        raise
    recorder.read_timeout = settings.read_timeout
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
        "read_timeout": recorder.read_timeout,
    }


__all__ = [
    "PostgresAgentRecorder",
    "PostgresSubscription",
    "SchemaOutdated",
    "migrate_postgres",
    "open_postgres",
    "settings_of",
]
