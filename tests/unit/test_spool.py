"""The producer spool: framing, append/read/acknowledge, rotation, crash recovery, bounds.

Everything runs on real files in ``tmp_path``; crashes are real (a child process killed with
SIGKILL) or reproduced byte for byte (a torn tail is what an interrupted write leaves).
Every kind of damage that is not a torn tail must raise, naming where it is.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from authtrail.errors import (
    ConfigurationError,
    FormatError,
    InvalidArgumentError,
    ProducerQueueFullError,
)
from authtrail.producers.sdk.spool import Spool
from authtrail.producers.sdk.spool_format import (
    FRAME_HEADER_SIZE,
    SEGMENT_MAGIC,
    SpoolRecord,
    decode_cursor,
    decode_frame,
    encode_cursor,
    frame_record,
    scan_segment,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
BIG = 1 << 30


def record(number: int, tenant: str = "acme", size: int = 40) -> SpoolRecord:
    return SpoolRecord(
        topic="authtrail.events",
        key=tenant.encode(),
        value=bytes([number % 251]) * size,
        event_id=f"event-{number:05d}",
    )


def same(left: SpoolRecord, right: SpoolRecord) -> bool:
    """Equal except for the time the spool stamped on append."""
    return (left.topic, left.key, left.value, left.event_id) == (
        right.topic, right.key, right.value, right.event_id,
    )  # fmt: skip


def fill(spool: Spool, numbers: range) -> None:
    for number in numbers:
        spool.append(record(number))


def drain(spool: Spool, limit: int = 10_000) -> list[int]:
    """Read everything unread, acknowledge it, commit; return the event numbers."""
    taken = spool.read(limit)
    if taken:
        spool.acknowledge(taken[-1].index + 1)
        spool.commit()
    return [int(item.record.event_id.split("-")[1]) for item in taken]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


# -- framing (pure) -------------------------------------------------------------------------


def test_frame_round_trip_keeps_every_field() -> None:
    for original in (
        record(1),
        SpoolRecord("t", None, b"", "id", 7),
        SpoolRecord("tópic", b"", b"\x00" * 3, "ünïcode-id", 2**63),
    ):
        framed = frame_record(original)
        decoded, size = decode_frame(framed, 0, "test")
        assert decoded == original and size == len(framed)


def test_frame_layout_is_length_crc_payload() -> None:
    import zlib

    framed = frame_record(record(3))
    length = int.from_bytes(framed[:4], "big")
    assert length == len(framed) - FRAME_HEADER_SIZE
    assert int.from_bytes(framed[4:8], "big") == zlib.crc32(framed[8:])


@pytest.mark.parametrize(
    "bad",
    [
        SpoolRecord("", b"k", b"v", "id"),
        SpoolRecord("t", b"k", b"v", ""),
        SpoolRecord("t" * 70_000, b"k", b"v", "id"),
        SpoolRecord("t", b"k", b"v" * (17 * 1024 * 1024), "id"),
    ],
    ids=["empty-topic", "empty-event-id", "long-topic", "too-large"],
)
def test_frame_refuses_what_it_cannot_hold(bad: SpoolRecord) -> None:
    with pytest.raises(InvalidArgumentError):
        frame_record(bad)


def test_every_single_bit_flip_in_a_frame_is_detected() -> None:
    framed = frame_record(record(9, size=12))
    for bit in range(len(framed) * 8):
        damaged = bytearray(framed)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FormatError):
            decode_frame(bytes(damaged), 0, "flipped")


def test_cursor_round_trip_and_damage() -> None:
    assert decode_cursor(encode_cursor(123_456), "c") == 123_456
    data = encode_cursor(5)
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FormatError, match="damaged"):
            decode_cursor(bytes(damaged), "c")
    with pytest.raises(FormatError, match="bytes"):
        decode_cursor(data[:-1], "c")


def three_records() -> bytes:
    return SEGMENT_MAGIC + b"".join(frame_record(record(n)) for n in range(3))


def torn_variants() -> dict[str, bytes]:
    whole = three_records()
    last = frame_record(record(3))
    crc_broken = bytearray(last)
    crc_broken[-1] ^= 0xFF
    return {
        "partial-header": whole + last[:5],
        "header-only": whole + last[:FRAME_HEADER_SIZE],
        "runs-past-end": whole + last[:-1],
        "last-record-crc": whole + bytes(crc_broken),
        "zero-filled": whole + b"\x00" * 4096,
        "record-then-zeros": whole + bytes(crc_broken) + b"\x00" * 100,
    }


@pytest.mark.parametrize("name", sorted(torn_variants()))
def test_torn_tail_of_the_newest_segment_is_cut_not_read(name: str) -> None:
    data = torn_variants()[name]
    scan = scan_segment(data, final=True)
    assert scan.count == 3 and scan.valid_size == len(three_records())
    assert scan.torn_size == len(data) - scan.valid_size > 0
    # The same bytes in an older segment cannot be a torn write: they are damage.
    with pytest.raises(FormatError, match="not the newest segment"):
        scan_segment(data, final=False)


def corrupt_variants() -> dict[str, bytes]:
    whole = three_records()
    first_end = len(SEGMENT_MAGIC) + len(frame_record(record(0)))
    flipped = bytearray(whole)
    flipped[first_end - 3] ^= 0x01  # payload of record 0, records 1 and 2 follow
    bad_length = bytearray(whole)
    bad_length[first_end : first_end + 4] = (0xFFFFFFF0).to_bytes(4, "big")
    zero_length = bytearray(whole)
    zero_length[first_end : first_end + 4] = bytes(4)
    return {
        "bit-flip-mid": bytes(flipped),
        "garbage-length-mid": bytes(bad_length),
        "zero-length-mid": bytes(zero_length),
        "bad-magic": b"NOTSPOOL" + whole[len(SEGMENT_MAGIC) :],
    }


@pytest.mark.parametrize("name", sorted(corrupt_variants()))
def test_corruption_in_the_middle_is_an_error_never_skipped(name: str) -> None:
    with pytest.raises(FormatError, match=r"offset|magic"):
        scan_segment(corrupt_variants()[name], final=True)


def test_crc_valid_but_unparseable_payload_is_an_error_even_at_the_end() -> None:
    import zlib

    payload = b"\x00" * 8 + b"\xff\xff"  # topic length beyond the payload
    frame = len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big") + payload
    with pytest.raises(FormatError, match="malformed"):
        scan_segment(SEGMENT_MAGIC + frame, final=True)


def test_segment_shorter_than_its_magic_is_torn_only_when_newest() -> None:
    assert scan_segment(SEGMENT_MAGIC[:3], final=True).torn_size == 3
    assert scan_segment(b"", final=True).count == 0
    with pytest.raises(FormatError):
        scan_segment(SEGMENT_MAGIC[:3], final=False)


# -- append, read, acknowledge, reopen -------------------------------------------------------


def test_records_come_back_in_order_once_and_acknowledgement_frees_them(tmp_path: Path) -> None:
    with Spool(tmp_path, BIG, 1000) as spool:
        assert [spool.append(record(n)) for n in range(5)] == [0, 1, 2, 3, 4]
        first = spool.read(3)
        assert [item.index for item in first] == [0, 1, 2]
        assert all(same(item.record, record(n)) for n, item in enumerate(first))
        assert first[0].record.spooled_at_us > 0
        rest = spool.read(10)
        assert [item.index for item in rest] == [3, 4] and spool.read(10) == []
        status = spool.status()
        assert (status.events, status.unread) == (5, 0)
        assert status.bytes == sum(item.size for item in first + rest)
        assert status.oldest_spooled_at_us == first[0].record.spooled_at_us
        spool.acknowledge(2)
        status = spool.status()
        assert (status.events, status.bytes) == (3, sum(item.size for item in rest) + first[2].size)
        assert status.oldest_spooled_at_us == first[2].record.spooled_at_us


@pytest.mark.parametrize("next_index", [1, 4, 6])
def test_acknowledgement_must_move_forward_over_records_read(
    tmp_path: Path, next_index: int
) -> None:
    with Spool(tmp_path, BIG, 1000) as spool:
        fill(spool, range(6))
        spool.read(3)
        spool.acknowledge(2)
        if next_index == 1:  # backwards
            with pytest.raises(InvalidArgumentError, match="outside"):
                spool.acknowledge(next_index)
        else:  # past what was read
            with pytest.raises(InvalidArgumentError, match="outside"):
                spool.acknowledge(next_index)
        spool.acknowledge(3)
        assert spool.status().events == 3


def test_reopen_resumes_at_the_committed_cursor(tmp_path: Path) -> None:
    with Spool(tmp_path, BIG, 1000) as spool:
        fill(spool, range(10))
        spool.read(10)
        spool.acknowledge(4)
        spool.commit()
        spool.acknowledge(7)  # not committed: delivered again after a restart
    # close() commits: the cursor is 7 now.
    with Spool(tmp_path, BIG, 1000) as spool:
        status = spool.status()
        assert (status.events, status.unread) == (3, 3)
        taken = spool.read(100)
        assert [item.index for item in taken] == [7, 8, 9]
        assert all(
            same(item.record, record(n)) for n, item in zip(range(7, 10), taken, strict=True)
        )
        assert spool.append(record(10)) == 10


def test_a_crash_before_commit_delivers_again(tmp_path: Path) -> None:
    run_child(
        tmp_path,
        """
        spool = Spool(directory, 1 << 30, 1000)
        for n in range(6):
            spool.append(record(n))
        spool.read(6)
        spool.acknowledge(2)
        spool.commit()
        spool.acknowledge(6)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    with Spool(tmp_path, BIG, 1000) as spool:
        assert [item.index for item in spool.read(100)] == [2, 3, 4, 5]


