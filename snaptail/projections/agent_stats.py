"""``AgentStats``: per agent events, bytes, last event, tokens, tool calls, errors.

Built from topics and sizes alone, except three small decodes: the token usage of
``LlmRequestFinished``, the ``error`` field of ``ToolCallCompleted`` and the
timestamp of each agent's last event in a batch. An event whose fields do not
decode raises (``msgspec.ValidationError``/``DecodeError``): the worker reports it
as a projection failure, never an undercount. Events are recognised by their
event class name, so agent types defined by users (subclasses of ``Agent``, whose
events have their own topics) count like the built-in one.

A batch is folded into one row per agent in memory, then written with one
``INSERT ... ON CONFLICT DO UPDATE`` per agent: catch-up costs one statement per
agent per batch, not one per event.

For a console (``snaptail ui``) the table has an index per sort order of the fleet
page and a kept totals row (``snaptail_agent_stats_totals``): a page of 100,000
agents reads its 50 rows and one totals row, never every row. Every slice of a
partitioned AgentStats adds to the one totals row; the additions commute, so the
order the slices commit in does not matter (on PostgreSQL they wait for each other
only for the end of a batch's transaction).

The snapshot version is not in the event stream (snapshots are a table of the
event database): :func:`read_agent_stats` looks it up for the rows it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import msgspec
from eventsourcing.persistence import Notification

from snaptail.privacy.keys import Erasure
from snaptail.projections.base import Projection, agent_type, decode, event_name
from snaptail.projections.view import AddColumn, ViewCursor, ViewDatabase

if TYPE_CHECKING:
    from snaptail.application.store import AgentStore

STATS_TABLE = "snaptail_agent_stats"
COLUMNS = (
    "agent_id", "agent_type", "events", "bytes", "last_event_type", "last_event_at",
    "last_version", "tokens_in", "tokens_out", "tool_calls", "errors", "name", "cost_usd",
)  # fmt: skip
# Added after the first release: AddColumn upgrades older tables (their rows counted
# before the upgrade have no name and no cost until the view is rebuilt).
_ADDITIVE = {"events", "bytes", "tokens_in", "tokens_out", "tool_calls", "errors", "cost_usd"}
SORTS = {"events": "events", "bytes": "bytes", "tokens": "tokens_in + tokens_out"}
Sort = Literal["events", "bytes", "tokens"]


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


class _LlmRequestFinished(msgspec.Struct):
    usage: _Usage = msgspec.field(default_factory=_Usage)


class _ToolCallCompleted(msgspec.Struct):
    error: str | None = None


class _Stamped(msgspec.Struct):
    timestamp: datetime | None = None


class _Created(msgspec.Struct):
    originator_topic: str = ""
    name: str | None = None


_UPSERT = (
    f"INSERT INTO {STATS_TABLE} ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (agent_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = {STATS_TABLE}.{c} + excluded.{c}"
        if c in _ADDITIVE
        else f"{c} = COALESCE(excluded.{c}, {STATS_TABLE}.{c})"
        if c == "name"
        else f"{c} = excluded.{c}"
        for c in COLUMNS[2:]
    )
)
# The fleet's totals, one row kept beside the per-agent rows (a console reads them
# without summing every agent). Additive, so slices of a partitioned AgentStats add
# to the same row in any order.
TOTALS_TABLE = "snaptail_agent_stats_totals"
TOTALS = ("agents", "events", "bytes", "tokens", "cost_usd")
_TOTALS_UPSERT = (
    f"INSERT INTO {TOTALS_TABLE} (scope, {', '.join(TOTALS)}) VALUES ('all', ?, ?, ?, ?, ?) "
    "ON CONFLICT (scope) DO UPDATE SET "
    + ", ".join(f"{c} = {TOTALS_TABLE}.{c} + excluded.{c}" for c in TOTALS)
)
# What an agent is doing, as far as its last event tells (``snaptail ui``'s fleet; the
# agent page loads the agent for its exact status).
STATUSES = {
    "Paused": "paused",
    "LlmRequestStarted": "thinking",
    "ToolApprovalRequested": "awaiting_approval",
    "ToolCallRequested": "running_tools",
    "ErrorRecorded": "error",
}
_STATUS_SQL = (
    "CASE last_event_type "
    + " ".join(f"WHEN '{event}' THEN '{status}'" for event, status in STATUSES.items())
    + " ELSE 'idle' END"
)
# The sort orders a console pages by (ties broken by agent id), each with an index:
# a page of 100,000 agents reads its rows, not the table. The price is paid by the
# worker: every row written updates the indexes whose key changed (benchmarks/ui.py
# --catch-up measures it).
SORT_KEYS = {
    "events": "events",
    "bytes": "bytes",
    "tokens": "(tokens_in + tokens_out)",
    "cost": "cost_usd",
    "name": "lower(COALESCE(name, ''))",
    "type": "agent_type",
    "last": "COALESCE(last_event_at, '')",
    "status": _STATUS_SQL,
}


class AgentStats(Projection):
    """The fleet's read model: which agents have the most events, bytes, tokens."""

    name = "AgentStats"
    partitionable = True  # one row per agent, built from that agent's events alone
    tables = (
        f"CREATE TABLE IF NOT EXISTS {STATS_TABLE} ("
        "agent_id TEXT PRIMARY KEY, agent_type TEXT NOT NULL, events BIGINT NOT NULL, "
        "bytes BIGINT NOT NULL, last_event_type TEXT NOT NULL, last_event_at TEXT, "
        "last_version BIGINT NOT NULL, tokens_in BIGINT NOT NULL, "
        "tokens_out BIGINT NOT NULL, tool_calls BIGINT NOT NULL, errors BIGINT NOT NULL)",
        AddColumn(STATS_TABLE, "name", "name TEXT"),
        AddColumn(STATS_TABLE, "cost_usd", "cost_usd NUMERIC NOT NULL DEFAULT 0"),
        *(
            f"CREATE INDEX IF NOT EXISTS {STATS_TABLE}_by_{key} ON {STATS_TABLE} "
            f"(({expression}), agent_id)"
            for key, expression in SORT_KEYS.items()
        ),
        f"CREATE TABLE IF NOT EXISTS {TOTALS_TABLE} (scope TEXT PRIMARY KEY, "
        "agents BIGINT NOT NULL, events BIGINT NOT NULL, bytes BIGINT NOT NULL, "
        "tokens BIGINT NOT NULL, cost_usd NUMERIC NOT NULL)",
        # A view made before the totals existed: count its rows once (a no-op after).
        f"INSERT INTO {TOTALS_TABLE} (scope, {', '.join(TOTALS)}) SELECT 'all', count(*), "
        "COALESCE(sum(events), 0), COALESCE(sum(bytes), 0), "
        "COALESCE(sum(tokens_in + tokens_out), 0), COALESCE(sum(cost_usd), 0) "
        f"FROM {STATS_TABLE} WHERE true ON CONFLICT (scope) DO NOTHING",
    )

    def process(self, view: ViewCursor, batch: Sequence[Notification]) -> None:
        rows: dict[Any, list[Any]] = {}
        last: dict[Any, Notification] = {}
        types: dict[Any, str] = {}
        names: dict[Any, str | None] = {}
        costs: dict[Any, Decimal] = {}
        for n in batch:
            key = n.originator_id
            row = rows.get(key)
            if row is None:
                row = rows[key] = [0, 0, 0, 0, 0, 0]  # events bytes in out tools errors
                types[key], names[key] = _identity(n)
                costs[key] = Decimal(0)
            row[0] += 1
            row[1] += len(n.state)
            last[key] = n
            name = event_name(n.topic)
            if name == "LlmRequestFinished":
                usage = decode(n.state, _LlmRequestFinished).usage
                row[2] += usage.input_tokens
                row[3] += usage.output_tokens
                costs[key] += usage.cost_usd
            elif name == "ToolCallCompleted":
                row[4] += 1
                row[5] += decode(n.state, _ToolCallCompleted).error is not None
            elif name == "ErrorRecorded":
                row[5] += 1
        view.executemany(
            _UPSERT,
            [
                (
                    str(key),
                    types[key],
                    row[0],
                    row[1],
                    event_name(last[key].topic),
                    _timestamp(last[key].state),
                    last[key].originator_version,
                    *row[2:],
                    names[key],
                    float(costs[key]),
                )
                for key, row in rows.items()
            ],
        )
        view.execute(
            _TOTALS_UPSERT,
            (
                sum(1 for n in batch if n.originator_version == 1),
                sum(row[0] for row in rows.values()),
                sum(row[1] for row in rows.values()),
                sum(row[2] + row[3] for row in rows.values()),
                float(sum(costs.values())),
            ),
        )

    def forget(self, view: ViewCursor, erasure: Erasure) -> None:
        """Keep the forgotten agents' counts; drop their names (an agent's name may be
        personal: "chat with Alice")."""
        view.executemany(
            f"UPDATE {STATS_TABLE} SET name = NULL WHERE agent_id = ?",
            [(agent_id,) for agent_id in erasure.agent_ids],
        )


