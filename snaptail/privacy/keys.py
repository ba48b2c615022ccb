"""The key store: a key per data subject, a data key per agent, kept apart from the
event database and wrapped by a master key.

Layout (tables on their own SQLite file, or in a PostgreSQL database/schema):

- ``snaptail_keys_meta``: the key that makes subject references, wrapped by the
  master key (unwrapping it at open time is how a wrong master key is caught);
- ``snaptail_keys_subjects``: ``ref`` (HMAC-SHA256 of the subject id: the raw id is
  stored nowhere) and the subject's 256-bit key, wrapped by the master key;
- ``snaptail_keys_agents``: an agent's 256-bit data key, wrapped once by the key of
  each of its subjects in turn (layers), so forgetting ANY of them makes it unusable;
  after an erasure the wrapped key is gone and ``erasure_id`` says why;
- ``snaptail_keys_agent_subjects``: which agents each subject reference concerns;
- ``snaptail_keys_erasures``: the erasure records (reference, time, agent ids, event
  count; no personal data).

The master key sits behind :class:`KeyWrapper`: :class:`LocalMasterKey` (from
``$SNAPTAIL_MASTER_KEY`` / ``$SNAPTAIL_MASTER_KEY_FILE``) or an object that calls a
KMS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable
from uuid import UUID

from snaptail.errors import AgentForgotten, MasterKeyError
from snaptail.infrastructure.urls import is_postgres_url, parse_postgres_url, redact, sqlite_path

MASTER_KEY_ENV = "SNAPTAIL_MASTER_KEY"
MASTER_KEY_FILE_ENV = "SNAPTAIL_MASTER_KEY_FILE"
KEYS_URL_ENV = "SNAPTAIL_KEYS_URL"
logger = logging.getLogger("snaptail.privacy")

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12


def aesgcm(key: bytes) -> Any:
    """``cryptography``'s AESGCM for ``key`` (imported on first use: the ``privacy``
    extra, so that ``import snaptail`` does not need it)."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover (the dev install has it)
        raise ImportError(
            "encryption needs the cryptography package: pip install 'snaptail[privacy]'"
        ) from None
    return AESGCM(key)


def invalid_tag() -> type[Exception]:
    """``cryptography``'s InvalidTag (raised by a wrong key or altered bytes)."""
    from cryptography.exceptions import InvalidTag

    return InvalidTag


@runtime_checkable
class KeyWrapper(Protocol):
    """What wraps the key store's keys (the master key). Implement it to keep the
    master key in a KMS: ``wrap`` encrypts a 32-byte key bound to ``context`` (for
    example KMS ``Encrypt`` with ``context`` as encryption context), ``unwrap``
    reverses it and raises on a wrong key or context. Both must be thread-safe."""

    def wrap(self, key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, context: bytes) -> bytes: ...


class LocalMasterKey:
    """A 32-byte master key held in memory: AES-256-GCM, random 96-bit nonces."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise MasterKeyError("master key", f"a master key is {KEY_BYTES} bytes, got {len(key)}")
        self._aead = aesgcm(key)

    def wrap(self, key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + cast(bytes, self._aead.encrypt(nonce, key, context))

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        return cast(bytes, self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context))


def new_master_key() -> str:
    """A fresh random master key, base64 (what ``$SNAPTAIL_MASTER_KEY`` holds)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse_master_key(text: str | bytes, where: str) -> bytes:
    """32 key bytes from base64, hex, or (a file's) 32 raw bytes."""
    if isinstance(text, bytes):
        if len(text) == KEY_BYTES:
            return text
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise MasterKeyError(
                where,
                f"the master key file holds {len(text)} bytes, "
                f"not {KEY_BYTES} raw bytes, base64 or hex",
            ) from None
    text = text.strip()
    for decode in (base64.b64decode, base64.urlsafe_b64decode, bytes.fromhex):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise MasterKeyError(
        where,
        f"the master key is not {KEY_BYTES} bytes in base64 or hex; make one with"
        " `python -c 'import snaptail.privacy as p; print(p.new_master_key())'`",
    )