def test_rotation_reads_across_segments_and_commit_deletes_acknowledged_ones(
    tmp_path: Path,
) -> None:
    frame_size = len(frame_record(record(0)))
    segment_bytes = len(SEGMENT_MAGIC) + 4 * frame_size  # four records per segment
    with Spool(tmp_path, BIG, 1000, segment_bytes=segment_bytes) as spool:
        fill(spool, range(10))
        assert [path.name for path in segments(tmp_path)] == [
            f"{start:020d}.seg" for start in (0, 4, 8)
        ]
        assert [int(item.record.event_id[6:]) for item in spool.read(6)] == list(range(6))
        spool.acknowledge(5)
        spool.commit()  # segment 0 is fully acknowledged, segment 4 not
        assert [path.name[:20] for path in segments(tmp_path)] == [f"{n:020d}" for n in (4, 8)]
        assert drain(spool) == [6, 7, 8, 9]
        assert [path.name[:20] for path in segments(tmp_path)] == [f"{8:020d}"]  # active stays
        fill(spool, range(10, 13))
    # Everything delivered but 10..12; they survive the reopen, in order.
    with Spool(tmp_path, BIG, 1000, segment_bytes=segment_bytes) as spool:
        assert drain(spool) == [10, 11, 12]
    assert segments(tmp_path) == []  # closed with nothing pending: no segment left
    with Spool(tmp_path, BIG, 1000) as spool:
        assert spool.append(record(13)) == 13  # indexes continue from the cursor


