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
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from snaptail.application.drivers import Pause, ReadSaveCommitted
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
    """True if ``exc`` is a connection-level failure another try may not meet."""
    return isinstance(exc, RETRYABLE) and not isinstance(exc, IntegrityError)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries of a call in all, waiting ``backoff`` seconds after the
    first failure, doubling up to ``max_backoff``.

    The defaults keep a save on a database that went away to a few seconds, on top
    of the connection's own limits (see the PostgreSQL URL options)."""

    attempts: int = 3
    backoff: float = 0.2
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"RetryPolicy backoff must be >= 0, got {self.backoff}")

    def waits(self) -> Iterator[float | None]:
        """The wait after each failed attempt; None after the last (give up)."""
        wait = self.backoff
        for _ in range(self.attempts - 1):
            yield wait
            wait = min(wait * 2, self.max_backoff)
        yield None

    # -- plain calls (the worker, the integrations) ----------------------------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)``, tried again on a retryable error. For reads and
        for writes that are idempotent by their own key; a save goes through the
        store, which applies the ambiguous-commit rule."""
        for wait in self.waits():
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                if wait is None or not is_retryable(exc):
                    raise
                logger.info("retrying after %s: %s (in %.2f s)", type(exc).__name__, exc, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """:meth:`call` for a coroutine function."""
        for wait in self.waits():
            try:
                return await func(*args, **kwargs)
            except Exception as exc:
                if wait is None or not is_retryable(exc):
                    raise
                logger.info("retrying after %s: %s (in %.2f s)", type(exc).__name__, exc, wait)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the store's steps ---------------------------------------------------------------

    def commit(
        self, insert: Any, save_id: UUID, agent_ids: Sequence[UUID]
    ) -> Generator[Any, Any, None]:
        """The steps of a save's commit (``insert``: its request), by the
        ambiguous-commit rule (see the module). Returns once the save is stored;
        raises ``IntegrityError`` for a conflict with another writer's rows,
        :class:`SaveOutcomeUnknown` when nobody can tell, or the error itself when
        it was certainly not committed."""
        ambiguous: Exception | None = None
        for wait in self.waits():
            try:
                yield insert
                return
            except IntegrityError:
                # Rows already stored: another writer's (a conflict), or this save's own
                # (an earlier attempt, here or inside the recorder, whose reply was
                # lost). The save id tells which.
                try:
                    committed = yield ReadSaveCommitted(save_id)
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
                yield Pause(wait)
        assert ambiguous is not None
        # The last attempt failed too: ask once more before calling it unknown.
        try:
            committed = yield ReadSaveCommitted(save_id)
        except Exception as exc:
            raise SaveOutcomeUnknown(agent_ids, save_id, ambiguous) from exc
        if committed:
            return
        raise ambiguous

    def resolve(self, unknown: SaveOutcomeUnknown) -> Generator[Any, Any, bool]:
        """The steps that find out whether the save ``unknown`` is about committed:
        asked up to ``attempts`` times; raises ``unknown`` again if never answered."""
        for wait in self.waits():
            try:
                return bool((yield ReadSaveCommitted(unknown.save_id)))
            except Exception as exc:
                if wait is None or not is_retryable(exc):
                    raise unknown from exc
                yield Pause(wait)
        raise AssertionError("unreachable")  # pragma: no cover
