"""Reading archived events: one agent's versions in order (either direction), all
agents' in position order (a projection from zero), and full verification.

Every failure to read a segment (missing, truncated, corrupt, not what the manifest
says) raises :class:`~snaptail.errors.ArchiveDamaged` naming the agent, the version
range and the file; nothing is skipped.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, cast
from uuid import UUID

from snaptail.archive.codec import (
    ArchivedRow,
    Footer,
    SegmentFormatError,
    iter_rows,
    read_block,
    read_footer,
    sha256_of,
)
from snaptail.archive.location import Location
from snaptail.archive.manifest import ArchiveDB, Segment
from snaptail.errors import ArchiveDamaged, DamagedLog
from snaptail.infrastructure.recorder import (
    START,
    AgentRecorder,
    Partition,
    Position,
    PositionedNotification,
)

# Bytes of decoded rows a merge of segments (a projection from zero) holds at most.
MERGE_MEMORY = 32 * 1024 * 1024
_ROW_OVERHEAD = 150  # a decoded row's tuple, ints and topic, roughly


class _Cursor:
    """One segment's place in a merge: rows read from one block (``keys`` their
    positions), the next to take, their bytes, and the version to read next."""

    __slots__ = ("held", "index", "keys", "next_version", "rows", "segment")

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.rows: list[ArchivedRow] = []
        self.keys: list[tuple[int, int]] = []
        self.index = 0
        self.held = 0
        self.next_version = segment.first

    def trim(self, cap: int) -> int:
        """Keep the next row and as many more as fit in ``cap`` bytes; the rest is
        read again later. Returns the bytes kept."""
        start = self.index
        end = start + 1
        size = len(self.rows[start][2]) + _ROW_OVERHEAD
        while end < len(self.rows):
            more = len(self.rows[end][2]) + _ROW_OVERHEAD
            if size + more > cap:
                self.next_version = self.rows[end][0]
                break
            size += more
            end += 1
        self.rows, self.keys, self.index = self.rows[start:end], self.keys[start:end], 0
        self.held = size
        return size


class ArchiveReader:
    """Reads the segments the hot database's manifest lists (``location``: where they
    are now, if not where the archive run wrote them)."""

    def __init__(self, recorder: AgentRecorder, location: str | None = None) -> None:
        self.db = ArchiveDB(recorder)
        self.location = location
        self._locations: dict[str, Location] = {}

    def _location(self, segment: Segment) -> Location:
        url = self.location or segment.location
        found = self._locations.get(url)
        if found is None:
            found = self._locations[url] = Location(url)
        return found

    def segments(self, agent_id: UUID | None = None) -> list[Segment]:
        """The archived segments (of one agent, or all), in agent and version order."""
        return self.db.segments(agent_id)

    def upto(self, agent_id: UUID) -> int:
        """The agent's newest archived version (0: nothing archived)."""
        return self.db.archived_upto(agent_id)

    def _damaged(self, segment: Segment, detail: str) -> ArchiveDamaged:
        return ArchiveDamaged(
            segment.agent_id, segment.first, segment.last,
            self._location(segment).path(segment.file), detail,
        )  # fmt: skip

    def open(self, segment: Segment) -> tuple[BinaryIO, Footer]:
        """The segment's file, open, and its footer, checked against the manifest."""
        try:
            file, size = self._location(segment).open(segment.file)
        except FileNotFoundError:
            raise self._damaged(segment, "the file is missing") from None
        except OSError as exc:
            raise self._damaged(segment, f"cannot open it ({exc})") from None
        try:
            if size != segment.bytes:
                raise SegmentFormatError(
                    f"{size} bytes, the manifest says {segment.bytes} (truncated or replaced)"
                )
            footer = read_footer(file, size)
            if (footer.agent, footer.first, footer.last, footer.events) != (
                segment.agent_id.hex, segment.first, segment.last, segment.events,
            ):  # fmt: skip
                raise SegmentFormatError(
                    f"holds agent {footer.agent} versions {footer.first}-{footer.last}, not"
                    " what the manifest says"
                )
        except SegmentFormatError as exc:
            file.close()
            raise self._damaged(segment, str(exc)) from None
        except BaseException:
            file.close()
            raise
        return file, footer

    def segment_rows(
        self, segment: Segment, gt: int = 0, lt: int | None = None, reverse: bool = False
    ) -> Iterator[ArchivedRow]:
        """One segment's rows with ``gt < version < lt`` (one block in memory)."""
        file, footer = self.open(segment)
        with file:
            rows = iter_rows(file, footer, gt, lt, reverse)
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    return
                except SegmentFormatError as exc:
                    raise self._damaged(segment, str(exc)) from None
                yield row

    def rows(
        self,
        agent_id: UUID,
        gt: int,
        lt: int,
        reverse: bool = False,
        topics: Sequence[str] = (),
    ) -> Iterator[ArchivedRow]:
        """The agent's archived rows with ``gt < version < lt`` (of ``topics`` only, if
        given), oldest first or newest first. Versions are checked to be consecutive."""
        segments = [s for s in self.db.segments(agent_id) if s.last > gt and s.first < lt]
        expected = 0 if not segments else segments[0].first
        for segment in segments:  # the segments must tile the versions
            if segment.first != expected and expected:
                raise DamagedLog(
                    agent_id, expected, f"no archive segment holds it (next: {segment.first})"
                )
            expected = segment.last + 1
        if reverse:
            segments.reverse()
        wanted = frozenset(topics)
        for segment in segments:
            for row in self.segment_rows(segment, gt, lt, reverse):
                if not wanted or row[1] in wanted:
                    yield row

    def notifications(
        self, after: Position, topics: Sequence[str] = (), memory: int = MERGE_MEMORY
    ) -> Iterator[PositionedNotification]:
        """Every archived event after ``after``, in position order (as the hot table
        would give them): a merge of the segments, each opened when the merge reaches
        its lowest position. At most about ``memory`` bytes of decoded rows are held
        (plus one row per open segment and the block being decoded): each open
        segment keeps its share of its current block and reads the block again for
        the rest, so agents written side by side cost decoding, not memory."""
        pending = sorted(
            (s for s in self.db.segments() if s.max_position > after),
            key=lambda s: s.min_position,
            reverse=True,
        )
        wanted = frozenset(topics)
        heap: list[tuple[tuple[int, int], int, _Cursor]] = []
        serial = 0
        held = 0  # bytes of the rows the open cursors hold (taken or not)

        def refill(cursor: _Cursor) -> None:
            nonlocal serial, held
            held -= cursor.held
            cursor.held = self._fill(cursor, after, max(1, memory // (len(heap) + 1)))
            held += cursor.held
            if cursor.rows:
                serial += 1
                heapq.heappush(heap, (cursor.keys[0], serial, cursor))
            if held > memory:  # more segments open than when their shares were cut
                cap = memory // (2 * len(heap))
                held = sum(c.trim(cap) for _, _, c in heap)

        while pending or heap:
            # Open every segment that may hold the next position.
            while pending and (not heap or pending[-1].min_position <= heap[0][0]):
                refill(_Cursor(pending.pop()))
            if not heap:
                continue
            cursor = heap[0][2]
            rows, keys, start = cursor.rows, cursor.keys, cursor.index
            # Its rows before every other open segment's next row and before the next
            # segment to open are taken in one run.
            bound: tuple[int, int] | None = pending[-1].min_position if pending else None
            if len(heap) > 1:
                other = heap[1][0] if len(heap) == 2 or heap[1][0] < heap[2][0] else heap[2][0]
                if bound is None or other < bound:
                    bound = other
            end = len(keys) if bound is None else bisect.bisect_left(keys, bound, start + 1)
            cursor.index = end
            if end < len(keys):
                serial += 1
                heapq.heapreplace(heap, (keys[end], serial, cursor))
            else:
                heapq.heappop(heap)
                refill(cursor)
            agent_id = cursor.segment.agent_id
            for row in rows[start:end]:
                if not wanted or row[1] in wanted:
                    yield PositionedNotification(agent_id, row[0], row[1], row[2], row[3], row[4])

    def _fill(self, cursor: _Cursor, after: Position, share: int) -> int:
        """Give ``cursor`` its next rows after ``after`` (at least one, about ``share``
        bytes, from one block); the bytes held (0: the segment is read)."""
        segment = cursor.segment
        cursor.rows, cursor.keys, cursor.index = [], [], 0
        file, footer = self.open(segment)
        with file:
            for block in footer.blocks:
                if block[1] < cursor.next_version:
                    continue
                try:
                    rows = read_block(file, block)
                except SegmentFormatError as exc:
                    raise self._damaged(segment, str(exc)) from None
                taken: list[ArchivedRow] = []
                keys: list[tuple[int, int]] = []
                size = 0
                for row in rows[max(0, cursor.next_version - block[0]) :]:
                    if size >= share and taken:
                        break
                    cursor.next_version = row[0] + 1
                    key = (row[4], row[3])
                    if key > after:
                        taken.append(row)
                        keys.append(key)
                        size += len(row[2]) + _ROW_OVERHEAD
                if taken:
                    cursor.rows, cursor.keys = taken, keys
                    return size
        return 0

    def verify(self, segment: Segment) -> str | None:
        """None if the segment reads back whole (checksum, every block, every version);
        else what is wrong with it."""
        try:
            file, footer = self.open(segment)
        except ArchiveDamaged as exc:
            return str(exc)
        with file:
            if sha256_of(file) != segment.checksum:
                return str(self._damaged(segment, "SHA-256 differs from the manifest's (corrupt)"))
            try:
                expected = segment.first
                for row in iter_rows(file, footer):
                    if row[0] != expected:
                        raise SegmentFormatError(f"version {expected} missing")
                    expected += 1
                if expected != segment.last + 1:
                    raise SegmentFormatError(f"ends at {expected - 1}, not {segment.last}")
            except SegmentFormatError as exc:
                return str(self._damaged(segment, str(exc)))
        return None


class ArchivedThenHot:
    """A projection's reader (``read(after, limit)``) that also finds archived events:
    a merge, in position order, of the archive's events after ``after`` and the hot
    table's, so that a projection started from zero sees every event once, in the
    order the hot table alone would have given. While ``after`` is past every
    archived position it is the hot reader alone."""

    def __init__(
        self,
        archive: ArchiveReader,
        hot: Callable[[Position, int], list[PositionedNotification]],
        partition: Partition | None = None,
    ) -> None:
        self._archive = archive
        self._hot = hot
        self._partition = partition
        self._highest: Position | None = None
        self._merge: Iterator[PositionedNotification] | None = None
        self._merge_at: Position | None = None
        self._lookahead: list[PositionedNotification] = []
        self._hot_after: Position | None = None
        self._hot_page: list[PositionedNotification] = []

    def __call__(self, after: Position, limit: int) -> list[PositionedNotification]:
        if self._highest is None or after == START:
            segments = self._archive.db.segments()
            self._highest = max((s.max_position for s in segments), default=START)
        if after >= self._highest:
            return self._hot(after, limit)
        if self._merge is None or self._merge_at != after:
            self._merge = self._archived(after)
            self._lookahead = []
        batch = _merge(self._merge, self._lookahead, self._hot_page_after(after, limit), limit)
        self._merge_at = batch[-1].position if batch else after
        return batch

    def _hot_page_after(self, after: Position, limit: int) -> list[PositionedNotification]:
        """The hot reader's next ``limit`` events after ``after``: what is left of the
        page read before if it still holds ``limit`` (the hot reader never finds an
        event later before one it returned, so those are the same rows), else a new
        read. While the archived events come first, one hot page serves many batches."""
        page = self._hot_page
        if self._hot_after is not None and after >= self._hot_after and len(page) >= limit:
            rest = page[bisect.bisect_right(page, (after[0], after[1]), key=_position) :]
            if len(rest) >= limit:
                self._hot_after, self._hot_page = after, rest
                return rest
        self._hot_after, self._hot_page = after, self._hot(after, limit)
        return self._hot_page

    def _archived(self, after: Position) -> Iterator[PositionedNotification]:
        partition = self._partition
        for n in self._archive.notifications(after):
            if partition is None or partition.owns(cast(UUID, n.originator_id)):
                yield n


def _merge(
    archived: Iterator[PositionedNotification],
    lookahead: list[PositionedNotification],
    from_hot: list[PositionedNotification],
    limit: int,
) -> list[PositionedNotification]:
    """The first ``limit`` of the archive's next events (``lookahead`` holds the one
    read but not taken) and ``from_hot`` (the hot reader's next page), by position."""
    batch: list[PositionedNotification] = []
    index = 0
    hot_next = from_hot[0] if from_hot else None
    hot_at = _position(hot_next) if hot_next is not None else None
    while len(batch) < limit:
        if not lookahead:
            following = next(archived, None)
            if following is not None:
                lookahead.append(following)
        archived_next = lookahead[0] if lookahead else None
        if archived_next is None and hot_next is None:
            break
        if hot_at is None or (archived_next is not None and _position(archived_next) < hot_at):
            assert archived_next is not None
            batch.append(archived_next)
            lookahead.clear()
        else:
            assert hot_next is not None
            batch.append(hot_next)
            index += 1
            hot_next = from_hot[index] if index < len(from_hot) else None
            hot_at = _position(hot_next) if hot_next is not None else None
    return batch


def _position(n: PositionedNotification) -> tuple[int, int]:
    return (n.transaction_id, n.id)