def test_a_second_process_cannot_open_a_spool_in_use(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BIG, 10)
    with pytest.raises(ConfigurationError, match="in use"):
        Spool(tmp_path, BIG, 10)
    spool.close()
    Spool(tmp_path, BIG, 10).close()


def test_closed_spool_refuses_work(tmp_path: Path) -> None:
    spool = Spool(tmp_path, BIG, 10)
    spool.close()
    spool.close()  # idempotent
    for call in (lambda: spool.append(record(1)), lambda: spool.read(1), spool.commit):
        with pytest.raises(InvalidArgumentError, match="closed"):
            call()


@pytest.mark.parametrize(
    "arguments",
    [
        {"max_bytes": 0, "max_events": 1},
        {"max_bytes": 1, "max_events": 0},
        {"max_bytes": 1, "max_events": 1, "segment_bytes": 8},
        {"max_bytes": 1, "max_events": 1, "sync_interval_ms": -1},
    ],
)
def test_bad_bounds_are_refused(tmp_path: Path, arguments: dict[str, int]) -> None:
    with pytest.raises(InvalidArgumentError):
        Spool(tmp_path, **arguments)


# -- crash recovery on real files -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(torn_variants()))
def test_reopen_truncates_a_torn_tail_and_keeps_appending(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, BIG, 1000) as spool:
        fill(spool, range(3))
    # close() removes nothing here (nothing was acknowledged); tear the newest segment.
    [path] = segments(tmp_path)
    path.write_bytes(torn_variants()[name])
    with caplog.at_level(logging.WARNING), Spool(tmp_path, BIG, 1000) as spool:
        assert "torn tail" in caplog.text
        assert path.stat().st_size == len(three_records())
        assert spool.append(record(3)) == 3
        assert [int(item.record.event_id[6:]) for item in spool.read(10)] == [0, 1, 2, 3]


