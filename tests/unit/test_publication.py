"""The publication directory on a real (temporary) file system: append-only writes, signed
tenant directories, and readers that follow no symlink and ignore nothing."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from authtrail.errors import (
    ConfigurationError,
    InvalidArgumentError,
    PublicationConflict,
    PublicationError,
)
from authtrail.sinks import publication as publication_module
from authtrail.sinks.publication import (
    Publication,
    all_checkpoints,
    newest_checkpoints,
    newest_tenant_directory,
    published_sizes,
)
from authtrail.sinks.publishing import CheckpointPublishing
from authtrail.stream.core.checkpoint import GENESIS_PREV_DIGEST, Checkpoint, sign
from authtrail.stream.core.note import Signer, generate_key_strings, make_keyring
from authtrail.stream.core.tenant_directory import open_directory

LOG_ORIGIN = "authtrail.local"
SIGNER = Signer.parse(generate_key_strings("authtrail-test")[0])
KEYRING = make_keyring([SIGNER.verifier_key()])


def _root(tenant_id: str, size: int) -> bytes:
    return hashlib.sha256(f"{tenant_id} {size}".encode()).digest()


def _note(tenant_id: str, size: int, origin: str = LOG_ORIGIN, time_micros: int = 0) -> bytes:
    checkpoint = Checkpoint(
        origin=f"{origin}/{tenant_id}", size=size, root=_root(tenant_id, size),
        batch_first_seq=1, batch_last_seq=size, batch_root=_root("batch", size),
        chain_hash=_root("chain", size), prev_digest=GENESIS_PREV_DIGEST,
        time_micros=time_micros or size,
    )  # fmt: skip
    return sign(checkpoint, SIGNER)


def _file(directory: Path, tenant_id: str, size: int) -> Path:
    return directory / "checkpoints" / tenant_id / f"{size:020d}.note"


@pytest.fixture
def published(tmp_path: Path) -> Path:
    return tmp_path / "published"


@pytest.fixture
def publication(published: Path) -> Publication:
    return Publication(published, log_origin=LOG_ORIGIN, signer=SIGNER)


# -- writing checkpoints ---------------------------------------------------------------------


def test_checkpoints_are_written_verbatim_read_only_and_once(
    publication: Publication, published: Path
) -> None:
    notes = [("acme", 5, _note("acme", 5)), ("acme", 9, _note("acme", 9)),
             ("globex", 3, _note("globex", 3))]  # fmt: skip
    assert publication.publish_checkpoints(notes) == 3
    for tenant_id, size, note in notes:
        path = _file(published, tenant_id, size)
        assert path.read_bytes() == note
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert stat.S_IMODE((published / "checkpoints" / "acme").stat().st_mode) == 0o755
    # A replay after a crash: same bytes, nothing written, nothing raised.
    assert publication.publish_checkpoints(notes) == 0
    assert publication.publish_checkpoints(iter(notes[:1])) == 0


def test_other_bytes_at_a_published_place_are_a_conflict_and_stay(
    publication: Publication, published: Path
) -> None:
    original = _note("acme", 5)
    publication.publish_checkpoints([("acme", 5, original)])
    forged = _note("acme", 5, time_micros=77)  # another checkpoint at the same size
    with pytest.raises(PublicationConflict) as raised:
        publication.publish_checkpoints(
            [("acme", 5, forged), ("acme", 6, _note("acme", 6)), ("globex", 1, _note("globex", 1))]
        )
    conflict = raised.value
    path = _file(published, "acme", 5)
    assert (conflict.tenant_id, conflict.size, conflict.path) == ("acme", 5, path)
    assert "'acme' size 5" in str(conflict) and str(path) in str(conflict)
    assert conflict.written == 2  # the other notes were still published
    assert path.read_bytes() == original
    assert _file(published, "globex", 1).read_bytes() == _note("globex", 1)


def test_a_torn_earlier_write_is_named_as_such(publication: Publication, published: Path) -> None:
    note = _note("acme", 5)
    folder = published / "checkpoints" / "acme"
    folder.mkdir()
    _file(published, "acme", 5).write_bytes(note[:40])  # a crash cut this write short
    with pytest.raises(PublicationConflict, match="only the first 40 of the note's"):
        publication.publish_checkpoints([("acme", 5, note)])
    assert _file(published, "acme", 5).read_bytes() == note[:40]


@pytest.mark.parametrize(
    ("tenant_id", "size", "note_of"),
    [("../outside", 5, ("acme", 5)), (".hidden", 5, ("acme", 5)), ("a/b", 5, ("acme", 5)),
     ("", 5, ("acme", 5)), ("acme", 0, ("acme", 5)), ("acme", 2**64, ("acme", 5)),
     ("acme", 6, ("acme", 5)), ("globex", 5, ("acme", 5))],
)  # fmt: skip
def test_notes_that_do_not_fit_their_place_are_refused_before_any_write(
    publication: Publication, published: Path, tenant_id: str, size: int, note_of: tuple[str, int]
) -> None:
    batch = [("acme", 1, _note("acme", 1)), (tenant_id, size, _note(*note_of))]
    with pytest.raises(InvalidArgumentError):
        publication.publish_checkpoints(batch)
    assert list((published / "checkpoints").iterdir()) == []
    assert not (published.parent / "outside").exists()


def test_a_note_of_another_log_is_refused(publication: Publication) -> None:
    with pytest.raises(InvalidArgumentError, match=r"other\.example/acme"):
        publication.check_note("acme", 5, _note("acme", 5, origin="other.example"))
    with pytest.raises(InvalidArgumentError, match="no blank line"):
        publication.check_note("acme", 5, b"not a note")


def test_a_symlink_is_never_written_through(publication: Publication, published: Path) -> None:
    outside = published.parent / "outside"
    outside.mkdir()
    (published / "checkpoints" / "acme").symlink_to(outside)
    with pytest.raises(PublicationError, match="symlink"):
        publication.publish_checkpoints([("acme", 5, _note("acme", 5))])
    target = outside / "target"
    target.write_bytes(b"precious")
    folder = published / "checkpoints" / "globex"
    folder.mkdir()
    (folder / f"{5:020d}.note").symlink_to(target)
    with pytest.raises(PublicationError, match="symlink"):
        publication.publish_checkpoints([("globex", 5, _note("globex", 5))])
    assert list(outside.iterdir()) == [target] and target.read_bytes() == b"precious"


def test_a_symlinked_layout_folder_is_refused_at_start(tmp_path: Path) -> None:
    published = tmp_path / "published"
    published.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (published / "checkpoints").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PublicationError, match="symlink"):
        Publication(published, log_origin=LOG_ORIGIN, signer=SIGNER)


# -- tenant directories ----------------------------------------------------------------------


def test_directories_are_numbered_signed_and_written_only_on_change(
    publication: Publication, published: Path
) -> None:
    publication.publish_checkpoints([("acme", 5, _note("acme", 5)), ("acme", 9, _note("acme", 9)),
                                     ("globex", 3, _note("globex", 3))])  # fmt: skip
    first = publication.publish_directory()
    assert first == published / "tenants" / f"{1:020d}.note"
    assert stat.S_IMODE(first.stat().st_mode) == 0o444
    directory = open_directory(first.read_bytes(), KEYRING, LOG_ORIGIN)
    assert dict(directory.entries) == {"acme": (9, _root("acme", 9)),
                                       "globex": (3, _root("globex", 3))}  # fmt: skip
    assert publication.publish_directory() is None  # nothing changed
    publication.publish_checkpoints([("initech", 1, _note("initech", 1))])
    second = publication.publish_directory()
    assert second == published / "tenants" / f"{2:020d}.note"
    assert newest_tenant_directory(published) == second.read_bytes()
    assert set(open_directory(second.read_bytes(), KEYRING, LOG_ORIGIN).entries) == {
        "acme", "globex", "initech"}  # fmt: skip
    assert sorted(p.name for p in (published / "tenants").iterdir()) == [first.name, second.name]


def test_an_empty_publication_gets_an_empty_directory(publication: Publication) -> None:
    path = publication.publish_directory()
    assert path is not None
    assert open_directory(path.read_bytes(), KEYRING, LOG_ORIGIN).entries == {}
    assert publication.publish_directory() is None


def test_without_signer_no_directory_is_written(published: Path) -> None:
    unsigned = Publication(published, log_origin=LOG_ORIGIN, signer=None)
    unsigned.publish_checkpoints([("acme", 5, _note("acme", 5))])
    assert not unsigned.signs_directories
    assert unsigned.publish_directory() is None
    assert list((published / "tenants").iterdir()) == []


def test_a_directory_by_another_key_is_superseded_and_time_never_goes_back(
    published: Path,
) -> None:
    other = Signer.parse(generate_key_strings("authtrail-test")[0])
    Publication(published, log_origin=LOG_ORIGIN, signer=other,
                now_micros=lambda: 2_000).publish_directory()  # fmt: skip
    clock = [1_000]
    mine = Publication(published, log_origin=LOG_ORIGIN, signer=SIGNER, now_micros=lambda: clock[0])
    path = mine.publish_directory()
    assert path is not None and path.name == f"{2:020d}.note"
    mine.publish_checkpoints([("acme", 5, _note("acme", 5))])
    third = mine.publish_directory()
    assert third is not None
    assert open_directory(third.read_bytes(), KEYRING, LOG_ORIGIN).time_micros == 1_000
    clock[0] = 500  # the clock stepped back
    mine.publish_checkpoints([("acme", 6, _note("acme", 6))])
    fourth = mine.publish_directory()
    assert fourth is not None
    assert open_directory(fourth.read_bytes(), KEYRING, LOG_ORIGIN).time_micros == 1_000


def test_a_directory_number_taken_meanwhile_is_not_overwritten(
    publication: Publication, published: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sinks racing for number n+1: the loser rebuilds and takes n+2."""
    real = publication_module.newest_tenant_directory_numbered
    taken = published / "tenants" / f"{1:020d}.note"

    def racing(directory: Path) -> tuple[int, bytes] | None:
        newest = real(directory)
        if not taken.exists():  # the other sink writes number 1 right after our scan
            taken.write_bytes(b"the other sink's directory")
        return newest

    monkeypatch.setattr(publication_module, "newest_tenant_directory_numbered", racing)
    path = publication.publish_directory()
    assert path == published / "tenants" / f"{2:020d}.note"
    assert taken.read_bytes() == b"the other sink's directory"


