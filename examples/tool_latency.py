"""A user-defined projection: calls, errors and latency per tool (see the README)."""

from __future__ import annotations

import msgspec
from eventsourcing.persistence import Notification

from snaptail.projections import Projection, ViewCursor, decode, event_name


class Call(msgspec.Struct):  # the fields read from ToolCallRequested / ToolCallCompleted
    call_id: str
    tool: str = ""
    duration_ms: int = 0
    error: str | None = None


class ToolLatency(Projection):
    tables = (
        "CREATE TABLE IF NOT EXISTS tool_pending (agent_id TEXT, call_id TEXT, tool TEXT, "
        "PRIMARY KEY (agent_id, call_id))",
        "CREATE TABLE IF NOT EXISTS tool_latency (tool TEXT PRIMARY KEY, calls BIGINT, "
        "errors BIGINT, total_ms BIGINT, max_ms BIGINT)",
    )
    upsert = (
        "INSERT INTO tool_latency VALUES (?, 1, ?, ?, ?) ON CONFLICT (tool) DO UPDATE SET "
        "calls = tool_latency.calls + 1, errors = tool_latency.errors + excluded.errors, "
        "total_ms = tool_latency.total_ms + excluded.total_ms, max_ms = CASE WHEN "
        "excluded.max_ms > tool_latency.max_ms THEN excluded.max_ms ELSE tool_latency.max_ms END"
    )

    def handle(self, view: ViewCursor, n: Notification) -> None:
        name, key = event_name(n.topic), str(n.originator_id)
        if name not in ("ToolCallRequested", "ToolCallCompleted"):
            return
        call = decode(n.state, Call)
        if name == "ToolCallRequested":
            sql = "INSERT INTO tool_pending VALUES (?, ?, ?)"
            view.execute(sql, (key, call.call_id, call.tool))
            return
        sql = "DELETE FROM tool_pending WHERE agent_id = ? AND call_id = ? RETURNING tool"
        view.execute(sql, (key, call.call_id))
        tool = (view.fetchone() or ("?",))[0]
        failed = int(call.error is not None)
        view.execute(self.upsert, (tool, failed, call.duration_ms, call.duration_ms))
