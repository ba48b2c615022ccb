"""The systems the benchmarks compare, each able to save the same agent traffic and
load an agent back.

* :class:`SnaptailSystem`: :class:`~snaptail.AgentStore` (snapshot + short tail).
* :class:`StockSystem`: a stock ``eventsourcing`` ``Application`` storing the same
  ``Agent`` with its default JSON transcoder (plus transcodings for the agent's value
  types), with or without its own snapshotting.
* :func:`load_everything`: the seed's design, reading a snaptail database: every event
  decoded into one in-memory list, the state reduced from that list, all of it kept.
* :class:`Floor`: the same snapshot and tail rows snaptail reads, fetched with plain
  ``sqlite3`` and decoded with msgspec into plain data, with no domain objects.
* :class:`FloorWriter`: the floor for appends: the same rows written with plain
  ``sqlite3``, each payload encoded with msgspec.
* :func:`tiny_agent`: an agent with a tiny state (a few short events, a snapshot).
"""

from __future__ import annotations

import base64
import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Transcoding
from eventsourcing.utils import get_topic

from snaptail.application.store import AgentStore
from snaptail.domain.agent import Agent
from snaptail.domain.state import AgentState, Usage
from snaptail.domain.values import (
    Approval,
    InputItem,
    OutputItem,
    Participant,
    TokenUsage,
    ToolCall,
    WindowItem,
)
from snaptail.domain.window import ConversationWindow
from snaptail.infrastructure.recorder import SNAPSHOTS_TABLE
from snaptail.snapshots import EveryNEvents, Never

EVENTS_TABLE = "stored_events"


class SnaptailSystem:
    """snaptail's ``AgentStore`` on a SQLite file."""

    def __init__(self, path: Path, interval: int | None, recent_events: int = 100) -> None:
        self.path = path
        self.interval = interval
        policy = Never() if interval is None else EveryNEvents(interval)
        self.store = AgentStore(f"sqlite:///{path}", policy=policy, recent_events=recent_events)

    def save(self, agent: Agent) -> None:
        self.store.save(agent)

    def load(self, agent_id: UUID) -> Agent:
        return self.store.get(agent_id)

    def snapshots_kept(self, agent_id: UUID) -> int:
        return len(self.store.snapshot_infos(agent_id))

    def newest_snapshot(self, agent_id: UUID) -> int:
        infos = self.store.snapshot_infos(agent_id)
        return infos[0].originator_version if infos else 0

    def close(self) -> None:
        self.store.close()


# -- stock eventsourcing --------------------------------------------------------------


class _DataclassAsDict(Transcoding):
    """A JSON transcoding for one of the agent's dataclasses (fields as a dict)."""

    def __init__(self, cls: type[Any]) -> None:
        self.type = cls
        self.name = cls.__qualname__
        self._fields = tuple(f.name for f in dataclasses.fields(cls))

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in self._fields}

    def decode(self, data: Any) -> Any:
        return self.type(**data)


class _BytesAsBase64(Transcoding):
    type = bytes
    name = "bytes_b64"

    def encode(self, obj: bytes) -> str:
        return base64.b64encode(obj).decode("ascii")

    def decode(self, data: str) -> bytes:
        return base64.b64decode(data)


_AGENT_DATACLASSES = (
    AgentState,
    Usage,
    ConversationWindow,
    WindowItem,
    Participant,
    TokenUsage,
    InputItem,
    OutputItem,
    ToolCall,
    Approval,
)


class _StockAgents(Application[UUID]):
    """A stock ``eventsourcing`` application holding snaptail's ``Agent``."""

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for cls in _AGENT_DATACLASSES:
            transcoder.register(_DataclassAsDict(cls))
        transcoder.register(_BytesAsBase64())


def _stock_application(path: Path, interval: int | None) -> _StockAgents:
    name = f"StockAgents{interval or 0}"
    attributes: dict[str, Any] = {"name": "StockAgents"}
    if interval is not None:
        attributes["snapshotting_intervals"] = {Agent: interval}
    cls: type[_StockAgents] = type(name, (_StockAgents,), attributes)
    return cls(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})


