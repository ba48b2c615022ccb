"""Save ids do not grow forever (issue 19): each save's id row (``snaptail_saves``, the
ambiguous-commit rule's witness) is kept for ``keep_save_ids`` (7 days by default) and
pruned by ordinary saves; an id older than that whose row is gone is reported as
unknown (``SaveOutcomeExpired``), never as "not committed" (which would let a command
be applied twice). Both backends, sync and async stores."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from snaptail import Agent, AgentStore, SaveOutcomeUnknown
from tests.async_bridge import MakeStore

DAY = 86400.0


def time_ordered_id(at: float) -> UUID:
    """A version-7 UUID (RFC 9562) whose timestamp is ``at`` (seconds since the epoch):
    the shape of a save id, built here from the RFC, not from snaptail."""
    value = (int(at * 1000) & (2**48 - 1)) << 80
    value |= int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value &= ~(0xF << 76)
    value |= 0x7 << 76  # version 7
    value &= ~(0x3 << 62)
    value |= 0x2 << 62  # RFC 4122 variant
    return UUID(int=value)


def save_rows(store: AgentStore) -> set[UUID]:
    """The ids in the saves table."""
    url = store.url
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[1]
        with sqlite3.connect(path) as conn:
            return {UUID(bytes=r[0]) for r in conn.execute("SELECT save_id FROM snaptail_saves")}
    import psycopg

    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(url.split("?")[0]) as conn:
        rows = conn.execute(f"SELECT save_id FROM {schema}.snaptail_saves").fetchall()
        return {r[0] for r in rows}


def write_with_id(store: AgentStore, save_id: UUID) -> None:
    """An agent's first event stored under ``save_id`` (as a save long ago did)."""
    agent = Agent("old")
    event = store.mapper.to_stored_event(agent.pending_events[0])
    stored = StoredEvent(agent.id, event.originator_version, event.topic, event.state)
    store.recorder.insert_events([stored], save_id=save_id)


def test_ordinary_saves_prune_save_ids_older_than_the_horizon(
    database_url: str, make_store: MakeStore
) -> None:
    now = time.time()
    old = [time_ordered_id(now - 8 * DAY) for _ in range(5)]
    recent = [time_ordered_id(now - 6 * DAY), time_ordered_id(now - 60)]
    legacy = uuid4()  # ids written before save ids were time-ordered: no age, kept
    with AgentStore(database_url) as writer:
        for save_id in [*old, *recent, legacy]:
            write_with_id(writer, save_id)
        assert save_rows(writer) == {*old, *recent, legacy}
    with make_store(database_url) as store:  # a new process: its first save prunes
        agent = Agent("now")
        store.save(agent)
        rows = save_rows(store)
        assert not rows & set(old), "save ids older than 7 days are pruned"
        assert {*recent, legacy} <= rows and len(rows) == 4  # and the new save's own
        assert all(store.save_committed(i) for i in [*recent, legacy])
        for save_id in old:
            with pytest.raises(SaveOutcomeUnknown) as raised:
                store.save_committed(save_id)
            assert "7 days" in str(raised.value) and str(save_id) in str(raised.value)
        # A recent id that was never stored is certainly not committed.
        assert store.save_committed(time_ordered_id(time.time() - 5)) is False


def test_the_horizon_is_a_store_option(database_url: str) -> None:
    now = time.time()
    two_days = time_ordered_id(now - 2 * DAY)
    with AgentStore(database_url, keep_save_ids=timedelta(days=1)) as store:
        write_with_id(store, two_days)
        assert store.prune_save_ids() == 1
        assert store.prune_save_ids() == 0
        with pytest.raises(SaveOutcomeUnknown):
            store.save_committed(two_days)
    with pytest.raises(ValueError, match="keep_save_ids"):
        AgentStore(database_url, keep_save_ids=timedelta(minutes=5))


def test_a_prune_removes_a_bounded_batch_and_the_next_save_goes_on(database_url: str) -> None:
    import snaptail.application.engine as engine

    now = time.time()
    with AgentStore(database_url) as store:
        for _ in range(7):
            write_with_id(store, time_ordered_id(now - 9 * DAY))
        limit, engine.PRUNE_BATCH = engine.PRUNE_BATCH, 3
        try:
            for n in range(4):
                store.save(Agent(f"a{n}"))
        finally:
            engine.PRUNE_BATCH = limit
        assert len(save_rows(store)) == 4, "7 old rows gone in batches of 3, 4 new kept"


def test_a_failed_prune_never_fails_the_save(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from eventsourcing.persistence import OperationalError

    def broken(before: UUID, limit: int) -> int:
        raise OperationalError("disk I/O error")

    with AgentStore(sqlite_url) as store:
        monkeypatch.setattr(store.recorder, "prune_saves", broken)
        agent = Agent("kept")
        with caplog.at_level("WARNING", logger="snaptail.store"):
            store.save(agent)  # committed: the prune's failure is only logged
        assert not agent.pending_events and store.get(agent.id).version == 1
        assert any("pruning old save ids failed" in r.getMessage() for r in caplog.records)


def test_an_archive_run_prunes_old_save_ids(database_url: str, tmp_path: object) -> None:
    old = time_ordered_id(time.time() - 30 * DAY)
    with AgentStore(database_url) as store:
        store.save(Agent("first"))  # the store's own first prune (nothing old yet)
        write_with_id(store, old)
        assert old in save_rows(store)
        store.archive(f"{tmp_path}/archive")
        assert old not in save_rows(store)
