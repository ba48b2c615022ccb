"""The event-sourced aggregates behind ``SnaptailSessionService`` (no ADK import here).

* :class:`AdkSession`: one per ``(app_name, user_id, session_id)``. Every stored ADK
  ``Event`` is one ``EventAppended`` event holding the ADK event whole (its JSON, actions
  included) beside its timestamp; the state keeps only the session-scoped state, the
  update time, and the versions a bounded read needs (the newest start and the newest
  compaction event). A delete ends the session (``SessionDeleted``); creating it again
  starts a new life after that version, the old events stay in the log.
* :class:`AdkScope`: one per app (``app:`` state and the app's users) and one per
  ``(app, user)`` (``user:`` state).
* :class:`AdkDirectory`: one per ``(app, user)``: the user's live sessions, each one's
  update time and session state (what ``list_sessions`` returns).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID, uuid5

from eventsourcing.domain import event

from snaptail.domain.agent import Agent
from snaptail.domain.state import AgentState
from snaptail.integrations.aggregates import start
from snaptail.snapshots.policy import GrowWithState

_NAMESPACE = UUID("0c6a3f0e-7d3b-4a61-9a8e-2b6f0d6f4c21")


def _key(*parts: str) -> str:
    return json.dumps(parts, ensure_ascii=False)


@lru_cache(maxsize=4096)  # computed on every call of the service
def session_uuid(app_name: str, user_id: str, session_id: str) -> UUID:
    """The aggregate id of one ADK session."""
    return uuid5(_NAMESPACE, _key("session", app_name, user_id, session_id))


@lru_cache(maxsize=4096)  # computed on every call of the service
def app_uuid(app_name: str) -> UUID:
    """The aggregate id of an app's scope (``app:`` state, users)."""
    return uuid5(_NAMESPACE, _key("app", app_name))


@lru_cache(maxsize=4096)  # computed on every call of the service
def user_uuid(app_name: str, user_id: str) -> UUID:
    """The aggregate id of a user's scope (``user:`` state)."""
    return uuid5(_NAMESPACE, _key("user", app_name, user_id))


@lru_cache(maxsize=4096)  # computed on every call of the service
def directory_uuid(app_name: str, user_id: str) -> UUID:
    """The aggregate id of a user's session directory."""
    return uuid5(_NAMESPACE, _key("sessions", app_name, user_id))


@dataclass(frozen=True, slots=True)
class Listed:
    """A live session in its user's directory: update time and session-scoped state."""

    time: float
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdkSessionState(AgentState):
    app_name: str = ""
    user_id: str = ""
    session_id: str = ""
    live: bool = False
    started_at: int = 0  # version of the newest SessionStarted
    values: dict[str, Any] = field(default_factory=dict)  # session-scoped state
    last_update_time: float = 0.0
    events: int = 0  # stored ADK events since started_at
    compaction_at: int = 0  # version of the newest compaction event since started_at


class AdkSession(Agent):
    """One ADK session: its events (whole) and its session-scoped state."""

    if TYPE_CHECKING:
        SessionStarted: ClassVar[type[Any]]
        EventAppended: ClassVar[type[Any]]
        SessionDeleted: ClassVar[type[Any]]
        state: AdkSessionState

    State = AdkSessionState
    window_items = 1  # the conversation window is unused: ADK events live in the log
    max_event_bytes = 64 * 1024 * 1024

    @classmethod
    def new(cls, app_name: str, user_id: str, session_id: str) -> AdkSession:
        return start(cls, session_uuid(app_name, user_id, session_id), session_id)

    def begin(
        self, app_name: str, user_id: str, session_id: str, values: dict[str, Any], time: float
    ) -> None:
        self._session_started(
            app_name=app_name, user_id=user_id, session_id=session_id, values=values, time=time
        )

    @event("SessionStarted")
    def _session_started(
        self, app_name: str, user_id: str, session_id: str, values: dict[str, Any], time: float
    ) -> None:
        s = self.state
        s.app_name, s.user_id, s.session_id = app_name, user_id, session_id
        s.live = True
        s.started_at = self.version + 1
        s.values = dict(values)
        s.last_update_time = time
        s.events = 0
        s.compaction_at = 0

    def append(
        self, data: str, event_id: str, ts: float, delta: dict[str, Any], compaction: bool
    ) -> None:
        """Store one ADK event: ``data`` its JSON, ``ts`` its timestamp, ``delta`` its
        session-scoped state delta."""
        self._event_appended(
            data=data, event_id=event_id, ts=ts, delta=delta, compaction=compaction
        )

    @event("EventAppended")
    def _event_appended(
        self, data: str, event_id: str, ts: float, delta: dict[str, Any], compaction: bool
    ) -> None:
        s = self.state
        s.values.update(delta)
        s.last_update_time = ts
        s.events += 1
        if compaction:
            s.compaction_at = self.version + 1

    def delete(self) -> None:
        self._session_deleted()

    @event("SessionDeleted")
    def _session_deleted(self) -> None:
        self.state.live = False
        self.state.values = {}


