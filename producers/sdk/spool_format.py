"""Byte layout of the producer spool's segment files: framing and validation, no I/O.

A segment file is :data:`SEGMENT_MAGIC` followed by records, each framed as::

    [u32 length][u32 crc32(payload)][payload]      (big-endian; crc32 is zlib's CRC-32)

and each payload holds one :class:`SpoolRecord`::

    [u64 spooled_at_us][u16 n][topic utf-8 (n)][u16 n][event_id utf-8 (n)]
    [u32 n | 0xFFFFFFFF for no key][key (n)][value (rest)]

The length and CRC let a reader tell a *torn tail* — the incomplete last write of a process
or machine that crashed mid-append, which is safe to cut off — from *corruption* in the
middle of the data, which must stop the reader: skipping a record would drop an event
silently. :func:`scan_segment` makes that decision; :mod:`authtrail.producers.sdk.spool` does the
I/O.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass

from authtrail.errors import FormatError, InvalidArgumentError

__all__ = [
    "FRAME_HEADER_SIZE",
    "MAX_PAYLOAD_SIZE",
    "SEGMENT_MAGIC",
    "SegmentScan",
    "SpoolRecord",
    "decode_cursor",
    "decode_frame",
    "decode_payload",
    "encode_cursor",
    "frame_record",
    "frame_size_at",
    "scan_segment",
]

#: First bytes of every segment file; the last byte is the layout version.
SEGMENT_MAGIC = b"ATSPOOL\x01"
_FRAME_HEADER = struct.Struct(">II")
FRAME_HEADER_SIZE = _FRAME_HEADER.size
#: Largest payload a frame may declare. Events are a few hundred bytes; a length beyond
#: this can only be damage, and refusing it keeps a bad length from reading gigabytes.
MAX_PAYLOAD_SIZE = 16 * 1024 * 1024
_FIXED = struct.Struct(">QH")  # spooled_at_us, topic length
_SHORT = struct.Struct(">H")
_LONG = struct.Struct(">I")
_NO_KEY = 0xFFFFFFFF
_CURSOR_MAGIC = b"ATCURS\x00\x01"
_CURSOR = struct.Struct(">8sQI")  # magic, next unacknowledged index, crc32 of the first two


@dataclass(frozen=True)
class SpoolRecord:
    """One event waiting for delivery: where it goes (``topic``, ``key``), its encoded
    ``value``, its ``event_id`` (for reports and downstream deduplication), and when it
    was spooled (``spooled_at_us``, microseconds since the epoch)."""

    topic: str
    key: bytes | None
    value: bytes
    event_id: str
    spooled_at_us: int = 0


def frame_record(record: SpoolRecord) -> bytes:
    """Return ``record`` framed as ``[length][crc][payload]``, ready to append.

    Raises:
        InvalidArgumentError: the topic or event id is empty or longer than 65535 bytes
            in UTF-8, ``spooled_at_us`` is negative, or the payload would exceed
            :data:`MAX_PAYLOAD_SIZE`.
    """
    topic = record.topic.encode("utf-8")
    event_id = record.event_id.encode("utf-8")
    for name, text in (("topic", topic), ("event_id", event_id)):
        if not 0 < len(text) <= 0xFFFF:
            raise InvalidArgumentError(f"spool record {name} must be 1..65535 bytes, not {text!r}")
    if not 0 <= record.spooled_at_us < 1 << 64:
        raise InvalidArgumentError(f"spooled_at_us out of range: {record.spooled_at_us}")
    key_length = _NO_KEY if record.key is None else len(record.key)
    payload = b"".join(
        (
            _FIXED.pack(record.spooled_at_us, len(topic)),
            topic,
            _SHORT.pack(len(event_id)),
            event_id,
            _LONG.pack(key_length),
            record.key or b"",
            record.value,
        )
    )
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise InvalidArgumentError(
            f"event {record.event_id!r} is too large to spool "
            f"({len(payload)} bytes, at most {MAX_PAYLOAD_SIZE})"
        )
    return _FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> SpoolRecord:
    """Parse a payload whose CRC already matched.

    Raises:
        FormatError: the payload's inner lengths do not add up or a text is not UTF-8.
    """
    try:
        spooled_at_us, topic_length = _FIXED.unpack_from(payload, 0)
        position = _FIXED.size
        topic = payload[position : position + topic_length].decode("utf-8")
        position += topic_length
        (event_id_length,) = _SHORT.unpack_from(payload, position)
        position += _SHORT.size
        event_id = payload[position : position + event_id_length].decode("utf-8")
        position += event_id_length
        (key_length,) = _LONG.unpack_from(payload, position)
        position += _LONG.size
        key: bytes | None = None
        if key_length != _NO_KEY:
            key = bytes(payload[position : position + key_length])
            position += key_length
    except (struct.error, UnicodeDecodeError) as exc:
        raise FormatError(f"spool record payload is malformed: {exc}") from exc
    if position > len(payload) or not topic or not event_id:
        raise FormatError("spool record payload is malformed: inner lengths exceed the payload")
    return SpoolRecord(topic, key, bytes(payload[position:]), event_id, spooled_at_us)


def frame_size_at(data: bytes, position: int) -> int | None:
    """The framed size the header at ``position`` declares, or None when ``data`` holds no
    whole header there or the length is impossible (0 or over :data:`MAX_PAYLOAD_SIZE`)."""
    if len(data) - position < FRAME_HEADER_SIZE:
        return None
    length, _ = _FRAME_HEADER.unpack_from(data, position)
    return FRAME_HEADER_SIZE + length if 0 < length <= MAX_PAYLOAD_SIZE else None


def decode_frame(data: bytes, position: int, name: str) -> tuple[SpoolRecord, int]:
    """Return the record framed at ``position`` and its framed size.

    Raises:
        FormatError: naming ``name``, when the frame is incomplete, fails its CRC or its
            payload does not parse.
    """
    flaw = _frame_flaw(data, position)
    if flaw is not None:
        raise FormatError(f"{name}: {flaw}")
    length, _ = _FRAME_HEADER.unpack_from(data, position)
    start = position + FRAME_HEADER_SIZE
    try:
        return decode_payload(data[start : start + length]), FRAME_HEADER_SIZE + length
    except FormatError as exc:
        raise FormatError(f"{name}: {exc}") from exc


def encode_cursor(next_index: int) -> bytes:
    """The cursor file's bytes: magic, ``next_index`` (u64) and a CRC-32 of both."""
    data = _CURSOR_MAGIC + next_index.to_bytes(8, "big")
    return data + zlib.crc32(data).to_bytes(4, "big")


