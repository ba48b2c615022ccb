"""The event-sourced LangGraph thread behind ``SnaptailSaver`` (no LangGraph import here).

One :class:`ThreadAgent` per LangGraph ``thread_id`` holds every namespace of the thread.
A checkpoint is one ``CheckpointSaved`` event, the pending writes of a task one
``WritesSaved`` event. The state keeps, per namespace, only the newest checkpoint (its
serialized skeleton and metadata, each channel's value, and its pending writes): a
message-list channel is kept as references (:class:`MsgRef`) to message bodies stored
once, in the event that first carried them, so the state and its snapshots stay small
and a checkpoint stores only the messages that changed since its parent.

Values are opaque ``(type, bytes)`` pairs made by LangGraph's serializer in the saver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID, uuid5

import msgspec
from eventsourcing.domain import event

from snaptail.domain.agent import Agent
from snaptail.domain.state import AgentState
from snaptail.integrations.aggregates import start

# Newest checkpoint ids remembered per thread (id -> event version); older ones are
# found by reading the thread's checkpoint events newest first.
INDEX_SIZE = 512
# Run ids remembered per thread as already recorded in their run index.
RUNS_SEEN = 8
# One event of a thread may carry a whole message list (a fork) or large channel values.
THREAD_MAX_EVENT_BYTES = 256 * 1024 * 1024

_NAMESPACE = UUID("6f1f0e56-3c1f-4d83-9a52-2f0c1c6f7a10")

EMPTY, VALUE, MESSAGES, MAPPING = 0, 1, 2, 3
# In an event, the parent of a checkpoint that extends its namespace's newest one.
PARENT_IS_HEAD = "^"


def thread_uuid(thread_id: str) -> UUID:
    """The aggregate id of a LangGraph thread."""
    return uuid5(_NAMESPACE, f"thread:{thread_id}")


def run_uuid(run_id: str) -> UUID:
    """The aggregate id of the index of one LangGraph run."""
    return uuid5(_NAMESPACE, f"run:{run_id}")


def digest(body: tuple[str, bytes]) -> str:
    """Content key of a message body (to store a body once per thread)."""
    return hashlib.blake2b(body[1], digest_size=16, person=body[0].encode()[:16]).hexdigest()


class MsgRef(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True, gc=False):
    """Where one message's body is: slot ``slot`` of the event at ``version`` (0 in an
    event: that event itself), and the message id (bodies are stored without it).
    Untracked by the garbage collector (it holds no containers): a long thread holds
    one per message."""

    version: int
    slot: int
    id: str | None = None


class Channel(msgspec.Struct, array_like=True, omit_defaults=True):
    """A channel's value at a version: EMPTY, VALUE (``vtype``/``data``), MESSAGES
    (``refs``) or MAPPING (a dict: ``data`` without its message entries, ``layout``
    says which keys hold how many of ``refs``). In an event, a MESSAGES value is the
    first ``keep`` refs of the namespace's newest checkpoint's list, then ``refs``."""

    version: int | float | str
    kind: int
    vtype: str = ""
    data: bytes = b""
    refs: list[MsgRef] = msgspec.field(default_factory=list)
    layout: list[tuple[str, int, bool]] = msgspec.field(default_factory=list)
    keep: int = 0


class WriteRow(msgspec.Struct, array_like=True, omit_defaults=True):
    """One pending write, its value encoded as a :class:`Channel` value is (``single``:
    a MESSAGES value that was one message rather than a list)."""

    task_id: str
    channel: str
    idx: int
    task_path: str
    kind: int
    vtype: str = ""
    data: bytes = b""
    refs: list[MsgRef] = msgspec.field(default_factory=list)
    layout: list[tuple[str, int, bool]] = msgspec.field(default_factory=list)
    single: bool = False


class Saved(msgspec.Struct, array_like=True, omit_defaults=True):
    """The payload of a ``CheckpointSaved`` event (see :meth:`ThreadAgent.save_checkpoint`)."""

    ns: str
    checkpoint_id: str
    parent_id: str
    v: int
    ts: str
    mtype: str
    mdata: bytes
    changed: dict[str, Channel]
    seen: dict[str, dict[str, int | float | str]]
    names: list[str] | None = None
    unseen: list[str] = msgspec.field(default_factory=list)
    updated: list[str] | None = None
    run_id: str = ""
    extra_type: str = ""
    extra: bytes = b""
    bodies: list[tuple[str, bytes]] = msgspec.field(default_factory=list)


class Written(msgspec.Struct, array_like=True, omit_defaults=True):
    """The payload of a ``WritesSaved`` event: one task's writes to one checkpoint."""

    ns: str
    checkpoint_id: str
    rows: list[WriteRow]
    bodies: list[tuple[str, bytes]] = msgspec.field(default_factory=list)


