"""Google ADK sessions stored in snaptail: ``SnaptailSessionService``.

A ``BaseSessionService`` of the installed ``google-adk`` on an
:class:`~snaptail.AsyncAgentStore` (SQLite or PostgreSQL). The aggregates are in
:mod:`snaptail.integrations.adk_model`: one per session (its ADK events, whole, and its
session state), one per app (``app:`` state), one per user of an app (``user:`` state)
and one directory per user of an app (the user's live sessions, what ``list_sessions``
answers from). An ``append_event`` saves the session's new event, its directory entry
and the scopes its ``state_delta`` touches in one transaction.

Reads are bounded: a session's state comes from snapshot + tail;
``get_session(config=GetSessionConfig(num_recent_events=k))`` reads the newest k events
only (from the loaded session's recent-event cache, then backwards through the log),
``after_timestamp`` reads backwards until the first older event. Without a config ADK
wants every event; ``unconfigured_recent_events=n`` bounds that (see the class).

This module imports ADK when it is imported: ``import snaptail`` does not import it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gc
import heapq
import logging
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager
from enum import Enum
from itertools import islice
from types import MemberDescriptorType
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4
from weakref import WeakValueDictionary

import msgspec
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from snaptail.application.async_store import AsyncAgentStore
from snaptail.application.retry import RetryPolicy
from snaptail.domain.agent import Agent
from snaptail.errors import ConcurrencyError, InvalidArgument, SaveOutcomeUnknown
from snaptail.integrations.adk_model import (
    AdkDirectory,
    AdkScope,
    AdkSession,
    Listed,
    app_uuid,
    directory_uuid,
    session_uuid,
    user_uuid,
)
from snaptail.integrations.aggregates import load_fresh, newest_events, of_type
from snaptail.integrations.shared import async_store_for, call_on_home
from snaptail.privacy.registry import register_cache

__all__ = ["SessionPage", "SnaptailSessionService"]

logger = logging.getLogger("snaptail.adk")
A = TypeVar("A", bound=Agent)
T = TypeVar("T")

STALE_MESSAGE = (
    "The session has been modified in storage since it was loaded. "
    "Please reload the session before appending more events."
)


class SessionPage:
    """One page of :meth:`SnaptailSessionService.list_sessions_page`: ``sessions``
    (without events) and ``next_page_token`` (None on the last page)."""

    def __init__(self, sessions: list[Session], next_page_token: str | None) -> None:
        self.sessions = sessions
        self.next_page_token = next_page_token


def _split(delta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(app, user, session) parts of a state delta, prefixes removed; ``temp:`` dropped;
    values made JSON-safe as ADK's database services store them."""
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    session: dict[str, Any] = {}
    for key, value in delta.items():
        if key.startswith(State.APP_PREFIX):
            app[key.removeprefix(State.APP_PREFIX)] = value
        elif key.startswith(State.USER_PREFIX):
            user[key.removeprefix(State.USER_PREFIX)] = value
        elif not key.startswith(State.TEMP_PREFIX):
            session[key] = value
    safe = cast(dict[str, dict[str, Any]], to_jsonable_python({"a": app, "u": user, "s": session}))
    return safe["a"], safe["u"], safe["s"]


_json = msgspec.json.Encoder()


def _copy(values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of JSON-safe state (what is stored is JSON-safe), for the caller."""
    return cast(dict[str, Any], msgspec.json.decode(_json.encode(values)))


def _prefixed(app: AdkScope | None, user: AdkScope | None) -> dict[str, Any]:
    """``app:`` and ``user:`` state with their prefixes, as merged into a session."""
    out: dict[str, Any] = {}
    if app is not None:
        out.update((State.APP_PREFIX + k, v) for k, v in app.state.values.items())
    if user is not None:
        out.update((State.USER_PREFIX + k, v) for k, v in user.state.values.items())
    return out


def _merged(values: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """A session's state as ADK returns it: its own state, then ``shared`` (a fresh copy
    of both, which the caller may change). Values that are all strings, numbers, bools
    or None (most state) need no deeper copy than the dict: ~10x cheaper than the JSON
    round trip that nested values get (at 10,000 listed sessions, ~8 of list_sessions'
    ~30 ms)."""
    merged = {**values, **shared} if shared else values
    for value in merged.values():
        if type(value) not in _ATOMIC:
            return _copy(merged)
    return merged.copy() if merged is values else merged


def _marker(session: AdkSession) -> str:
    return f"{session.id}:{session.version}"


_SESSION_FIELDS = frozenset(Session.model_fields)
# pydantic's slots on every model, set through their descriptors (what
# ``object.__setattr__`` would look up each time).
_SLOTS = [
    BaseModel.__dict__.get(name)
    for name in ("__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
]
# Sessions are built without pydantic's validation while ADK's Session is what this
# module was written against (these fields, this one private attribute, pydantic's
# slots); otherwise through its constructor.
_SLOTS_FOUND = all(isinstance(slot, MemberDescriptorType) for slot in _SLOTS)
_BUILD_DIRECTLY = (
    {"id", "app_name", "user_id", "state", "events", "last_update_time"} == _SESSION_FIELDS
    and set(Session.__private_attributes__) == {"_storage_update_marker"}
    and _SLOTS_FOUND
)
_set = object.__setattr__
_set_fields_set, _set_extra, _set_private = (
    cast(Callable[[BaseModel, Any], None], getattr(slot, "__set__", None)) for slot in _SLOTS
)
# Every built Session shares this set of its field names as pydantic's fields-set (all
# are set): pydantic only ever adds names to it (on assignment), which leaves it as it
# is, and a set per session was one more container for the cyclic collector to track.
_ALL_FIELDS_SET = set(_SESSION_FIELDS)


def _session(
    session_id: str,
    app_name: str,
    user_id: str,
    state: dict[str, Any],
    events: list[Event],
    last_update_time: float,
    marker: str | None,
) -> Session:
    """The ``Session`` that ``Session(id=..., ...)`` makes of these values, and the
    stored-version ``marker``. Built without validation: every value comes from the
    service's typed read model (strings, a fresh JSON-safe dict, ``Event`` objects, a
    float), so validation would only copy them, and at 10,000 sessions it was most of
    ``list_sessions``'s time (tests compare the objects with validated ones)."""
    if not _BUILD_DIRECTLY:  # pragma: no cover - another ADK version's Session
        built = Session(
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state=state,
            events=events,
            last_update_time=last_update_time,
        )
        built._storage_update_marker = marker
        return built
    session = Session.__new__(Session)
    _set(
        session,
        "__dict__",
        {
            "id": session_id,
            "app_name": app_name,
            "user_id": user_id,
            "state": state,
            "events": events,
            "last_update_time": float(last_update_time),
        },
    )
    _set_fields_set(session, _ALL_FIELDS_SET)
    _set_extra(session, None)
    _set_private(session, {"_storage_update_marker": marker})
    return session


