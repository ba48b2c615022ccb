"""What each console page shows, as plain JSON-able values: the HTML pages render
these dicts, and ``/api/v1`` returns them as they are.

Every function reads; none writes. Bad input raises :class:`BadRequest` (HTTP 400)
or :class:`NotFound` (404) with a message naming the argument and what to do.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEvent
from eventsourcing.utils import get_topic

from snaptail.application.overview import (
    ReadOnlyStore,
    agent_id_page,
    check_newest_snapshot,
    event_time,
    head_notification,
    snapshot_infos,
    verify_sample,
)
from snaptail.application.store import AgentStore
from snaptail.domain.agent import Agent
from snaptail.domain.memory import format_bytes
from snaptail.domain.topics import agent_class_of
from snaptail.errors import AgentForgotten, AgentNotFound, SnaptailError
from snaptail.projections.agent_stats import AgentStats, AgentStatsRow
from snaptail.projections.fleet import (
    FLEET_SORTS,
    FleetTotals,
    ProjectionState,
    projection_states,
    read_fleet,
    status_of,
)
from snaptail.projections.view import ViewDatabase, open_view
from snaptail.snapshots import state_fingerprint

PAYLOAD_PREVIEW = 2000  # characters of an event's payload shown before "show all"
VALUE_PREVIEW = 300  # characters of one value in a state diff
MAX_PAGE = 200  # the most rows or events one page may ask for
MAX_SAMPLE = 20  # the most agents one "verify a sample" may rebuild
WORKER_HINT = "snaptail worker run snaptail.projections:AgentStats --db {db}"

# Aggregates of the integrations, by a name a person recognises.
KINDS = {
    "snaptail.domain.agent:Agent": "agent",
    "snaptail.integrations.langgraph_thread:ThreadAgent": "LangGraph thread",
    "snaptail.integrations.langgraph_thread:RunIndex": "LangGraph run index",
    "snaptail.integrations.openai_agents:ItemLog": "OpenAI Agents session",
}


class BadRequest(SnaptailError, ValueError):
    """A console request with a bad argument (HTTP 400)."""


class NotFound(SnaptailError, LookupError):
    """A console request for something that does not exist (HTTP 404)."""


def kind_of(agent_type: str) -> str:
    """``module:Class`` of an agent type -> a name to show (the class for own types)."""
    return KINDS.get(agent_type) or agent_type.rpartition(":")[2] or agent_type


def to_builtins(value: Any) -> Any:
    """Any value of state or payload as JSON-able builtins (dataclasses, UUID,
    Decimal, datetime, sets; anything else by its ``repr``)."""

    def other(obj: Any) -> Any:
        if hasattr(obj, "__dict__"):
            return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
        return repr(obj)

    return msgspec.to_builtins(value, enc_hook=other, str_keys=True)


def pretty(value: Any) -> str:
    return json.dumps(to_builtins(value), indent=2, ensure_ascii=False, sort_keys=False)


def parse_int(value: str | None, name: str, *, default: int, low: int, high: int) -> int:
    """A query parameter as an int in ``[low, high]`` (``default`` if absent)."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {number}")
    return number


def parse_agent_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise BadRequest(
            f"not an agent id: {value!r} (an agent id is a UUID, as the fleet page lists)"
        ) from None


def _row(row: AgentStatsRow) -> dict[str, Any]:
    return {
        "id": row.agent_id,
        "name": row.name,
        "type": row.agent_type,
        "kind": kind_of(row.agent_type),
        "events": row.events,
        "bytes": row.bytes,
        "tokens_in": row.tokens_in,
        "tokens_out": row.tokens_out,
        "tokens": row.tokens_in + row.tokens_out,
        "cost_usd": row.cost_usd,
        "tool_calls": row.tool_calls,
        "errors": row.errors,
        "last_event_type": row.last_event_type,
        "last_event_at": row.last_event_at,
        "last_version": row.last_version,
        "status": status_of(row.last_event_type),
    }


def _totals(totals: FleetTotals) -> dict[str, Any]:
    return dataclasses.asdict(totals)


