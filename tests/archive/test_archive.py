"""Archive segments (issue 21): every read gives the same before and after archiving;
what moves and what stays; bad segments fail loudly; runs exclude each other."""

from __future__ import annotations

import datetime
import itertools
import os
import random
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Notification
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from snaptail import Agent, AgentStore, DamagedLog
from snaptail.archive import Location
from snaptail.archive.manifest import TRACKING_TABLE, ArchiveDB
from snaptail.archive.runner import archive_lock, segment_name
from snaptail.domain.compare import agent_differences
from snaptail.errors import ArchiveBusy, ArchiveDamaged
from snaptail.infrastructure.recorder import START
from snaptail.projections import Projection, ProjectionWorker, ViewCursor
from snaptail.projections import view as projection_view
from snaptail.workload import Workload
from tests.agents import CI
from tests.projection_support import settle

counter = itertools.count()


class Recording(Projection):
    """Remembers every event it is given (agent, version, topic, position), in order."""

    name = "Recording"

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]
        self.seen: list[tuple[str, int, str, tuple[int, int]]] = []

    def handle(self, view: ViewCursor, notification: Notification) -> None:
        position = getattr(notification, "position", (0, notification.id))
        self.seen.append(
            (str(notification.originator_id), notification.originator_version,
             notification.topic, tuple(position)),
        )  # fmt: skip


def from_zero(url: str, view_dir: Path, ids: Sequence[UUID]) -> list[Any]:
    """What a new projection sees, from position zero, of the agents ``ids``."""
    n = next(counter)
    projection = Recording(f"rec{n}")
    with ProjectionWorker(projection, url, f"sqlite:///{view_dir / f'view{n}.db'}") as worker:
        worker.catch_up()
    wanted = {str(i) for i in ids}
    return [s for s in projection.seen if s[0] in wanted]


def reads(store: AgentStore, agent_id: UUID, rnd: random.Random) -> dict[str, Any]:
    """Everything a user can read of the agent, for comparison."""
    head = store.event_count(agent_id)
    topics = sorted({store.mapper.topic_of(type(e)) for e in store.history(agent_id)})
    some = rnd.sample(topics, k=min(2, len(topics)))
    after, before = rnd.randint(0, head), rnd.randint(1, head + 2)
    page = rnd.randint(1, 40)
    return {
        "forward": list(store.history(agent_id, page_size=page)),
        "reverse": list(store.history(agent_id, reverse=True, page_size=page)),
        "typed": list(store.history(agent_id, types=some, page_size=page)),
        "typed-reverse": list(store.history(agent_id, types=some, reverse=True)),
        "range": list(store.history(agent_id, after=after, before=before, page_size=page)),
        "range-reverse": list(
            store.history(agent_id, after=after, before=before, reverse=True, page_size=page)
        ),
        "latest": store.latest(agent_id),
        "count": store.event_count(agent_id),
    }


def same_agents(a: Agent, b: Agent, what: str) -> None:
    differences = agent_differences(a, b)
    assert not differences, f"{what}: {differences}"


