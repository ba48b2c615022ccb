"""``archive run``: move cold events out of the hot table into verified segments.

What moves, per agent: the versions after what is already archived, up to the lowest
of (a) the oldest snapshot the store keeps for the agent (a load never reads before
it, even when it passes over newer snapshots), (b) the head minus the recent-event
cache's window and minus ``keep_events`` (the newest event always stays: it carries
the version new saves are checked against), (c) the last version whose position is at
or below every projection's and partition's position tracked in the database (and in
``view_positions``) and, on PostgreSQL, from a transaction older than every one still
running (visible to every reader), (d) with ``older_than``, the last event older
than that. An agent with no snapshot keeps everything (a load would replay it all).

Each segment, in order (a crash at any step leaves every version readable in exactly
one place, or in both):

1. read the rows, encode them; write the file (temporary name, fsync, rename, fsync
   of the directory);
2. open it again and check its SHA-256 and every row against the rows read;
3. insert its manifest row with state ``written`` (readers ignore it);
4. in ONE transaction: delete its hot rows (exactly its event count, else roll back)
   and set the manifest row to ``done``.

A run first finishes or undoes what an interrupted run left: a ``written`` row whose
file verifies is finished (step 4); one whose file is missing or bad is deleted with
its file (its rows never left the hot table). Runs exclude each other: a ``flock`` on
``<database file>.archive.lock`` (SQLite) or a session advisory lock (PostgreSQL),
both released by the OS or server if the process dies.

Tests kill the process at a step: ``SNAPTAIL_ARCHIVE_CRASH_AT=<step>[:<n>]`` sends
SIGKILL to this process the ``n``-th time (default 1st) it reaches ``segment-partial``,
``segment-written``, ``segment-verified``, ``manifest-written`` or ``rows-deleted``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from snaptail.archive.codec import CODEC_VERSION, iter_rows, read_footer, sha256_of
from snaptail.archive.codec import encode_segment as encode
from snaptail.archive.location import Location
from snaptail.archive.manifest import WRITTEN, ArchiveDB, Segment
from snaptail.archive.reader import ArchiveReader
from snaptail.errors import ArchiveBusy, DamagedLog
from snaptail.infrastructure.mapper import MsgspecMapper
from snaptail.infrastructure.recorder import AgentRecorder, Position

# The most events one segment holds (an agent with more to move gets several).
SEGMENT_EVENTS = 20_000
CRASH_VARIABLE = "SNAPTAIL_ARCHIVE_CRASH_AT"
STEPS = (
    "segment-partial", "segment-written", "segment-verified", "manifest-written", "rows-deleted",
)  # fmt: skip


@dataclass(frozen=True)
class Move:
    """What one agent will move: versions ``first``-``last``."""

    agent_id: UUID
    first: int
    last: int

    @property
    def events(self) -> int:
        return self.last - self.first + 1


@dataclass
class ArchiveReport:
    """What an ``archive run`` did (or, with ``dry_run``, would do)."""

    dry_run: bool
    agents: int = 0  # agents with events moved
    events: int = 0
    segments: int = 0
    hot_bytes: int = 0  # bytes of topic + payload that left the hot table
    archive_bytes: int = 0  # bytes of the segment files written
    seconds: float = 0.0
    finished: int = 0  # half-done segments of an earlier run finished
    undone: int = 0  # half-done segments of an earlier run undone
    moves: list[Move] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would move" if self.dry_run else "moved"
        text = (
            f"{verb} {self.events} events of {self.agents} agents"
            + ("" if self.dry_run else f" into {self.segments} segments")
        )
        if not self.dry_run:
            ratio = self.archive_bytes / self.hot_bytes if self.hot_bytes else 0.0
            rate = self.events / self.seconds if self.seconds else 0.0
            text += (
                f" ({self.hot_bytes} payload bytes -> {self.archive_bytes} archive bytes,"
                f" {ratio:.2f}; {self.seconds:.1f} s, {rate:,.0f} events/s)"
            )
        if self.finished or self.undone:
            text += f"; an earlier run's segments: {self.finished} finished, {self.undone} undone"
        return text


@dataclass(frozen=True)
class Progress:
    """Reported after each segment (and once at the start with ``done_events=0``)."""

    total_events: int
    done_events: int
    segments: int
    agent_id: UUID | None


def run_archive(
    recorder: AgentRecorder,
    url: str,
    to: str,
    *,
    recent_events: int = 100,
    keep_events: int = 0,
    older_than: datetime.timedelta | None = None,
    dry_run: bool = False,
    view_positions: Sequence[Position] = (),
    progress: Callable[[Progress], None] | None = None,
    wait: float = 0.0,
    mapper: MsgspecMapper | None = None,
) -> ArchiveReport:
    """Move the events nothing hot needs into segments at ``to`` (see the module's
    docstring). ``url`` is the hot database's (not read: the recorder knows it);
    ``view_positions``: positions of
    projections whose view databases are elsewhere (those in the hot database are
    read from it). ``wait`` seconds for another run's lock, then
    :class:`~snaptail.errors.ArchiveBusy`."""
    if recent_events < 0 or keep_events < 0:
        raise ValueError(
            f"recent_events and keep_events must be >= 0, got {recent_events} and {keep_events}"
        )
    started = time.perf_counter()
    db = ArchiveDB(recorder)
    location = Location(to)
    report = ArchiveReport(dry_run=dry_run)
    crash = _crash_hook()
    with archive_lock(db, url, wait):
        if not dry_run:
            db.create()
            _recover(db, ArchiveReader(recorder), report)
        moves = list(
            _plan(db, recorder, recent_events, keep_events, older_than, view_positions, mapper)
        )
        report.moves = moves
        report.agents = len({m.agent_id for m in moves})
        total = sum(m.events for m in moves)
        if dry_run:
            report.events = total
            report.seconds = time.perf_counter() - started
            return report
        if progress is not None:
            progress(Progress(total, 0, 0, None))
        for move in moves:
            first = move.first
            while first <= move.last:
                last = min(move.last, first + SEGMENT_EVENTS - 1)
                _archive_segment(db, location, move.agent_id, first, last, report, crash)
                first = last + 1
                if progress is not None:
                    progress(Progress(total, report.events, report.segments, move.agent_id))
    report.seconds = time.perf_counter() - started
    return report


def _plan(
    db: ArchiveDB,
    recorder: AgentRecorder,
    recent_events: int,
    keep_events: int,
    older_than: datetime.timedelta | None,
    floors: Sequence[Position],
    mapper: MsgspecMapper | None,
) -> Iterator[Move]:
    found = (db.projection_floor(), db.horizon())
    all_floors = [*floors, *(f for f in found if f is not None)]
    floor = min(all_floors) if all_floors else None
    cutoff = (
        None
        if older_than is None
        else datetime.datetime.now(datetime.UTC) - older_than
    )
    after: UUID | None = None
    while True:
        ids = recorder.originator_ids(after=after, limit=1000)
        if not ids:
            return
        after = ids[-1]
        for agent_id in ids:
            head = recorder.max_version(agent_id)
            oldest = db.oldest_snapshot(agent_id)
            if head is None or oldest is None:
                continue
            archived = db.archived_upto(agent_id)
            cut = min(oldest, head - max(recent_events, keep_events, 1))
            if floor is not None and cut > archived:
                above = db.first_after(agent_id, floor)
                if above is not None:
                    cut = min(cut, above - 1)
            if cutoff is not None and cut > archived:
                cut = _older_than(db, mapper or MsgspecMapper(), agent_id, archived, cut, cutoff)
            if cut > archived:
                yield Move(agent_id, archived + 1, cut)


def _older_than(
    db: ArchiveDB,
    mapper: MsgspecMapper,
    agent_id: UUID,
    archived: int,
    cut: int,
    cutoff: datetime.datetime,
) -> int:
    """The last version up to ``cut`` whose event (and every one before it) is older
    than ``cutoff``."""
    last = archived
    for version, topic, state, _, _ in db.rows(agent_id, archived, cut):
        stored = StoredEvent(
            originator_id=agent_id, originator_version=version, topic=topic, state=state
        )
        stamp = getattr(mapper.to_domain_event(stored), "timestamp", None)
        if not isinstance(stamp, datetime.datetime) or stamp >= cutoff:
            break
        last = version
    return last


def segment_name(agent_id: UUID, first: int, last: int) -> str:
    return f"{agent_id.hex[:2]}/{agent_id.hex}/{first:012d}-{last:012d}.v{CODEC_VERSION}.seg"


def _archive_segment(
    db: ArchiveDB,
    location: Location,
    agent_id: UUID,
    first: int,
    last: int,
    report: ArchiveReport,
    crash: Callable[[str], None],
) -> None:
    rows = db.rows(agent_id, first - 1, last)
    if len(rows) != last - first + 1 or rows[0][0] != first or rows[-1][0] != last:
        found = [r[0] for r in rows]
        missing = next(
            (v for v, f in zip(range(first, last + 1), found, strict=False) if v != f),
            first + len(found),
        )
        raise DamagedLog(agent_id, missing, "the hot table lacks it; nothing was archived")
    encoded = encode(agent_id, rows)
    name = segment_name(agent_id, first, last)
    location.write(name, encoded.data, crash)
    crash("segment-written")
    file, size = location.open(name)
    with file:
        if size != len(encoded.data) or sha256_of(file) != encoded.sha256:
            raise OSError(f"segment {location.path(name)} did not read back as written")
        read_back = list(iter_rows(file, read_footer(file, size)))
    if read_back != rows:
        raise OSError(f"segment {location.path(name)}: its rows differ from the hot rows")
    crash("segment-verified")
    segment = Segment(
        agent_id, first, last, len(rows), Position(*encoded.min_position),
        Position(*encoded.max_position), CODEC_VERSION, encoded.sha256, len(encoded.data),
        location.url, name, WRITTEN,
    )  # fmt: skip
    db.insert_segment(segment)
    crash("manifest-written")
    db.finish(segment)
    crash("rows-deleted")
    report.segments += 1
    report.events += len(rows)
    report.hot_bytes += sum(len(r[1]) + len(r[2]) for r in rows)
    report.archive_bytes += len(encoded.data)


def _recover(db: ArchiveDB, reader: ArchiveReader, report: ArchiveReport) -> None:
    """Finish (file good, rows still hot) or undo (file bad) each ``written`` segment."""
    for segment in db.segments(state=WRITTEN):
        problem = reader.verify(segment)
        if problem is None and db.hot_count(segment.agent_id, segment.first, segment.last) == (
            segment.events
        ):
            db.finish(segment)
            report.finished += 1
            continue
        db.delete_segment_row(segment)
        with contextlib.suppress(Exception):
            Location(segment.location).delete(segment.file)
        report.undone += 1


def _crash_hook() -> Callable[[str], None]:
    """The SIGKILL hook of ``SNAPTAIL_ARCHIVE_CRASH_AT`` (a no-op without it)."""
    setting = os.environ.get(CRASH_VARIABLE)
    if not setting:
        return lambda step: None
    step, _, nth = setting.partition(":")
    if step not in STEPS:
        raise ValueError(f"{CRASH_VARIABLE}={setting!r}: the step is one of {', '.join(STEPS)}")
    remaining = [int(nth or 1)]

    def crash(reached: str) -> None:
        if reached == step:
            remaining[0] -= 1
            if remaining[0] == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return crash


# The lock ``archive run`` takes (see DirectSQL.exclusive): SQLite's lock file beside
# the database, PostgreSQL's advisory lock.
LOCK_FILE, LOCK_KEY = "archive.lock", "archive run"


def archive_lock(db: ArchiveDB, url: str, wait: float) -> AbstractContextManager[None]:
    """Hold the database's archive lock; wait ``wait`` seconds, then
    :class:`~snaptail.errors.ArchiveBusy`. (``url`` is not read: the recorder knows
    its database; the parameter stays for callers.)"""
    return db.sql.exclusive(file=LOCK_FILE, key=LOCK_KEY, wait=wait, busy=ArchiveBusy)


def vacuum(recorder: AgentRecorder, url: str) -> tuple[int, int]:
    """Give back the space archived rows held: SQLite ``PRAGMA incremental_vacuum``
    when the file is in incremental auto-vacuum mode, else ``VACUUM`` (rewrites the
    file; writers wait meanwhile); PostgreSQL ``VACUUM`` of the events table (the
    space is reused by new rows; the file shrinks only with ``VACUUM FULL``, which
    locks the table). Returns the bytes before and after (SQLite: the database file;
    PostgreSQL: the events table with its indexes). ``url`` is not read (the recorder
    knows its database); the parameter stays for callers."""
    return recorder.direct_sql().vacuum_events()