def master_key_from_env(where: str) -> LocalMasterKey:
    """The master key from ``$SNAPTAIL_MASTER_KEY`` or the file
    ``$SNAPTAIL_MASTER_KEY_FILE`` names; :class:`MasterKeyError` if neither is set."""
    value = os.environ.get(MASTER_KEY_ENV)
    if value:
        return LocalMasterKey(parse_master_key(value, f"{where} (${MASTER_KEY_ENV})"))
    path = os.environ.get(MASTER_KEY_FILE_ENV)
    if path:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise MasterKeyError(
                where, f"cannot read ${MASTER_KEY_FILE_ENV}={path}: {exc}"
            ) from None
        return LocalMasterKey(parse_master_key(data, f"{where} ({path})"))
    raise MasterKeyError(
        where,
        f"no master key: set ${MASTER_KEY_ENV} (32 bytes, base64 or hex) or"
        f" ${MASTER_KEY_FILE_ENV} (a file holding it), or pass master_key=",
    )


@dataclass(frozen=True)
class Erasure:
    """The record of one ``forget``: no personal data, only the subject's reference
    (an HMAC of its id), when, which agents (random ids) and how many events."""

    id: str
    subject_ref: str
    at: str
    agent_ids: tuple[str, ...]
    events: int

    @property
    def agents(self) -> int:
        return len(self.agent_ids)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class KeyStore(Protocol):
    """What the store and ``forget`` need from a key store (:class:`SQLKeyStore` is
    the built-in one, on SQLite or PostgreSQL)."""

    url: str

    def subject_ref(self, subject: str) -> str: ...
    def agent_key(self, agent_id: UUID) -> bytes | Erasure | None: ...
    def add_subjects(self, agent_id: UUID, subjects: Sequence[str]) -> tuple[str, ...]: ...
    def subjects_of(self, agent_id: UUID) -> tuple[str, ...]: ...
    def agents_of(self, subject_ref: str) -> tuple[UUID, ...]: ...
    def forget(
        self, subject_ref: str, count_events: Callable[[Sequence[UUID]], int]
    ) -> Erasure | None: ...
    def erasures(self) -> list[Erasure]: ...
    def close(self) -> None: ...


_TABLES = {
    "meta": "snaptail_keys_meta",
    "subjects": "snaptail_keys_subjects",
    "agents": "snaptail_keys_agents",
    "links": "snaptail_keys_agent_subjects",
    "erasures": "snaptail_keys_erasures",
}


def _ddl(blob: str, prefix: str) -> list[str]:
    t = {k: prefix + v for k, v in _TABLES.items()}
    return [
        f"CREATE TABLE IF NOT EXISTS {t['meta']} (name TEXT PRIMARY KEY, value {blob} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {t['subjects']} (ref TEXT PRIMARY KEY,"
        f" wrapped {blob} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {t['agents']} (agent_id TEXT PRIMARY KEY,"
        f" refs TEXT NOT NULL, wrapped {blob}, erasure_id TEXT)",
        f"CREATE TABLE IF NOT EXISTS {t['links']} (ref TEXT NOT NULL, agent_id TEXT NOT NULL,"
        " PRIMARY KEY (ref, agent_id))",
        f"CREATE TABLE IF NOT EXISTS {t['erasures']} (id TEXT PRIMARY KEY, ref TEXT NOT NULL,"
        " at TEXT NOT NULL, agent_ids TEXT NOT NULL, events BIGINT NOT NULL)",
    ]