@dataclass
class AdkScopeState(AgentState):
    values: dict[str, Any] = field(default_factory=dict)  # app: or user: state, unprefixed
    users: dict[str, bool] = field(default_factory=dict)  # app scope: users with sessions


class AdkScope(Agent):
    """The ``app:`` state of an app (and its users), or the ``user:`` state of one user
    of an app."""

    if TYPE_CHECKING:
        ValuesMerged: ClassVar[type[Any]]
        UserAdded: ClassVar[type[Any]]
        state: AdkScopeState

    State = AdkScopeState
    window_items = 1
    max_event_bytes = 64 * 1024 * 1024
    # The app scope lists every user: snapshots spaced by their size (see GrowWithState).
    snapshot_policy = GrowWithState(n=100, ratio=1.0)

    @classmethod
    def for_app(cls, app_name: str) -> AdkScope:
        return start(cls, app_uuid(app_name), _key("app", app_name))

    @classmethod
    def for_user(cls, app_name: str, user_id: str) -> AdkScope:
        return start(cls, user_uuid(app_name, user_id), _key("user", app_name, user_id))

    def merge(self, delta: dict[str, Any]) -> None:
        if delta:
            self._values_merged(delta=delta)

    @event("ValuesMerged")
    def _values_merged(self, delta: dict[str, Any]) -> None:
        self.state.values.update(delta)

    def add_user(self, user_id: str) -> None:
        if user_id not in self.state.users:
            self._user_added(user_id=user_id)

    @event("UserAdded")
    def _user_added(self, user_id: str) -> None:
        self.state.users[user_id] = True


@dataclass
class AdkDirectoryState(AgentState):
    # Live sessions, oldest update first (ties by session id): see _session_listed.
    sessions: dict[str, Listed] = field(default_factory=dict)


class AdkDirectory(Agent):
    """The live sessions of one user of an app: each one's update time and session
    state (what ``list_sessions`` returns), kept apart from the ``user:`` state so that
    reading a session never loads its user's directory."""

    if TYPE_CHECKING:
        SessionListed: ClassVar[type[Any]]
        SessionUnlisted: ClassVar[type[Any]]
        state: AdkDirectoryState

    State = AdkDirectoryState
    window_items = 1
    max_event_bytes = 64 * 1024 * 1024
    # One entry per live session: a snapshot costs time in proportion to the user's
    # sessions, so snapshots are spaced in proportion too (a save's share stays flat).
    snapshot_policy = GrowWithState(n=100, ratio=1.0)

    @classmethod
    def for_user(cls, app_name: str, user_id: str) -> AdkDirectory:
        return start(cls, directory_uuid(app_name, user_id), _key("sessions", app_name, user_id))

    def list_session(
        self, session_id: str, time: float, delta: dict[str, Any], reset: bool
    ) -> None:
        """Record a session's new update time and session-state delta (``reset``: the
        session starts, its state is ``delta``)."""
        self._session_listed(session_id=session_id, time=time, delta=delta, reset=reset)

    @event("SessionListed")
    def _session_listed(
        self, session_id: str, time: float, delta: dict[str, Any], reset: bool
    ) -> None:
        # ``sessions`` is kept in listing order, oldest update first (ties by session
        # id), so that a page of ``list_sessions`` is a slice and never a sort. The
        # entry moves to its place from the end: after the few entries (usually none)
        # updated later than it, which are taken off and put back behind it. A
        # snapshot keeps the order (msgpack maps keep theirs).
        sessions = self.state.sessions
        old = sessions.pop(session_id, None)
        values = {} if reset or old is None else dict(old.values)
        values.update(delta)
        later: list[str] = []
        for sid in reversed(sessions):
            other = sessions[sid].time
            if other < time or (other == time and sid < session_id):
                break
            later.append(sid)
        moved = [(sid, sessions.pop(sid)) for sid in reversed(later)]
        sessions[session_id] = Listed(time=time, values=values)
        sessions.update(moved)

    def unlist_session(self, session_id: str) -> None:
        if session_id in self.state.sessions:
            self._session_unlisted(session_id=session_id)

    @event("SessionUnlisted")
    def _session_unlisted(self, session_id: str) -> None:
        self.state.sessions.pop(session_id, None)