def test_torn_tail_in_a_real_killed_writer(tmp_path: Path) -> None:
    # A half-written record as a killed process leaves it: header and part of the payload.
    run_child(
        tmp_path,
        """
        spool = Spool(directory, 1 << 30, 1000)
        for n in range(4):
            spool.append(record(n))
        frame = frame_record(record(4))
        with open(sorted(directory.glob("*.seg"))[-1], "ab") as segment:
            segment.write(frame[: len(frame) // 2])
            segment.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    with Spool(tmp_path, BIG, 1000) as spool:
        assert drain(spool) == [0, 1, 2, 3]


def write_spool_with_segments(directory: Path) -> list[Path]:
    frame_size = len(frame_record(record(0)))
    with Spool(directory, BIG, 1000, segment_bytes=len(SEGMENT_MAGIC) + 2 * frame_size) as spool:
        fill(spool, range(6))
    return segments(directory)


@pytest.mark.parametrize("content", [b"", SEGMENT_MAGIC[:3], SEGMENT_MAGIC])
def test_a_crash_right_after_creating_a_segment_is_recovered(
    tmp_path: Path, content: bytes
) -> None:
    write_spool_with_segments(tmp_path)
    (tmp_path / f"{6:020d}.seg").write_bytes(content)
    with Spool(tmp_path, BIG, 1000) as spool:
        assert spool.append(record(6)) == 6
    with Spool(tmp_path, BIG, 1000) as spool:
        assert drain(spool) == list(range(7))


def test_damage_in_an_older_segment_is_an_error(tmp_path: Path) -> None:
    first, _, _ = write_spool_with_segments(tmp_path)
    data = bytearray(first.read_bytes())
    data[-1] ^= 0x40  # the last record of a non-newest segment: not a torn write
    first.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=rf"{first.name}.*crc mismatch.*not the newest"):
        Spool(tmp_path, BIG, 1000)


def test_damage_in_the_middle_of_the_newest_segment_is_an_error(tmp_path: Path) -> None:
    *_, newest = write_spool_with_segments(tmp_path)
    data = bytearray(newest.read_bytes())
    data[len(SEGMENT_MAGIC) + FRAME_HEADER_SIZE + 2] ^= 0x01  # record 4 of 4..5
    newest.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="corrupt record after 0 good ones"):
        Spool(tmp_path, BIG, 1000)


def test_a_missing_segment_is_an_error(tmp_path: Path) -> None:
    _, middle, _ = write_spool_with_segments(tmp_path)
    middle.unlink()
    with pytest.raises(FormatError, match=r"records 2\.\.3 are missing"):
        Spool(tmp_path, BIG, 1000)


def test_a_missing_first_segment_is_an_error(tmp_path: Path) -> None:
    first, _, _ = write_spool_with_segments(tmp_path)
    first.unlink()
    with pytest.raises(FormatError, match=r"records 0\.\.1 are not acknowledged"):
        Spool(tmp_path, BIG, 1000)


def test_a_damaged_cursor_is_an_error_and_a_leftover_temporary_is_ignored(
    tmp_path: Path,
) -> None:
    with Spool(tmp_path, BIG, 1000) as spool:
        fill(spool, range(4))
        spool.read(4)
        spool.acknowledge(1)
    (tmp_path / "cursor.tmp").write_bytes(b"half a cursor")  # a save cut short
    with Spool(tmp_path, BIG, 1000) as spool:
        assert [item.index for item in spool.read(10)] == [1, 2, 3]
    assert not (tmp_path / "cursor.tmp").exists()
    cursor = tmp_path / "cursor"
    damaged = bytearray(cursor.read_bytes())
    damaged[10] ^= 0x01
    cursor.write_bytes(bytes(damaged))
    with pytest.raises(FormatError, match="cursor"):
        Spool(tmp_path, BIG, 1000)


def test_a_cursor_past_the_last_record_on_disk_resumes_at_the_cursor(tmp_path: Path) -> None:
    # After a machine crash with sync_interval_ms > 0, the newest records may be gone from
    # disk though they were delivered and the cursor saved: nothing is left to deliver.
    with Spool(tmp_path, BIG, 1000) as spool:
        fill(spool, range(4))
    (tmp_path / "cursor").write_bytes(encode_cursor(10))
    with Spool(tmp_path, BIG, 1000) as spool:
        assert spool.status().events == 0 and segments(tmp_path) == []
        assert spool.append(record(10)) == 10


def test_a_record_changed_on_disk_after_open_is_an_error_when_read(tmp_path: Path) -> None:
    with Spool(tmp_path, BIG, 1000) as spool:
        fill(spool, range(3))
        [path] = segments(tmp_path)
        data = bytearray(path.read_bytes())
        data[-5] ^= 0x10
        path.write_bytes(bytes(data))
        assert len(spool.read(2)) == 2
        with pytest.raises(FormatError, match="record 2, changed since written"):
            spool.read(1)


def test_cursor_survives_being_killed_at_any_moment(tmp_path: Path) -> None:
    """A child commits as fast as it can and is SIGKILLed at random moments, six times.

    Each reopen must succeed, and resume at or after the last cursor it saw committed.
    """
    generator = random.Random(5)
    delivered = 0
    for _ in range(6):
        started = time.time()
        child = start_child(
            tmp_path,
            """
            spool = Spool(directory, 1 << 30, 100_000, segment_bytes=4096)
            n = 0
            while True:
                spool.append(record(n))
                spool.acknowledge(spool.read(1)[0].index + 1)
                spool.commit()
                n += 1
            """,
        )
        _wait_for_a_commit(tmp_path / "cursor", started, child)  # a loaded machine is slow
        time.sleep(generator.uniform(0.05, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        with Spool(tmp_path, BIG, 100_000) as spool:
            status = spool.status()
            assert status.events <= 1  # at most the record appended after the last commit
            before = delivered
            delivered = spool.append(record(0))
            assert delivered >= before
            drain(spool)
    assert delivered > 100, "the child never got to commit: the test proved nothing"


# -- bounds: block or raise, never drop ------------------------------------------------------


def test_full_by_count_raises_at_once_and_writes_nothing(tmp_path: Path) -> None:
    with Spool(tmp_path, BIG, 3) as spool:
        fill(spool, range(3))
        with pytest.raises(ProducerQueueFullError) as full:
            spool.append(record(3))
        assert (full.value.event_id, full.value.pending, full.value.waited) == ("event-00003", 3, 0)
        assert spool.status().events == 3
        spool.read(1)
        spool.acknowledge(1)
        assert spool.append(record(3)) == 3
    with Spool(tmp_path, BIG, 3) as spool:
        assert [int(item.record.event_id[6:]) for item in spool.read(10)] == [1, 2, 3]


def test_full_by_bytes(tmp_path: Path) -> None:
    size = len(frame_record(record(0)))
    with Spool(tmp_path, 2 * size + size // 2, 1000) as spool:
        fill(spool, range(2))
        with pytest.raises(ProducerQueueFullError, match="2 events await delivery"):
            spool.append(record(2))
        with pytest.raises(InvalidArgumentError, match="more than the spool's max_bytes"):
            spool.append(record(3, size=3 * size))


def test_full_spool_waits_for_room_then_appends(tmp_path: Path) -> None:
    with Spool(tmp_path, BIG, 2) as spool:
        fill(spool, range(2))
        spool.read(2)
        releaser = threading.Timer(0.3, spool.acknowledge, args=(1,))
        releaser.start()
        started = time.monotonic()
        assert spool.append(record(2), timeout=5) == 2
        assert 0.25 <= time.monotonic() - started < 3
        releaser.join()


def test_full_spool_gives_up_after_its_timeout(tmp_path: Path) -> None:
    with Spool(tmp_path, BIG, 1) as spool:
        spool.append(record(0))
        started = time.monotonic()
        with pytest.raises(ProducerQueueFullError) as full:
            spool.append(record(1), timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 2 and full.value.waited >= 0.3


def test_sync_interval_keeps_data_across_a_process_crash(tmp_path: Path) -> None:
    run_child(
        tmp_path,
        """
        spool = Spool(directory, 1 << 30, 1000, sync_interval_ms=60_000)
        for n in range(50):
            spool.append(record(n))
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    with Spool(tmp_path, BIG, 1000) as spool:
        assert drain(spool) == list(range(50))


# -- a random workload against a plain list --------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_random_workload_matches_a_plain_queue(tmp_path: Path, seed: int) -> None:
    generator = random.Random(seed)
    size = len(frame_record(record(0)))
    options = {"segment_bytes": len(SEGMENT_MAGIC) + generator.randint(1, 5) * size}
    spool = Spool(tmp_path, BIG, 50, **options)
    model: list[int] = []  # appended, not acknowledged (committed or not)
    committed_from = 0  # records before this index are gone for good
    acknowledged = read_up_to = next_number = 0
    for _ in range(400):
        action = generator.choice(["append"] * 4 + ["read", "ack", "commit", "reopen"])
        if action == "append":
            try:
                index = spool.append(record(next_number))
                assert index == next_number
                model.append(next_number)
                next_number += 1
            except ProducerQueueFullError:
                assert next_number - acknowledged >= 50
        elif action == "read":
            taken = spool.read(generator.randint(0, 7))
            assert [item.index for item in taken] == list(
                range(read_up_to, read_up_to + len(taken))
            )
            read_up_to += len(taken)
        elif action == "ack":
            acknowledged = generator.randint(acknowledged, read_up_to)
            spool.acknowledge(acknowledged)
        elif action == "commit":
            spool.commit()
            committed_from = acknowledged
        else:
            spool.close()
            committed_from = acknowledged  # close() commits
            spool = Spool(tmp_path, BIG, 50, **options)
            read_up_to = acknowledged
        status = spool.status()
        assert status.events == next_number - acknowledged
        assert status.unread == next_number - read_up_to
        assert status.bytes == status.events * size
    spool.close()
    assert committed_from == acknowledged
    with Spool(tmp_path, BIG, 50) as spool:
        assert drain(spool) == model[acknowledged:]


# -- the spool directory is private to its user -----------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_new_spool_directory_is_private_whatever_the_umask(tmp_path: Path) -> None:
    with Spool(tmp_path / "a" / "spool", BIG, 10):
        pass
    assert _mode(tmp_path / "a" / "spool") == 0o700
    previous = os.umask(0o277)  # would strip the owner's own write and search bits
    try:
        with Spool(tmp_path / "b", BIG, 10) as spool:
            spool.append(record(0))
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "b") == 0o700
    with Spool(tmp_path / "b", BIG, 10) as spool:  # our own private directory: reopened
        assert spool.status().events == 1


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o770, 0o707])
def test_an_existing_directory_open_to_group_or_others_is_refused(
    tmp_path: Path, mode: int
) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(ConfigurationError) as caught:
        Spool(directory, BIG, 10)
    message = str(caught.value)
    assert str(directory) in message and f"mode {mode:04o}" in message
    assert f"chmod 700 {directory}" in message
    assert list(directory.iterdir()) == []  # refused before anything was written
    directory.chmod(0o700)
    Spool(directory, BIG, 10).close()