class SQLKeyStore:
    """The built-in key store on a SQLite file (``sqlite:///keys.db``, or
    ``:memory:`` for tests) or PostgreSQL (``postgresql://.../keysdb?schema=S``: a
    database of its own is best, so that a dump of the event database holds no key).

    Opening it checks the master key (``master_key``, else from the environment):
    missing or wrong, :class:`~snaptail.errors.MasterKeyError` is raised before
    anything is read or written. Thread-safe (one connection behind a lock).
    """

    def __init__(self, url: str, master_key: KeyWrapper | bytes | str | None = None) -> None:
        self.url = url
        where = redact(url)
        if master_key is None:
            wrapper: KeyWrapper = master_key_from_env(where)
        elif isinstance(master_key, bytes | str):
            wrapper = LocalMasterKey(parse_master_key(master_key, where))
        else:
            wrapper = master_key
        self._wrapper = wrapper
        self._lock = threading.RLock()
        self._postgres = is_postgres_url(url)
        if self._postgres:
            import psycopg

            options = parse_postgres_url(url)
            self._conn: Any = psycopg.connect(**options.connect_args(), autocommit=True)
            self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {options.schema}")
            prefix = f"{options.schema}."
            statements = _ddl("BYTEA", prefix)
        else:
            path = sqlite_path(url)
            if path is None:
                raise ValueError(
                    f"a key store URL is sqlite:///FILE, :memory: or postgresql://..., got {where}"
                )
            # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE).
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            # Deleted keys are overwritten with zeros in the file, not left in free pages.
            self._conn.execute("PRAGMA secure_delete = ON")
            prefix = ""
            statements = _ddl("BLOB", "")
        self._t = {k: prefix + v for k, v in _TABLES.items()}
        with self._transaction() as cur:
            for statement in statements:
                cur.execute(statement)
        self._ref_key = self._load_ref_key(where)
        self._subject_keys: dict[str, bytes] = {}

    # -- plumbing ---------------------------------------------------------------------

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self._postgres else statement

    @contextmanager
    def _transaction(self) -> Iterator[_Cursor]:
        with self._lock:
            if self._postgres:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield _Cursor(cur, self._sql)
            else:
                cur = self._conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield _Cursor(cur, self._sql)
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")

    def _load_ref_key(self, where: str) -> bytes:
        context = b"snaptail:ref-key"
        with self._transaction() as cur:
            cur.execute(f"SELECT value FROM {self._t['meta']} WHERE name = ?", ("ref_key",))
            row = cur.fetchone()
            if row is None:
                key = os.urandom(KEY_BYTES)
                cur.execute(
                    f"INSERT INTO {self._t['meta']} (name, value) VALUES (?, ?)",
                    ("ref_key", self._wrapper.wrap(key, context)),
                )
                return key
        try:
            return self._wrapper.unwrap(bytes(row[0]), context)
        except (invalid_tag(), ValueError) as exc:
            raise MasterKeyError(
                where,
                "the master key is not the one this key store was made with"
                f" ({type(exc).__name__}); nothing was read or written",
            ) from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- subjects ---------------------------------------------------------------------

    def subject_ref(self, subject: str) -> str:
        """The pseudonymous reference of ``subject`` (HMAC-SHA256 under this key
        store's reference key, hex, 32 characters)."""
        if not isinstance(subject, str) or not subject:
            raise ValueError(f"a subject is a non-empty string, got {subject!r}")
        return hmac.new(self._ref_key, subject.encode(), hashlib.sha256).hexdigest()[:32]

    def _subject_key(self, cur: _Cursor, ref: str, create: bool) -> bytes | None:
        """The subject's key (``create``: made if missing). Reads may use this
        object's cache: the agent rows say whether a key was forgotten. Writes read
        the table: another process may have forgotten the subject meanwhile, and a
        new agent must not be wrapped by the forgotten key."""
        key = None if create else self._subject_keys.get(ref)
        if key is not None:
            return key
        context = b"snaptail:subject:" + ref.encode()
        cur.execute(f"SELECT wrapped FROM {self._t['subjects']} WHERE ref = ?", (ref,))
        row = cur.fetchone()
        if row is not None:
            key = self._wrapper.unwrap(bytes(row[0]), context)
        elif create:  # (another process may create it at the same time: its key wins)
            cur.execute(
                f"INSERT INTO {self._t['subjects']} (ref, wrapped) VALUES (?, ?)"
                " ON CONFLICT (ref) DO NOTHING",
                (ref, self._wrapper.wrap(os.urandom(KEY_BYTES), context)),
            )
            cur.execute(f"SELECT wrapped FROM {self._t['subjects']} WHERE ref = ?", (ref,))
            key = self._wrapper.unwrap(bytes(cur.fetchone()[0]), context)
        else:
            return None
        self._subject_keys[ref] = key
        return key

    def add_subjects(self, agent_id: UUID, subjects: Sequence[str]) -> tuple[str, ...]:
        """Make ``subjects`` subjects of the agent (creating its data key and their
        keys as needed); returns the agent's subject references. Raises
        :class:`~snaptail.errors.AgentForgotten` if the agent was forgotten."""
        new_refs = [self.subject_ref(s) for s in subjects]
        with self._transaction() as cur:
            cur.execute(
                f"SELECT refs, wrapped, erasure_id FROM {self._t['agents']} WHERE agent_id = ?",
                (str(agent_id),),
            )
            row = cur.fetchone()
            if row is not None and row[1] is None:
                raise self._forgotten(cur, agent_id, row[2])
            refs = [r for r in (row[0].split(",") if row else []) if r]
            # Layer 0 is the data key itself (a new one for a new agent).
            wrapped = os.urandom(KEY_BYTES) if row is None else bytes(row[1])
            added = False
            for ref in new_refs:
                if ref in refs:
                    continue
                key = self._subject_key(cur, ref, create=True)
                assert key is not None
                wrapped = _wrap_layer(key, wrapped, agent_id, ref)
                refs.append(ref)
                added = True
                cur.execute(
                    f"INSERT INTO {self._t['links']} (ref, agent_id) VALUES (?, ?)",
                    (ref, str(agent_id)),
                )
            if added:
                if row is None:
                    cur.execute(
                        f"INSERT INTO {self._t['agents']} (agent_id, refs, wrapped)"
                        " VALUES (?, ?, ?)",
                        (str(agent_id), ",".join(refs), wrapped),
                    )
                else:
                    cur.execute(
                        f"UPDATE {self._t['agents']} SET refs = ?, wrapped = ? WHERE agent_id = ?",
                        (",".join(refs), wrapped, str(agent_id)),
                    )
        return tuple(refs)

    def agent_key(self, agent_id: UUID) -> bytes | Erasure | None:
        """The agent's data key; its :class:`Erasure` if it was forgotten; None if
        the agent has no subject (its data is stored unencrypted)."""
        with self._transaction() as cur:
            cur.execute(
                f"SELECT refs, wrapped, erasure_id FROM {self._t['agents']} WHERE agent_id = ?",
                (str(agent_id),),
            )
            row = cur.fetchone()
            if row is None:
                return None
            if row[1] is None:
                return self._erasure(cur, row[2])
            wrapped = bytes(row[1])
            for ref in reversed(row[0].split(",")):
                key = self._subject_key(cur, ref, create=False)
                if key is None:  # forgotten between reads: the agent row says so next time
                    return self._erasure(cur, row[2])
                try:
                    wrapped = _unwrap_layer(key, wrapped, agent_id, ref)
                except invalid_tag():  # a stale cached key (forgotten, then made anew)
                    self._subject_keys.pop(ref, None)
                    key = self._subject_key(cur, ref, create=False)
                    if key is None:
                        return self._erasure(cur, row[2])
                    wrapped = _unwrap_layer(key, wrapped, agent_id, ref)
            return wrapped

    def subjects_of(self, agent_id: UUID) -> tuple[str, ...]:
        """The agent's subject references (empty: no subject)."""
        with self._transaction() as cur:
            cur.execute(
                f"SELECT refs FROM {self._t['agents']} WHERE agent_id = ?", (str(agent_id),)
            )
            row = cur.fetchone()
        return tuple(r for r in row[0].split(",") if r) if row else ()

    def agents_of(self, subject_ref: str) -> tuple[UUID, ...]:
        """The agents ``subject_ref`` is a subject of (forgotten ones included)."""
        with self._transaction() as cur:
            cur.execute(
                f"SELECT agent_id FROM {self._t['links']} WHERE ref = ? ORDER BY agent_id",
                (subject_ref,),
            )
            return tuple(UUID(r[0]) for r in cur.fetchall())

    # -- erasure ------------------------------------------------------------------------

    def forget(
        self, subject_ref: str, count_events: Callable[[Sequence[UUID]], int]
    ) -> Erasure | None:
        """Delete the subject's key and the data key of every agent it is a subject
        of, and record the erasure, in one transaction. None if the key store holds
        no key of ``subject_ref`` (never added, or already forgotten)."""
        with self._transaction() as cur:
            cur.execute(f"SELECT ref FROM {self._t['subjects']} WHERE ref = ?", (subject_ref,))
            if cur.fetchone() is None:
                return None
            cur.execute(
                f"SELECT l.agent_id FROM {self._t['links']} l JOIN {self._t['agents']} a"
                " ON a.agent_id = l.agent_id WHERE l.ref = ? AND a.wrapped IS NOT NULL"
                " ORDER BY l.agent_id",
                (subject_ref,),
            )
            agent_ids = tuple(r[0] for r in cur.fetchall())
            erasure = Erasure(
                id=str(uuid.uuid4()),
                subject_ref=subject_ref,
                at=_now(),
                agent_ids=agent_ids,
                events=count_events([UUID(a) for a in agent_ids]),
            )
            cur.execute(f"DELETE FROM {self._t['subjects']} WHERE ref = ?", (subject_ref,))
            for agent_id in agent_ids:
                cur.execute(
                    f"UPDATE {self._t['agents']} SET wrapped = NULL, erasure_id = ?"
                    " WHERE agent_id = ?",
                    (erasure.id, agent_id),
                )
            cur.execute(
                f"INSERT INTO {self._t['erasures']} (id, ref, at, agent_ids, events)"
                " VALUES (?, ?, ?, ?, ?)",
                (erasure.id, subject_ref, erasure.at, ",".join(agent_ids), erasure.events),
            )
            self._subject_keys.pop(subject_ref, None)
        if self._postgres:  # dead row versions keep the old bytes until vacuumed
            with self._lock:
                for table in ("subjects", "agents"):
                    try:
                        self._conn.execute(f"VACUUM {self._t[table]}")
                    except Exception as exc:  # the erasure is committed all the same
                        logger.warning(
                            "key store %s: VACUUM %s failed (%s: %s); run it as the table's"
                            " owner, or deleted keys stay in its files until autovacuum",
                            redact(self.url), self._t[table], type(exc).__name__, exc,
                        )  # fmt: skip
        return erasure

    def erasures(self) -> list[Erasure]:
        """Every erasure record, oldest first."""
        with self._transaction() as cur:
            cur.execute(
                f"SELECT id, ref, at, agent_ids, events FROM {self._t['erasures']} ORDER BY at, id"
            )
            return [_erasure_row(r) for r in cur.fetchall()]

    def _erasure(self, cur: _Cursor, erasure_id: str | None) -> Erasure:
        cur.execute(
            f"SELECT id, ref, at, agent_ids, events FROM {self._t['erasures']} WHERE id = ?",
            (erasure_id,),
        )
        row = cur.fetchone()
        if row is None:  # a damaged key store: the key is gone all the same
            return Erasure(str(erasure_id), "", "", (), 0)
        return _erasure_row(row)

    def _forgotten(self, cur: _Cursor, agent_id: UUID, erasure_id: str | None) -> AgentForgotten:
        erasure = self._erasure(cur, erasure_id)
        return AgentForgotten(agent_id, erasure.id, erasure.at)


