"""Snapshots on both backends: policies, on-demand snapshots, saves that never fail
because of a snapshot, untrusted snapshots (one warning, fallback, fresh snapshot)."""

from __future__ import annotations

import itertools
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from examples.chat_agent import ChatPlatformAgent
from snaptail import (
    Agent,
    AgentState,
    AgentStore,
    AnyOf,
    EveryNBytes,
    EveryNEvents,
    GrowWithState,
    LoadSlowerThan,
    Never,
    SnapshotPolicy,
    event,
)
from snaptail.snapshots import SinceSnapshot

# -- policies, on their own -----------------------------------------------------------
from tests.async_bridge import MakeStore
from tests.snapshot_sql import set_snapshot_column, snapshot_row, snapshot_versions


def test_policies_decide_from_what_accumulated() -> None:
    assert EveryNEvents(3).should_snapshot(SinceSnapshot(events=3, bytes=0))
    assert not EveryNEvents(3).should_snapshot(SinceSnapshot(events=2, bytes=10**9))
    assert EveryNBytes(100).should_snapshot(SinceSnapshot(events=1, bytes=100))
    assert not EveryNBytes(100).should_snapshot(SinceSnapshot(events=10**6, bytes=99))
    slow = LoadSlowerThan(ms=5)
    assert slow.should_snapshot(SinceSnapshot(events=1, bytes=1, load_ms=5.1))
    assert not slow.should_snapshot(SinceSnapshot(events=1, bytes=1, load_ms=4.9))
    assert not slow.should_snapshot(SinceSnapshot(events=10**6, bytes=10**9, load_ms=None))
    assert not Never().should_snapshot(SinceSnapshot(events=10**6, bytes=10**9, load_ms=1e9))


def test_grow_with_state_spaces_snapshots_by_the_last_one_s_size() -> None:
    grow = GrowWithState(n=10, ratio=0.5)
    assert not grow.should_snapshot(SinceSnapshot(events=9, bytes=10**9, snapshot_bytes=1))
    assert grow.should_snapshot(SinceSnapshot(events=10, bytes=0))  # size unknown: every n
    assert grow.should_snapshot(SinceSnapshot(events=10, bytes=500, snapshot_bytes=1000))
    assert not grow.should_snapshot(SinceSnapshot(events=10**6, bytes=499, snapshot_bytes=1000))
    with pytest.raises(ValueError):
        GrowWithState(n=0)
    with pytest.raises(ValueError):
        GrowWithState(ratio=0)


def test_policies_combine_as_any_of() -> None:
    either = EveryNEvents(100) | EveryNBytes(1000) | LoadSlowerThan(50)
    assert isinstance(either, AnyOf) and len(either.policies) == 3  # flattened
    assert either.should_snapshot(SinceSnapshot(events=100, bytes=0))
    assert either.should_snapshot(SinceSnapshot(events=1, bytes=1000))
    assert either.should_snapshot(SinceSnapshot(events=1, bytes=1, load_ms=51))
    assert not either.should_snapshot(SinceSnapshot(events=99, bytes=999, load_ms=49))

    class OnTheHour:  # any object with should_snapshot is a policy
        def should_snapshot(self, since: SinceSnapshot) -> bool:
            return since.events == 60

    mixed = Never() | OnTheHour()
    assert mixed.should_snapshot(SinceSnapshot(events=60, bytes=0))
    with pytest.raises(TypeError):
        AnyOf(object())  # type: ignore[arg-type]
    for bad in (lambda: EveryNEvents(0), lambda: EveryNBytes(0), lambda: LoadSlowerThan(0)):
        with pytest.raises(ValueError):
            bad()


# -- policies, through the store ------------------------------------------------------


def _versions(store: AgentStore, agent: Agent) -> list[int]:
    return sorted(i.originator_version for i in store.recorder.select_snapshot_infos(agent.id))


def test_every_n_bytes_snapshots_at_the_save_crossing_the_bytes(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, policy=EveryNBytes(3000), keep_snapshots=10) as store:
        agent = Agent(name="bytes")
        store.save(agent)
        for _ in range(5):
            agent.add_input("user", "x" * 1000)  # about 1 KB each
            store.save(agent)
        # versions 2, 3, 4 carry ~3 KB: the save of version 4 crosses 3000 bytes.
        assert _versions(store, agent) == [4]
        small = Agent(name="small")
        for _ in range(50):
            small.add_label("a")
            small.set_metadata("k", "v")
        store.save(small)
        assert _versions(store, small) == []