def _only_bodies(name: str, before: int) -> Any:
    """A struct decoding an array-encoded payload's ``bodies`` (field ``before``) and
    skipping the fields before it undecoded."""
    fields: list[tuple[str, Any, Any]] = [
        (f"skip{i}", msgspec.Raw, msgspec.Raw()) for i in range(before)
    ]
    fields.append(("bodies", list[tuple[str, bytes]], msgspec.field(default_factory=list)))
    return msgspec.defstruct(name, fields, array_like=True)


class _Envelope(msgspec.Struct):
    c: _only_bodies("SavedBodies", len(Saved.__struct_fields__) - 1) | None = None  # type: ignore[valid-type]
    w: _only_bodies("WrittenBodies", len(Written.__struct_fields__) - 1) | None = None  # type: ignore[valid-type]


_envelope = msgspec.msgpack.Decoder(_Envelope)


def bodies_of(payload: bytes) -> list[tuple[str, bytes]]:
    """The message bodies of a stored CheckpointSaved or WritesSaved payload, decoding
    nothing else (a cold load reads every message of a thread this way)."""
    envelope = _envelope.decode(payload)
    found = envelope.c or envelope.w
    return list(found.bodies) if found is not None else []


class Head(msgspec.Struct):
    """The newest checkpoint of one namespace, with its pending writes. Replaced, never
    mutated, by each event (so an earlier Head stays valid for readers)."""

    checkpoint_id: str
    version: int
    parent_id: str
    v: int
    ts: str
    updated: list[str] | None
    seen: dict[str, dict[str, int | float | str]]
    extra_type: str
    extra: bytes
    mtype: str
    mdata: bytes
    run_id: str
    channels: dict[str, Channel]
    writes: list[WriteRow] = msgspec.field(default_factory=list)
    # digest -> ref of the bodies stored by this checkpoint and its pending writes
    bodies: dict[str, MsgRef] = msgspec.field(default_factory=dict)
    visible_from: int = 0


class Early(msgspec.Struct):
    """Writes stored before their checkpoint (LangGraph's default "async" durability
    saves a task's writes while the checkpoint they belong to is still being saved)."""

    rows: list[WriteRow] = msgspec.field(default_factory=list)
    bodies: dict[str, MsgRef] = msgspec.field(default_factory=dict)


@dataclass
class ThreadState(AgentState):
    """Per namespace the newest checkpoint; and what is hidden by deletes and prunes."""

    namespaces: dict[str, Head] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)
    late_writes: dict[str, list[int]] = field(default_factory=dict)
    early: dict[str, Early] = field(default_factory=dict)
    deleted_runs: list[str] = field(default_factory=list)
    runs_seen: list[str] = field(default_factory=list)
    cleared_at: int = 0


def ns_key(ns: str, checkpoint_id: str) -> str:
    return f"{ns}\x00{checkpoint_id}"


def resolve_refs(refs: Sequence[MsgRef], version: int) -> list[MsgRef]:
    return [r if r.version else MsgRef(version, r.slot, r.id) for r in refs]


def merge_writes(existing: Sequence[WriteRow], new: Sequence[WriteRow]) -> list[WriteRow]:
    """``existing`` plus ``new``: a regular write (idx >= 0) already stored for its
    (task, idx) is kept as it was; a special one (error, interrupt...) replaces it."""
    rows = list(existing)
    where = {(r.task_id, r.idx): i for i, r in enumerate(rows)}
    for row in new:
        at = where.get((row.task_id, row.idx))
        if at is None:
            where[(row.task_id, row.idx)] = len(rows)
            rows.append(row)
        elif row.idx < 0:
            rows[at] = row
    return rows


def body_refs(bodies: Sequence[tuple[str, bytes]], version: int) -> dict[str, MsgRef]:
    return {digest(body): MsgRef(version, slot) for slot, body in enumerate(bodies)}