def _erasure_row(row: Sequence[Any]) -> Erasure:
    ids = tuple(a for a in str(row[3]).split(",") if a)
    return Erasure(str(row[0]), str(row[1]), str(row[2]), ids, int(row[4]))


def _layer_context(agent_id: UUID, ref: str) -> bytes:
    return b"snaptail:agent:" + agent_id.bytes + ref.encode()


def _wrap_layer(key: bytes, inner: bytes, agent_id: UUID, ref: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + cast(bytes, aesgcm(key).encrypt(nonce, inner, _layer_context(agent_id, ref)))


def _unwrap_layer(key: bytes, outer: bytes, agent_id: UUID, ref: str) -> bytes:
    context = _layer_context(agent_id, ref)
    return cast(bytes, aesgcm(key).decrypt(outer[:NONCE_BYTES], outer[NONCE_BYTES:], context))


class _Cursor:
    """A DB-API cursor taking ``?`` placeholders on both backends."""

    def __init__(self, cur: Any, sql: Callable[[str], str]) -> None:
        self._cur, self._sql = cur, sql

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(self._sql(statement), tuple(params))

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall())


def open_key_store(
    keys: KeyStore | str | None, master_key: KeyWrapper | bytes | str | None = None
) -> KeyStore | None:
    """``keys`` as a key store: a KeyStore as is, a URL opened, None from
    ``$SNAPTAIL_KEYS_URL`` (None if that is unset: no key store)."""
    if keys is None:
        keys = os.environ.get(KEYS_URL_ENV) or None
        if keys is None:
            return None
    if isinstance(keys, str):
        return SQLKeyStore(keys, master_key)
    return keys