@settings(
    # Seconds per example (every version loaded twice, two archive runs, projections
    # from zero): 12 under the ci profile, not its 300, to keep CI's time.
    max_examples=12 if CI else 6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # An example takes seconds: shrinking would take many minutes (the failing
    # example is printed as drawn).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(
    sizes=st.lists(st.integers(2, 140), min_size=1, max_size=3),
    more=st.lists(st.integers(0, 60), min_size=3, max_size=3),
    batch=st.integers(1, 40),
    snapshot_every=st.sampled_from([3, 10, 25, 10_000]),
    keep_snapshots=st.integers(1, 3),
    recent=st.integers(0, 30),
    keep_events=st.integers(0, 20),
    seed=st.integers(0, 10_000),
)
def test_every_read_is_the_same_before_and_after_archiving(
    database_url: str,
    tmp_path: Path,
    sizes: list[int],
    more: list[int],
    batch: int,
    snapshot_every: int,
    keep_snapshots: int,
    recent: int,
    keep_events: int,
    seed: int,
) -> None:
    """For random logs, snapshot policies and two archive cut points (with writes in
    between): history (both directions, type filters, ranges, pages), get(version=v)
    for every v, get(), replay() and a projection from zero are unchanged."""
    archive = str(tmp_path / "archive")
    with AgentStore(
        database_url, snapshot_every=snapshot_every, keep_snapshots=keep_snapshots,
        recent_events=recent,
    ) as store:  # fmt: skip
        agents = [Agent(name=f"a{i}") for i in range(len(sizes))]
        loads = [Workload(seed * 10 + i) for i in range(len(sizes))]
        moved = 0
        for phase in range(2):
            for agent, load, n in zip(agents, loads, sizes if phase == 0 else more, strict=False):
                load.drive(agent, n, save=store.save, batch=batch)
            ids = [a.id for a in agents]
            settle(database_url)
            truth = {i: reads(store, i, random.Random(seed)) for i in ids}
            versions = {
                i: {v: store.replay(i, v) for v in range(1, store.event_count(i) + 1)} for i in ids
            }
            stream = from_zero(database_url, tmp_path, ids)
            report = store.archive(archive, keep_events=keep_events)
            moved += report.events
            for i in ids:
                assert reads(store, i, random.Random(seed)) == truth[i]
                for v, replayed in versions[i].items():
                    same_agents(store.get(i, version=v), replayed, f"get(version={v})")
                same_agents(store.replay(i), versions[i][store.event_count(i)], "replay()")
                same_agents(store.get(i), versions[i][store.event_count(i)], "get()")
                hot = max(recent, keep_events, 1)
                assert store.archive_reader.upto(i) <= max(0, store.event_count(i) - hot)
            assert from_zero(database_url, tmp_path, ids) == stream
        event("events archived" if moved else "nothing archived")
        if snapshot_every < 10_000 and max(sizes) > 3 * snapshot_every + recent + keep_events:
            assert moved > 0


def populate(url: str, agents: int = 3, events: int = 120, every: int = 10) -> list[UUID]:
    with AgentStore(url, snapshot_every=every, recent_events=10) as store:
        ids = []
        for i in range(agents):
            agent = Agent(name=f"p{i}")
            Workload(i).drive(agent, events, save=store.save, batch=15)
            ids.append(agent.id)
        return ids


def history_of(url: str, ids: Sequence[UUID]) -> dict[UUID, list[Any]]:
    with AgentStore(url, recent_events=10) as store:
        return {i: list(store.history(i)) for i in ids}


def test_what_moves_and_what_stays(sqlite_url: str, tmp_path: Path) -> None:
    """Up to the oldest snapshot kept, never into the recent window or keep_events,
    never the newest event; agents without a snapshot keep everything; dry run
    moves nothing; a second run moves nothing more."""
    with AgentStore(sqlite_url, snapshot_every=10, recent_events=10, keep_snapshots=2) as store:
        agent = Agent(name="moves")
        Workload(1).drive(agent, 95, save=store.save, batch=5)
        lonely = Agent(name="no snapshots")
        lonely.add_input("user", "hi")
        store.save(lonely)
        oldest = min(i.originator_version for i in store.recorder.select_snapshot_infos(agent.id))
        dry = store.archive(str(tmp_path / "a"), dry_run=True)
        assert [(m.agent_id, m.first, m.last) for m in dry.moves] == [(agent.id, 1, oldest)]
        assert store.archive_reader.upto(agent.id) == 0
        assert not (tmp_path / "a").exists()
        report = store.archive(str(tmp_path / "a"), keep_events=100)
        assert report.events == 0  # 96 events, keep 100
        report = store.archive(str(tmp_path / "a"))
        assert report.events == oldest and report.segments == 1
        assert store.archive_reader.upto(agent.id) == oldest
        assert store.archive_reader.upto(lonely.id) == 0
        assert store.archive(str(tmp_path / "a")).events == 0
        page = store.recorder.select_page(agent.id, limit=1)
        assert page[0].originator_version == oldest + 1


def test_older_than(sqlite_url: str, tmp_path: Path) -> None:
    with AgentStore(sqlite_url, snapshot_every=5, recent_events=0) as store:
        agent = Agent(name="old")
        Workload(2).drive(agent, 40, save=store.save, batch=5)
        assert store.archive(str(tmp_path / "a"), older_than=datetime.timedelta(days=1)).events == 0
        assert store.archive(str(tmp_path / "a"), older_than=datetime.timedelta(0)).events > 0


