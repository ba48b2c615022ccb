"""eventsourcing's ``ProjectionRunner``, unchanged, on snaptail's SQLite recorder."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder

from snaptail import Agent
from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.sqlite import SQLiteAgentRecorder


class EventCounts(SQLiteTrackingRecorder):
    """A materialised view: events per topic, tracked in the same transaction."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS event_counts (topic TEXT PRIMARY KEY, n INTEGER)",
        ]

    def count(self, topic: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "INSERT INTO event_counts VALUES (?, 1) "
                "ON CONFLICT (topic) DO UPDATE SET n = n + 1",
                (topic,),
            )
            self._insert_tracking(c, tracking)

    def counts(self) -> dict[str, int]:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT topic, n FROM event_counts")
            return {row[0]: row[1] for row in c.fetchall()}


class CountEvents(Projection[EventCounts]):
    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.count(type(domain_event).__qualname__, tracking)


def env(path: Path) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "SQLITE_LOCK_TIMEOUT": "30",
        "APPLICATION_RECORDER_TOPIC": "snaptail.infrastructure.sqlite:SQLiteAgentRecorder",
        "MAPPER_TOPIC": "snaptail.infrastructure.mapper:MsgspecMapper",
    }


def test_projection_runner_catches_up_and_follows_on_sqlite(tmp_path: Path) -> None:
    app: Application[Any] = Application(env=env(tmp_path / "events.db"))
    assert isinstance(app.recorder, SQLiteAgentRecorder)
    agent = Agent("before")
    agent.add_input("user", "hello")
    app.save(agent)  # two events recorded before the runner starts

    with ProjectionRunner(
        application_class=Application,
        projection_class=CountEvents,
        view_class=EventCounts,
        env=env(tmp_path / "events.db"),
    ) as runner:
        runner.wait(app.recorder.max_notification_id(), timeout=30)
        assert runner.view.counts() == {"Agent.Created": 1, "Agent.InputItemAdded": 1}

        agent.add_output("assistant_message", "hi")
        agent.add_input("user", "again")
        app.save(agent)  # recorded while the runner follows
        runner.wait(app.recorder.max_notification_id(), timeout=30)
        assert runner.view.counts() == {
            "Agent.Created": 1,
            "Agent.InputItemAdded": 2,
            "Agent.OutputItemAdded": 1,
        }
    app.close()


def test_subscription_wakes_on_commit_in_the_same_process(tmp_path: Path) -> None:
    recorder = SQLiteAgentRecorder(SQLiteDatastore(str(tmp_path / "e.db")))
    recorder.create_table()
    # A poll interval far longer than the test's wait: only the commit signal can
    # deliver the event in time.
    subscription = recorder.subscribe(gt=0, poll_interval=3600)
    received: list[int] = []
    got = threading.Event()

    def follow() -> None:
        for notification in subscription:
            received.append(notification.id)
            got.set()

    thread = threading.Thread(target=follow)
    with subscription:
        thread.start()
        agent = Agent("x")
        recorder.insert_events([MsgspecMapper().to_stored_event(e) for e in agent.collect_events()])
        assert got.wait(timeout=60)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert received == [1]
