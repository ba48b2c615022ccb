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

The snapshot version is not in the event stream (snapshots are a table of the
event database): :func:`read_agent_stats` looks it up for the rows it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from eventsourcing.persistence import Notification

from snaptail.infrastructure.recorder import AgentRecorder
from snaptail.projections.base import Projection, agent_type, decode, event_name
from snaptail.projections.view import ViewCursor, ViewDatabase

STATS_TABLE = "snaptail_agent_stats"
COLUMNS = (
    "agent_id", "agent_type", "events", "bytes", "last_event_type", "last_event_at",
    "last_version", "tokens_in", "tokens_out", "tool_calls", "errors",
)  # fmt: skip
SORTS = {"events": "events", "bytes": "bytes", "tokens": "tokens_in + tokens_out"}
Sort = Literal["events", "bytes", "tokens"]


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0


class _LlmRequestFinished(msgspec.Struct):
    usage: _Usage = msgspec.field(default_factory=_Usage)


class _ToolCallCompleted(msgspec.Struct):
    error: str | None = None


class _Stamped(msgspec.Struct):
    timestamp: datetime | None = None


class _Created(msgspec.Struct):
    originator_topic: str = ""


_UPSERT = (
    f"INSERT INTO {STATS_TABLE} ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (agent_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = {STATS_TABLE}.{c} + excluded.{c}"
        if c in {"events", "bytes", "tokens_in", "tokens_out", "tool_calls", "errors"}
        else f"{c} = excluded.{c}"
        for c in COLUMNS[2:]
    )
)


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
    )

    def process(self, view: ViewCursor, batch: Sequence[Notification]) -> None:
        rows: dict[Any, list[Any]] = {}
        last: dict[Any, Notification] = {}
        types: dict[Any, str] = {}
        for n in batch:
            key = n.originator_id
            row = rows.get(key)
            if row is None:
                row = rows[key] = [0, 0, 0, 0, 0, 0]  # events bytes in out tools errors
                types[key] = _agent_type(n)
            row[0] += 1
            row[1] += len(n.state)
            last[key] = n
            name = event_name(n.topic)
            if name == "LlmRequestFinished":
                usage = decode(n.state, _LlmRequestFinished).usage
                row[2] += usage.input_tokens
                row[3] += usage.output_tokens
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
                )
                for key, row in rows.items()
            ],
        )


def _agent_type(n: Notification) -> str:
    """The agent's class (the created event names it; later events may be inherited
    from a base class). Only written when the agent's row is first inserted."""
    if n.originator_version == 1:
        topic = decode(n.state, _Created).originator_topic
        if topic:
            return topic
    return agent_type(n.topic)


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
    recorder: AgentRecorder | None = None,
) -> list[AgentStatsRow]:
    """The ``top`` agents by ``sort`` (all if ``top`` is None), from the view tables.

    With ``recorder`` (the event database), each row's ``snapshot_version`` is read
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
        rows = [AgentStatsRow(*row) for row in cur.fetchall()]
    if recorder is None:
        return rows
    return [_with_snapshot(row, recorder) for row in rows]


def _with_snapshot(row: AgentStatsRow, recorder: AgentRecorder) -> AgentStatsRow:
    infos = recorder.select_snapshot_infos(UUID(row.agent_id))
    version = infos[0].originator_version if infos else 0
    return AgentStatsRow(**{**row.__dict__, "snapshot_version": version})
