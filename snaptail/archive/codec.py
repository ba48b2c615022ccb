"""The archive segment format: one agent's consecutive events, zstd-compressed msgpack.

A segment file is::

    MAGIC | block 0 | block 1 | ... | footer | footer length (4 bytes, little endian) | MAGIC

Each block is one zstd frame holding a msgpack array of rows
``[version, topic, state, notification_id, transaction_id]`` (``state`` the stored
bytes exactly as the hot table held them, encrypted payloads included). The footer
(msgpack) names the codec version, the agent, the version range and, per block, its
first and last version, offset, length and CRC-32 (of the compressed bytes): a reader
seeks to the block it needs and holds one block at a time. The whole file's SHA-256
is recorded in the manifest and checked by ``verify`` and by the archive run before
any hot row is deleted.

Why not Parquet: it would let DuckDB query segments directly, but needs pyarrow
(~100 MB) for a feature read by snaptail itself; msgspec is already a dependency and
``zstandard`` is one small wheel. ``snaptail archive export`` is left for later.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO
from uuid import UUID

import msgspec

CODEC_VERSION = 1
MAGIC = b"SNPTSEG1"
_TRAILER = struct.Struct("<I")
# A block is cut at this many rows or this many bytes of payload, whichever first.
BLOCK_ROWS = 512
BLOCK_BYTES = 512 * 1024
ZSTD_LEVEL = 6

# (version, topic, state, notification_id, transaction_id)
ArchivedRow = tuple[int, str, bytes, int, int]


class SegmentFormatError(ValueError):
    """The bytes are not a readable segment (the reader wraps this in ArchiveDamaged)."""


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - the archive extra installs it
        raise ImportError(
            "archive segments need the zstandard package: pip install 'snaptail[archive]'"
        ) from None
    return zstandard


class Footer(msgspec.Struct, array_like=True):
    codec: int
    agent: str
    first: int
    last: int
    events: int
    # per block: [first version, last version, offset, length, crc32]
    blocks: list[tuple[int, int, int, int, int]]


_encode_rows = msgspec.msgpack.Encoder().encode
_decode_rows = msgspec.msgpack.Decoder(list[tuple[int, str, bytes, int, int]]).decode
_encode_footer = msgspec.msgpack.Encoder().encode
_decode_footer = msgspec.msgpack.Decoder(Footer).decode


@dataclass(frozen=True)
class EncodedSegment:
    data: bytes
    first: int
    last: int
    events: int
    sha256: str
    min_position: tuple[int, int]
    max_position: tuple[int, int]


def encode_segment(agent_id: UUID, rows: Sequence[ArchivedRow]) -> EncodedSegment:
    """The segment file of ``rows`` (one agent's, consecutive versions, oldest first)."""
    if not rows:
        raise ValueError("a segment holds at least one event")
    compressor = _zstd().ZstdCompressor(level=ZSTD_LEVEL)
    parts = [MAGIC]
    offset = len(MAGIC)
    blocks: list[tuple[int, int, int, int, int]] = []
    start = 0
    while start < len(rows):
        end, size = start, 0
        while end < len(rows) and end - start < BLOCK_ROWS and size < BLOCK_BYTES:
            size += len(rows[end][2]) + len(rows[end][1])
            end += 1
        chunk = rows[start:end]
        data = compressor.compress(_encode_rows(chunk))
        blocks.append((chunk[0][0], chunk[-1][0], offset, len(data), zlib.crc32(data)))
        parts.append(data)
        offset += len(data)
        start = end
    footer = _encode_footer(
        Footer(CODEC_VERSION, agent_id.hex, rows[0][0], rows[-1][0], len(rows), blocks)
    )
    parts += [footer, _TRAILER.pack(len(footer)), MAGIC]
    data = b"".join(parts)
    positions = [(row[4], row[3]) for row in rows]
    return EncodedSegment(
        data=data,
        first=rows[0][0],
        last=rows[-1][0],
        events=len(rows),
        sha256=hashlib.sha256(data).hexdigest(),
        min_position=min(positions),
        max_position=max(positions),
    )


def read_footer(file: BinaryIO, size: int) -> Footer:
    """The footer of the segment open as ``file`` (``size`` bytes long)."""
    tail = len(MAGIC) + _TRAILER.size
    if size < len(MAGIC) + tail:
        raise SegmentFormatError(f"{size} bytes: too short for a segment (truncated?)")
    file.seek(0)
    if file.read(len(MAGIC)) != MAGIC:
        raise SegmentFormatError("does not start as a snaptail segment")
    file.seek(size - tail)
    end = file.read(tail)
    if len(end) != tail or end[_TRAILER.size :] != MAGIC:
        raise SegmentFormatError("does not end as a snaptail segment (truncated?)")
    (length,) = _TRAILER.unpack(end[: _TRAILER.size])
    if length > size - tail - len(MAGIC):
        raise SegmentFormatError("footer length out of range")
    file.seek(size - tail - length)
    raw = file.read(length)
    try:
        footer = _decode_footer(raw)
    except msgspec.DecodeError as exc:
        raise SegmentFormatError(f"footer unreadable: {exc}") from None
    if footer.codec != CODEC_VERSION:
        raise SegmentFormatError(
            f"codec version {footer.codec}; this snaptail reads version {CODEC_VERSION}"
        )
    return footer


def read_block(file: BinaryIO, block: tuple[int, int, int, int, int]) -> list[ArchivedRow]:
    """The rows of one block, its CRC and version range checked."""
    first, last, offset, length, crc = block
    file.seek(offset)
    data = file.read(length)
    if len(data) != length or zlib.crc32(data) != crc:
        raise SegmentFormatError(
            f"block of versions {first}-{last} at byte {offset}: checksum mismatch (corrupt)"
        )
    try:
        rows = _decode_rows(_zstd().ZstdDecompressor().decompress(data))
    except Exception as exc:
        raise SegmentFormatError(
            f"block of versions {first}-{last}: cannot decompress or decode ({exc})"
        ) from None
    if not rows or rows[0][0] != first or rows[-1][0] != last or len(rows) != last - first + 1:
        raise SegmentFormatError(f"block of versions {first}-{last}: rows do not match")
    return rows


def iter_rows(
    file: BinaryIO, footer: Footer, gt: int = 0, lt: int | None = None, reverse: bool = False
) -> Iterator[ArchivedRow]:
    """The segment's rows with ``gt < version < lt``, one block in memory at a time."""
    blocks = [b for b in footer.blocks if b[1] > gt and (lt is None or b[0] < lt)]
    if reverse:
        blocks.reverse()
    for block in blocks:
        rows = read_block(file, block)
        if reverse:
            rows.reverse()
        for row in rows:
            if row[0] > gt and (lt is None or row[0] < lt):
                yield row


def sha256_of(file: BinaryIO) -> str:
    """The SHA-256 of a whole file, read in chunks."""
    digest = hashlib.sha256()
    file.seek(0)
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()
