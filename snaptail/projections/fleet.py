"""The fleet as a console shows it: pages of the AgentStats read model, sorted and
searched in SQL (never a scan of the events), with totals; and the state of every
projection (position, dead letters, which process holds its lock).

Read only: nothing here creates a table or writes a row. A view database without
the AgentStats table (no worker has run) is reported as ``missing``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from snaptail.infrastructure.recorder import Position
from snaptail.projections.agent_stats import (
    COLUMNS,
    SORT_KEYS,
    STATS_TABLE,
    STATUSES,
    TOTALS,
    TOTALS_TABLE,
    AgentStats,
    AgentStatsRow,
)
from snaptail.projections.lock import ProjectionLock
from snaptail.projections.view import (
    DEAD_LETTERS_TABLE,
    TRACKING_TABLE,
    DeadLetter,
    ViewDatabase,
)

__all__ = [
    "FLEET_SORTS",
    "STATUSES",
    "FleetPage",
    "FleetTotals",
    "ProjectionState",
    "lock_holder",
    "projection_states",
    "read_fleet",
    "status_of",
]

# Each has an index (AgentStats.tables; the id is the primary key).
FLEET_SORTS = {**SORT_KEYS, "id": "agent_id"}
_NAME_KEY = SORT_KEYS["name"]


def status_of(last_event_type: str) -> str:
    """``paused``, ``thinking``, ``awaiting_approval``, ``running_tools``, ``error``
    or ``idle``: what the agent's last event says it is doing."""
    return STATUSES.get(last_event_type, "idle")


@dataclass(frozen=True)
class FleetTotals:
    agents: int
    events: int
    bytes: int
    tokens: int
    cost_usd: float


@dataclass(frozen=True)
class FleetPage:
    """One page of the fleet. ``missing``: the read model does not exist yet (no
    worker has run); ``totals`` cover every agent matching ``search``, ``fleet``
    every agent; ``top_events``/``top_bytes``: the agents that dominate."""

    rows: list[AgentStatsRow]
    totals: FleetTotals
    fleet: FleetTotals
    top_events: list[AgentStatsRow]
    top_bytes: list[AgentStatsRow]
    missing: bool = False


_EMPTY = FleetTotals(0, 0, 0, 0, 0.0)


def _search(view: ViewDatabase, text: str) -> tuple[str, list[Any]]:
    """The WHERE clause finding names (any case) or ids that start with ``text``."""
    clause, params = view.starts_with((_NAME_KEY, "agent_id"), text.lower())
    return f" WHERE {clause}", params


def _select(view: ViewDatabase) -> str:
    """The columns to select: an AgentStats table from before the name and cost
    columns (no worker of this version has run yet) gives NULL and 0 for them."""
    have = view.columns(STATS_TABLE)
    return ", ".join(
        c if c in have else ("NULL" if c == "name" else "0") for c in COLUMNS
    )


def read_fleet(
    view: ViewDatabase,
    *,
    sort: str = "events",
    descending: bool = True,
    search: str = "",
    offset: int = 0,
    limit: int = 50,
    top: int = 10,
) -> FleetPage:
    """A page of the AgentStats read model: ``limit`` rows from ``offset``, sorted by
    ``sort`` (one of :data:`FLEET_SORTS`), only agents whose name (any case) or id
    starts with ``search``. Raises ``ValueError`` naming a bad argument."""
    if sort not in FLEET_SORTS:
        raise ValueError(f"sort must be one of {', '.join(FLEET_SORTS)}, got {sort!r}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, got {limit}")
    if not view.has_table(STATS_TABLE):
        return FleetPage([], _EMPTY, _EMPTY, [], [], missing=True)
    columns = _select(view)
    where, params = _search(view, search) if search else ("", [])
    order = "DESC" if descending else "ASC"
    sums = (
        "count(*), COALESCE(sum(events), 0), COALESCE(sum(bytes), 0), "
        "COALESCE(sum(tokens_in + tokens_out), 0), "
        + ("COALESCE(sum(cost_usd), 0)" if "cost_usd" in columns else "0")
    )
    kept = view.has_table(TOTALS_TABLE)  # (no worker of this version has run yet)
    with view.reading() as cur:
        cur.execute(
            f"SELECT {columns} FROM {STATS_TABLE}{where} "
            f"ORDER BY {FLEET_SORTS[sort]} {order}, agent_id {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        rows = [_row(r) for r in cur.fetchall()]
        if kept:
            cur.execute(f"SELECT {', '.join(TOTALS)} FROM {TOTALS_TABLE} WHERE scope = 'all'")
        else:
            cur.execute(f"SELECT {sums} FROM {STATS_TABLE}")
        fleet = _totals(cur.fetchone())
        totals = fleet
        if search:  # the matching rows only: as many as match, through the index
            cur.execute(f"SELECT {sums} FROM {STATS_TABLE}{where}", params)
            totals = _totals(cur.fetchone())
        tops = []
        for key in ("events", "bytes"):
            cur.execute(
                f"SELECT {columns} FROM {STATS_TABLE} ORDER BY {key} DESC, agent_id DESC "
                "LIMIT ?",
                (top,),
            )
            tops.append([_row(r) for r in cur.fetchall()])
    return FleetPage(rows, totals, fleet, tops[0], tops[1])


def _row(values: Sequence[Any]) -> AgentStatsRow:
    row = list(values)
    row[-1] = float(row[-1] or 0)  # NUMERIC: a Decimal on PostgreSQL
    return AgentStatsRow(*row)


def _totals(row: Sequence[Any] | None) -> FleetTotals:
    if row is None:
        return _EMPTY
    return FleetTotals(int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4]))


@dataclass(frozen=True)
class ProjectionState:
    """One tracked projection (or one partition of it: ``AgentStats[0/2]``)."""

    name: str
    position: Position
    processed: int
    holder: str | None  # who holds its worker lock; None: no worker runs it
    dead_letters: list[DeadLetter]


def projection_states(view: ViewDatabase) -> list[ProjectionState]:
    """Every projection tracked in ``view``, by name, with its dead letters and the
    holder of its worker lock. Reads only (an empty list if no worker has run)."""
    if not view.has_table(TRACKING_TABLE):
        return []
    with view.reading() as cur:
        cur.execute(
            f"SELECT projection, transaction_id, notification_id, processed "
            f"FROM {TRACKING_TABLE} ORDER BY projection"
        )
        tracked = cur.fetchall()
    letters = view.dead_letters() if view.has_table(DEAD_LETTERS_TABLE) else []
    return [
        ProjectionState(
            str(name),
            Position(int(txid), int(nid)),
            int(processed),
            lock_holder(view, str(name)),
            [d for d in letters if d.projection == name],
        )
        for name, txid, nid, processed in tracked
    ]


def lock_holder(view: ViewDatabase, projection: str) -> str | None:
    """Who holds ``projection``'s worker lock, without taking it: on PostgreSQL the
    backend holding the advisory lock (its pid, client address and application);
    on a SQLite view the process holding the lock file's ``flock`` (its pid, read
    from ``/proc/locks``: Linux). None if nobody holds it (or it cannot be told)."""
    return ProjectionLock(view, projection).holder()


# The projection whose read model the fleet page shows.
FLEET_PROJECTION = AgentStats.name
