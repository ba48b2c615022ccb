"""Database URLs: which database a URL names, and the PostgreSQL settings in it.

``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``:memory:`` or
``postgresql://[user[:password]@][host][:port]/dbname?param=value&...``. A PostgreSQL
URL is read by libpq (through ``psycopg.conninfo``): what it leaves out comes from
``PGUSER``, ``PGHOST``, ``PGPASSWORD``... and libpq's defaults, ``?host=/run/postgresql``
names a Unix socket, and any libpq connection parameter may be given; snaptail's own
options (:data:`TUNABLE`) ride along in the same query string.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_URL = "sqlite:///snaptail.db"
URL_ENV = "SNAPTAIL_DATABASE_URL"
POSTGRES_SCHEMES = ("postgresql", "postgres")
# A schema name PostgreSQL reads the same quoted or not.
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def resolve_url(url: str | None) -> str:
    """``url``, else ``$SNAPTAIL_DATABASE_URL``, else ``sqlite:///snaptail.db``."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


# Parameters a SQLite URL may carry (``sqlite:///file.db?lock_timeout=5``).
SQLITE_OPTIONS = ("lock_timeout", "file_mode")


def sqlite_path(url: str) -> str | None:
    """The file (or ``:memory:``) a SQLite URL names; None for other URLs."""
    parsed = parse_sqlite_url(url)
    return None if parsed is None else parsed[0]


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]] | None:
    """``(file, parameters)`` of a SQLite URL (``sqlite:///relative.db``,
    ``sqlite:////absolute.db``, ``:memory:``); None for other URLs. A host part or a
    parameter other than :data:`SQLITE_OPTIONS` is a ``ValueError``, never part of
    the file name."""
    if url == ":memory:":
        return url, {}
    if not url.startswith("sqlite:"):
        return None
    parts = urlsplit(url)
    if not url.startswith("sqlite://") or parts.netloc:
        raise ValueError(
            f"SQLite URL {url!r} does not name a file the way snaptail reads it: use"
            " sqlite:///relative/path.db (three slashes) or sqlite:////absolute/path.db"
        )
    params: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in SQLITE_OPTIONS:
            raise ValueError(
                f"unknown SQLite URL parameter {name!r} in {url!r}; SQLite URLs take only"
                f" {', '.join(SQLITE_OPTIONS)} (read-only and other modes are not supported)"
            )
        params[name] = value
    return (parts.path[1:] if parts.path.startswith("/") else parts.path), params