_ATOMIC = frozenset({type(None), bool, int, float, str, bytes})
# Models copied field by field: pydantic's own deep copy and ADK's faster one (which
# ADK's Event sets as its ``__deepcopy__``) copy them so; other classes' own copiers
# are left to ``copy.deepcopy``.
_MODEL_DEEPCOPIES = frozenset({BaseModel.__deepcopy__, Event.__deepcopy__})


def _copier(value: Any) -> Callable[[], Any] | None:
    """A function that returns a deep copy of ``value``, as ``copy.deepcopy`` (and
    pydantic's ``model_copy(deep=True)``) makes it; None if ``value`` is immutable
    and is shared as it is.

    For a value that is never changed afterwards and in which no object appears twice
    or contains itself (an event decoded from JSON and kept unseen): which parts are
    mutable is worked out once, here, so each copy skips the immutable fields (most
    of an event's ~30 are None) and keeps no memo. About 4x cheaper than ADK's own
    copier on a text event."""
    cls = type(value)
    if cls in _ATOMIC or isinstance(value, Enum):
        return None
    if cls is list:
        items = [(item, _copier(item)) for item in value]
        if all(plan is None for _, plan in items):
            return cast(Callable[[], Any], value.copy)
        return lambda: [item if plan is None else plan() for item, plan in items]
    if cls is dict and all(type(key) in _ATOMIC for key in value):
        entries = [(key, item, _copier(item)) for key, item in value.items()]
        if all(plan is None for _, _, plan in entries):
            return cast(Callable[[], Any], value.copy)
        return lambda: {key: item if plan is None else plan() for key, item, plan in entries}
    if cls is set and all(type(item) in _ATOMIC for item in value):
        return cast(Callable[[], Any], value.copy)
    if (
        _SLOTS_FOUND
        and isinstance(value, BaseModel)
        and getattr(cls, "__deepcopy__", None) in _MODEL_DEEPCOPIES
    ):
        return _model_copier(value)
    return lambda: copy.deepcopy(value)


def _model_copier(model: BaseModel) -> Callable[[], Any]:
    """:func:`_copier` of a pydantic model: a new instance with a copy of its fields
    (the mutable ones copied in turn), its fields-set, extra and private values."""
    cls = type(model)
    fields = model.__dict__
    nested = [(name, plan) for name, item in fields.items() if (plan := _copier(item)) is not None]
    fields_set = model.__pydantic_fields_set__
    extra = model.__pydantic_extra__
    extra_plan = None if extra is None else _copier(extra)
    private = getattr(model, "__pydantic_private__", None)
    if private is not None:
        private = {k: v for k, v in private.items() if v is not PydanticUndefined}
    private_plan = None if private is None else _copier(private)
    new = cls.__new__

    def copy_model() -> Any:
        clone = new(cls)
        copied = fields.copy()
        for name, plan in nested:
            copied[name] = plan()
        _set(clone, "__dict__", copied)
        _set_fields_set(clone, fields_set.copy())
        _set_extra(clone, extra if extra_plan is None else extra_plan())
        _set_private(clone, private if private_plan is None else private_plan())
        return clone

    return copy_model


def _keyed(
    user_id: str, listed: dict[str, Listed], session_ids: Iterable[str]
) -> Iterator[tuple[float, str, str, Listed]]:
    """The user's listed sessions of ``session_ids`` (in the directory's order), each
    with its listing key (update time, user id, session id) in front."""
    for session_id in session_ids:
        entry = listed[session_id]
        yield entry.time, user_id, session_id, entry