def test_projection_positions_hold_events_back(sqlite_url: str, tmp_path: Path) -> None:
    """No event after the position of a projection (tracked in the hot database, or
    given for a view elsewhere) leaves the hot table."""
    ids = populate(sqlite_url, agents=2, events=60)
    with AgentStore(sqlite_url, recent_events=10) as store:
        stop = threading.Event()
        with ProjectionWorker(Recording("behind"), sqlite_url, batch_size=7) as worker:
            worker.catch_up(stop, on_batch=lambda _: stop.set())  # 7 events in
        assert projection_view.TRACKING_TABLE == TRACKING_TABLE
        report = store.archive(str(tmp_path / "a"))
        reader = store.archive_reader
        moved = [s for s in reader.db.segments()]
        assert report.events == sum(s.events for s in moved)
        assert all(s.max_position.notification_id <= 7 for s in moved)
        assert sum(s.events for s in moved) <= 7
        with ProjectionWorker(Recording("behind"), sqlite_url) as worker:
            worker.catch_up()
        report = store.archive(str(tmp_path / "a"))
        assert report.events > 0
        assert {s.agent_id for s in reader.db.segments()} == set(ids)


def test_projection_from_zero_on_postgres_keeps_positions(
    postgres_url: str, tmp_path: Path
) -> None:
    ids = populate(postgres_url, agents=3, events=80)
    settle(postgres_url)
    before = from_zero(postgres_url, tmp_path, ids)
    with AgentStore(postgres_url, recent_events=10) as store:
        assert store.archive(str(tmp_path / "a")).events > 0
    after = from_zero(postgres_url, tmp_path, ids)
    assert after == before
    assert any(p[3][0] != 0 for p in after)  # PostgreSQL positions carry transaction ids


def segment_of(url: str) -> tuple[UUID, Path, int, int]:
    with AgentStore(url) as store:
        segment = store.archive_reader.db.segments()[0]
        path = Path(Location(segment.location).path(segment.file))
        return segment.agent_id, path, segment.first, segment.last


@pytest.mark.parametrize("damage", ["missing", "truncated", "corrupt", "replaced"])
def test_a_bad_segment_fails_loudly(
    database_url: str, tmp_path: Path, damage: str
) -> None:
    ids = populate(database_url, agents=1, events=80)
    with AgentStore(database_url, recent_events=10) as store:
        store.archive(str(tmp_path / "a"))
    agent_id, path, first, last = segment_of(database_url)
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        middle = len(data) // 3
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    else:  # another segment's bytes under this name: same size is not enough
        path.write_bytes(data[:-9] + b"\0" * 9)
    with AgentStore(database_url, recent_events=10) as store:
        for read in (
            lambda: list(store.history(agent_id)),
            lambda: list(store.history(agent_id, reverse=True)),
            lambda: store.get(agent_id, version=1),
            lambda: store.replay(agent_id),
        ):
            with pytest.raises(ArchiveDamaged) as caught:
                read()
            message = str(caught.value)
            assert str(agent_id) in message and f"{first}-{last}" in message
            assert str(path) in message
        store.get(agent_id)  # a load never touches the archive
        segment = store.archive_reader.db.segments()[0]
        problem = store.archive_reader.verify(segment)
        assert problem is not None and str(path) in problem
    assert ids


def test_two_runs_never_both_proceed(database_url: str, tmp_path: Path) -> None:
    populate(database_url, agents=1, events=40)
    with AgentStore(database_url, recent_events=10) as store:
        db = ArchiveDB(store.recorder)
        with archive_lock(db, store.url, 0), AgentStore(database_url) as other:
            with pytest.raises(ArchiveBusy, match="another archive run holds the lock"):
                other.archive(str(tmp_path / "a"))
            with pytest.raises(ArchiveBusy):
                other.archive(str(tmp_path / "a"), wait=0.2)
        assert store.archive(str(tmp_path / "a")).events > 0


def test_segments_in_object_storage_through_fsspec(sqlite_url: str) -> None:
    pytest.importorskip("fsspec")
    ids = populate(sqlite_url, agents=2, events=60)
    before = history_of(sqlite_url, ids)
    location = f"memory://snaptail-test-{os.getpid()}-{next(counter)}"
    with AgentStore(sqlite_url, recent_events=10) as store:
        report = store.archive(location)
        assert report.events > 0
        assert store.archive_reader.db.segments()[0].location == location
    assert history_of(sqlite_url, ids) == before


def test_vacuum_gives_space_back(sqlite_url: str, tmp_path: Path) -> None:
    from snaptail.archive import vacuum

    populate(sqlite_url, agents=2, events=300, every=20)
    with AgentStore(sqlite_url, recent_events=10) as store:
        assert store.archive(str(tmp_path / "a")).events > 400
        before, after = vacuum(store.recorder, store.url)
    assert after < before * 0.5