def test_load_slower_than_uses_the_time_the_store_measured(
    make_store: MakeStore, database_url: str
) -> None:
    # Deterministic without asserting any timing: every measured load takes more
    # than 1 ns, and none takes a day.
    with make_store(database_url, policy=LoadSlowerThan(ms=1e-6)) as store:
        agent = Agent(name="slow")
        agent.add_input("user", "hi")
        store.save(agent)
        assert _versions(store, agent) == [], "never loaded: nothing measured"
        loaded = store.get(agent.id)
        stats = store.load_stats(loaded)
        assert stats is not None and stats.ms > 0
        loaded.add_input("user", "again")
        store.save(loaded)
        assert _versions(store, agent) == [3], "measured load cost over the limit"
        loaded.add_input("user", "and again")
        store.save(loaded)
        assert _versions(store, agent) == [3], "the measurement was of the old tail"
    with make_store(database_url, policy=LoadSlowerThan(ms=86_400_000)) as store:
        loaded = store.get(agent.id)
        loaded.add_input("user", "fast")
        store.save(loaded)
        assert _versions(store, agent) == [3]


def test_policies_per_agent_type(make_store: MakeStore, database_url: str) -> None:
    policies: dict[type[Agent], SnapshotPolicy] = {ChatPlatformAgent: Never() | EveryNEvents(50)}
    with make_store(database_url, policy=EveryNEvents(5), policies=policies) as store:
        assert store.policy_for(Agent) == EveryNEvents(5)
        assert store.policy_for(ChatPlatformAgent) is policies[ChatPlatformAgent]

        class QuietChat(ChatPlatformAgent):  # subclasses inherit their base's entry
            pass

        assert store.policy_for(QuietChat) is policies[ChatPlatformAgent]
        plain, chat = Agent(name="plain"), ChatPlatformAgent(name="chat")
        for agent in (plain, chat):
            for i in range(9):
                agent.add_input("user", str(i))
            store.save(agent)
        assert _versions(store, plain) == [10]
        assert _versions(store, chat) == []


@dataclass
class _IndexState(AgentState):
    entries: dict[str, str] = field(default_factory=dict)


class _Index(Agent):
    """A state that grows with every event (a directory of sessions, say)."""

    State = _IndexState
    snapshot_policy = GrowWithState(n=2, ratio=1.0)

    if TYPE_CHECKING:
        state: _IndexState

    @event("Indexed")
    def index(self, key: str) -> None:
        self.state.entries[key] = "v" * 40


def _sizes(store: AgentStore, agent: Agent) -> dict[int, int]:
    return {i.originator_version: i.size for i in store.recorder.select_snapshot_infos(agent.id)}


def test_a_type_s_grow_with_state_policy_spaces_snapshots_by_their_size(
    make_store: MakeStore, database_url: str
) -> None:
    """Each snapshot of a growing state is taken at the first save whose events since
    the last one weigh as much as it does, also after a load in a new store (which
    learns the snapshot's size from the row it read)."""
    with make_store(database_url, snapshot_every=2, keep_snapshots=100) as store:
        assert store.policy_for(_Index) == GrowWithState(n=2, ratio=1.0)  # the type's
        agent = _Index(name="index")
        store.save(agent)
        for i in range(30):
            agent.index(f"key-{i:04}")
            store.save(agent)
    # between two snapshots, a new store carries on from a load (and learns the last
    # snapshot's size from the row it read)
    with make_store(database_url, snapshot_every=2, keep_snapshots=100) as store:
        agent = cast("_Index", store.get(agent.id))
        for i in range(30, 120):
            agent.index(f"key-{i:04}")
            store.save(agent)
    with AgentStore(database_url) as reader:
        sizes = _sizes(reader, agent)
        weight = {r.originator_version: len(r.state) for r in reader.read_rows(agent.id, limit=999)}
        versions = sorted(sizes)
        assert len(versions) >= 3 and versions[1] < 31 < versions[2], sizes
        for before, after in itertools.pairwise(versions):
            tail = [weight[v] for v in range(before + 1, after + 1)]
            assert sum(tail) >= sizes[before], (before, after, sizes)  # not too soon
            assert sum(tail[:-1]) < sizes[before] or len(tail) <= 2, (before, after)  # not late
        gaps = [b - a for a, b in itertools.pairwise(versions)]
        assert gaps[-1] > gaps[0], gaps  # spaced further apart as the state grows
    with make_store(database_url, policies={_Index: EveryNEvents(1)}) as store:
        assert store.policy_for(_Index) == EveryNEvents(1)  # a store's entry wins


