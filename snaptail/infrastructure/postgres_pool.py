"""A PostgreSQL datastore whose pool timeouts say why: a connection that could not be
had within ``pool_timeout`` becomes a :class:`~snaptail.DatabaseUnreachable` naming
the server, the time really waited and the cause (the server refusing new
connections, such as at its connection limit, or every connection of the pool busy),
not a bare ``PoolTimeout``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import OperationalError
from eventsourcing.postgres import PostgresDatastore
from psycopg_pool import PoolTimeout

from snaptail.errors import DatabaseUnreachable
from snaptail.infrastructure.urls import PostgresOptions, describe_server


class ExplainingDatastore(PostgresDatastore):
    """``eventsourcing``'s datastore; a pool timeout is explained (see the module)."""

    settings: PostgresOptions | None = None

    @contextmanager
    def get_connection(self) -> Iterator[Any]:
        started = time.monotonic()
        try:
            with super().get_connection() as conn:
                yield conn
        except OperationalError as exc:
            if not isinstance(exc.__cause__, PoolTimeout) or self.settings is None:
                raise
            raise pool_timeout_error(self.settings, time.monotonic() - started) from exc


def pool_timeout_error(settings: PostgresOptions, waited: float) -> DatabaseUnreachable:
    """The error for a connection not had within ``pool_timeout``: one probe
    connection tells a server that refuses new ones from a pool that is all busy."""
    size = settings.pool_size + settings.max_overflow
    try:
        psycopg.connect(**settings.connect_args()).close()
    except psycopg.Error as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        cause = (
            f"the server refused a new connection ({why}); it may be at its connection"
            " limit: raise max_connections, or lower pool_size/max_overflow of the"
            " processes sharing it"
        )
    else:
        cause = (
            f"all {size} connections of this store's pool (pool_size={settings.pool_size},"
            f" max_overflow={settings.max_overflow}) stayed busy; raise them or use fewer"
            " threads"
        )
    return DatabaseUnreachable(
        describe_server(settings.conninfo),
        f"no pooled connection after {waited:.1f} s (pool_timeout={settings.pool_timeout:g} s):"
        f" {cause}",
    )