def test_an_existing_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    ours = os.geteuid()
    if ours == 0:
        directory = tmp_path / "theirs"
        directory.mkdir(mode=0o700)
        os.chown(directory, 65534, 65534)  # nobody's: only the owner is wrong
        other = 65534
    else:
        directory, other = Path("/"), 0  # root's; refused before anything is written
        if os.stat(directory).st_uid != 0:
            pytest.skip("no directory of another user to try")
    with pytest.raises(ConfigurationError) as caught:
        Spool(directory, BIG, 10)
    message = str(caught.value)
    assert f"owned by uid {other}, not by this process's uid {ours}" in message
    assert f"chown {ours} {directory}" in message


def test_a_symbolic_link_to_a_private_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.mkdir(mode=0o700)
    link = tmp_path / "spool"
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        Spool(link, BIG, 10)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigurationError, match="symbolic link"):
        Spool(dangling, BIG, 10)
    assert list(target.iterdir()) == [] and not (tmp_path / "nowhere").exists()


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "spool").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="not a directory"):
        Spool(tmp_path / "spool", BIG, 10)


# -- helpers for real crashes -----------------------------------------------------------------

_CHILD_PRELUDE = """
import os, signal, sys
from pathlib import Path
from authtrail.producers.sdk.spool import Spool
from authtrail.producers.sdk.spool_format import SpoolRecord, frame_record
directory = Path(sys.argv[1])
def record(n):
    return SpoolRecord("authtrail.events", b"acme", bytes([n % 251]) * 40, f"event-{n:05d}")
"""


def _wait_for_a_commit(cursor: Path, since: float, child: subprocess.Popen[bytes]) -> None:
    """Wait until ``child`` saved the cursor at least once after ``since``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if cursor.exists() and cursor.stat().st_mtime >= since:
            return
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        time.sleep(0.01)
    raise AssertionError("the child never committed its cursor")


def start_child(directory: Path, body: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)}
    code = _CHILD_PRELUDE + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], env=environment, stderr=subprocess.PIPE
    )


def run_child(directory: Path, body: str) -> None:
    """Run ``body`` in a child that must end by SIGKILLing itself."""
    child = start_child(directory, body)
    _, error = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, error.decode()