def _identity(n: Notification) -> tuple[str, str | None]:
    """The agent's class (the created event names it; later events may be inherited
    from a base class) and its name (None unless ``n`` is the created event)."""
    if n.originator_version == 1:
        created = decode(n.state, _Created)
        return created.originator_topic or agent_type(n.topic), created.name
    return agent_type(n.topic), None


def _timestamp(state: bytes) -> str | None:
    stamp = decode(state, _Stamped).timestamp
    return None if stamp is None else stamp.isoformat()


@dataclass(frozen=True)
class AgentStatsRow:
    """One agent's figures, as ``snaptail stats`` prints them."""

    agent_id: str
    agent_type: str
    events: int
    bytes: int
    last_event_type: str
    last_event_at: str | None
    last_version: int
    tokens_in: int
    tokens_out: int
    tool_calls: int
    errors: int
    name: str | None = None  # None: counted before the name column existed
    cost_usd: float = 0.0
    snapshot_version: int | None = None

    @property
    def tail(self) -> int | None:
        """Events after the newest snapshot: what a load replays."""
        if self.snapshot_version is None:
            return None
        return self.last_version - self.snapshot_version


def read_agent_stats(
    view: ViewDatabase,
    *,
    sort: Sort = "events",
    top: int | None = 20,
    store: AgentStore | None = None,
) -> list[AgentStatsRow]:
    """The ``top`` agents by ``sort`` (all if ``top`` is None), from the view tables.

    With ``store`` (of the event database), each row's ``snapshot_version`` is read
    from the snapshots table: one indexed query per row returned. No agent is loaded.
    """
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    statement = (
        f"SELECT {', '.join(COLUMNS)} FROM {STATS_TABLE} "
        f"ORDER BY {SORTS[sort]} DESC, agent_id"
    )
    params: tuple[Any, ...] = ()
    if top is not None:
        statement += " LIMIT ?"
        params = (top,)
    view.setup(AgentStats.tables)  # an empty view before the first catch-up
    if view.read_only and not view.has_table(STATS_TABLE):
        return []
    with view.reading() as cur:
        cur.execute(statement, params)
        rows = [row_from_columns(row) for row in cur.fetchall()]
    if store is None:
        return rows
    return [_with_snapshot(row, store) for row in rows]


def row_from_columns(row: Sequence[Any]) -> AgentStatsRow:
    """An :class:`AgentStatsRow` from the values of :data:`COLUMNS`, in that order."""
    values = list(row)
    values[-1] = float(values[-1] or 0)  # NUMERIC: a Decimal on PostgreSQL
    return AgentStatsRow(*values)


def _with_snapshot(row: AgentStatsRow, store: AgentStore) -> AgentStatsRow:
    infos = store.snapshot_infos(UUID(row.agent_id))
    version = infos[0].originator_version if infos else 0
    return AgentStatsRow(**{**row.__dict__, "snapshot_version": version})
