"""Archive segments: cold events moved out of the hot database into compressed,
verified files, still found by every read (see README "Archive").

``snaptail archive run`` / :meth:`AgentStore.archive` move them
(:mod:`snaptail.archive.runner`); :class:`ArchiveReader` reads them back.
"""

from snaptail.archive.location import Location
from snaptail.archive.manifest import MANIFEST_TABLE, Segment
from snaptail.archive.reader import ArchiveReader
from snaptail.archive.runner import ArchiveReport, Move, Progress, run_archive, vacuum

__all__ = [
    "MANIFEST_TABLE",
    "ArchiveReader",
    "ArchiveReport",
    "Location",
    "Move",
    "Progress",
    "Segment",
    "run_archive",
    "vacuum",
]