def decode_cursor(data: bytes, name: str) -> int:
    """The index stored by :func:`encode_cursor`. Raises :class:`FormatError` naming ``name``
    when the size, magic or CRC is wrong."""
    if len(data) != _CURSOR.size:
        raise FormatError(f"spool cursor {name} has {len(data)} bytes, not {_CURSOR.size}")
    magic, next_index, crc = _CURSOR.unpack(data)
    if magic != _CURSOR_MAGIC or zlib.crc32(data[:-4]) != crc:
        raise FormatError(f"spool cursor {name} is damaged (bad magic or crc)")
    return int(next_index)


@dataclass(frozen=True)
class SegmentScan:
    """What :func:`scan_segment` found in one segment file.

    ``record_ends[i]`` is the byte offset just past record ``i``; records start at
    ``len(SEGMENT_MAGIC)``. ``valid_size`` is where the last whole record ends (the size to
    truncate the file to); ``torn_size`` counts the bytes after it that are a torn tail.
    ``first_spooled_at_us`` is record 0's timestamp, 0 when the segment holds none.
    """

    record_ends: array[int]
    valid_size: int
    torn_size: int
    first_spooled_at_us: int

    @property
    def count(self) -> int:
        return len(self.record_ends)

    def record_start(self, index: int) -> int:
        """Byte offset of record ``index`` (0 <= index <= count; count gives the end)."""
        return len(SEGMENT_MAGIC) if index == 0 else self.record_ends[index - 1]