class Console:
    """The data behind the console: one read-only store on the event database and
    one connection to the view database (used by one request at a time)."""

    def __init__(
        self, db: str | None = None, view_db: str | None = None, *, keys: str | None = None
    ) -> None:
        # SQLite files are opened read-only: the console cannot write to them at all.
        self.store: AgentStore = ReadOnlyStore(db, read_only=True, keys=keys)
        self.db_url = self.store.url
        self.view_url = view_db or self.db_url
        self._view: ViewDatabase = open_view(self.view_url, read_only=True)
        self._view_lock = threading.Lock()

    def close(self) -> None:
        self._view.close()
        self.store.close()

    @contextmanager
    def view(self) -> Iterator[ViewDatabase]:
        with self._view_lock:
            if self._view.broken:
                self._view.reconnect()
            yield self._view

    # -- fleet ----------------------------------------------------------------------

    def fleet(
        self,
        *,
        sort: str | None = None,
        order: str | None = None,
        q: str | None = None,
        page: str | None = None,
        per_page: str | None = None,
    ) -> dict[str, Any]:
        sort = sort or "events"
        if sort not in FLEET_SORTS:
            raise BadRequest(f"sort must be one of {', '.join(FLEET_SORTS)}, got {sort!r}")
        order = order or ("asc" if sort in {"name", "id", "type"} else "desc")
        if order not in {"asc", "desc"}:
            raise BadRequest(f"order must be asc or desc, got {order!r}")
        size = parse_int(per_page, "per_page", default=50, low=1, high=MAX_PAGE)
        number = parse_int(page, "page", default=1, low=1, high=10**9)
        search = (q or "").strip()
        if len(search) > 200:
            raise BadRequest(f"q (the search) is {len(search)} characters; at most 200")
        with self.view() as view:
            found = read_fleet(
                view,
                sort=sort,
                descending=order == "desc",
                search=search,
                offset=(number - 1) * size,
                limit=size,
            )
        pages = max(1, -(-found.totals.agents // size))
        if number > pages and found.totals.agents:
            raise NotFound(f"page {number} is past the last page ({pages}) of this listing")
        return {
            "sort": sort,
            "order": order,
            "q": search,
            "page": number,
            "per_page": size,
            "pages": pages,
            "agents": [_row(r) for r in found.rows],
            "totals": _totals(found.totals),
            "fleet": _totals(found.fleet),
            "top_events": [_row(r) for r in found.top_events],
            "top_bytes": [_row(r) for r in found.top_bytes],
            "read_model": self.read_model(missing=found.missing),
        }

    def read_model(self, *, missing: bool | None = None) -> dict[str, Any]:
        """Whether the AgentStats read model exists and how far behind the log it is."""
        hint = WORKER_HINT.format(db=_quote(self.db_url))
        with self.view() as view:
            states = [
                s for s in projection_states(view) if _base_name(s.name) == AgentStats.name
            ]
        if missing or not states:
            return {
                "state": "missing",
                "message": "no AgentStats read model yet: the fleet is empty until a "
                f"worker builds it. Start one: {hint}",
                "lag_events": None,
                "lag_seconds": None,
                "worker": None,
                "command": hint,
            }
        lags = [self._lag(s) for s in states]
        lag_events = max(lag for lag, _ in lags)
        lag_seconds = max(seconds for _, seconds in lags)
        worker = ", ".join(s.holder for s in states if s.holder) or None
        if lag_events == 0:
            state, message = "current", "the read model is up to date"
        else:
            state = "behind"
            message = (
                f"the read model is {lag_events:,} events ({lag_seconds:.0f} s) behind the log"
                + ("; its worker is catching up" if worker else
                   f"; no worker is running it. Start one: {hint}")
            )
        return {
            "state": state,
            "message": message,
            "lag_events": lag_events,
            "lag_seconds": lag_seconds,
            "worker": worker,
            "command": hint,
        }

    def _lag(self, state: ProjectionState, head: int | None = None) -> tuple[int, float]:
        """(events, seconds) between a projection's position and the head of the log:
        the events stored after it, and how long the oldest of them has waited."""
        head = head_notification(self.store) if head is None else head
        behind = max(0, head - state.position.notification_id)
        if not behind:
            return 0, 0.0
        since = event_time(self.store, state.position.notification_id + 1)
        seconds = 0.0 if since is None else max(0.0, (datetime.now(UTC) - since).total_seconds())
        return behind, seconds

    # -- one agent --------------------------------------------------------------------

    def _load(self, agent_id: UUID, version: int | None = None) -> Agent:
        try:
            return self.store.get(agent_id, version=version)
        except AgentForgotten as gone:  # erased: say so (its events list as redacted)
            raise NotFound(str(gone)) from None
        except AgentNotFound:
            raise NotFound(f"agent {agent_id} not found in {self.db_url}") from None

    def _head(self, agent_id: UUID) -> int:
        head = self.store.event_count(agent_id)
        if head == 0:
            raise NotFound(f"agent {agent_id} not found in {self.db_url}")
        return head

    def agent(self, raw_id: str) -> dict[str, Any]:
        agent_id = parse_agent_id(raw_id)
        self._head(agent_id)
        started = time.perf_counter()
        agent = self._load(agent_id)
        load_ms = (time.perf_counter() - started) * 1000
        cls = type(agent)
        stats = self.store.load_stats(agent)
        memory = agent.memory_usage()
        budget = _budget(cls, self.store)
        state = agent.state
        usage = getattr(state, "usage", None)
        return {
            "id": str(agent.id),
            "name": agent.name,
            "type": get_topic(cls),
            "kind": kind_of(get_topic(cls)),
            "status": agent.status,
            "version": agent.version,
            "created_on": agent.created_on.isoformat(),
            "last_activity": agent.last_activity.isoformat(),
            "snapshot": self._snapshot_health(agent, stats, load_ms),
            "memory": {
                "total": memory.total,
                "budget": budget,
                "over_budget": budget is not None and memory.total > budget,
                "parts": [
                    {"part": part, "bytes": size, "share": size / max(1, memory.total)}
                    for part, size in memory.parts.items()
                ],
            },
            "usage": None if usage is None else to_builtins(usage),
            "state": _state_fields(state),
            "event_types": sorted(_event_classes(cls)),
        }

    def _snapshot_health(self, agent: Agent, stats: Any, load_ms: float) -> dict[str, Any]:
        check = check_newest_snapshot(self.store, agent.id)
        infos = snapshot_infos(self.store, agent.id)
        running = state_fingerprint(type(agent))
        age_seconds = None
        if check.version is not None:
            at = _event_at(self.store, agent.id, check.version)
            if at is not None:
                age_seconds = (datetime.now(UTC) - at).total_seconds()
        return {
            "newest_version": check.version,
            "status": check.status,
            "trusted": check.status == "ok",
            "why": check.why,
            "fingerprint": check.fingerprint,
            "running_fingerprint": running,
            "age_seconds": age_seconds,
            "tail": agent.version - (check.version or 0),
            "stored": [
                {"version": i.originator_version, "bytes": i.size,
                 "fingerprint_matches": i.fingerprint == running}
                for i in infos
            ],
            "last_load": None if stats is None else {
                "snapshot_version": stats.snapshot_version,
                "events_read": stats.events_read,
                "bytes_read": stats.bytes_read,
                "tail": stats.tail,
                "ms": round(stats.ms, 3),
                "console_ms": round(load_ms, 3),
                "untrusted": [{"version": v, "why": why} for v, why in stats.untrusted],
            },
        }

    def events(
        self,
        raw_id: str,
        *,
        before: str | None = None,
        type: str | None = None,
        limit: str | None = None,
    ) -> dict[str, Any]:
        """One page of the timeline, newest first: events below version ``before``
        (default: from the head), only of event ``type`` if given. Reads one page."""
        agent_id = parse_agent_id(raw_id)
        head = self._head(agent_id)
        size = parse_int(limit, "limit", default=50, low=1, high=MAX_PAGE)
        cursor = parse_int(before, "before", default=head + 1, low=2, high=head + 1)
        types: list[str] | None = None
        if type:
            classes = _event_classes(_agent_class(self.store, agent_id))
            if type not in classes:
                raise BadRequest(
                    f"type {type!r} is not an event type of agent {agent_id}; "
                    f"one of: {', '.join(sorted(classes))}"
                )
            types = [get_topic(classes[type])]
        page = list(
            itertools.islice(
                self.store.history(
                    agent_id, before=cursor, reverse=True, types=types, page_size=size + 1
                ),
                size + 1,
            )
        )
        more = len(page) > size
        shown = page[:size]
        return {
            "agent_id": str(agent_id),
            "head": head,
            "before": cursor,
            "type": type or None,
            "limit": size,
            "events": [_event(agent_id, e, preview=True) for e in shown],
            "next_before": shown[-1].originator_version if more and shown else None,
        }

    def event(self, raw_id: str, raw_version: str) -> dict[str, Any]:
        agent_id = parse_agent_id(raw_id)
        head = self._head(agent_id)
        version = _version(raw_version, head, agent_id)
        found = list(self.store.history(agent_id, after=version - 1, before=version + 1))
        if not found:
            raise NotFound(f"agent {agent_id} has no event at version {version}")
        return _event(agent_id, found[0], preview=False)

    def at_version(self, raw_id: str, raw_version: str) -> dict[str, Any]:
        """Time travel: the agent as of ``version`` (``get(version=)``), and what
        changed from the version before."""
        agent_id = parse_agent_id(raw_id)
        head = self._head(agent_id)
        version = _version(raw_version, head, agent_id)
        agent = self._load(agent_id, version)
        changes: list[dict[str, Any]] = []
        if version > 1:
            previous = self._load(agent_id, version - 1)
            _diff(previous.state, agent.state, "state", changes)
        found = list(self.store.history(agent_id, after=version - 1, before=version + 1))
        stats = self.store.load_stats(agent)
        return {
            "agent_id": str(agent_id),
            "version": version,
            "head": head,
            "load": None if stats is None else {
                "snapshot_version": stats.snapshot_version,
                "events_read": stats.events_read,
                "ms": round(stats.ms, 3),
            },
            "status": agent.status,
            "state": _state_fields(agent.state),
            "changes": changes,
            "event": _event(agent_id, found[0], preview=True) if found else None,
        }

    # -- projections and snapshots ------------------------------------------------------

    def projections(self) -> dict[str, Any]:
        head = head_notification(self.store)
        with self.view() as view:
            states = projection_states(view)
        rows = []
        for s in states:
            lag, seconds = self._lag(s, head)
            rows.append({
                "name": s.name,
                "position": s.position.notification_id,
                "transaction_id": s.position.transaction_id,
                "processed": s.processed,
                "lag_events": lag,
                "lag_seconds": round(seconds, 3),
                "worker": s.holder,
                "dead_letters": [dataclasses.asdict(d) for d in s.dead_letters],
            })  # fmt: skip
        return {
            "head": head,
            "view_db": _redact(self.view_url),
            "projections": rows,
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def snapshots(self, *, after: str | None = None, limit: str | None = None) -> dict[str, Any]:
        """Per agent type the fingerprint of the running code; then one page of agents
        (in id order, from the event database) whose newest snapshot a load would
        not use: stale, corrupt, written by newer code, or missing."""
        size = parse_int(limit, "limit", default=50, low=1, high=MAX_PAGE)
        start = None
        if after:
            start = parse_agent_id(after)
        ids = agent_id_page(self.store, after=start, limit=size)
        types: dict[str, dict[str, Any]] = {}
        problems = []
        for agent_id in ids:
            check = check_newest_snapshot(self.store, agent_id)
            topic = self._type_topic(agent_id)
            entry = types.get(topic)
            if entry is None:
                entry = types[topic] = {"type": topic, "kind": kind_of(topic),
                                        "fingerprint": _fingerprint(topic), "checked": 0,
                                        "ok": 0, "stale": 0, "corrupt": 0, "newer": 0,
                                        "missing": 0}  # fmt: skip
            entry["checked"] += 1
            entry[check.status] += 1
            if check.status != "ok":
                problems.append({"id": str(agent_id), "type": topic, "kind": kind_of(topic),
                                 "version": check.version, "status": check.status,
                                 "why": check.why})  # fmt: skip
        return {
            "after": str(start) if start else None,
            "limit": size,
            "checked": len(ids),
            "types": list(types.values()),
            "problems": problems,
            "next_after": str(ids[-1]) if len(ids) == size else None,
        }

    def _type_topic(self, agent_id: UUID) -> str:
        created = next(iter(self.store.history(agent_id, before=2)), None)
        return str(getattr(created, "originator_topic", "?"))

    def verify(self, sample: str | None) -> dict[str, Any]:
        n = parse_int(sample, "sample", default=5, low=1, high=MAX_SAMPLE)
        started = time.perf_counter()
        verdicts = verify_sample(self.store, n)
        return {
            "sample": n,
            "seconds": round(time.perf_counter() - started, 3),
            "verdicts": [
                {"id": str(v.agent_id), "type": v.agent_type, "snapshot_version":
                 v.snapshot_version, "status": v.status, "failed": v.failed,
                 "fields": list(v.fields), "detail": v.detail}
                for v in verdicts
            ],
        }


def _base_name(projection: str) -> str:
    return projection.partition("[")[0]


def _quote(url: str) -> str:
    return f"'{_redact(url)}'"


def _redact(url: str) -> str:
    """A URL without its password."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"


def _budget(cls: type[Agent], store: AgentStore) -> int | None:
    from snaptail.application.budget import resolve_budget

    return resolve_budget(cls, store.memory_budget)


def _event_classes(cls: type[Any]) -> dict[str, type[Any]]:
    """The agent type's event classes by name (its own and inherited ones)."""
    found: dict[str, type[Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if (
                isinstance(value, type)
                and issubclass(value, DomainEvent)
                and name[0].isupper()
                and name != "Event"  # the base class of the type's events
            ):
                found[name] = value
    return found


def _agent_class(store: AgentStore, agent_id: UUID) -> type[Any]:
    created = next(iter(store.history(agent_id, before=2)), None)
    found = agent_class_of(getattr(created, "originator_topic", None))  # imports nothing
    return found if found is not None else Agent


def _fingerprint(topic: str) -> str | None:
    found = agent_class_of(topic)  # a stored topic never makes the console import
    try:
        return None if found is None else state_fingerprint(found)
    except Exception:
        return None


def _event_at(store: AgentStore, agent_id: UUID, version: int) -> datetime | None:
    found = next(iter(store.history(agent_id, after=version - 1, before=version + 1)), None)
    stamp = getattr(found, "timestamp", None)
    return stamp if isinstance(stamp, datetime) else None


def _version(raw: str, head: int, agent_id: UUID) -> int:
    try:
        version = int(raw)
    except ValueError:
        raise BadRequest(f"version must be a whole number, got {raw!r}") from None
    if version < 1:
        raise BadRequest(f"version must be >= 1, got {version}")
    if version > head:
        raise NotFound(
            f"agent {agent_id} has {head} versions: version {version} is beyond its head"
        )
    return version


_ENVELOPE = {"originator_id", "originator_version", "timestamp"}


def _event(agent_id: UUID, event: Any, *, preview: bool) -> dict[str, Any]:
    payload = {k: v for k, v in vars(event).items() if k not in _ENVELOPE}
    text = pretty(payload)
    cut = preview and len(text) > PAYLOAD_PREVIEW
    stamp = getattr(event, "timestamp", None)
    return {
        "version": event.originator_version,
        "type": type(event).__name__,
        "time": stamp.isoformat() if isinstance(stamp, datetime) else None,
        "payload_chars": len(text),
        "payload": text[:PAYLOAD_PREVIEW] if cut else text,
        "cut": cut,
        "full_url": f"/agents/{agent_id}/events/{event.originator_version}",
    }


def _state_fields(state: Any) -> list[dict[str, Any]]:
    """The state's declared fields, each with its value (pretty JSON, cut) and size."""
    names = (
        [f.name for f in dataclasses.fields(state)]
        if dataclasses.is_dataclass(state)
        else sorted(vars(state))
    )
    rows = []
    for name in names:
        text = pretty(getattr(state, name, None))
        rows.append({
            "field": name,
            "value": text if len(text) <= PAYLOAD_PREVIEW else text[:PAYLOAD_PREVIEW],
            "cut": len(text) > PAYLOAD_PREVIEW,
            "chars": len(text),
        })  # fmt: skip
    return rows


MAX_CHANGES = 50


def _diff(before: Any, after: Any, path: str, out: list[dict[str, Any]]) -> None:
    """What changed from ``before`` to ``after``, as (path, before, after) rows: into
    dataclasses and dicts; a list that lost items at the start and gained some at
    the end (a window moving on) is said so, not as every position changed."""
    if len(out) >= MAX_CHANGES or before is after:
        return
    try:
        if before == after and type(before) is type(after):
            return
    except Exception:  # a value whose == fails: compare by what it shows
        if _short(before) == _short(after):
            return
    if (
        dataclasses.is_dataclass(before)
        and type(before) is type(after)
        and not isinstance(before, type)
    ):
        for f in dataclasses.fields(before):
            _diff(getattr(before, f.name), getattr(after, f.name), f"{path}.{f.name}", out)
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            where = f"{path}[{key!r}]"
            if key not in after:
                out.append({"path": where, "before": _short(before[key]), "after": "(removed)"})
            elif key not in before:
                out.append({"path": where, "before": "(absent)", "after": _short(after[key])})
            else:
                _diff(before[key], after[key], where, out)
        return
    if isinstance(before, list) and isinstance(after, list):
        n = len(before)
        for dropped in range(n + 1):
            if before[dropped:] == after[: n - dropped]:
                if dropped:
                    out.append({"path": path, "before": f"{n} items",
                                "after": f"the first {dropped} left"})  # fmt: skip
                for index in range(n - dropped, len(after)):
                    out.append({"path": f"{path}[{index}]", "before": "(absent)",
                                "after": _short(after[index])})  # fmt: skip
                return
    out.append({"path": path, "before": _short(before), "after": _short(after)})


def _short(value: Any) -> str:
    try:
        text = json.dumps(to_builtins(value), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= VALUE_PREVIEW else text[:VALUE_PREVIEW] + "..."


__all__ = [
    "KINDS",
    "BadRequest",
    "Console",
    "NotFound",
    "format_bytes",
    "kind_of",
]