def test_an_unarchived_gap_is_still_a_damaged_log(sqlite_url: str, tmp_path: Path) -> None:
    """The archive fallback of get() does not hide a hot log that lost events."""
    with AgentStore(sqlite_url, snapshot_every=1000, recent_events=0) as store:
        agent = Agent(name="gap")
        Workload(3).drive(agent, 20, save=store.save, batch=5)
        with store.recorder.datastore.transaction(commit=True) as c:  # type: ignore[attr-defined]
            c.execute("DELETE FROM stored_events WHERE originator_version=1")
        with pytest.raises(DamagedLog):
            store.get(agent.id)


def test_segment_names_are_per_agent_and_range() -> None:
    agent_id = UUID(int=1)
    assert segment_name(agent_id, 1, 20).endswith("/000000000001-000000000020.v1.seg")
    assert segment_name(agent_id, 1, 20).startswith(agent_id.hex[:2] + "/" + agent_id.hex)


def test_rows_not_yet_visible_to_readers_stay_hot(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL: while a transaction older than the events is running, projection
    readers cannot see them yet; archiving them would let a projection from zero meet
    them before older rows that become visible later. They stay hot until then."""
    import psycopg

    from snaptail.infrastructure.urls import postgres_connect_args

    with psycopg.connect(**postgres_connect_args(postgres_url)) as older:
        older.execute("SELECT pg_current_xact_id()")  # an open transaction with an id
        ids = populate(postgres_url, agents=2, events=60)
        with AgentStore(postgres_url, recent_events=10) as store:
            assert store.archive(str(tmp_path / "a")).events == 0
        older.rollback()
    settle(postgres_url)
    before = from_zero(postgres_url, tmp_path, ids)
    with AgentStore(postgres_url, recent_events=10) as store:
        assert store.archive(str(tmp_path / "a")).events > 0
    assert from_zero(postgres_url, tmp_path, ids) == before


def test_a_writer_behind_the_archive_gets_a_conflict(database_url: str, tmp_path: Path) -> None:
    """An agent loaded before its next versions were written and archived cannot save
    over them: ConcurrencyError, nothing written (an acknowledged save is the truth)."""
    from snaptail import ConcurrencyError

    with AgentStore(database_url, snapshot_every=10, recent_events=5) as store:
        agent = Agent(name="stale")
        Workload(4).drive(agent, 20, save=store.save, batch=5)
        stale = store.get(agent.id)
        Workload(5).drive(agent, 80, save=store.save, batch=5)
        settle(database_url)
        assert store.archive(str(tmp_path / "a")).events > stale.version + 5
        before = list(store.history(agent.id))
        stale.add_input("user", "written from an old copy")
        with pytest.raises(ConcurrencyError):
            store.save(stale)
        assert list(store.history(agent.id)) == before
        agent.add_input("user", "the current copy saves")
        store.save(agent)


def test_snapshots_verify_and_inspect_read_the_archive(database_url: str, tmp_path: Path) -> None:
    from snaptail.application.inspection import inspect_agent
    from snaptail.application.maintenance import verify_agent

    ids = populate(database_url, agents=1, events=150)
    with AgentStore(database_url, recent_events=10) as store:
        before = inspect_agent(store, ids[0])
        settle(database_url)
        assert store.archive(str(tmp_path / "a")).events > 100
        after = inspect_agent(store, ids[0])
        assert after.event_bytes == before.event_bytes
        assert after.version == before.version and not after.error
        assert verify_agent(store, ids[0]).status == "ok"


def test_async_store_history_and_replay_read_the_archive(sqlite_url: str, tmp_path: Path) -> None:
    import asyncio

    from snaptail import AsyncAgentStore

    ids = populate(sqlite_url, agents=1, events=120)
    before = history_of(sqlite_url, ids)[ids[0]]
    with AgentStore(sqlite_url, recent_events=10) as store:
        assert store.archive(str(tmp_path / "a")).events > 50
        replayed = store.replay(ids[0])

    async def read() -> tuple[list[Any], list[Any], Agent, Agent]:
        async with AsyncAgentStore(sqlite_url, recent_events=10) as store:
            forward = [e async for e in store.history(ids[0], page_size=7)]
            backward = [e async for e in store.history(ids[0], reverse=True)]
            return forward, backward, await store.replay(ids[0]), await store.get(ids[0], 5)

    forward, backward, agent, old = asyncio.run(read())
    assert forward == before and backward == before[::-1]
    same_agents(agent, replayed, "AsyncAgentStore.replay()")
    with AgentStore(sqlite_url, recent_events=10) as store:
        same_agents(old, store.replay(ids[0], 5), "AsyncAgentStore.get(version=5)")


@pytest.mark.parametrize("reverse", [False, True])
def test_a_history_walk_survives_an_archive_run_committing_meanwhile(
    database_url: str, tmp_path: Path, reverse: bool
) -> None:
    ids = populate(database_url, agents=1, events=150)
    settle(database_url)
    with AgentStore(database_url, recent_events=10) as store:
        truth = list(store.history(ids[0], reverse=reverse))
        walking = store.history(ids[0], reverse=reverse, page_size=7)
        seen = [next(walking) for _ in range(10)]
        assert store.archive(str(tmp_path / "a")).events > 50
        assert seen + list(walking) == truth


def test_a_load_that_trusts_no_hot_snapshot_replays_from_the_archive(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every snapshot left corrupt (or stale after a code change): the load replays
    from the archive (a warning says so) and stores a fresh snapshot for the next."""
    ids = populate(database_url, agents=1, events=150)
    with AgentStore(database_url, recent_events=10) as store:
        settle(database_url)
        assert store.archive(str(tmp_path / "a")).events > 100
        expected = store.replay(ids[0])
        db = ArchiveDB(store.recorder)
        with db.transaction(write=True) as cur:
            cur.execute(f"UPDATE {db.snapshots} SET checksum = checksum + 1")
        with caplog.at_level("WARNING", logger="snaptail.store"):
            same_agents(store.get(ids[0]), expected, "get() past corrupt snapshots")
        assert "loading from the archive" in caplog.text
        again = store.get(ids[0])
        same_agents(again, expected, "the next get()")
        stats = store.load_stats(again)
        assert stats is not None and stats.snapshot_version == expected.version


def test_the_archive_commands(sqlite_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from snaptail.cli import app

    ids = populate(sqlite_url, agents=2, events=80)
    runner = CliRunner()
    to = str(tmp_path / "segments")
    view = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    stop = threading.Event()  # a projection kept in another database, 5 events in
    with ProjectionWorker(Recording("elsewhere"), sqlite_url, view, batch_size=5) as worker:
        worker.catch_up(stop, on_batch=lambda _: stop.set())
    args = ["archive", "run", "--db", sqlite_url, "--to", to, "--recent-events", "10"]
    held = runner.invoke(app, [*args, "--view-db", view])
    assert held.exit_code == 0, held.output
    held_back = re.search(r"moved (\d+) events", held.output)
    assert held_back is not None and int(held_back[1]) <= 5  # only what the view passed
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "would move" in dry.output and str(ids[0]) in dry.output
    moved = runner.invoke(app, [*args, "--older-than", "1w"])
    assert moved.exit_code == 0 and "moved 0 events" in moved.output
    bad_age = runner.invoke(app, [*args, "--older-than", "soon"])
    assert bad_age.exit_code != 0 and "s, m, h, d or w" in bad_age.output
    moved = runner.invoke(app, args)
    assert moved.exit_code == 0 and "moved" in moved.output, moved.output
    verified = runner.invoke(app, ["archive", "verify", "--db", sqlite_url])
    assert verified.exit_code == 0
    assert re.search(r"(\d+) of \1 segment\(s\) verified", verified.output)
    vacuumed = runner.invoke(app, ["archive", "vacuum", "--db", sqlite_url])
    assert vacuumed.exit_code == 0 and "bytes before" in vacuumed.output
    _, path, _, _ = segment_of(sqlite_url)
    path.unlink()
    broken = runner.invoke(app, ["archive", "verify", "--db", sqlite_url])
    assert broken.exit_code == 1 and "the file is missing" in broken.output


def test_agent_stats_from_zero_in_partitions_read_the_archive(
    database_url: str, tmp_path: Path
) -> None:
    """AgentStats built from zero by two partitions after archiving equals AgentStats
    built from the hot table before."""
    from snaptail.projections import AgentStats, Partition, open_view, read_agent_stats

    ids = populate(database_url, agents=4, events=100)
    settle(database_url)

    def stats(view_url: str, partitions: int) -> list[Any]:
        for k in range(partitions):
            partition = Partition(k, partitions) if partitions > 1 else None
            with ProjectionWorker(AgentStats, database_url, view_url, partition=partition) as w:
                w.catch_up()
        view = open_view(view_url)
        try:
            return sorted(read_agent_stats(view, top=None), key=lambda r: str(r.agent_id))
        finally:
            view.close()

    before = stats(f"sqlite:///{tmp_path / 'before.db'}", 1)
    with AgentStore(database_url, recent_events=10) as store:
        assert store.archive(str(tmp_path / "a")).events > 200
    after = stats(f"sqlite:///{tmp_path / 'after.db'}", 2)
    assert len(before) == len(ids) and after == before


def test_latest_of_a_type_finds_it_in_the_archive(sqlite_url: str, tmp_path: Path) -> None:
    import asyncio

    from snaptail import AsyncAgentStore

    with AgentStore(sqlite_url, snapshot_every=10, recent_events=5) as store:
        agent = Agent(name="prompted")
        agent.set_system_prompt("be brief")
        for i in range(60):
            agent.add_input("user", f"question {i}")
        store.save(agent)
        store.snapshot(agent.id)
        for i in range(10):
            agent.add_input("user", f"later {i}")
        store.save(agent)
        assert store.archive(str(tmp_path / "a")).events > 2
        found = store.latest(agent.id, Agent.SystemPromptSet)
        assert found is not None and type(found).__name__ == "SystemPromptSet"
        assert found.originator_version == 2
        newest = store.latest(agent.id)
        assert newest is not None and newest.originator_version == agent.version

    async def latest() -> Any:
        async with AsyncAgentStore(sqlite_url) as store:
            return await store.latest(agent.id, Agent.SystemPromptSet)

    assert asyncio.run(latest()).originator_version == 2


def test_encrypted_payloads_stay_encrypted_in_segments_and_are_forgotten(
    tmp_path: Path,
) -> None:
    """Issue 20 beside issue 21: segments hold the payloads as stored (sealed), the
    archived events read as before, and forgetting the subject redacts them too."""
    pytest.importorskip("cryptography")
    from snaptail.privacy import RedactedEvent, new_master_key

    store = AgentStore(
        f"sqlite:///{tmp_path / 'agents.db'}", keys=f"sqlite:///{tmp_path / 'keys.db'}",
        master_key=new_master_key(), snapshot_every=10, recent_events=5,
    )  # fmt: skip
    with store:
        chat = Agent(name="private chat")
        store.add_subject(chat, "user-42")
        for i in range(60):
            chat.add_input("user", f"my secret number is {i:04d}", author="user-42")
        store.save(chat)
        before = list(store.history(chat.id))
        assert store.archive(str(tmp_path / "segments")).events > 30
        assert list(store.history(chat.id)) == before
        from snaptail.archive.codec import iter_rows, read_footer

        for path in (tmp_path / "segments").rglob("*.seg"):
            with path.open("rb") as file:
                rows = list(iter_rows(file, read_footer(file, path.stat().st_size)))
            assert rows and all(state[:1] == b"\xc1" for _, _, state, _, _ in rows[1:])
            assert not any(b"my secret number" in state for _, _, state, _, _ in rows)
        store.forget("user-42")
        assert all(isinstance(e, RedactedEvent) for e in store.history(chat.id))


def test_a_merge_of_many_agents_holds_a_bounded_number_of_bytes(
    database_url: str, tmp_path: Path
) -> None:
    """A projection from zero over 200 agents written side by side (every agent's
    segment overlapping every other's positions) holds at most a fixed budget of
    decoded rows, not one decoded block per agent (about 100 MB here); order and
    positions are the hot table's."""
    import tracemalloc

    text = "".join(random.Random(7).choice("abcdefghij ") for _ in range(8000))
    agents = [Agent(name=f"m{i}") for i in range(200)]
    with AgentStore(database_url, snapshot_every=10, keep_snapshots=1, recent_events=0) as store:
        for _ in range(3):  # 200 agents in turns: their positions interleave
            for agent in agents:
                for _ in range(20):
                    agent.add_input("user", text)
                store.save(agent)
        settle(database_url)
        before = [
            (n.originator_id, n.originator_version, n.position)
            for n in store.recorder.select_after(START, 1_000_000)
        ]
        assert store.archive(str(tmp_path / "a"), keep_events=0).events > 200 * 40
        reader = store.archive_reader
        tracemalloc.start()
        try:
            seen = []
            for n in reader.notifications(START):
                seen.append((n.originator_id, n.originator_version, n.position))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    archived = {(i, v) for i, v, _ in seen}
    assert seen == [b for b in before if (b[0], b[1]) in archived]
    assert peak < 48 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
