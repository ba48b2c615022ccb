"""The SQL that SQLite and PostgreSQL say alike, written once.

Each builder returns a statement with ``{ev}`` (the events table) and ``{sn}`` (the
snapshots table) left to fill, in a :class:`Dialect`'s parameter style: SQLite
formats them with its table names, PostgreSQL with quoted identifiers
(``psycopg.sql.SQL(...).format``). What differs between the two stays in the
dialect: the parameter marker, ``MIN``/``LEAST`` of two values, a list parameter.
"""

from __future__ import annotations

from typing import NamedTuple


class Dialect(NamedTuple):
    param: str  # a parameter's marker
    least: str  # the smaller of two values, NULL ignored
    topics: str  # ``topic`` in a list given as one parameter ({} is its marker list)


SQLITE = Dialect(param="?", least="MIN", topics="topic IN ({})")
POSTGRES = Dialect(param="%s", least="LEAST", topics="topic = ANY(%s)")


def prune_snapshots(d: Dialect) -> str:
    """Retention: delete an agent's snapshots older than its newest K, except the newest
    of each of its last two fingerprints (so the previous code version keeps one of its
    own). Parameters: id, id, K - 1, id."""
    p = d.param
    return (
        f"DELETE FROM {{sn}} WHERE originator_id = {p} AND originator_version < ("
        f"SELECT originator_version FROM {{sn}} WHERE originator_id = {p} "
        f"ORDER BY originator_version DESC LIMIT 1 OFFSET {p}) "
        "AND originator_version NOT IN (SELECT MAX(originator_version) FROM {sn} "
        f"WHERE originator_id = {p} GROUP BY fingerprint ORDER BY 1 DESC LIMIT 2)"
    )


def select_snapshot(d: Dialect) -> str:
    """The agent's newest snapshot at or before a version. Parameters: id, version."""
    p = d.param
    return (
        "SELECT originator_version, topic, fingerprint, checksum, state FROM {sn} "
        f"WHERE originator_id = {p} AND originator_version <= {p} "
        "ORDER BY originator_version DESC LIMIT 1"
    )


def select_tail(d: Dialect) -> str:
    """A load's events: after the snapshot's version, and enough before it to give
    ``recent`` events, up to a version (with none at or below it the tail is empty).
    Parameters: id, upper, snapshot version, id, upper, recent."""
    p = d.param
    return (
        "SELECT originator_version, topic, state FROM {ev} "
        f"WHERE originator_id = {p} AND originator_version <= {p} "
        f"AND originator_version > {d.least}({p}, (SELECT MAX(originator_version) FROM {{ev}} "
        f"WHERE originator_id = {p} AND originator_version <= {p}) - {p}) "
        "ORDER BY originator_version"
    )


def select_page(d: Dialect, *, gt: bool, lt: bool, topics: int, desc: bool) -> str:
    """One page of an agent's events strictly between two versions (each bound
    optional), of ``topics`` topics (0: all). Parameters: id, [gt], [lt], [topics],
    limit (PostgreSQL takes the topics as one list parameter)."""
    p = d.param
    statement = f"SELECT originator_version, topic, state FROM {{ev}} WHERE originator_id = {p}"
    if gt:
        statement += f" AND originator_version > {p}"
    if lt:
        statement += f" AND originator_version < {p}"
    if topics:
        statement += " AND " + d.topics.format(",".join([p] * topics))
    return statement + f" ORDER BY originator_version {'DESC' if desc else 'ASC'} LIMIT {p}"
