"""Projection workers facing races and bad events, on both backends: concurrent
starts on a fresh schema, ``catch_up()`` beside a running worker, a projection that
raises (stop at the event, commit everything before it, same stop on restart, or
skip it into a dead letter when told), and AgentStats on an event it cannot decode."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from snaptail import AgentStore
from snaptail.cli import app
from snaptail.projections import (
    AgentStats,
    ProjectionBusy,
    ProjectionFailed,
    ProjectionWorker,
    open_view,
)
from tests.conftest import POSTGRES_URL
from tests.projection_support import (
    POISON,
    Boom,
    actual,
    add_poison,
    add_undecodable_usage,
    boom_seen,
    close_views,
    expected,
    seed,
    start_worker,
    view_position,
)

BOOM = "tests.projection_support:Boom"


@pytest.fixture
def store(database_url: str) -> Iterator[AgentStore]:
    with AgentStore(database_url, snapshot_every=100) as s:
        yield s
    close_views()


def test_workers_started_at_once_on_a_fresh_postgres_schema_never_crash(
    postgres_url: str,
) -> None:
    """Ten trials of two workers opening a schema nobody used yet (half of them with
    the view in a schema that does not exist yet): view tables and schemas are created
    under a lock, so no ``CREATE ... IF NOT EXISTS`` collides in the catalogues."""
    import psycopg

    base = postgres_url.rpartition("schema=")[0]
    failures: list[str] = []
    for trial in range(10):
        schema = f"snaptail_race_{uuid.uuid4().hex[:10]}"
        view_schema = f"{schema}_v" if trial % 2 else schema
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        barrier = threading.Barrier(2)

        def start(
            url: str = f"{base}schema={schema}",
            view: str = view_schema,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait(timeout=60)
            try:
                ProjectionWorker(AgentStats, url, f"{base}schema={view}").close()
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=start) for _ in range(2)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        finally:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                for name in {schema, view_schema}:
                    conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    assert failures == []


def test_catch_up_takes_the_lock_a_running_worker_holds(store: AgentStore) -> None:
    seed(store, agents=2, events=30)
    with (
        ProjectionWorker(AgentStats, store.url) as running,
        ProjectionWorker(AgentStats, store.url) as direct,
    ):
        assert running.lock.try_acquire()
        with pytest.raises(ProjectionBusy, match="AgentStats"):
            direct.catch_up()
        assert view_position(store.url) == (0, 0)  # nothing applied behind its back

        running.lock.release()
        head = direct.head()
        assert direct.catch_up() == head
        assert not direct.lock.held  # released again once caught up
        assert running.lock.try_acquire()


def test_a_failing_projection_stops_at_the_event_and_keeps_everything_before(
    store: AgentStore, tmp_path: Path
) -> None:
    ids = seed(store, agents=4, events=300)  # about 1,200 events before the poison
    poisoned = add_poison(store, ids[2])
    seed(store, agents=2, events=200, seed=2)  # and more after it
    version = store.recorder.max_version(ids[2])
    head = store.recorder.max_notification_id() or 0
    assert head - poisoned > 100

    messages = []
    for _ in range(2):  # a restart stops at the same event, with the same message
        # the default batch: 1,000 events
        with ProjectionWorker(Boom, store.url) as worker, pytest.raises(ProjectionFailed) as failed:
            worker.catch_up()
        error = failed.value
        assert (error.projection, error.notification_id) == ("Boom", poisoned)
        assert (error.agent_id, error.version) == (ids[2], version)
        assert error.event_type == "InputItemAdded"
        messages.append(str(error))
        for part in ("'Boom'", str(poisoned), str(ids[2]), f"version {version}",
                     "InputItemAdded", "ValueError", POISON):  # fmt: skip
            assert part in str(error)
        # every event before the failing one is committed, exactly once
        assert boom_seen(store.url) == sorted(
            n.id for n in store.recorder.select_notifications(start=1, limit=head)
            if n.id < poisoned
        )  # fmt: skip
        position, processed = view_position(store.url, "Boom")
        assert position == poisoned - 1 and processed == len(boom_seen(store.url))
    assert messages[0] == messages[1]

    log = tmp_path / "worker.log"  # the command: exit status 3, the message, no traceback
    process = start_worker(store.url, log, "--catch-up-only", target=BOOM)
    assert process.wait(timeout=120) == 3, log.read_text()
    text = log.read_text()
    assert messages[0] in text and f"committed up to notification {poisoned - 1}" in text
    assert "--skip-failed" in text and "Traceback" not in text


def test_skip_failed_records_a_dead_letter_and_goes_on(store: AgentStore) -> None:
    ids = seed(store, agents=2, events=100)
    poisoned = add_poison(store, ids[1])
    seed(store, agents=1, events=50, seed=3)
    head = store.recorder.max_notification_id() or 0
    with ProjectionWorker(Boom, store.url, batch_size=50, skip_failed=True) as worker:
        worker.catch_up()
        letters = worker.view.dead_letters("Boom")
    assert [(d.notification_id, d.agent_id, d.event_type) for d in letters] == [
        (poisoned, str(ids[1]), "InputItemAdded")
    ]
    assert letters[0].version == store.recorder.max_version(ids[1])
    assert "ValueError" in letters[0].error and POISON in letters[0].error
    seen = boom_seen(store.url)
    assert poisoned not in seen and seen[-1] == head
    assert view_position(store.url, "Boom") == (head, len(seen))


def test_agent_stats_counts_an_undecodable_event_as_a_failure(
    store: AgentStore, tmp_path: Path
) -> None:
    ids = seed(store, agents=2, events=40)
    bad, version = add_undecodable_usage(store, ids[0])
    runner = CliRunner()

    with ProjectionWorker(AgentStats, store.url) as worker, pytest.raises(ProjectionFailed) as e:
        worker.catch_up()
    assert (e.value.notification_id, e.value.version) == (bad, version)
    assert e.value.event_type == "LlmRequestFinished"
    assert view_position(store.url)[0] == bad - 1

    result = runner.invoke(app, ["stats", "--db", store.url, "--json"])
    assert result.exit_code == 3, result.output
    assert f"notification {bad}" in result.stderr and "LlmRequestFinished" in result.stderr
    assert "Traceback" not in result.output

    log = tmp_path / "worker.log"
    process = start_worker(store.url, log, "--catch-up-only", "--skip-failed")
    assert process.wait(timeout=120) == 0, log.read_text()
    result = runner.invoke(app, ["stats", "--db", store.url, "--json"])
    assert result.exit_code == 0, result.output
    assert f"skipped notification {bad} (agent {ids[0]}, version {version}" in result.stderr
    records = {r["agent_id"]: r for r in msgspec.json.decode(result.stdout)}
    truth = expected(store, ids[1:])
    assert actual(store.url)[str(ids[1])] == truth[str(ids[1])]
    assert records[str(ids[0])]["events"] == version - 1  # the bad event is not counted


def test_dead_letters_are_kept_per_projection_and_inspect_shows_them(
    store: AgentStore,
) -> None:
    ids = seed(store, agents=2, events=20)
    healthy = CliRunner().invoke(app, ["inspect", str(ids[0]), "--db", store.url])
    assert healthy.exit_code == 0 and "healthy" in healthy.stdout, healthy.output

    poisoned = add_poison(store, ids[0])
    with ProjectionWorker(Boom, store.url, skip_failed=True) as worker:
        worker.catch_up()
    view = open_view(store.url)
    try:
        assert [d.notification_id for d in view.dead_letters(agent_id=str(ids[0]))] == [poisoned]
        assert view.dead_letters("AgentStats") == []
    finally:
        view.close()

    shown = CliRunner().invoke(
        app, ["inspect", str(ids[0]), "--db", store.url], env={"COLUMNS": "250"}
    )
    assert shown.exit_code == 0, shown.output
    assert f"projection 'Boom' skipped notification {poisoned}" in shown.stdout
    assert "healthy" not in shown.stdout
    other = CliRunner().invoke(app, ["inspect", str(ids[1]), "--db", store.url])
    assert "healthy" in other.stdout and "skipped" not in other.stdout
