"""``SnaptailSaver``: a LangGraph checkpointer on a snaptail :class:`~snaptail.AgentStore`.

A thread is one aggregate (:mod:`snaptail.integrations.langgraph_thread`), a checkpoint
one event, a task's pending writes one event. A message-list channel (``messages``
with ``add_messages``) is stored as a delta: only messages that are new or changed since
the parent checkpoint, each body once per thread (a message already stored in the
parent's pending writes is referred to, not copied). Loading the newest checkpoint is
the store's snapshot + short tail plus the bodies of the messages the graph holds;
``list()`` pages lazily, newest first.

A message counts as unchanged when it is the object the saver last handed out (or was
given) with the same field values, or an equal one: reassigning a field of a message in
place is seen; changing a nested dict of one in place (``additional_kwargs[...] = ...``)
is not (return a new message with the same id, as ``add_messages`` expects). Time
travel to a checkpoint older than the thread's kept snapshots replays the thread's
events up to it (one load, then one forward pass per page of ``list()``).

Deletes and prunes are events: what they remove disappears from every read, and the
thread's log keeps the audit trail (its bytes are not reclaimed).

The async methods run the sync ones on a worker thread (``_offload``).

Install with ``pip install 'snaptail[langgraph]'``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar, cast
from uuid import UUID

import msgspec
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from snaptail.application.store import AgentStore
from snaptail.domain.replay import apply_events
from snaptail.errors import AgentNotFound, ConcurrencyError, ThreadConflict
from snaptail.integrations.langgraph_codec import (
    Body,
    BodyCache,
    Seen,
    ValueCodec,
    is_messages,
)
from snaptail.integrations.langgraph_thread import (
    EMPTY,
    INDEX_SIZE,
    MESSAGES,
    PARENT_IS_HEAD,
    VALUE,
    Channel,
    Head,
    MsgRef,
    RunIndex,
    Saved,
    ThreadAgent,
    WriteRow,
    Written,
    bodies_of,
    merge_writes,
    ns_key,
    resolve_refs,
    run_uuid,
    thread_uuid,
)
from snaptail.integrations.shared import sync_store_for
from snaptail.privacy.registry import register_cache

T = TypeVar("T")
_MISSING = object()
# The keys of a checkpoint stored in their own fields (the others go in ``extra``).
_CHECKPOINT_KEYS = frozenset(
    {"v", "id", "ts", "channel_values", "channel_versions", "versions_seen", "updated_channels"}
)
PAGE = 20  # checkpoints rebuilt together by one forward replay in list()

# In a put's configurable: fork the thread on purpose even in strict mode.
ALLOW_FORK = "snaptail_allow_fork"

__all__ = ["ALLOW_FORK", "SnaptailSaver", "ThreadConflict"]


def _metadata_value(metadata: dict[str, Any], key: str) -> Any:
    """``metadata[key]``; else, for a dotted key, the nested value it names (as
    ``SqliteSaver`` filters ``{"user.access-level": ...}``); else None."""
    if key in metadata or "." not in key:
        return metadata.get(key)
    value: Any = metadata
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass
class _View:
    """A namespace head's message lists as the graph holds them (see ``Seen``), to find
    what changed at the next checkpoint without re-serializing the list."""

    version: int
    lists: dict[str, Seen] = field(default_factory=dict)


class SnaptailSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer that stores threads in snaptail.

    ``store`` is an :class:`~snaptail.AgentStore` or a database URL (``sqlite:///FILE``,
    ``postgresql://...``): savers and sessions made with one URL share one store and its
    connections (:mod:`snaptail.integrations.shared`); :meth:`close` gives the saver's
    hold back. ``max_threads``
    bounds the loaded threads kept in memory (each holds its namespaces' newest
    checkpoints, with message lists as references), ``body_cache_bytes`` the message
    bodies kept in memory, ``max_views`` the threads whose message lists are kept
    decoded to find what changed at the next checkpoint without re-serializing them.
    ``compress`` stores large message bodies zlib-compressed when that pays.

    ``concurrent_runs`` says what two runs on one ``thread_id`` at once do. ``"fork"``
    (the default) is what LangGraph's own savers do: both runs succeed, each extends
    the checkpoint it read, so the thread forks there; both branches stay in the
    history and the newest checkpoint stored is the thread's state (one run's turn).
    ``"reject"`` (strict): a checkpoint must extend its namespace's newest one, so the
    run that writes second gets :class:`~snaptail.errors.ThreadConflict` and nothing
    of that checkpoint is saved (also across processes). A deliberate fork (time
    travel, ``update_state`` on an older checkpoint) then needs
    ``configurable["snaptail_allow_fork"] = True``.
    ``subjects(thread_id)`` gives the ids of the people a new thread is about: they
    are added before its first save, so its checkpoints are stored encrypted and
    ``store.forget`` of any of them erases it (README: Forgetting a person).
    """

    def __init__(
        self,
        store: AgentStore | str | None = None,
        *,
        serde: SerializerProtocol | None = None,
        max_threads: int = 64,
        body_cache_bytes: int = 64 * 1024 * 1024,
        max_views: int = 64,
        compress: bool = True,
        concurrent_runs: Literal["fork", "reject"] = "fork",
        subjects: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        if concurrent_runs not in ("fork", "reject"):
            raise ValueError(
                f"SnaptailSaver(concurrent_runs={concurrent_runs!r}): use 'fork' (LangGraph's"
                " behaviour: both runs succeed, the thread forks) or 'reject' (the second"
                " writer gets ThreadConflict)"
            )
        super().__init__(serde=serde)
        self.concurrent_runs = concurrent_runs
        self.store, self._lease = sync_store_for(self, store)
        self._threads: OrderedDict[UUID, ThreadAgent] = OrderedDict()
        self._max_threads = max_threads
        self._bodies = BodyCache(body_cache_bytes)
        self._compress = compress
        self._subjects = subjects
        self._views: OrderedDict[tuple[UUID, str], _View] = OrderedDict()
        self._max_views = max_views
        self._lock = threading.RLock()
        register_cache(self)  # store.forget evicts forgotten threads (snaptail.privacy)
        events = cast(Any, ThreadAgent)
        self._created_topic = self.store.mapper.topic_of(events.Created)
        self._body_topics = tuple(
            self.store.mapper.topic_of(e) for e in (events.CheckpointSaved, events.WritesSaved)
        )

    @property
    def _codec(self) -> ValueCodec:
        """The value codec on the current ``serde`` (``with_allowlist`` clones the saver
        with another serializer)."""
        codec = self.__dict__.get("_codec_cache")
        if codec is None or codec.serde is not self.serde:
            codec = self.__dict__["_codec_cache"] = ValueCodec(self.serde, compress=self._compress)
        return cast(ValueCodec, codec)

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Give back this saver's hold on the shared store of its URL (the last hold
        closes it); a store given explicitly stays open."""
        if self._lease is not None:
            self._lease.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def evict(self, agent_id: UUID) -> bool:
        """Drop a thread (and its message bodies and views) from this saver's caches."""
        with self._lock:
            found = self._threads.pop(agent_id, None) is not None
            for key in [k for k in self._views if k[0] == agent_id]:
                del self._views[key]
            self._bodies.evict(agent_id)
        return found

    # -- threads --------------------------------------------------------------------

    def _thread(self, thread_id: str, *, create: bool, fresh: bool = False) -> ThreadAgent | None:
        """The loaded thread (least recently used ones are dropped past max_threads).
        ``fresh``: reload it if another saver (process) stored events since (a write
        needs no check: a stale thread fails its save and the command is retried)."""
        agent_id = thread_uuid(thread_id)
        agent = self._threads.get(agent_id)
        if agent is not None and fresh:
            newest = self.store.event_count(agent_id)
            if newest > agent.version:
                del self._threads[agent_id]
                agent = None
        if agent is not None:
            self._threads.move_to_end(agent_id)
            return agent
        try:
            loaded = self.store.get(agent_id)
        except AgentNotFound:
            if not create:
                return None
            if self._subjects is not None:  # a new thread: its subjects before its first save
                subjects = self._subjects(thread_id)
                if subjects:  # (AgentForgotten if this thread was forgotten)
                    self.store.add_subject(agent_id, *subjects)
            return ThreadAgent.start(thread_id)
        if not isinstance(loaded, ThreadAgent):
            raise TypeError(
                f"agent {agent_id} is a {type(loaded).__qualname__}, not a LangGraph thread"
                f" (thread_id {thread_id!r})"
            )
        self._keep(loaded)
        return loaded

    def _keep(self, agent: ThreadAgent) -> None:
        self._threads[agent.id] = agent
        self._threads.move_to_end(agent.id)
        while len(self._threads) > self._max_threads:
            self._threads.popitem(last=False)

    def _run_index(self, run_id: str) -> RunIndex | None:
        try:
            found = self.store.get(run_uuid(run_id))
        except AgentNotFound:
            return None
        return found if isinstance(found, RunIndex) else None

    def _write(self, thread_id: str, command: Callable[[ThreadAgent], list[Any] | None]) -> None:
        """Apply ``command`` to the thread and save (with any other agents it returns),
        reloading and applying it again if another writer saved the thread first."""
        with self._lock:
            for wait in self.store.retry.conflict_waits():
                agent = self._thread(thread_id, create=True)
                assert agent is not None
                before = agent.version
                try:
                    others = command(agent)
                    if agent.version == before:
                        return
                    self.store.save(agent, *(others or []))
                    self._keep(agent)
                except ConcurrencyError:
                    self._threads.pop(agent.id, None)
                    if wait is None:
                        raise
                    time.sleep(wait)
                    continue
                except BaseException:
                    self._threads.pop(agent.id, None)
                    raise
                return

    # -- bodies ---------------------------------------------------------------------

    def _load_bodies(self, agent_id: UUID, refs: Sequence[MsgRef]) -> dict[int, list[Body]]:
        """The bodies of the events ``refs`` point into, by version (cache, then reads
        of the needed versions in runs)."""
        found: dict[int, list[Body]] = {}
        missing: list[int] = []
        for version in sorted({r.version for r in refs}):
            cached = self._bodies.get((agent_id, version))
            if cached is None:
                missing.append(version)
            else:
                found[version] = cached
        runs: list[list[int]] = []
        for version in missing:
            if runs and version - runs[-1][-1] <= 64:
                runs[-1].append(version)
            else:
                runs.append([version])
        wanted = set(missing)
        mapper = self.store.mapper
        plain = mapper.cipher is None and mapper.compressor is None
        plain = plain and mapper.payload_cipher is None  # sealed rows go through the mapper
        for run in runs:
            gt, lt = run[0] - 1, run[-1] + 1
            while True:  # one page of the run's events, only their bodies decoded
                page = self.store.read_rows(
                    agent_id, after=gt, before=lt, limit=500, types=self._body_topics
                )
                for stored in page:
                    version = stored.originator_version
                    if version not in wanted:
                        continue
                    if plain:
                        bodies = bodies_of(stored.state)
                    else:
                        event = mapper.to_domain_event(stored)
                        bodies = (getattr(event, "c", None) or event.w).bodies
                    found[version] = [(str(t), bytes(d)) for t, d in bodies]
                    self._bodies.put((agent_id, version), found[version])
                if len(page) < 500:
                    break
                gt = page[-1].originator_version
        return found

    def _view(self, agent_id: UUID, ns: str, head: Head, name: str) -> Seen:
        view = self._views.get((agent_id, ns))
        if view is not None and view.version == head.version and name in view.lists:
            self._views.move_to_end((agent_id, ns))
            return view.lists[name]
        refs = head.channels[name].refs
        seen = Seen(self._codec.messages(refs, self._load_bodies(agent_id, refs)))
        self._remember(agent_id, ns, head.version, {name: seen})
        return seen

    def _remember(self, agent_id: UUID, ns: str, version: int, lists: dict[str, Seen]) -> None:
        key = (agent_id, ns)
        view = self._views.get(key)
        if view is None or view.version != version:
            view = self._views[key] = _View(version)
        view.lists.update(lists)
        self._views.move_to_end(key)
        while len(self._views) > self._max_views:
            self._views.popitem(last=False)

    # -- writing --------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = str(configurable.get("checkpoint_ns", ""))
        parent_id = str(configurable.get("checkpoint_id") or "")
        values: dict[str, Any] = checkpoint["channel_values"]
        rest = {k: v for k, v in checkpoint.items() if k not in _CHECKPOINT_KEYS}
        extra_type, extra = self.serde.dumps_typed(rest) if rest else ("", b"")
        meta = get_checkpoint_metadata(config, metadata)
        mtype, mdata = self.serde.dumps_typed(meta)
        run_id = str(meta.get("run_id") or "")
        seen_now = checkpoint["versions_seen"]
        strict = self.concurrent_runs == "reject" and not configurable.get(ALLOW_FORK)
        views: dict[str, Seen] = {}
        saved: dict[str, Any] = {}

        def command(agent: ThreadAgent) -> list[Any]:
            views.clear()
            head = agent.state.namespaces.get(ns)
            extends = head is not None and bool(parent_id) and head.checkpoint_id == parent_id
            if (
                strict
                and head is not None
                and not extends
                and agent.visible(ns, head.version, head.run_id)
            ):
                raise ThreadConflict(thread_id, ns, parent_id, head.checkpoint_id)
            base = head if extends else self._head_of(agent, ns, parent_id)
            known = dict(base.bodies) if base is not None else {}
            bodies: list[Body] = []
            changed: dict[str, Channel] = {}
            for name, version in checkpoint["channel_versions"].items():
                prior = base.channels.get(name) if base is not None else None
                if name not in new_versions and prior is not None and prior.version == version:
                    if not extends:
                        changed[name] = prior
                    continue
                value = values.get(name, _MISSING)
                if value is _MISSING:
                    changed[name] = Channel(version, EMPTY)
                elif is_messages(value) and base is not None:
                    changed[name] = self._message_delta(
                        agent.id, ns, base, name, value, version, bodies, known, views, extends
                    )
                elif isinstance(value, BaseMessage):
                    vtype, vdata = self.serde.dumps_typed(value)
                    changed[name] = Channel(version, VALUE, vtype, vdata)
                else:
                    kind, vtype, vdata, refs, layout, _ = self._codec.encode(value, bodies, known)
                    changed[name] = Channel(version, kind, vtype, vdata, refs, layout)
            old_seen = base.seen if extends and base is not None else {}
            new_run = bool(run_id) and run_id not in agent.state.runs_seen
            names = list(checkpoint["channel_versions"])
            agent.save_checkpoint(
                Saved(
                    ns=ns,
                    checkpoint_id=checkpoint["id"],
                    parent_id=PARENT_IS_HEAD if extends else parent_id,
                    v=checkpoint["v"],
                    ts=checkpoint["ts"],
                    mtype=mtype,
                    mdata=mdata,
                    changed=changed,
                    seen={k: dict(v) for k, v in seen_now.items() if old_seen.get(k) != v},
                    names=None if extends and base and names == list(base.channels) else names,
                    unseen=[k for k in old_seen if k not in seen_now],
                    updated=checkpoint.get("updated_channels"),
                    run_id=run_id,
                    extra_type=extra_type,
                    extra=extra,
                    bodies=bodies,
                )
            )
            saved.update(version=agent.version, bodies=bodies, base=base.version if base else 0)
            if new_run:
                index = self._run_index(run_id) or RunIndex.start(run_id)
                index.touch(thread_id)
                return [index] if index.pending_events else []
            return []

        self._write(thread_id, command)
        with self._lock:
            agent_id = thread_uuid(thread_id)
            self._bodies.put((agent_id, saved["version"]), saved["bodies"])
            old = self._views.get((agent_id, ns))
            if old is not None and old.version == saved["base"]:
                views = {**old.lists, **views}
            self._remember(agent_id, ns, saved["version"], views)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def _message_delta(
        self,
        agent_id: UUID,
        ns: str,
        base: Head,
        name: str,
        messages: list[BaseMessage],
        version: int | float | str,
        bodies: list[Body],
        known: dict[str, MsgRef],
        views: dict[str, Seen],
        extends: bool,
    ) -> Channel:
        """The message list as refs: the unchanged prefix and unchanged messages (by id)
        point to their stored bodies, the others to new (or already stored) bodies."""
        prior = base.channels.get(name)
        old_refs = prior.refs if prior is not None and prior.kind == MESSAGES else []
        old = self._view(agent_id, ns, base, name) if old_refs else Seen([])
        keep, limit = 0, min(len(old), len(messages))
        while keep < limit and old.same(keep, messages[keep]):
            keep += 1
        by_id = {old.objs[i].id: i for i in range(keep, len(old)) if old.objs[i].id is not None}
        refs: list[MsgRef] = []
        for message in messages[keep:]:
            at = by_id.get(message.id) if message.id is not None else None
            if at is not None and old.same(at, message):
                refs.append(old_refs[at])
            else:
                refs.append(self._codec.ref(message, bodies, known))
        vals = [
            old.vals[i] if m is old.objs[i] else tuple(m.__dict__.values())
            for i, m in enumerate(messages[:keep])
        ]
        vals += [tuple(m.__dict__.values()) for m in messages[keep:]]
        views[name] = Seen(list(messages), vals)
        if extends:
            return Channel(version, MESSAGES, refs=refs, keep=keep)
        return Channel(version, MESSAGES, refs=list(old_refs[:keep]) + refs)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = str(configurable.get("checkpoint_ns", ""))
        checkpoint_id = str(configurable["checkpoint_id"])
        saved: dict[str, Any] = {}

        def command(agent: ThreadAgent) -> None:
            head = agent.state.namespaces.get(ns)
            early = agent.state.early.get(ns_key(ns, checkpoint_id))
            # any body stored in the thread may be referred to: the newest checkpoint's
            # too (with "async" durability it may be saved before these writes)
            known = dict(head.bodies) if head is not None else {}
            if head is not None and head.checkpoint_id == checkpoint_id:
                existing = head.writes
            elif early is not None:
                existing = early.rows
                known.update(early.bodies)
            else:
                found = self._closed_head(agent, ns, checkpoint_id)
                existing = found[1] if found is not None else []
                known.update(found[0].bodies if found is not None else {})
            keys = {(r.task_id, r.idx) for r in existing}
            bodies: list[Body] = []
            rows = []
            for idx, (channel, value) in enumerate(writes):
                at = WRITES_IDX_MAP.get(channel, idx)
                if at >= 0 and (task_id, at) in keys:
                    continue
                encoded = self._codec.encode(value, bodies, known)
                kind, vtype, data, refs, layout, single = encoded
                rows.append(
                    WriteRow(
                        task_id, channel, at, task_path, kind, vtype, data, refs, layout, single
                    )
                )
            if rows:
                agent.save_writes(Written(ns, checkpoint_id, rows, bodies))
                saved.update(version=agent.version, bodies=bodies)

        self._write(thread_id, command)
        if saved:
            with self._lock:
                self._bodies.put((thread_uuid(thread_id), saved["version"]), saved["bodies"])

    # -- reading --------------------------------------------------------------------

    def _find_version(self, agent: ThreadAgent, ns: str, checkpoint_id: str) -> int | None:
        index = agent.state.index
        version = index.get(ns_key(ns, checkpoint_id))
        if version is not None:
            return version
        if len(index) < INDEX_SIZE or checkpoint_id > next(reversed(index)).split("\x00")[-1]:
            return None  # never stored (ids grow with time; the index has the newest)
        for event in self.store.history(
            agent.id,
            reverse=True,
            types=[cast(Any, ThreadAgent).CheckpointSaved],
            after=agent.state.cleared_at,
            page_size=200,
        ):
            if event.c.ns == ns and event.c.checkpoint_id == checkpoint_id:
                return int(event.originator_version)
        return None

    def _head_of(self, agent: ThreadAgent, ns: str, checkpoint_id: str) -> Head | None:
        """The stored checkpoint ``checkpoint_id`` of ``ns`` (None if unknown)."""
        if not checkpoint_id:
            return None
        head = agent.state.namespaces.get(ns)
        if head is not None and head.checkpoint_id == checkpoint_id:
            return head
        found = self._closed_head(agent, ns, checkpoint_id)
        return found[0] if found is not None else None

    def _closed_head(
        self, agent: ThreadAgent, ns: str, checkpoint_id: str
    ) -> tuple[Head, list[WriteRow]] | None:
        version = self._find_version(agent, ns, checkpoint_id)
        if version is None:
            return None
        found = self._heads_at(agent, [(ns, checkpoint_id, version)])
        return found.get((ns, checkpoint_id))

    def _heads_at(
        self, agent: ThreadAgent, items: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str], tuple[Head, list[WriteRow]]]:
        """Each checkpoint (ns, id, version) as it was when the next checkpoint of its
        namespace replaced it, with all its pending writes: one load at the oldest
        version, then one forward replay of the events after it."""
        result: dict[tuple[str, str], tuple[Head, list[WriteRow]]] = {}
        waiting: dict[tuple[str, str], int] = {}
        for ns, checkpoint_id, version in items:
            head = agent.state.namespaces.get(ns)
            if head is not None and head.checkpoint_id == checkpoint_id:
                result[(ns, checkpoint_id)] = (head, head.writes)
            else:
                waiting[(ns, checkpoint_id)] = version
        if waiting:
            first = min(waiting.values())
            replay = cast(ThreadAgent, self.store.get(agent.id, version=first))
            namespaces = {ns for ns, _ in waiting}
            for event in self.store.history(agent.id, after=first):
                before = {ns: replay.state.namespaces.get(ns) for ns in namespaces}
                replay = apply_events(replay, [event])
                for ns, old in before.items():
                    key = (ns, old.checkpoint_id) if old is not None else None
                    if key is None or key not in waiting or old is None:
                        continue
                    now = replay.state.namespaces.get(ns)
                    if now is None or now.version != old.version:
                        result[key] = (old, old.writes)
                        del waiting[key]
                        namespaces = {n for n, _ in waiting}
                if not waiting:
                    break
            for key in list(waiting):
                head = replay.state.namespaces.get(key[0])
                if head is not None and head.checkpoint_id == key[1]:
                    result[key] = (head, head.writes)
        for (ns, checkpoint_id), (head, rows) in list(result.items()):
            where = ns_key(ns, checkpoint_id)
            early = agent.state.early.get(where)
            if early is not None and head is not agent.state.namespaces.get(ns):
                rows = merge_writes(rows, early.rows)
                result[(ns, checkpoint_id)] = (head, rows)
            late = agent.state.late_writes.get(where)
            if late:
                result[(ns, checkpoint_id)] = (head, self._late_rows(agent.id, late, rows))
        return result

    def _late_rows(
        self, agent_id: UUID, versions: Sequence[int], rows: list[WriteRow]
    ) -> list[WriteRow]:
        for version in versions:
            for event in self.store.history(agent_id, after=version - 1, before=version + 1):
                resolved = [
                    msgspec.structs.replace(r, refs=resolve_refs(r.refs, version))
                    for r in event.w.rows
                ]
                rows = merge_writes(rows, resolved)
        return rows

    def _tuple(
        self, agent: ThreadAgent, ns: str, head: Head, rows: Sequence[WriteRow]
    ) -> CheckpointTuple:
        """The checkpoint tuple of ``head`` with pending writes ``rows``. The message
        lists of the namespace's current head are copies of its private view."""
        current = agent.state.namespaces.get(ns) is head
        values: dict[str, Any] = {}
        refs: list[MsgRef] = [r for row in rows for r in row.refs]
        for name, channel in head.channels.items():
            if channel.kind == MESSAGES and current:
                values[name] = self._view(agent.id, ns, head, name).handout()
            elif channel.kind != EMPTY:
                refs.extend(channel.refs)
        bodies = self._load_bodies(agent.id, refs) if refs else {}
        codec = self._codec
        for name, c in head.channels.items():
            if c.kind != EMPTY and name not in values:
                values[name] = codec.decode(
                    c.kind, c.vtype, c.data, c.refs, c.layout, False, bodies
                )
        checkpoint: dict[str, Any] = {
            "v": head.v,
            "id": head.checkpoint_id,
            "ts": head.ts,
            "channel_values": values,
            "channel_versions": {name: c.version for name, c in head.channels.items()},
            "versions_seen": {k: dict(v) for k, v in head.seen.items()},
            "updated_channels": None if head.updated is None else list(head.updated),
        }
        if head.extra:
            checkpoint.update(self.serde.loads_typed((head.extra_type, head.extra)))
        ordered = sorted(rows, key=lambda r: writes_sort_key(r.task_path, r.task_id, r.idx))
        pending = [
            (
                r.task_id,
                r.channel,
                codec.decode(r.kind, r.vtype, r.data, r.refs, r.layout, r.single, bodies),
            )
            for r in ordered
        ]
        thread_id = agent.thread_id
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": head.checkpoint_id,
                }
            },
            checkpoint=cast(Checkpoint, checkpoint),
            metadata=cast(CheckpointMetadata, self.serde.loads_typed((head.mtype, head.mdata))),
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": ns,
                        "checkpoint_id": head.parent_id,
                    }
                }
                if head.parent_id
                else None
            ),
            pending_writes=pending,
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        ns = str(configurable.get("checkpoint_ns", ""))
        checkpoint_id = configurable.get("checkpoint_id")
        with self._lock:
            agent = self._thread(str(configurable["thread_id"]), create=False, fresh=True)
            if agent is None:
                return None
            head = agent.state.namespaces.get(ns)
            if checkpoint_id:
                found = self._closed_head(agent, ns, str(checkpoint_id))
                if found is None or not agent.visible(ns, found[0].version, found[0].run_id):
                    return None
                return self._tuple(agent, ns, found[0], found[1])
            if head is not None and agent.visible(ns, head.version, head.run_id):
                return self._tuple(agent, ns, head, head.writes)
        return next(self._list_thread(agent, ns, None, None, None, 1), None)

    def _all_threads(self) -> Iterator[ThreadAgent]:
        for agent_id in self.store.agent_ids():
            first = self.store.read_rows(agent_id, limit=1)
            if first and first[0].topic == self._created_topic:
                with self._lock:
                    agent = self._thread(self.store.get(agent_id).name, create=False, fresh=True)
                if agent is not None:
                    yield agent

    def _list_thread(
        self,
        agent: ThreadAgent,
        ns: str | None,
        checkpoint_id: str | None,
        before_id: str | None,
        filter: dict[str, Any] | None,
        limit: int | None,
    ) -> Iterator[CheckpointTuple]:
        lt = None
        if before_id:
            with self._lock:
                lt = agent.state.index.get(ns_key(ns or "", before_id))
        events = self.store.history(
            agent.id,
            reverse=True,
            types=[cast(Any, ThreadAgent).CheckpointSaved],
            after=agent.state.cleared_at,
            before=lt,
            page_size=PAGE * 2,
        )
        seen: set[tuple[str, str]] = set()
        batch: list[tuple[str, str, int]] = []
        produced = 0
        for event in events:
            c = event.c
            key = (c.ns, c.checkpoint_id)
            if key in seen:
                continue
            seen.add(key)
            if ns is not None and c.ns != ns:
                continue
            if checkpoint_id and c.checkpoint_id != checkpoint_id:
                continue
            if before_id and c.checkpoint_id >= before_id:
                continue
            if not agent.visible(c.ns, event.originator_version, c.run_id):
                continue
            if filter:
                meta = self.serde.loads_typed((c.mtype, c.mdata))
                if not all(_metadata_value(meta, k) == v for k, v in filter.items()):
                    continue
            batch.append((c.ns, c.checkpoint_id, event.originator_version))
            want = PAGE if limit is None else min(PAGE, limit - produced)
            if len(batch) >= want:
                yield from self._page(agent, batch)
                produced += len(batch)
                batch = []
                if limit is not None and produced >= limit:
                    return
        yield from self._page(agent, batch)

    def _page(
        self, agent: ThreadAgent, batch: Sequence[tuple[str, str, int]]
    ) -> list[CheckpointTuple]:
        if not batch:
            return []
        with self._lock:
            heads = self._heads_at(agent, batch)
            return [
                self._tuple(agent, ns, *heads[(ns, cid)])
                for ns, cid, _ in batch
                if (ns, cid) in heads
            ]

    # -- deleting and copying -------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        def command(agent: ThreadAgent) -> None:
            if agent.state.namespaces or agent.state.late_writes or agent.state.early:
                agent.clear()

        self._write(str(thread_id), command)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in {"keep_latest", "delete"}:
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue

            def command(agent: ThreadAgent) -> None:
                if agent.state.namespaces:
                    agent.prune(keep_early=True)

            self._write(str(thread_id), command)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        by_thread: dict[str, list[str]] = {}
        for run_id in run_ids:
            index = self._run_index(str(run_id))
            for thread_id in index.state.threads if index is not None else []:
                by_thread.setdefault(thread_id, []).append(str(run_id))
        for thread_id, runs in by_thread.items():

            def command(agent: ThreadAgent, runs: list[str] = runs) -> None:
                fresh = [r for r in runs if r not in agent.state.deleted_runs]
                if fresh:
                    agent.delete_runs(run_ids=fresh)

            self._write(thread_id, command)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every event of the source thread onto the target, in one transaction."""
        with self._lock:
            source = self._thread(str(source_thread_id), create=False)
        if source is None:
            return
        events = cast(Any, ThreadAgent)

        def command(target: ThreadAgent) -> list[Any]:
            moved: dict[int, int] = {}
            runs: set[str] = set()

            def remap(refs: Sequence[MsgRef]) -> list[MsgRef]:
                return [MsgRef(moved[r.version], r.slot, r.id) if r.version else r for r in refs]

            for event in self.store.history(source.id):
                if isinstance(event, events.CheckpointSaved):
                    c = event.c
                    changed = {
                        k: msgspec.structs.replace(ch, refs=remap(ch.refs))
                        for k, ch in c.changed.items()
                    }
                    target.save_checkpoint(msgspec.structs.replace(c, changed=changed))
                    if c.run_id:
                        runs.add(c.run_id)
                elif isinstance(event, events.WritesSaved):
                    w = event.w
                    rows = [msgspec.structs.replace(r, refs=remap(r.refs)) for r in w.rows]
                    target.save_writes(msgspec.structs.replace(w, rows=rows))
                elif isinstance(event, events.RunsDeleted):
                    target.delete_runs(run_ids=event.run_ids)
                elif isinstance(event, events.ThreadCleared):
                    target.clear()
                elif isinstance(event, events.ThreadPruned):
                    target.prune(keep_early=getattr(event, "keep_early", False))
                else:
                    continue
                moved[event.originator_version] = target.version
            indexes = []
            for run_id in sorted(runs):
                index = self._run_index(run_id) or RunIndex.start(run_id)
                index.touch(target.thread_id)
                if index.pending_events:
                    indexes.append(index)
            return indexes

        self._write(str(target_thread_id), command)

    # -- async: the same operations, off the event loop -----------------------------

    async def _offload(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._offload(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items = self.list(config, filter=filter, before=before, limit=limit)
        while True:
            item = await self._offload(next, items, None)
            if item is None:
                return
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._offload(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._offload(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._offload(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._offload(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._offload(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._offload(self.prune, thread_ids, strategy=strategy)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        before_id = before["configurable"].get("checkpoint_id") if before else None
        if config is not None:
            configurable = config["configurable"]
            with self._lock:
                agent = self._thread(str(configurable["thread_id"]), create=False, fresh=True)
            threads: Iterator[ThreadAgent] = iter([agent] if agent is not None else [])
            ns = configurable.get("checkpoint_ns")
            checkpoint_id = configurable.get("checkpoint_id")
        else:
            threads, ns, checkpoint_id = self._all_threads(), None, None
        remaining = limit
        for agent in threads:
            if remaining is not None and remaining <= 0:
                return
            for item in self._list_thread(agent, ns, checkpoint_id, before_id, filter, remaining):
                yield item
                if remaining is not None:
                    remaining -= 1