class ThreadAgent(Agent):
    """A LangGraph thread (all its checkpoint namespaces) as one snaptail aggregate."""

    if TYPE_CHECKING:
        CheckpointSaved: ClassVar[type[Any]]
        WritesSaved: ClassVar[type[Any]]
        RunsDeleted: ClassVar[type[Any]]
        ThreadCleared: ClassVar[type[Any]]
        ThreadPruned: ClassVar[type[Any]]
        state: ThreadState

    State = ThreadState
    max_event_bytes = THREAD_MAX_EVENT_BYTES

    @classmethod
    def start(cls, thread_id: str) -> ThreadAgent:
        return start(cls, thread_uuid(thread_id), thread_id)

    @property
    def thread_id(self) -> str:
        return self.state.name

    def visible(self, ns: str, version: int, run_id: str) -> bool:
        """Whether the checkpoint stored at ``version`` survived deletes and prunes."""
        if version <= self.state.cleared_at or (run_id and run_id in self.state.deleted_runs):
            return False
        head = self.state.namespaces.get(ns)
        return head is None or version >= head.visible_from

    @event("CheckpointSaved")
    def save_checkpoint(self, c: Saved) -> None:
        """A checkpoint. With ``parent_id`` PARENT_IS_HEAD it extends the namespace's
        newest checkpoint: channels not in ``changed`` keep their value (``names``
        None: the same channels as that checkpoint), ``seen`` holds only the nodes
        whose versions seen changed, ``unseen`` those dropped. Otherwise ``changed``,
        ``names`` and ``seen`` are complete."""
        version = self.version + 1
        old = self.state.namespaces.get(c.ns)
        extends = c.parent_id == PARENT_IS_HEAD and old is not None
        base = old.channels if extends and old is not None else {}
        channels: dict[str, Channel] = {}
        for name in list(base) if c.names is None else c.names:
            entry = c.changed.get(name)
            if entry is None:
                kept = base.get(name)
                if kept is not None:
                    channels[name] = kept
                continue
            if entry.kind == MESSAGES or entry.refs:
                prior = base.get(name)
                prefix = prior.refs[: entry.keep] if prior is not None and entry.keep else []
                entry = msgspec.structs.replace(
                    entry, refs=prefix + resolve_refs(entry.refs, version), keep=0
                )
            channels[name] = entry
        parent_id = c.parent_id
        if extends and old is not None:
            parent_id = old.checkpoint_id
            all_seen = {k: s for k, s in old.seen.items() if k not in c.unseen}
            all_seen.update(c.seen)
        else:
            all_seen = dict(c.seen)
        key = ns_key(c.ns, c.checkpoint_id)
        early = self.state.early.pop(key, None)
        self.state.namespaces[c.ns] = Head(
            checkpoint_id=c.checkpoint_id,
            version=version,
            parent_id=parent_id,
            v=c.v,
            ts=c.ts,
            updated=c.updated,
            seen=all_seen,
            extra_type=c.extra_type,
            extra=c.extra,
            mtype=c.mtype,
            mdata=c.mdata,
            run_id=c.run_id,
            channels=channels,
            writes=early.rows if early is not None else [],
            bodies={**(early.bodies if early is not None else {}), **body_refs(c.bodies, version)},
            visible_from=old.visible_from if old is not None else 0,
        )
        index = self.state.index
        index[key] = version
        while len(index) > INDEX_SIZE:
            del index[next(iter(index))]
        if c.run_id and c.run_id not in self.state.runs_seen:
            self.state.runs_seen = [*self.state.runs_seen[-(RUNS_SEEN - 1) :], c.run_id]

    @event("WritesSaved")
    def save_writes(self, w: Written) -> None:
        version = self.version + 1
        resolved = [msgspec.structs.replace(r, refs=resolve_refs(r.refs, version)) for r in w.rows]
        head = self.state.namespaces.get(w.ns)
        if head is not None and head.checkpoint_id == w.checkpoint_id:
            self.state.namespaces[w.ns] = msgspec.structs.replace(
                head,
                writes=merge_writes(head.writes, resolved),
                bodies={**head.bodies, **body_refs(w.bodies, version)},
            )
            return
        key = ns_key(w.ns, w.checkpoint_id)
        if key in self.state.index:
            self.state.late_writes.setdefault(key, []).append(version)
            return
        early = self.state.early.get(key) or Early()
        self.state.early[key] = Early(
            merge_writes(early.rows, resolved), {**early.bodies, **body_refs(w.bodies, version)}
        )

    @event("RunsDeleted")
    def delete_runs(self, run_ids: list[str]) -> None:
        known = set(self.state.deleted_runs)
        self.state.deleted_runs = self.state.deleted_runs + [r for r in run_ids if r not in known]

    @event("ThreadCleared")
    def clear(self) -> None:
        self.state.cleared_at = self.version + 1
        self.state.namespaces = {}
        self.state.index = {}
        self.state.late_writes = {}
        self.state.early = {}

    @event("ThreadPruned")
    def prune(self, keep_early: bool = False) -> None:
        """Hide every checkpoint but each namespace's newest. ``keep_early``: keep the
        writes saved for checkpoints not stored yet (an in-flight step's, as LangGraph's
        own savers do); events stored before it existed dropped them and still do."""
        heads = self.state.namespaces
        self.state.namespaces = {
            ns: msgspec.structs.replace(h, visible_from=h.version) for ns, h in heads.items()
        }
        keep = {ns_key(ns, h.checkpoint_id) for ns, h in heads.items()}
        self.state.index = {k: v for k, v in self.state.index.items() if k in keep}
        self.state.late_writes = {}
        if not keep_early:
            self.state.early = {}


@dataclass
class RunState(AgentState):
    threads: list[str] = field(default_factory=list)


class RunIndex(Agent):
    """Which threads hold checkpoints of one LangGraph run (for ``delete_for_runs``)."""

    if TYPE_CHECKING:
        ThreadTouched: ClassVar[type[Any]]
        state: RunState

    State = RunState

    @classmethod
    def start(cls, run_id: str) -> RunIndex:
        return start(cls, run_uuid(run_id), run_id)

    def touch(self, thread_id: str) -> None:
        if thread_id not in self.state.threads:
            self._thread_touched(thread_id=thread_id)

    @event("ThreadTouched")
    def _thread_touched(self, thread_id: str) -> None:
        self.state.threads = [*self.state.threads, thread_id]