def test_an_agent_type_s_snapshot_policy_must_be_a_policy() -> None:
    with pytest.raises(TypeError, match=r"_Bad\.snapshot_policy.*not a snapshot policy"):

        class _Bad(Agent):
            snapshot_policy = 100


def test_snapshot_on_demand(make_store: MakeStore, database_url: str) -> None:
    with make_store(database_url, policy=Never(), keep_snapshots=2) as store:
        agent = Agent(name="manual")
        for i in range(7):
            agent.add_input("user", str(i))
        store.save(agent)
        assert _versions(store, agent) == []
        assert store.snapshot(agent.id) == 8
        assert _versions(store, agent) == [8]
        agent.add_label("x")
        store.save(agent)
        assert store.snapshot(agent.id) == 9
        loaded = store.get(agent.id)
        stats = store.load_stats(loaded)
        assert stats is not None and (stats.snapshot_version, stats.tail) == (9, 0)
        assert loaded.state == store.replay(agent.id).state


# -- a snapshot never fails a save, never sees later changes --------------------------


@dataclass
class HoldsAnything(AgentState):
    thing: Any = None


class UnencodableAgent(Agent):
    """Records a harmless event whose effect cannot be snapshotted."""

    State = HoldsAnything
    if TYPE_CHECKING:
        state: HoldsAnything

    @event("ThingHeld")
    def hold_a_thing(self) -> None:
        self.state.thing = object()  # msgspec cannot encode this


def test_snapshot_that_cannot_be_encoded_never_fails_the_save(
    make_store: MakeStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_store(database_url, snapshot_every=2) as store:
        agent = UnencodableAgent(name="odd")
        agent.hold_a_thing()
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            store.save(agent)
        assert store.event_count(agent.id) == 2, "the events were saved"
        assert _versions(store, agent) == []
        skipped = [r for r in caplog.records if "snapshot skipped" in r.getMessage()]
        assert len(skipped) == 1 and str(agent.id) in skipped[0].getMessage()
        loaded = store.get(agent.id)  # rebuilt from the events
        assert isinstance(loaded, UnencodableAgent) and type(loaded.state.thing) is object
        with pytest.raises(ValueError, match="cannot be encoded"):
            store.snapshot(agent.id)


def test_snapshot_is_the_state_at_the_moment_it_was_taken(
    make_store: MakeStore, database_url: str
) -> None:
    with make_store(database_url, snapshot_every=3) as store:
        agent = Agent(name="moment")
        agent.set_metadata("k", "before")
        agent.add_label("kept")
        store.save(agent)
        assert _versions(store, agent) == [3]
        # Mutate the live agent's state directly (no event): the snapshot must not change.
        agent.state.metadata["k"] = "after"
        agent.state.labels.append("leaked")
        agent.state.window.items.clear()
        loaded = store.get(agent.id)
        stats = store.load_stats(loaded)
        assert stats is not None and stats.snapshot_version == 3
        assert loaded.state.metadata == {"k": "before"}
        assert loaded.state.labels == ["kept"]
        assert loaded.state == store.replay(agent.id).state


# -- untrusted snapshots: fall back, warn once, replace ----------------------------


def _grow(store: AgentStore, agent: Agent, saves: int, per_save: int) -> None:
    for s in range(saves):
        for i in range(per_save):
            agent.add_input("user", f"{s}.{i}")
        store.save(agent)


def _untrusted_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "snapshot not trusted" in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("fingerprint", "0" * 32, "fingerprint does not match"),
        ("checksum", 12345, "checksum mismatch"),
        ("state", b"\xc1 not msgpack", "checksum mismatch"),
        ("topic", "nowhere.module:Gone", "not found"),
    ],
)
def test_bad_newest_snapshot_falls_back_to_the_previous_one(
    make_store: MakeStore,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    column: str,
    value: Any,
    reason: str,
) -> None:
    with make_store(database_url, snapshot_every=5, keep_snapshots=3) as store:
        agent = Agent(name="fallback")
        _grow(store, agent, saves=3, per_save=5)  # snapshots at 6, 11, 16
        assert snapshot_versions(database_url, agent.id) == [6, 11, 16]
        set_snapshot_column(database_url, agent.id, 16, column, value)
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            loaded = store.get(agent.id)
        assert loaded.state == store.replay(agent.id).state
        assert loaded.version == 16
        stats = store.load_stats(loaded)
        assert stats is not None and stats.snapshot_version == 11
        (warning,) = _untrusted_warnings(caplog)
        assert str(agent.id) in warning and reason in warning
        assert "version 16" in warning and "snapshot at version 11" in warning
        # A fresh, valid snapshot replaced the bad one.
        assert snapshot_versions(database_url, agent.id) == [6, 11, 16]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            again = store.get(agent.id)
        assert _untrusted_warnings(caplog) == []
        stats = store.load_stats(again)
        assert stats is not None and stats.snapshot_version == 16
        assert again.state == loaded.state