class StockSystem:
    """A stock ``eventsourcing`` ``Application`` (SQLite, JSON transcoder).

    Saved with snapshots every ``interval`` events (its own snapshotting); ``load``
    uses them, ``load_full`` replays the whole log (an application with snapshotting
    off, on the same database).
    """

    def __init__(self, path: Path, interval: int | None) -> None:
        self.path = path
        self.interval = interval
        self.app = _stock_application(path, interval)
        self._full: _StockAgents | None = None

    def save(self, agent: Agent) -> None:
        self.app.save(agent)

    def load(self, agent_id: UUID) -> Agent:
        return self.app.repository.get(agent_id)  # type: ignore[no-any-return]

    def load_full(self, agent_id: UUID) -> Agent:
        if self._full is None:
            self._full = _stock_application(self.path, None)
        return self._full.repository.get(agent_id)  # type: ignore[no-any-return]

    def close(self) -> None:
        for app in (self.app, self._full):
            if app is not None:
                app.close()


# -- plain sqlite3 readers ------------------------------------------------------------


def _key(agent_id: UUID) -> str:
    return agent_id.hex


def connect(path: Path) -> sqlite3.Connection:
    """A plain read connection to a snaptail SQLite database."""
    return sqlite3.connect(path, check_same_thread=False)


_decode = msgspec.msgpack.decode


def load_everything(connection: sqlite3.Connection, agent_id: UUID) -> tuple[list[Any], Any]:
    """The seed's design: decode every event of the agent into one list (kept), then
    reduce the state from it. Returns ``(events, state)``."""
    rows = connection.execute(
        f"SELECT originator_version, topic, state FROM {EVENTS_TABLE} "
        "WHERE originator_id=? ORDER BY originator_version",
        (_key(agent_id),),
    ).fetchall()
    events = [(version, topic, _decode(state)) for version, topic, state in rows]
    del rows
    return events, reduce_events(events)


@dataclasses.dataclass
class SeedState:
    """What the seed's reducer kept: everything, unbounded."""

    version: int = 0
    input_items: list[Any] = dataclasses.field(default_factory=list)
    pending_tool_calls: dict[str, Any] = dataclasses.field(default_factory=dict)
    approvals: dict[str, Any] = dataclasses.field(default_factory=dict)
    idempotency_keys: list[str] = dataclasses.field(default_factory=list)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    labels: list[str] = dataclasses.field(default_factory=list)
    participants: dict[str, Any] = dataclasses.field(default_factory=dict)
    paused: bool = False
    llm_request: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    errors: int = 0


def _seed_apply(state: SeedState, version: int, kind: str, data: dict[str, Any]) -> None:
    if kind in ("InputItemAdded", "OutputItemAdded"):
        state.input_items.append(data["item"])
    elif kind == "ToolCallRequested":
        state.pending_tool_calls[data["call_id"]] = data
    elif kind == "ToolCallCompleted":
        state.pending_tool_calls.pop(data["call_id"], None)
        state.input_items.append(data)
    elif kind == "ToolApprovalRequested":
        state.approvals[data["key"]] = data
    elif kind == "ToolApprovalDecided":
        state.approvals[data["key"]] = {**state.approvals.get(data["key"], {}), **data}
    elif kind == "LlmRequestStarted":
        state.llm_request = version
    elif kind == "LlmRequestFinished":
        state.llm_request = None
        state.input_tokens += data["usage"]["input_tokens"]
        state.output_tokens += data["usage"]["output_tokens"]
    elif kind == "WebhookReceived":
        if data["idempotency_key"] is not None:
            state.idempotency_keys.append(data["idempotency_key"])
    elif kind == "MetadataSet":
        state.metadata[data["key"]] = data["value"]
    elif kind == "LabelSet" and data["present"]:
        state.labels.append(data["label"])
    elif kind == "ParticipantJoined":
        state.participants[data["participant"]["user_id"]] = data["participant"]
    elif kind == "Paused":
        state.paused = True
    elif kind == "Resumed":
        state.paused = False
    elif kind == "ErrorRecorded":
        state.errors += 1


def reduce_events(events: list[tuple[int, str, Any]]) -> SeedState:
    """Fold every event into a :class:`SeedState` (nothing is ever dropped)."""
    state = SeedState()
    kinds: dict[str, str] = {}
    for version, topic, data in events:
        kind = kinds.get(topic)
        if kind is None:
            kind = kinds[topic] = topic.rsplit(".", 1)[-1]
        _seed_apply(state, version, kind, data)
        state.version = version
    return state