def is_postgres_url(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


@dataclass(frozen=True)
class PostgresOptions:
    """Connection settings for ``open_postgres``, from a URL and keywords.

    ``conninfo`` holds the libpq connection parameters the URL gives (user, host,
    dbname, sslmode...), nothing else: libpq fills in the rest at connect time.
    ``pool_size`` connections are kept open, up to ``max_overflow`` more are opened
    under load; a caller waits at most ``pool_timeout`` seconds for a free one.
    ``connect_timeout`` bounds opening one connection; ``lock_timeout`` bounds the
    wait for a row lock, such as a concurrent save of the same agent at the same
    version (0: wait as long as it takes).

    Limits that turn a dead or unreachable server into an error within seconds
    (0 turns one off): ``read_timeout`` (client side, seconds; default 15): a call
    of the store's that gets no reply within it closes its connection and fails
    (a save then follows the retry policy's ambiguous-commit rule);
    ``statement_timeout`` (server side, seconds; default 10) and
    ``idle_in_transaction_timeout`` (server side, seconds; default 60) for the
    store's pooled connections; and, unless the URL sets them, libpq's TCP
    keepalives (:data:`TCP_DEFAULTS`: probes after 5 s idle, every 2 s, 3 lost
    ones drop the connection) and ``tcp_user_timeout`` (10 s of unacknowledged
    data drop it).
    """

    conninfo: Mapping[str, str] = field(default_factory=dict)
    schema: str = "public"
    pool_size: int = 2
    max_overflow: int = 8
    pool_timeout: float = 30.0
    connect_timeout: int = 10
    lock_timeout: int = 0
    read_timeout: float = 15.0
    statement_timeout: int = 10
    idle_in_transaction_timeout: int = 60

    def connect_args(self) -> dict[str, Any]:
        """``psycopg.connect`` keywords: the URL's parameters, the TCP limits the URL
        does not set, the connect timeout and the schema as the search path. (The one
        place PostgreSQL connection settings are made: the pools, the maintenance and
        notification connections, the projections all connect with these.)"""
        args: dict[str, Any] = {**TCP_DEFAULTS, **self.conninfo}
        args["connect_timeout"] = self.connect_timeout
        search_path = f"-c search_path={self.schema}"
        args["options"] = f"{args['options']} {search_path}" if "options" in args else search_path
        return args

    def session_settings(self) -> dict[str, str]:
        """The server settings of the store's pooled connections (``SET`` on connect)."""
        return {
            "statement_timeout": f"{self.statement_timeout}s",
            "idle_in_transaction_session_timeout": f"{self.idle_in_transaction_timeout}s",
        }


# libpq's TCP settings snaptail connects with unless the URL gives its own: a peer
# that stops answering is noticed within seconds, not after the kernel's defaults
# (two hours of idle before the first keepalive; 15 minutes of retransmissions).
TCP_DEFAULTS: dict[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}


# snaptail's options, accepted in the query string or as keywords.
TUNABLE = ("schema", "pool_size", "max_overflow", "pool_timeout", "connect_timeout",
           "lock_timeout", "read_timeout", "statement_timeout",
           "idle_in_transaction_timeout")  # fmt: skip


@cache
def libpq_parameters() -> frozenset[str]:
    """The connection parameters the installed libpq knows."""
    from psycopg import pq

    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def parse_postgres_url(url: str, **options: object) -> PostgresOptions:
    """Read a PostgreSQL URL; keyword ``options`` override its query string.

    Raises ``ValueError`` naming the offending part or parameter (never the password).
    """
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r}): {redact(url)}")
    raw: dict[str, object] = {}
    for name, text in parse_qsl(parts.query, keep_blank_values=True):
        if name in raw:
            raise ValueError(f"PostgreSQL URL parameter {name!r} is given twice")
        raw[name] = text
    raw.update(options)
    ours = {name: value for name, value in raw.items() if name in TUNABLE}
    libpq = {name: value for name, value in raw.items() if name not in TUNABLE}
    unknown = sorted(set(libpq) - libpq_parameters())
    if unknown:
        raise ValueError(
            f"unknown PostgreSQL option {unknown[0]!r}; snaptail's options: "
            f"{', '.join(TUNABLE)}, or any libpq connection parameter"
        )
    try:
        conninfo = conninfo_to_dict(url.partition("?")[0])
    except ProgrammingError as exc:
        raise ValueError(f"bad PostgreSQL URL ({exc}): {redact(url)}") from None
    conninfo.update({name: str(value) for name, value in libpq.items()})
    if not conninfo.get("dbname") or "/" in str(conninfo["dbname"]):
        raise ValueError(
            f"PostgreSQL URL needs one database name in its path, as in "
            f"postgresql://user@host:5432/dbname: {redact(url)}"
        )
    ports = str(conninfo.get("port", "")).split(",")
    if not all(port.isdigit() or not port for port in ports):
        raise ValueError(f"PostgreSQL URL has a bad port: {redact(url)}")
    values: dict[str, Any] = {name: _convert(name, value) for name, value in ours.items()}
    return PostgresOptions(conninfo={k: str(v) for k, v in conninfo.items()}, **values)


def postgres_connect_args(url: str) -> dict[str, Any]:
    """``psycopg.connect`` keywords for a snaptail PostgreSQL URL (schema as search path)."""
    return parse_postgres_url(url).connect_args()


def _convert(name: str, value: object) -> object:
    """One snaptail option's value, checked; ``ValueError`` names the parameter."""
    if name == "schema":
        text = str(value).strip()
        if not _PLAIN_NAME.fullmatch(text) or len(text) > 63:
            raise ValueError(
                f"PostgreSQL option 'schema' must be a plain name of 1-63 lower-case letters,"
                f" digits and underscores, not starting with a digit, got {value!r}"
                " (the events table's SQL uses it unquoted)"
            )
        return text
    kind: type[int] | type[float] = float if name in ("pool_timeout", "read_timeout") else int
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise TypeError
        number = kind(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(
            f"PostgreSQL option {name!r} must be {'a number' if kind is float else 'an integer'}, "
            f"got {value!r}"
        ) from None
    minimum = {"pool_size": 1, "pool_timeout": 0.001, "connect_timeout": 1}.get(name, 0)
    if not math.isfinite(number) or number < minimum:
        raise ValueError(f"PostgreSQL option {name!r} must be >= {minimum}, got {value!r}")
    return number


def describe_server(conninfo: Mapping[str, str]) -> str:
    """ "PostgreSQL at host H, port P, database D (user U)": what libpq will use,
    from the URL, else ``PGHOST``/``PGPORT``/``PGUSER``, else its defaults."""
    host = conninfo.get("host") or os.environ.get("PGHOST") or "the default Unix socket"
    port = conninfo.get("port") or os.environ.get("PGPORT") or "5432"
    user = conninfo.get("user") or os.environ.get("PGUSER") or "the login user"
    dbname = conninfo.get("dbname")
    return f"PostgreSQL at host {host}, port {port}, database {dbname} (user {user})"


def redact(url: str) -> str:
    """``url`` without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