def test_decode_failure_with_a_valid_checksum_is_not_trusted(
    make_store: MakeStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_store(database_url, snapshot_every=4) as store:
        agent = Agent(name="undecodable")
        _grow(store, agent, saves=1, per_save=4)
        garbage = b"\x93\x01\x02\x03"  # valid msgpack, wrong shape
        set_snapshot_column(database_url, agent.id, 5, "state", garbage)
        set_snapshot_column(database_url, agent.id, 5, "checksum", zlib.crc32(garbage))
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            loaded = store.get(agent.id)
        (warning,) = _untrusted_warnings(caplog)
        assert "do not decode" in warning and "full replay" in warning
        assert loaded.state == store.replay(agent.id).state
        _, checksum, state = snapshot_row(database_url, agent.id, 5)
        assert state != garbage and checksum == zlib.crc32(state)


def test_every_snapshot_bad_means_full_replay_and_exactly_one_warning(
    make_store: MakeStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_store(database_url, snapshot_every=3, keep_snapshots=3) as store:
        agent = Agent(name="all-bad")
        _grow(store, agent, saves=3, per_save=3)  # snapshots at 4, 7, 10
        for version in (4, 7, 10):
            set_snapshot_column(database_url, agent.id, version, "checksum", 1)
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            loaded = store.get(agent.id)
        (warning,) = _untrusted_warnings(caplog)
        assert all(f"version {v}" in warning for v in (4, 7, 10))
        assert "full replay" in warning
        assert loaded.state == store.replay(agent.id).state
        stats = store.load_stats(loaded)
        assert stats is not None and stats.snapshot_version == 0
        assert snapshot_versions(database_url, agent.id) == [10]
        # The fresh snapshot counts as the agent's last one for the next save.
        loaded.add_label("next")
        store.save(loaded)
        assert snapshot_versions(database_url, agent.id) == [10]


def test_time_travel_past_a_bad_snapshot(
    make_store: MakeStore, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_store(database_url, snapshot_every=3, keep_snapshots=5) as store:
        agent = Agent(name="travel")
        _grow(store, agent, saves=4, per_save=3)  # snapshots at 4, 7, 10, 13
        set_snapshot_column(database_url, agent.id, 7, "fingerprint", "stale")
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            then = store.get(agent.id, version=8)
        assert len(_untrusted_warnings(caplog)) == 1
        assert then.version == 8
        assert then.state == store.replay(agent.id, version=8).state


def test_failing_fresh_snapshot_write_never_fails_the_load(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.snapshot_sql import execute

    with AgentStore(sqlite_url, snapshot_every=3) as store:
        agent = Agent(name="read-only snapshots")
        _grow(store, agent, saves=1, per_save=3)
        set_snapshot_column(sqlite_url, agent.id, 4, "checksum", 7)
        execute(
            sqlite_url,
            "CREATE TRIGGER refuse BEFORE INSERT ON snaptail_snapshots "
            "BEGIN INSERT INTO no_such_table VALUES (1); END",
        )
        with caplog.at_level(logging.WARNING, logger="snaptail.store"):
            loaded = store.get(agent.id)
        (warning,) = _untrusted_warnings(caplog)
        assert "NOT written (StorageOperationalError" in warning
        assert loaded.state == store.replay(agent.id).state


def test_a_load_s_stats_are_the_dataclass_constructor_s(tmp_path: Path) -> None:
    # build_agent sets a LoadStats' __dict__ at once rather than calling its __init__:
    # the same object only while every field is set there and nothing else runs.
    import dataclasses

    from snaptail.application.loading import LoadStats

    assert not hasattr(LoadStats, "__post_init__")
    with AgentStore(f"sqlite:///{tmp_path / 'a.db'}", snapshot_every=2) as store:
        agent = Agent(name="stats")
        for i in range(3):
            agent.add_input("user", f"q{i}")
        store.save(agent)
        stats = store.load_stats(store.get(agent.id))
    assert stats is not None
    fields = {f.name: getattr(stats, f.name) for f in dataclasses.fields(LoadStats)}
    assert vars(stats) == fields
    built = LoadStats(**fields)
    assert stats == built and hash(stats) == hash(built) and repr(stats) == repr(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.ms = 0.0  # type: ignore[misc]


def test_measured_load_cost_is_scaled_to_the_events_since() -> None:
    from snaptail import Agent
    from snaptail.application.loading import AgentBooks, LoadStats, tail_load_ms

    stats = LoadStats(snapshot_version=10, tail=5, events_read=5, bytes_read=500, ms=2.0)
    books = AgentBooks()
    agent, other = Agent(name="measured"), Agent(name="fresh")
    track = books.record(agent, 10, 500, stats)
    assert tail_load_ms(track, 5) == 2.0
    assert tail_load_ms(track, 20) == 8.0, "four times the tail measured: four times the cost"
    track.snapshot_version = 30  # snapshotted since that load: nothing measured
    assert tail_load_ms(track, 3) is None
    assert tail_load_ms(books.of(other), 50) is None


def test_the_snapshot_checksum_is_zlib_s_crc32() -> None:
    # Stored checksums stay valid whichever CRC-32 implementation computes them.
    import os

    from snaptail.snapshots.codec import checksum

    for data in (b"", b"a", os.urandom(3), os.urandom(1000), os.urandom(70_000)):
        assert checksum(data) == zlib.crc32(data)
    assert checksum(b"123456789") == 0xCBF43926  # the CRC-32 check value


def test_the_store_s_books_forget_collected_agents_and_never_confuse_a_reused_id() -> None:
    from snaptail import Agent
    from snaptail.application.loading import AgentBooks

    books = AgentBooks()
    kept = Agent(name="kept")
    books.record(kept, 7, 70, None)
    gone = [Agent(name=f"gone {i}") for i in range(3000)]
    for agent in gone:
        books.record(agent, 1, 1, None)
    assert len(books) == 3001
    del gone, agent
    assert len(books) == 1, "a freed agent's record goes with it"
    assert books.of(kept).snapshot_version == 7
    fresh = Agent(name="fresh")
    assert books.find(fresh) is None and books.of(fresh).snapshot_version == 0
    books.record(kept, 8, 80, None)  # a second record for one agent replaces the first
    assert books.of(kept).snapshot_version == 8 and len(books) == 2
    del fresh
    assert len(books) == 1
    assert "_snaptail" not in "".join(vars(kept)), "nothing of the store's on the agent"


def test_loads_of_agents_the_caller_drops_leave_no_objects_behind(tmp_path: Path) -> None:
    # Records kept until a sweep made every load leave objects for the cyclic
    # collector's counts: a collection every few hundred loads, none for ce2b2f3.
    import gc

    with AgentStore(f"sqlite:///{tmp_path / 'books.db'}", snapshot_every=10) as store:
        agent = Agent(name="dropped")
        for i in range(25):
            agent.set_metadata("step", str(i))
        store.save(agent)
        agent_id = agent.id
        del agent
        for _ in range(300):  # bounded caches filled
            store.get(agent_id)
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            loaded = [store.get(agent_id) for _ in range(500)]  # 500 objects, 500 ids
            del loaded
            grown = len(gc.get_objects()) - before
        finally:
            gc.enable()
    assert grown < 20, f"500 loads of a dropped agent left {grown} objects"