class Floor:
    """The floor: the rows snaptail's load reads (newest snapshot, then the events
    after ``min(snapshot version, head - recent)``), read with plain ``sqlite3`` and
    decoded with msgspec into plain data. No domain objects, no checks."""

    def __init__(self, connection: sqlite3.Connection, recent_events: int = 100) -> None:
        self.connection = connection
        self.recent_events = recent_events
        self._snapshot = (
            f"SELECT originator_version, state FROM {SNAPSHOTS_TABLE} "
            "WHERE originator_id=? ORDER BY originator_version DESC LIMIT 1"
        )
        self._tail = (
            f"SELECT originator_version, topic, state FROM {EVENTS_TABLE} "
            "WHERE originator_id=? AND originator_version > MIN(?, "
            f"(SELECT MAX(originator_version) FROM {EVENTS_TABLE} WHERE originator_id=?) - ?) "
            "ORDER BY originator_version"
        )

    def load(self, agent_id: UUID) -> tuple[Any, list[Any]]:
        key = _key(agent_id)
        c = self.connection
        row = c.execute(self._snapshot, (key,)).fetchone()
        snapshot = _decode(row[1]) if row is not None else None
        after = row[0] if row is not None else 0
        rows = c.execute(self._tail, (key, after, key, self.recent_events)).fetchall()
        return snapshot, [(version, topic, _decode(state)) for version, topic, state in rows]

    def read(self, agent_id: UUID) -> tuple[Any, list[Any]]:
        """The rows :meth:`load` reads, not decoded: ``(snapshot row or None, tail rows)``
        (for a profile of its steps; :meth:`load` reads them inline, as measured)."""
        key = _key(agent_id)
        c = self.connection
        row = c.execute(self._snapshot, (key,)).fetchone()
        after = row[0] if row is not None else 0
        return row, c.execute(self._tail, (key, after, key, self.recent_events)).fetchall()

    @staticmethod
    def decode(read: tuple[Any, list[Any]]) -> tuple[Any, list[Any]]:
        """What :meth:`load` returns, from what :meth:`read` returned."""
        row, rows = read
        snapshot = _decode(row[1]) if row is not None else None
        return snapshot, [(version, topic, _decode(state)) for version, topic, state in rows]


Loader = Callable[[UUID], Any]


class FloorWriter:
    """The floor for appends: each save inserts the agent's new event rows (payload
    encoded with msgspec, as snaptail stores it) and, every ``interval`` events, a
    snapshot row of its state, keeping the newest two, in one transaction on a plain
    ``sqlite3`` connection (same schema and pragmas as snaptail's). No mapper, no
    checks, no checksum or fingerprint, no bookkeeping on the agent. With ``interval``
    None it writes the event rows only."""

    def __init__(self, path: Path, interval: int | None) -> None:
        AgentStore(f"sqlite:///{path}").close()  # the same tables, WAL mode
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.interval = interval
        self._encode = msgspec.msgpack.Encoder().encode
        self._topics: dict[type[Any], str] = {}
        self._snapshot_at: dict[UUID, int] = {}
        self._events = f"INSERT INTO {EVENTS_TABLE} VALUES (?,?,?,?)"
        self._snapshot = f"INSERT INTO {SNAPSHOTS_TABLE} VALUES (?,?,?,?,?,?)"
        self._prune = (
            f"DELETE FROM {SNAPSHOTS_TABLE} WHERE originator_id=? AND originator_version<?"
        )

    def _topic(self, cls: type[Any]) -> str:
        topic = self._topics.get(cls)
        if topic is None:
            topic = self._topics[cls] = get_topic(cls)
        return topic

    def save(self, agent: Agent) -> None:
        key = _key(agent.id)
        rows = []
        for event in agent.collect_events():
            payload = dict(vars(event))
            del payload["originator_id"], payload["originator_version"]
            rows.append(
                (key, event.originator_version, self._topic(type(event)), self._encode(payload))
            )
        c = self.connection
        c.execute("BEGIN")
        c.executemany(self._events, rows)
        last = self._snapshot_at.get(agent.id, 0)
        if self.interval is not None and agent.version - last >= self.interval:
            body = {
                "created_on": agent.created_on,
                "modified_on": agent.modified_on,
                "state": agent.state,
            }
            state = self._encode(body)
            c.execute(self._snapshot, (key, agent.version, self._topic(type(agent)), "", 0, state))
            c.execute(self._prune, (key, last))
            self._snapshot_at[agent.id] = agent.version
        c.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()


def tiny_agent(store: AgentStore) -> Agent:
    """An agent with a tiny state, stored in ``store``: five short events, a snapshot
    at version 3, so that a load reads one small snapshot and a two-event tail."""
    agent = Agent(name="tiny", system_prompt="Be brief.")
    agent.add_input("user", "hello")
    agent.add_output("assistant_message", "Hi! How can I help?")
    store.save(agent)
    store.snapshot(agent.id)
    agent.add_input("user", "what time is it?")
    agent.add_output("assistant_message", "Noon.")
    store.save(agent)
    return agent