def scan_segment(data: bytes, *, final: bool, name: str = "segment") -> SegmentScan:
    """Check every record of a segment's bytes: magic, lengths, CRCs and payload layout.

    Only the ``final`` (newest) segment may end in a torn tail: the bytes of one interrupted
    append — a partial header, a length that runs past the end, the last record failing its
    CRC — or a zero-filled remainder (a file system extends a file before it writes the
    data). A torn tail is reported in ``torn_size``, never returned as data. A final
    segment shorter than its magic is all torn tail (a crash right after creating it).

    Raises:
        FormatError: anything else, naming ``name`` and the byte offset: a bad magic, an
            invalid record followed by more data, any flaw in a non-final segment, or a
            record whose CRC matches but whose payload does not parse.
    """
    magic_size = len(SEGMENT_MAGIC)
    if len(data) < magic_size and final and SEGMENT_MAGIC.startswith(data):
        return SegmentScan(array("Q"), 0, len(data), 0)
    if data[:magic_size] != SEGMENT_MAGIC:
        raise FormatError(f"{name}: not a spool segment (magic {data[:magic_size]!r})")
    ends = array("Q")
    first_spooled_at_us = 0
    position = magic_size
    size = len(data)
    while position < size:
        flaw = _frame_flaw(data, position)
        if flaw is None:
            record, framed_size = decode_frame(data, position, f"{name} offset {position}")
            if not ends:
                first_spooled_at_us = record.spooled_at_us
            position += framed_size
            ends.append(position)
            continue
        if final and _is_torn_tail(data, position):
            return SegmentScan(ends, position, size - position, first_spooled_at_us)
        where = "" if final else " (not the newest segment, so not a torn write)"
        raise FormatError(
            f"{name} offset {position}: corrupt record after {len(ends)} good ones: {flaw}"
            f"{where}; {size - position} bytes follow. Nothing is skipped silently: move the "
            "segment aside and recover its events by hand"
        )
    return SegmentScan(ends, position, 0, first_spooled_at_us)


def _frame_flaw(data: bytes, position: int) -> str | None:
    """Why the frame at ``position`` is not a whole valid record, or None if it is."""
    remaining = len(data) - position
    if remaining < FRAME_HEADER_SIZE:
        return f"{remaining}-byte partial header"
    length, crc = _FRAME_HEADER.unpack_from(data, position)
    if not 0 < length <= MAX_PAYLOAD_SIZE:
        return f"impossible length {length}"
    if length > remaining - FRAME_HEADER_SIZE:
        return f"length {length} runs past the end of the file"
    start = position + FRAME_HEADER_SIZE
    calculated = zlib.crc32(data[start : start + length])
    if calculated != crc:
        return f"crc mismatch: stored {crc:08x}, calculated {calculated:08x}"
    return None


def _is_torn_tail(data: bytes, position: int) -> bool:
    """True if the bad frame at ``position`` is what one interrupted append leaves."""
    remaining = len(data) - position
    if remaining < FRAME_HEADER_SIZE or not data[position:].strip(b"\x00"):
        return True
    length, _ = _FRAME_HEADER.unpack_from(data, position)
    if not 0 < length <= MAX_PAYLOAD_SIZE:
        return False  # a garbage length followed by non-zero bytes is damage, not a tear
    end = position + FRAME_HEADER_SIZE + length
    # Runs past the end (the write stopped short), or is the very last record (its pages
    # reached the disk only in part), or only zeros follow it.
    return end >= len(data) or not data[end:].strip(b"\x00")