def test_a_torn_newest_checkpoint_lists_the_older_one(
    publication: Publication, published: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publication.publish_checkpoints([("acme", 5, _note("acme", 5))])
    _file(published, "acme", 9).write_bytes(_note("acme", 9)[:30])
    with caplog.at_level(logging.ERROR, logger="authtrail.sinks.publication"):
        path = publication.publish_directory()
    assert path is not None
    assert dict(open_directory(path.read_bytes(), KEYRING, LOG_ORIGIN).entries) == {
        "acme": (5, _root("acme", 5))}  # fmt: skip
    assert f"{9:020d}.note" in caplog.text


# -- readers ---------------------------------------------------------------------------------


def test_readers_return_what_was_published(publication: Publication, published: Path) -> None:
    notes = [("globex", 3, _note("globex", 3)), ("acme", 9, _note("acme", 9)),
             ("acme", 5, _note("acme", 5)), ("acme", 12, _note("acme", 12))]  # fmt: skip
    publication.publish_checkpoints(notes)
    assert newest_checkpoints(published) == {"acme": (12, _note("acme", 12)),
                                             "globex": (3, _note("globex", 3))}  # fmt: skip
    assert all_checkpoints(published, "acme") == [
        (size, _note("acme", size)) for size in (5, 9, 12)
    ]
    assert all_checkpoints(published, "initech") == []
    assert published_sizes(published) == {"acme": [5, 9, 12], "globex": [3]}
    assert newest_tenant_directory(published) is None


def test_readers_of_a_fresh_or_missing_publication(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert newest_checkpoints(empty) == {}
    assert all_checkpoints(empty, "acme") == []
    assert newest_tenant_directory(empty) is None
    with pytest.raises(ConfigurationError, match="missing"):
        newest_checkpoints(tmp_path / "missing")
    with pytest.raises(InvalidArgumentError):
        all_checkpoints(empty, "../acme")


@pytest.mark.parametrize(
    "stray",
    ["checkpoints/acme/1.note", "checkpoints/acme/00000000000000000001.note.tmp",
     "checkpoints/acme/.00000000000000000001.note", "checkpoints/acme/00000000000000000000.note",
     "checkpoints/acme/99999999999999999999.note", "checkpoints/acme/notes/",
     "checkpoints/.DS_Store", "checkpoints/-acme/", "checkpoints/readme.txt",
     "tenants/1.note", "tenants/lost+found/"],
)  # fmt: skip
def test_readers_refuse_anything_the_layout_does_not_name(
    publication: Publication, published: Path, stray: str
) -> None:
    publication.publish_checkpoints([("acme", 5, _note("acme", 5))])
    path = published / stray
    if stray.endswith("/"):
        path.mkdir()
    else:
        path.write_bytes(b"x")
    with pytest.raises(PublicationError) as raised:
        newest_checkpoints(published)
        newest_tenant_directory(published)  # reached for the strays in tenants/
    assert str(path) in str(raised.value)


def test_readers_follow_no_symlink(publication: Publication, published: Path) -> None:
    publication.publish_checkpoints([("acme", 5, _note("acme", 5))])
    elsewhere = published.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{7:020d}.note").write_bytes(_note("globex", 7))
    (published / "checkpoints" / "globex").symlink_to(elsewhere)
    with pytest.raises(PublicationError, match="globex is a symlink"):
        newest_checkpoints(published)
    (published / "checkpoints" / "globex").unlink()
    _file(published, "acme", 6).symlink_to(elsewhere / f"{7:020d}.note")
    for read in (newest_checkpoints, published_sizes):
        with pytest.raises(PublicationError, match=f"{6:020d}.note"):
            read(published)
    with pytest.raises(PublicationError):
        all_checkpoints(published, "acme")


def test_readers_refuse_special_and_oversized_files(
    publication: Publication, published: Path
) -> None:
    publication.publish_checkpoints([("acme", 5, _note("acme", 5))])
    os.mkfifo(_file(published, "acme", 6))
    with pytest.raises(PublicationError, match=f"{6:020d}.note"):
        newest_checkpoints(published)
    _file(published, "acme", 6).unlink()
    _file(published, "acme", 7).write_bytes(b"x" * (2**20 + 1))
    with pytest.raises(PublicationError, match="larger than"):
        newest_checkpoints(published)


# -- the sink's policy (sinks/publishing.py) -------------------------------------------------


@dataclass
class Counters:
    published_checkpoints: int = 0
    published_directories: int = 0
    publication_conflicts: int = 0


def _row(tenant_id: str, size: int) -> dict[str, object]:
    return {"tenant_id": tenant_id, "size": size, "note": _note(tenant_id, size).decode()}


def test_pending_checkpoints_survive_an_unavailable_publication(
    publication: Publication, published: Path
) -> None:
    counters = Counters()
    publishing = CheckpointPublishing(publication, counters, interval=10)
    publishing.stored([_row("acme", 5), _row("acme", 9)])
    published.rename(published.with_name("unmounted"))
    with pytest.raises(OSError):
        publishing.publish_pending()
    assert publishing.pending == 2 and counters.published_checkpoints == 0
    published.with_name("unmounted").rename(published)
    publishing.publish_pending()
    assert publishing.pending == 0 and counters.published_checkpoints == 2
    assert _file(published, "acme", 9).read_bytes() == _note("acme", 9)


def test_conflicts_are_logged_counted_and_do_not_stop_publishing(
    publication: Publication, published: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counters = Counters()
    publishing = CheckpointPublishing(publication, counters, interval=10)
    (published / "checkpoints" / "acme").mkdir()
    _file(published, "acme", 5).write_bytes(b"someone else's note")
    mislabelled = {**_row("globex", 2), "size": 3}  # a row whose note is another checkpoint
    publishing.stored([_row("acme", 5), _row("acme", 9), mislabelled])
    with caplog.at_level(logging.ERROR, logger="authtrail.sinks.publishing"):
        publishing.publish_pending()
    assert counters.publication_conflicts == 2 and counters.published_checkpoints == 1
    assert publishing.pending == 0
    assert "'acme' size 5" in caplog.text and "'globex' size 3" in caplog.text
    assert _file(published, "acme", 5).read_bytes() == b"someone else's note"


def test_directories_wait_for_new_checkpoints_and_the_interval(
    publication: Publication, published: Path
) -> None:
    counters, clock = Counters(), [100.0]
    publishing = CheckpointPublishing(
        publication, counters, interval=10, monotonic=lambda: clock[0]
    )
    publishing.directory_if_due()  # at start
    assert counters.published_directories == 1
    publishing.stored([_row("acme", 5)])
    publishing.publish_pending()
    clock[0] = 105.0
    publishing.directory_if_due()
    assert counters.published_directories == 1  # within the interval
    clock[0] = 110.0
    publishing.directory_if_due()
    assert counters.published_directories == 2
    clock[0] = 200.0
    publishing.directory_if_due(force=True)  # nothing new since
    assert counters.published_directories == 2
    publishing.stored([_row("acme", 6)])
    publishing.publish_pending()
    publishing.directory_if_due(force=True)  # stopping: whatever the time
    assert counters.published_directories == 3
    assert len(list((published / "tenants").iterdir())) == 3


def test_settings_build_the_publication_with_or_without_a_publisher_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from authtrail.keys import write_key_pair
    from authtrail.settings import Settings
    from authtrail.sinks.service import _publication

    assert _publication(Settings(data_dir=tmp_path)) is None
    settings = Settings(data_dir=tmp_path, publication_dir=tmp_path / "published")
    with caplog.at_level(logging.WARNING, logger="authtrail.sinks.service"):
        keyless = _publication(settings)
    assert keyless is not None and not keyless.signs_directories
    assert "no signed tenant directory" in caplog.text
    key_path, _ = write_key_pair(tmp_path / "publisher", "authtrail-publisher")
    signed = _publication(Settings(data_dir=tmp_path, publication_dir=tmp_path / "published",
                                   publisher_key=key_path))  # fmt: skip
    assert signed is not None and signed.signs_directories
