"""psycopg connections with a client-side deadline on every reply (``read_timeout``).

libpq waits for a reply as long as the socket stays open; a server that stops
answering behind a live TCP peer (a proxy, a hung host) would block a call without
limit. These connections give each wait ``read_timeout`` seconds; past it the
connection is closed (its protocol state is unknown) and ``psycopg.OperationalError``
names the limit. The pools (sync and async) connect with them.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, TypeVar

import psycopg
from psycopg.abc import PQGen
from psycopg.rows import DictRow

RV = TypeVar("RV")

# psycopg's own polling interval while it waits (it checks for Ctrl-C between polls).
WAIT_INTERVAL = 0.1


def _no_reply(seconds: float) -> psycopg.OperationalError:
    return psycopg.OperationalError(
        f"no reply from the PostgreSQL server within read_timeout={seconds:g} s; the"
        " connection was closed (raise read_timeout in the URL for longer statements)"
    )


class DeadlineConnection(psycopg.Connection[DictRow]):
    """A sync connection whose every wait for the server ends after ``read_timeout``."""

    read_timeout: ClassVar[float | None] = None

    def wait(
        self, gen: PQGen[RV], interval: float = WAIT_INTERVAL, timeout: float | None = None
    ) -> RV:
        limit = self.read_timeout
        if timeout is not None or not limit:
            return super().wait(gen, interval, timeout)
        started = time.monotonic()
        try:
            return super().wait(gen, interval, limit)
        except psycopg.OperationalError as exc:
            if time.monotonic() - started < limit:
                raise
            self.close()
            raise _no_reply(limit) from exc


class AsyncDeadlineConnection(psycopg.AsyncConnection[DictRow]):
    """An async connection whose every wait for the server ends after ``read_timeout``."""

    read_timeout: ClassVar[float | None] = None

    async def wait(
        self, gen: PQGen[RV], interval: float = WAIT_INTERVAL, timeout: float | None = None
    ) -> RV:
        limit = self.read_timeout
        if timeout is not None or not limit:
            return await super().wait(gen, interval, timeout)
        started = time.monotonic()
        try:
            return await super().wait(gen, interval, limit)
        except psycopg.OperationalError as exc:
            if time.monotonic() - started < limit:
                raise
            await self.close()
            raise _no_reply(limit) from exc


def with_deadline(
    read_timeout: float,
) -> tuple[type[DeadlineConnection], type[AsyncDeadlineConnection]]:
    """The connection classes (sync, async) of a pool whose replies are due within
    ``read_timeout`` seconds (0: no deadline)."""
    limit: dict[str, Any] = {"read_timeout": read_timeout or None}
    return (
        type("DeadlineConnection", (DeadlineConnection,), limit),
        type("AsyncDeadlineConnection", (AsyncDeadlineConnection,), limit),
    )