def _listed_after(
    user_id: str, listed: dict[str, Listed], after: tuple[float, str, str]
) -> list[str]:
    """The user's listed session ids whose listing key comes after ``after`` (the
    directory is in key order: one bisect, then a slice)."""
    ids = list(listed)
    return ids[bisect_right(ids, after, key=lambda sid: (listed[sid].time, user_id, sid)) :]


def _page_token(when: float, user_id: str, session_id: str) -> str:
    """The page token after the session with this listing key: the next page is the
    sessions listed after it, so a session updated between two pages moves to its new
    place (and may be listed again there), and none is skipped."""
    return base64.urlsafe_b64encode(msgspec.json.encode([when, user_id, session_id])).decode()


def _page_after(token: str) -> tuple[float, str, str]:
    try:
        when, user_id, session_id = msgspec.json.decode(
            base64.urlsafe_b64decode(token.encode("ascii")), type=tuple[float, str, str]
        )
    except (ValueError, TypeError, msgspec.DecodeError) as error:
        raise InvalidArgument(
            "page_token",
            f"SnaptailSessionService.list_sessions_page: {token!r} is not a page token"
            " this service gave (a previous page's next_page_token)",
        ) from error
    return when, user_id, session_id


@contextmanager
def _collector_paused() -> Iterator[None]:
    """CPython's automatic cyclic collection held off while many ``Session`` objects
    are built (no await inside, no cycle made): each object counts toward the next
    collection, and in a process that imports ADK a full collection walks pydantic's
    validators and takes ~100 ms, so building 10,000 sessions set one off in most
    calls. Paused, the objects are counted at once and the collector runs a single
    young-generation pass after the build instead of ~70. Left disabled if it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Held:
    """The aggregates one side of the service loaded (the newest ``size``), and the ids
    it found missing. Each operation holds a lock: a shared SQLite store's reads run on
    their callers' threads beside the writes on the home loop's (see
    :meth:`SnaptailSessionService._read`), each side with a ``_Held`` of its own."""

    __slots__ = ("absent", "agents", "lock")

    def __init__(self) -> None:
        self.agents: OrderedDict[UUID, Agent] = OrderedDict()
        self.absent: set[UUID] = set()  # found missing (one index read to check again)
        self.lock = threading.Lock()

    def get(self, agent_id: UUID) -> Agent | None:
        with self.lock:
            return self.agents.get(agent_id)

    def missing(self, agent_id: UUID) -> bool:
        with self.lock:
            return agent_id in self.absent

    def current(self, agent_ids: Sequence[UUID]) -> dict[UUID, Agent | None]:
        """What is held of ``agent_ids`` (an agent, or None if found missing)."""
        out: dict[UUID, Agent | None] = {}
        with self.lock:
            for agent_id in agent_ids:
                held = self.agents.get(agent_id)
                if held is not None:
                    out[agent_id] = held
                elif agent_id in self.absent:
                    out[agent_id] = None
        return out

    def note(self, agent_id: UUID, loaded: Agent | None, size: int) -> None:
        """Remember what a load found: the aggregate, or that it is missing."""
        with self.lock:
            self.agents.pop(agent_id, None)
            if loaded is not None:
                self.absent.discard(agent_id)
                self._keep(loaded, size)
            else:
                if len(self.absent) >= size:
                    self.absent.clear()
                self.absent.add(agent_id)

    def keep(self, agents: Sequence[Agent], size: int) -> None:
        """Remember saved or loaded aggregates (the newest ``size``)."""
        with self.lock:
            for agent in agents:
                self._keep(agent, size)

    def _keep(self, agent: Agent, size: int) -> None:
        self.agents.pop(agent.id, None)
        self.agents[agent.id] = agent
        while len(self.agents) > size:
            self.agents.popitem(last=False)

    def drop(self, agent_id: UUID) -> bool:
        """Forget the aggregate (and that it was missing); whether it was held."""
        with self.lock:
            self.absent.discard(agent_id)
            return self.agents.pop(agent_id, None) is not None


class SnaptailSessionService(BaseSessionService):
    """An ADK session service stored in snaptail (SQLite or PostgreSQL).

    ``store`` is a database URL (None: the default one) or an
    :class:`~snaptail.AsyncAgentStore`. Services (and Agents SDK sessions, LangGraph
    savers) made with the same URL share one store and its connections
    (:mod:`snaptail.integrations.shared`), whichever thread or event loop calls them
    (ADK calls on its caller's loop; the shared store's work runs on its home loop);
    :meth:`close` (or garbage collection) gives the service's hold back, the last
    one closes the store. An explicit store is used as it is, on the caller's event
    loop, and left open.

    Retries: a write that lost a race on an aggregate shared by sessions (the app's
    or user's state, the user's session directory) is redone on fresh state as the
    store's :class:`~snaptail.RetryPolicy` says (``conflicts``, ``conflict_backoff``);
    a save whose outcome is unknown (:class:`~snaptail.SaveOutcomeUnknown`) is
    resolved by its save id with the same policy before anything is written again,
    so an event is never appended twice.

    ``unconfigured_recent_events``: ADK's ``Runner`` calls ``get_session`` without a
    config on every turn unless ``RunConfig.get_session_config`` is set, and ADK then
    expects every event of the session. Left at None, that is what this service returns
    (read page by page after snapshot + tail). Set to ``n``, a config-less
    ``get_session`` returns the newest ``n`` events, and if an older ADK compaction
    event exists, the newest one before them too (its summary stands for what it
    covered), so the model still sees the summary. Trade-off: the model sees only
    what is returned, so events older than that (and not summarised by a compaction)
    drop out of its context; a function call cut off from its response is not
    restored. Every event stays in the store: :meth:`history` reads them all.

    ``cached_sessions``: how many loaded aggregates (sessions, users, apps) the service
    keeps to reuse while nobody else writes them (each reuse costs one index read).
    ``cached_events``: how many decoded ADK events (the newest ones read by bounded
    ``get_session`` calls) it keeps; each call returns copies of them.

    ``subjects(app_name, user_id)`` gives the ids of the people a user's data is
    about (usually the user): they become data subjects (README "Forgetting a
    person") of each new session of that user, of the user's ``user:`` state and of
    the user's session directory, before their first save. ``store.forget`` of one
    of them then erases all three: reads find no session and no user state, writes
    raise ``AgentForgotten``. The app's ``app:`` state and its list of user ids are
    shared by every user and have no subject: give ADK pseudonymous user ids.

    Stale sessions: a ``Session`` returned by this service carries the stored version
    it was read at; appending to it after another writer appended raises ADK's
    ``StaleSessionError`` and stores nothing. Appends through one ``Session`` object
    (as ADK's parallel branches do) run one at a time and never conflict.
    """

    def __init__(
        self,
        store: AsyncAgentStore | str | None = None,
        *,
        unconfigured_recent_events: int | None = None,
        cached_sessions: int = 1024,
        cached_events: int = 4096,
        subjects: Callable[[str, str], Sequence[str]] | None = None,
    ) -> None:
        if unconfigured_recent_events is not None and (
            not isinstance(unconfigured_recent_events, int) or unconfigured_recent_events < 0
        ):
            raise InvalidArgument(
                "unconfigured_recent_events",
                f"SnaptailSessionService: got {unconfigured_recent_events!r}; give None"
                " (every event, ADK's default) or an int >= 0",
            )
        self.store, self._lease = async_store_for(self, store)
        self.unconfigured_recent_events = unconfigured_recent_events
        self.cached_sessions = cached_sessions
        self.cached_events = cached_events
        self._subjects = subjects
        # What the writes (and the reads that run where they do) loaded: the writes
        # change these aggregates in place before saving them.
        self._held = _Held()
        # What the reads loaded (see _read): never changed, only read.
        self._read_held = _Held()
        # Decoded events kept with their copier (see _copier); never handed out.
        self._decoded: OrderedDict[tuple[UUID, int], Callable[[], Any]] = OrderedDict()
        self._decoded_lock = threading.Lock()
        self._locks: WeakValueDictionary[UUID, asyncio.Lock] = WeakValueDictionary()
        register_cache(self)  # store.forget drops forgotten aggregates (snaptail.privacy)

    def evict(self, agent_id: UUID) -> bool:
        """Drop a loaded aggregate and its decoded events (its subject was forgotten)."""
        with self._decoded_lock:
            for key in [key for key in self._decoded if key[0] == agent_id]:
                del self._decoded[key]
        dropped = self._read_held.drop(agent_id)
        return self._held.drop(agent_id) or dropped

    @property
    def retry(self) -> RetryPolicy:
        """The store's retry policy, which this service's writes follow."""
        return self.store.retry

    async def close(self) -> None:
        """Give back this service's hold on the shared store (the last one closes it).
        A service given an explicit store leaves it open."""
        if self._lease is not None:
            self._lease.release()

    async def _run(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run one operation where the store lives: a shared store's home loop, or
        the caller's loop for an explicit store."""
        if self._lease is not None:
            return await call_on_home(operation)
        return await operation

    async def _read(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run one read. Reads load into a cache of their own (``_read_held``: only
        read, never changed), apart from the writes' (which change their aggregates
        in place before saving them, so a read beside a write could see a change not
        yet saved, or half of one). On a shared store that is open on SQLite the read
        runs on the caller's loop, not the home loop: the store's calls run on its own
        threads whichever loop awaits them (``AsyncAgentStore.any_loop``), so the two
        thread hand-offs to the home loop and back are skipped. A read writes nothing
        (but what a load may repair, which the store finishes even if cancelled).
        Writes, and every call on PostgreSQL (whose connections belong to the home
        loop), stay on the home loop."""
        if self._lease is not None and self.store.any_loop:
            return await operation
        return await self._run(operation)

    async def __aenter__(self) -> SnaptailSessionService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- loading ----------------------------------------------------------------------

    async def _load(self, agent_id: UUID, cls: type[A], held: _Held | None = None) -> A | None:
        held = held or self._held
        cached = held.get(agent_id)
        if (
            cached is None
            and held.missing(agent_id)
            and await self.store.event_count(agent_id) == 0
        ):
            return None  # still missing (an app's users without user: state, mostly)
        loaded = await load_fresh(self.store, agent_id, cast("A | None", cached), cls)
        held.note(agent_id, loaded, self.cached_sessions)
        return loaded

    async def _load_many(
        self, wanted: Sequence[tuple[UUID, type[Agent]]], held: _Held | None = None
    ) -> list[Agent | None]:
        """Several aggregates as :meth:`_load` gives each, in one store read (one
        round trip): the cached ones still current kept, only their versions read."""
        held = held or self._held
        ids = [agent_id for agent_id, _ in wanted]
        found = await self.store.get_many(ids, current=held.current(ids))
        out: list[Agent | None] = []
        for agent_id, cls in wanted:
            loaded = of_type(agent_id, found.get(agent_id), cls)
            held.note(agent_id, loaded, self.cached_sessions)
            out.append(loaded)
        return out

    async def _session(self, agent_id: UUID) -> AdkSession | None:
        return await self._load(agent_id, AdkSession)

    async def _scope(self, agent_id: UUID, held: _Held | None = None) -> AdkScope | None:
        return await self._load(agent_id, AdkScope, held)

    async def _directory(
        self, app_name: str, user_id: str, held: _Held | None = None
    ) -> AdkDirectory | None:
        return await self._load(directory_uuid(app_name, user_id), AdkDirectory, held)

    async def _new(self, agent: A, app_name: str, user_id: str) -> A:
        """A new aggregate of the user's, given the user's subjects before its first
        save (AgentForgotten if it was forgotten)."""
        if self._subjects is not None:
            subjects = self._subjects(app_name, user_id)
            if subjects:
                await self.store.add_subject(agent.id, *subjects)
        return agent

    def _forget(self, *agents: Agent) -> None:
        """Drop loaded aggregates that hold unsaved events (a failed save)."""
        for agent in agents:
            self._held.drop(agent.id)

    def _keep(self, *agents: Agent) -> None:
        """Remember saved or loaded aggregates (the newest ``cached_sessions``)."""
        self._held.keep(agents, self.cached_sessions)

    @asynccontextmanager
    async def _locked(self, agent_id: UUID) -> AsyncIterator[None]:
        """Operations on one session through this service run one at a time (the lock
        lives while someone holds or awaits it)."""
        lock = self._locks.get(agent_id)
        if lock is None:
            lock = self._locks[agent_id] = asyncio.Lock()
        async with lock:
            yield

    async def _live(self, app_name: str, user_id: str, session_id: str) -> AdkSession | None:
        """The session if live, as the reads load it (see :meth:`_read`)."""
        agent = await self._load(
            session_uuid(app_name, user_id, session_id), AdkSession, self._read_held
        )
        return agent if agent is not None and agent.state.live else None

    # -- scopes written with a session ---------------------------------------------

    async def _writes_for(
        self,
        app_name: str,
        user_id: str,
        app_delta: dict[str, Any],
        user_delta: dict[str, Any],
        new_user: bool,
    ) -> tuple[AdkScope | None, AdkScope | None, AdkDirectory]:
        """The app scope and user scope if they are written (loaded, or made if
        missing, with the deltas merged) and the user's directory (always written)."""
        app: AdkScope | None = None
        if app_delta or new_user:
            app = await self._scope(app_uuid(app_name)) or AdkScope.for_app(app_name)
            app.merge(app_delta)
            app.add_user(user_id)
        user: AdkScope | None = None
        if user_delta:
            user = await self._scope(user_uuid(app_name, user_id)) or await self._new(
                AdkScope.for_user(app_name, user_id), app_name, user_id
            )
            user.merge(user_delta)
        directory = await self._directory(app_name, user_id) or await self._new(
            AdkDirectory.for_user(app_name, user_id), app_name, user_id
        )
        return app, user, directory

    async def _save(self, session: AdkSession, *scopes: Agent | None) -> bool:
        """Save; False if nothing was saved and the write is to be redone on fresh
        state (a shared scope lost a race, or a save whose outcome was unknown did not
        commit); raises the ConcurrencyError if the session itself lost a race.

        A save whose outcome is unknown is resolved by its save id (asked as the
        retry policy says) before anything is written again: if it committed, the
        write is done; if nobody can tell, the ``SaveOutcomeUnknown`` is raised."""
        agents = [a for a in (session, *scopes) if a is not None and a.pending_events]
        try:
            await self.store.save(*agents)
        except SaveOutcomeUnknown as unknown:
            self._forget(*agents)  # reloaded as stored, whichever the outcome
            try:
                committed = await self.retry.acall(self.store.save_committed, unknown.save_id)
            except Exception as exc:
                raise unknown from exc
            logger.info(
                "ADK session save's outcome resolved by its save id: agent=%s committed=%s",
                session.id,
                committed,
            )
            return committed
        except BaseException as exc:
            self._forget(*agents)
            if isinstance(exc, ConcurrencyError) and exc.agent_id != session.id:
                logger.debug(
                    "ADK session write raced a writer of a shared aggregate: agent=%s"
                    " aggregate=%s; redoing it",  # (ids only: a session id may be personal)
                    session.id,
                    exc.agent_id,
                )
                return False
            raise
        self._keep(*agents)
        return True

    async def _redo(self, wait: float | None, agent_id: UUID, version: int, what: str) -> None:
        """Before a write lost to a writer of a shared aggregate is redone: wait as
        the retry policy says, or raise once its conflicts are used up."""
        if wait is None:
            raise ConcurrencyError(
                agent_id, version, f"{what}: the app or user scope kept changing"
            )
        await asyncio.sleep(wait)

    # -- BaseSessionService ----------------------------------------------------------

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        session_id = session_id.strip() if session_id else str(uuid4())
        return await self._run(self._create_session(app_name, user_id, state, session_id))

    async def _create_session(
        self, app_name: str, user_id: str, state: dict[str, Any] | None, session_id: str
    ) -> Session:
        app_delta, user_delta, values = _split(state or {})
        agent_id = session_uuid(app_name, user_id, session_id)
        async with self._locked(agent_id):
            for wait in self.retry.conflict_waits():
                agent = await self._session(agent_id)
                if agent is not None and agent.state.live:
                    raise AlreadyExistsError(f"Session with id {session_id} already exists.")
                if agent is None:
                    agent = await self._new(
                        AdkSession.new(app_name, user_id, session_id), app_name, user_id
                    )
                now = time.time()
                agent.begin(app_name, user_id, session_id, values, now)
                app, user, directory = await self._writes_for(
                    app_name, user_id, app_delta, user_delta, True
                )
                directory.list_session(session_id, now, values, reset=True)
                try:
                    saved = await self._save(agent, app, user, directory)
                except ConcurrencyError:
                    raise AlreadyExistsError(
                        f"Session with id {session_id} already exists."
                    ) from None
                if saved:
                    if user is None:
                        user = await self._scope(user_uuid(app_name, user_id))
                    return self._to_session(agent, app, user, [])
                await self._redo(wait, agent_id, 0, "create_session")
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        session_id = session_id.strip() if session_id else session_id
        return await self._read(self._get_session(app_name, user_id, session_id, config))

    async def _get_session(
        self,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None,
    ) -> Session | None:
        # The three index entries in one read (the scopes are needed whenever the
        # session is live).
        found, app, user = await self._load_many(
            [
                (session_uuid(app_name, user_id, session_id), AdkSession),
                (app_uuid(app_name), AdkScope),
                (user_uuid(app_name, user_id), AdkScope),
            ],
            self._read_held,
        )
        agent = cast("AdkSession | None", found)
        app, user = cast("AdkScope | None", app), cast("AdkScope | None", user)
        if agent is None or not agent.state.live:
            return None
        events = await self._events(agent, config)
        return self._to_session(agent, app, user, events)

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        """Every live session of the user (every user if None), oldest update first,
        without events, from the users' session directories (no event is read)."""
        page = await self.list_sessions_page(app_name=app_name, user_id=user_id, page_size=None)
        return ListSessionsResponse(sessions=page.sessions)

    async def list_sessions_page(
        self,
        *,
        app_name: str,
        user_id: str | None = None,
        page_size: int | None = 100,
        page_token: str | None = None,
    ) -> SessionPage:
        """A page of :meth:`list_sessions` (snaptail extension): at most ``page_size``
        sessions listed after ``page_token`` (a previous page's ``next_page_token``: the
        listing key of its last session, so that sessions changed between pages make
        none skipped; None or "" for the first page)."""
        if page_size is not None and page_size < 1:
            raise InvalidArgument(
                "page_size",
                f"SnaptailSessionService.list_sessions_page: got {page_size!r}; give an"
                " int >= 1, or None for every session",
            )
        return await self._read(self._list_page(app_name, user_id, page_size, page_token))

    async def _list_page(
        self,
        app_name: str,
        user_id: str | None,
        page_size: int | None,
        page_token: str | None,
    ) -> SessionPage:
        held = self._read_held
        app = await self._scope(app_uuid(app_name), held)
        if user_id is not None:
            users = [user_id]
        else:
            users = sorted(app.state.users) if app is not None else []
        directories = cast(
            "list[AdkDirectory | None]",
            await self._load_many(
                [(directory_uuid(app_name, uid), AdkDirectory) for uid in users], held
            ),
        )
        scopes = cast(
            "list[AdkScope | None]",
            await self._load_many(
                [
                    (user_uuid(app_name, uid), AdkScope)
                    for uid, directory in zip(users, directories, strict=True)
                    if directory is not None
                ],
                held,
            ),
        )
        found = [
            (u, d.state.sessions) for u, d in zip(users, directories, strict=True) if d is not None
        ]
        shared = {uid: _prefixed(app, scope) for (uid, _), scope in zip(found, scopes, strict=True)}
        # Oldest update first, ties by user id then session id. Each directory keeps
        # its sessions in that order (AdkDirectory._session_listed), so a page is where
        # each directory passes the token's key (one bisect), then a slice of one user's
        # directory or a merge of several users': never a sort, and nothing built for
        # the sessions before the page.
        stop = None if page_size is None else page_size + 1  # one more: is there a next?
        if not page_token:  # None or "": the first page
            runs = [_keyed(uid, listed, listed) for uid, listed in found]
        else:
            after = _page_after(page_token)
            runs = [_keyed(uid, listed, _listed_after(uid, listed, after)) for uid, listed in found]
        picked: Iterable[tuple[float, str, str, Listed]]
        picked = runs[0] if len(runs) == 1 else heapq.merge(*runs)
        with _collector_paused():
            out = [
                _session(sid, app_name, uid, _merged(entry.values, shared[uid]), [], when, None)
                for when, uid, sid, entry in islice(picked, stop)
            ]
        if page_size is None or len(out) <= page_size:
            return SessionPage(out, None)
        out.pop()
        last = out[-1]
        return SessionPage(out, _page_token(last.last_update_time, last.user_id, last.id))

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        session_id = session_id.strip() if session_id else session_id
        await self._run(self._delete_session(app_name, user_id, session_id))

    async def _delete_session(self, app_name: str, user_id: str, session_id: str) -> None:
        agent_id = session_uuid(app_name, user_id, session_id)
        async with self._locked(agent_id):
            for wait in self.retry.conflict_waits():
                agent = await self._session(agent_id)
                if agent is None or not agent.state.live:
                    return
                agent.delete()
                directory = await self._directory(app_name, user_id)
                if directory is not None:
                    directory.unlist_session(session_id)
                try:
                    if await self._save(agent, directory):
                        return
                except ConcurrencyError:
                    pass  # another writer changed the session: delete it as it is now
                await self._redo(wait, agent_id, agent.version, "delete_session")
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        return await self._read(self._get_user_state(app_name, user_id))

    async def _get_user_state(self, app_name: str, user_id: str) -> dict[str, Any]:
        user = await self._scope(user_uuid(app_name, user_id), self._read_held)
        return _copy(user.state.values) if user else {}

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        return await self._run(self._append_event(session, event))

    async def _append_event(self, session: Session, event: Event) -> Event:
        agent_id = session_uuid(session.app_name, session.user_id, session.id)
        async with self._locked(agent_id):
            agent = await self._session(agent_id)
            if agent is None or not agent.state.live:
                raise SessionNotFoundError(f"Session {session.id} not found.")
            marker = session._storage_update_marker
            if marker is not None and marker != _marker(agent):
                raise StaleSessionError(STALE_MESSAGE)
            if (
                marker is None
                and agent.state.last_update_time > session.last_update_time
                and not await self._same_events(agent, session)
            ):
                raise StaleSessionError(STALE_MESSAGE)
            if await self._redelivered(agent, event):
                return event
            self._apply_temp_state(session, event)
            event = self._trim_temp_delta_state(event)
            delta = event.actions.state_delta if event.actions else {}
            app_delta, user_delta, values = _split(delta or {})
            data = event.model_dump_json(exclude_none=True)
            compaction = bool(event.actions and event.actions.compaction)
            for wait in self.retry.conflict_waits():
                base = _marker(agent)
                agent.append(data, event.id, event.timestamp, values, compaction)
                app, user, directory = await self._writes_for(
                    session.app_name, session.user_id, app_delta, user_delta, False
                )
                directory.list_session(session.id, event.timestamp, values, reset=False)
                try:
                    saved = await self._save(agent, app, user, directory)
                except ConcurrencyError:
                    raise StaleSessionError(STALE_MESSAGE) from None
                if saved:
                    break
                await self._redo(wait, agent_id, agent.version, "append_event")
                reloaded = await self._session(agent_id)
                if reloaded is None or _marker(reloaded) != base:
                    raise StaleSessionError(STALE_MESSAGE)
                agent = reloaded
            self._commit_event_to_session(session, event)
            session.last_update_time = event.timestamp
            session._storage_update_marker = _marker(agent)
            return event

    async def _same_events(self, agent: AdkSession, session: Session) -> bool:
        """Whether a session object without a stored-version marker (made by hand, or
        by another service) holds the stored session's events: as many, the same newest."""
        if agent.state.events != len(session.events):
            return False
        if not session.events:
            return True
        newest = await newest_events(
            self.store, agent, [AdkSession.EventAppended], after=agent.state.started_at, limit=1
        )
        return bool(newest) and newest[0].event_id == session.events[-1].id

    async def _redelivered(self, agent: AdkSession, event: Event) -> bool:
        """Whether ``event`` is an equal re-delivery of the newest stored event (ADK's
        in-memory service ignores those; a retried call must not apply twice)."""
        if agent.version <= agent.state.started_at:
            return False
        newest = await newest_events(
            self.store, agent, [AdkSession.EventAppended], after=agent.state.started_at, limit=1
        )
        if not newest or newest[0].event_id != event.id:
            return False
        return bool(Event.model_validate_json(newest[0].data) == event)

    # -- reading events ---------------------------------------------------------------

    def _decoded_copy(self, agent: Agent, stored: Any) -> Event:
        """The ADK event of a stored ``EventAppended``: decoded once and kept (the
        newest ``cached_events``), returned as a deep copy (the caller may change it).
        A stored event never changes: its agent and version name it for good."""
        key = (agent.id, stored.originator_version)
        decoded = self._decoded
        with self._decoded_lock:  # (direct reads run on their callers' threads)
            copier = decoded.get(key)
            if copier is not None:
                decoded.move_to_end(key)
        if copier is None:
            copier = _copier(Event.model_validate_json(stored.data))
            assert copier is not None  # (a model is never shared as it is)
            with self._decoded_lock:
                decoded[key] = copier
                while len(decoded) > self.cached_events:
                    decoded.popitem(last=False)
        return cast(Event, copier())

    async def _events(self, agent: AdkSession, config: GetSessionConfig | None) -> list[Event]:
        after = agent.state.started_at
        kind = [AdkSession.EventAppended]
        if config is None:
            if self.unconfigured_recent_events is None:
                return await self._all_events(agent)
            return await self._bounded(agent, self.unconfigured_recent_events)
        limit = config.num_recent_events
        stop = None
        if config.after_timestamp is not None:
            since = config.after_timestamp

            def stop(stored: Any) -> bool:
                return bool(stored.ts < since)

        if limit is None and stop is None:
            return await self._all_events(agent)
        newest = await newest_events(self.store, agent, kind, after=after, limit=limit, stop=stop)
        return [self._decoded_copy(agent, e) for e in reversed(newest)]

    async def _all_events(self, agent: AdkSession) -> list[Event]:
        """Every event of the session's current life, oldest first, read a page at a
        time, each page decoded with the cyclic collector held off (a 10,000-event
        session is ~150,000 new objects: see :func:`_collector_paused`)."""
        events: list[Event] = []
        async for page in self.store.history_pages(
            agent.id,
            after=agent.state.started_at,
            before=agent.version + 1,
            types=[AdkSession.EventAppended],
        ):
            with _collector_paused():
                events += [Event.model_validate_json(stored.data) for stored in page]
        return events

    async def _bounded(self, agent: AdkSession, limit: int) -> list[Event]:
        """The newest ``limit`` events, after the newest compaction event older than
        them (if any)."""
        kind = [AdkSession.EventAppended]
        after = agent.state.started_at
        chosen = list(
            reversed(await newest_events(self.store, agent, kind, after=after, limit=limit))
        )
        oldest = chosen[0].originator_version if chosen else agent.version + 1
        at = agent.state.compaction_at
        if at and at < oldest:
            summary = [e async for e in self.store.history(agent.id, after=at - 1, before=at + 1)]
            chosen = summary + chosen
        return [self._decoded_copy(agent, e) for e in chosen]

    async def history(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        after_version: int | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[Event]:
        """Every stored event of the session's current life, oldest first, page by page
        (snaptail extension; what a bounded ``get_session`` leaves out)."""
        page = await self._read(
            self._history_page(app_name, user_id, session_id, after_version, None, page_size)
        )
        while page is not None and page[0]:
            events, after, before = page
            for event in events:
                yield event
            if len(events) < page_size:
                return
            page = await self._read(
                self._history_page(app_name, user_id, session_id, after, before, page_size)
            )

    async def _history_page(
        self,
        app_name: str,
        user_id: str,
        session_id: str,
        after_version: int | None,
        before: int | None,
        page_size: int,
    ) -> tuple[list[Event], int, int] | None:
        """Up to ``page_size`` events of the session's current life after
        ``after_version`` (and before version ``before``, the first page's end), with
        the version of the last and that end; None if the session is not live."""
        if before is None:
            agent = await self._live(app_name, user_id, session_id)
            if agent is None:
                return None
            after = max(agent.state.started_at, after_version or 0)
            before = agent.version + 1
            agent_id = agent.id
        else:
            after = after_version or 0
            agent_id = session_uuid(app_name, user_id, session_id)
        events: list[Event] = []
        async with aclosing(
            self.store.history(
                agent_id,
                after=after,
                before=before,
                types=[AdkSession.EventAppended],
                page_size=page_size,
            )
        ) as stored_events:
            async for stored in stored_events:
                events.append(Event.model_validate_json(stored.data))
                after = stored.originator_version
                if len(events) == page_size:
                    break
        return events, after, before

    async def get_user_events(
        self,
        *,
        app_name: str,
        user_id: str,
        recent_events: int = 20,
        max_sessions: int | None = None,
    ) -> dict[str, list[Event]]:
        """The newest ``recent_events`` events of each of the user's live sessions (the
        ``max_sessions`` most recently updated, all if None), keyed by session id,
        most recently updated session first (snaptail extension, for memory services:
        one bounded read per session, no session's full history)."""
        return await self._read(
            self._get_user_events(app_name, user_id, recent_events, max_sessions)
        )

    async def _get_user_events(
        self, app_name: str, user_id: str, recent_events: int, max_sessions: int | None
    ) -> dict[str, list[Event]]:
        directory = await self._directory(app_name, user_id, self._read_held)
        if directory is None:
            return {}
        listed = directory.state.sessions
        ids = list(islice(reversed(listed), max_sessions))  # listed oldest update first
        out: dict[str, list[Event]] = {}
        for sid in ids:
            agent = await self._live(app_name, user_id, sid)
            if agent is None:
                continue
            newest = await newest_events(
                self.store,
                agent,
                [AdkSession.EventAppended],
                after=agent.state.started_at,
                limit=recent_events,
            )
            out[sid] = [self._decoded_copy(agent, e) for e in reversed(newest)]
        return out

    # -- building sessions ------------------------------------------------------------

    def _to_session(
        self, agent: AdkSession, app: AdkScope | None, user: AdkScope | None, events: list[Event]
    ) -> Session:
        return _session(
            agent.state.session_id,
            agent.state.app_name,
            agent.state.user_id,
            _merged(agent.state.values, _prefixed(app, user)),
            events,
            agent.state.last_update_time,
            _marker(agent),
        )
