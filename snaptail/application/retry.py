"""The one retry policy: how often and how long a call is tried again, which errors
are worth it, and the ambiguous-commit rule. Used by the store's steps, the
projection worker and the integrations.

Retryable: ``eventsourcing``'s ``OperationalError`` and ``InterfaceError`` (a lost or
refused connection, a server shutting down, a timeout of the client-side limits),
the errors every recorder raises for them. Anything else (a conflict, bad data, a
lock timeout, a programming error) is raised at once.

The ambiguous-commit rule: a retryable error during a call that commits leaves its
outcome unknown (the commit may have reached the server and its reply been lost).
Every save carries a save id stored with its rows; the save is tried again with the
same id, and when the retry meets rows already stored (an ``IntegrityError``) the
save id says whether they are its own. If the database cannot be asked within the
attempts, :class:`~snaptail.SaveOutcomeUnknown` is raised: never the plain failure
(the save may have committed), never success (it may not have).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from snaptail.errors import DatabaseUnreachable, SaveOutcomeUnknown

logger = logging.getLogger("snaptail.retry")

T = TypeVar("T")

# Errors worth another try (the connection, not the request, failed).
RETRYABLE: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DatabaseUnreachable,
)


def is_retryable(exc: BaseException) -> bool:
    """True if ``exc`` is a connection-level failure another try may not meet: the
    recorders' (translated) errors, and a driver's own on connections snaptail opens
    beside them (a projection's view, a LISTEN connection; SQLite's "locked")."""
    if isinstance(exc, RETRYABLE):
        return not isinstance(exc, IntegrityError)
    psycopg: Any = sys.modules.get("psycopg")  # optional: only if it is in use
    if psycopg is not None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries of a call in all, waiting ``backoff`` seconds after the
    first failure, doubling up to ``max_backoff``; no new try starts ``deadline``
    seconds after the first began.

    The defaults keep a save on a database that went away to a few seconds, on top
    of the connection's own limits (see the PostgreSQL URL options)."""

    attempts: int = 3
    backoff: float = 0.2
    max_backoff: float = 2.0
    deadline: float = 10.0
    # After another writer saved first (a ConcurrencyError), a command is applied
    # again on fresh state up to this many times, waiting conflict_backoff seconds
    # times the attempt's number (the integrations' writes; store.update has its own
    # ``retries``).
    conflicts: int = 50
    conflict_backoff: float = 0.001

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"RetryPolicy backoff must be >= 0, got {self.backoff}")

    def waits(self) -> Iterator[float | None]:
        """The wait after each failed attempt; None after the last (give up), or
        once the next attempt would start past the deadline."""
        ends = time.monotonic() + self.deadline
        wait = self.backoff
        for _ in range(self.attempts - 1):
            remaining = ends - time.monotonic()
            if remaining <= 0:
                break
            yield min(wait, remaining)
            wait = min(wait * 2, self.max_backoff)
        yield None

    def conflict_waits(self) -> Iterator[float | None]:
        """The wait after each conflict; None after the last (raise it)."""
        for attempt in range(1, self.conflicts):
            yield self.conflict_backoff * attempt
        yield None

    # -- plain calls (the drivers' reads, the worker, the integrations) ------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)``, tried again on a retryable error. For reads and
        for writes that are idempotent by their own key; a save goes through the
        store, which applies the ambiguous-commit rule."""
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            return self.again(exc, func, *args, **kwargs)

    def again(self, error: Exception, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func`` failed with ``error`` on its first try: raise it unless it is
        retryable, else make the remaining attempts."""
        waits = self.waits()
        while (wait := next(waits)) is not None and is_retryable(error):
            logger.info("retrying after %s: %s (in %.2f s)", type(error).__name__, error, wait)
            time.sleep(wait)
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                error = exc
        raise error

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """:meth:`call` for a coroutine function."""
        try:
            return await func(*args, **kwargs)
        except Exception as exc:
            return await self.again_async(exc, func, *args, **kwargs)

    async def again_async(
        self, error: Exception, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """:meth:`again` for a coroutine function."""
        waits = self.waits()
        while (wait := next(waits)) is not None and is_retryable(error):
            logger.info("retrying after %s: %s (in %.2f s)", type(error).__name__, error, wait)
            await asyncio.sleep(wait)
            try:
                return await func(*args, **kwargs)
            except Exception as exc:
                error = exc
        raise error

    # -- the store's steps ---------------------------------------------------------------

    def commit(
        self,
        insert: Any,
        check: Any,
        pause: Callable[[float], Any],
        save_id: UUID,
        agent_ids: Sequence[UUID],
    ) -> Generator[Any, Any, None]:
        """The steps of a save's commit by the ambiguous-commit rule (see the module):
        ``insert`` is its request, ``check`` the request that asks whether its save id
        was stored, ``pause(seconds)`` the request that waits. Returns once the save is stored;
        raises ``IntegrityError`` for a conflict with another writer's rows,
        :class:`SaveOutcomeUnknown` when nobody can tell, or the error itself when
        it was certainly not committed."""
        ambiguous: Exception | None = None
        ends = time.monotonic() + self.deadline
        for wait in self.waits():
            try:
                yield insert
                return
            except IntegrityError:
                # Rows already stored: another writer's (a conflict), or this save's own
                # (an earlier attempt, here or inside the recorder, whose reply was
                # lost). The save id tells which.
                try:
                    committed = yield check
                except Exception as exc:
                    if ambiguous is not None and is_retryable(exc):
                        raise SaveOutcomeUnknown(agent_ids, save_id, ambiguous) from exc
                    raise
                if committed:
                    logger.info(
                        "save committed although its reply was lost: save_id=%s agents=%s",
                        save_id,
                        ",".join(map(str, agent_ids)),
                    )
                    return
                raise
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                ambiguous = exc
                logger.info(
                    "save failed with %s, outcome unknown: save_id=%s attempt_wait=%s: %s",
                    type(exc).__name__,
                    save_id,
                    wait,
                    exc,
                )
                if wait is None:
                    break
                yield pause(wait)
        assert ambiguous is not None
        if time.monotonic() > ends:
            raise SaveOutcomeUnknown(agent_ids, save_id, ambiguous)
        # The last attempt failed too: ask once more before calling it unknown.
        try:
            committed = yield check
        except Exception as exc:
            raise SaveOutcomeUnknown(agent_ids, save_id, ambiguous) from exc
        if committed:
            return
        raise ambiguous  # certainly not committed: a plain failure, safe to try again

    def resolve(
        self, unknown: SaveOutcomeUnknown, check: Any, pause: Callable[[float], Any]
    ) -> Generator[Any, Any, bool]:
        """The steps that find out whether the save ``unknown`` is about committed
        (``check`` asks, ``pause`` waits): asked up to ``attempts`` times; raises
        ``unknown`` again if never answered."""
        for wait in self.waits():
            try:
                return bool((yield check))
            except Exception as exc:
                if wait is None or not is_retryable(exc):
                    raise unknown from exc
                yield pause(wait)
        raise AssertionError("unreachable")  # pragma: no cover


__all__ = [
    "RETRYABLE",
    "RetryPolicy",
    "is_retryable",
]
