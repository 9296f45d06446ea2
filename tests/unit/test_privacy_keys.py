"""The directory key store: keys are durable and private, erasure is idempotent, damage
is named."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest

from authtrail.errors import ConfigurationError
from authtrail.privacy_keys import DirectoryKeyStore
from authtrail.producers.sdk.sealed_values import pseudonym


def _pseudonym(store: DirectoryKeyStore, subject: str) -> str:
    return pseudonym(store.pseudonym_key("acme"), subject)


def test_a_subject_keeps_its_key_and_files_are_private(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path / "privacy")
    key = store.key_for("acme", "id:u1")
    assert DirectoryKeyStore(tmp_path / "privacy").key_for("acme", "id:u1") == key
    assert store.key_for("acme", "id:u2") != key
    assert store.key_for("globex", "id:u1") != key
    assert store.find("acme", key.key_id) == key
    files = [path for path in (tmp_path / "privacy").rglob("*") if path.is_file()]
    assert files and all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)
    assert not any("u1" in path.name for path in files)  # subjects are named by a hash


def test_erase_is_idempotent_and_a_later_event_gets_a_new_key(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path)
    key = store.key_for("acme", "name:alice")
    erased = store.erase("acme", "name:alice")
    assert erased.destroyed == (key.key_id,) and erased.erased_at > 0
    assert store.find("acme", key.key_id) is None  # erased, not lost
    again = store.erase("acme", "name:alice")
    assert again.destroyed == () and again.already == (key.key_id,)
    assert again.erased_at == erased.erased_at
    new = store.key_for("acme", "name:alice")
    assert new.key_id != key.key_id
    assert store.erase("acme", "name:alice").destroyed == (new.key_id,)
    assert store.find("acme", key.key_id) is None
    nobody = store.erase("acme", "id:never-seen")
    assert nobody.destroyed == nobody.already == ()


def test_pseudonym_key_is_created_once(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path)
    with pytest.raises(ConfigurationError, match="has no pseudonym key"):
        store.existing_pseudonym_key("acme")
    key = store.pseudonym_key("acme")
    assert len(key) == 32 and store.existing_pseudonym_key("acme") == key


def test_damage_is_named(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path)
    key = store.key_for("acme", "id:u1")
    (tmp_path / "acme" / "keys" / key.key_id).write_text("00" * 31)
    with pytest.raises(ConfigurationError, match="is corrupt"):
        store.find("acme", key.key_id)
    (tmp_path / "acme" / "keys" / key.key_id).unlink()
    with pytest.raises(ConfigurationError, match="no erasure destroyed it"):
        store.find("acme", key.key_id)
    with pytest.raises(ConfigurationError, match="no privacy key store for tenant 'globex'"):
        store.find("globex", key.key_id)
    with pytest.raises(ConfigurationError, match="not a subject key id"):
        store.find("acme", "../../etc/passwd")
    with pytest.raises(ConfigurationError, match="not a tenant id"):
        store.key_for("../acme", "id:u1")
    next((tmp_path / "acme" / "subjects").iterdir()).write_text("garbage")
    with pytest.raises(ConfigurationError, match="is corrupt"):
        store.key_for("acme", "id:u1")


def test_an_erasure_interrupted_before_its_pointer_went_is_finished(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path)
    key = store.key_for("acme", "id:u1")
    pointer = next((tmp_path / "acme" / "subjects").iterdir())
    saved = pointer.read_text()
    store.erase("acme", "id:u1")
    pointer.write_text(saved)  # as if the erasure stopped after destroying the key
    assert store.key_for("acme", "id:u1").key_id != key.key_id


def test_destroyed_tells_a_destroyed_key_from_a_live_or_unknown_one(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path)
    key, u1 = store.key_for("acme", "id:u1"), _pseudonym(store, "id:u1")
    assert not store.destroyed("acme", key.key_id, u1)  # live
    assert not store.destroyed("acme", "0" * 32, u1)  # never existed
    assert not store.destroyed("globex", key.key_id, u1)  # another tenant's, or none at all
    store.erase("acme", "id:u1")
    assert store.destroyed("acme", key.key_id, u1)
    assert not store.destroyed("acme", key.key_id, _pseudonym(store, "id:u2"))  # not u2's
    assert not store.destroyed("globex", key.key_id, u1)
    assert not store.destroyed("acme", "0" * 32, u1)
    tombstone = tmp_path / "acme" / "destroyed" / key.key_id
    assert stat.S_IMODE(tombstone.stat().st_mode) == 0o600
    assert "u1" not in tombstone.read_text()  # the pseudonym, never the subject
    assert not [p for p in tombstone.parent.iterdir() if p.name.startswith(".")]  # no temp
    # ids and tenants from untrusted input never raise: they were never destroyed here
    for tenant, key_id in (("acme", key.key_id + "\n"), ("acme", "../" + key.key_id),
                           ("../acme", key.key_id), ("acme", key.key_id.upper())):  # fmt: skip
        assert not store.destroyed(tenant, key_id, u1)
    tombstone.write_text("garbage")
    with pytest.raises(ConfigurationError, match=r"tombstone .* is corrupt"):
        store.destroyed("acme", key.key_id, u1)


def test_a_store_erased_before_tombstones_still_knows_its_destroyed_keys(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path)
    key = store.key_for("acme", "id:u1")
    store.erase("acme", "id:u1")
    (tmp_path / "acme" / "destroyed" / key.key_id).unlink()  # as an older version left it
    # from the subject's erased/ record, which keeps no pseudonym: judged by the id alone
    assert store.destroyed("acme", key.key_id, "any")
    assert store.find("acme", key.key_id) is None


def test_a_key_whose_erasure_stopped_before_deleting_it_is_not_destroyed(tmp_path: Path) -> None:
    store = DirectoryKeyStore(tmp_path)
    key = store.key_for("acme", "id:u1")
    saved = (tmp_path / "acme" / "keys" / key.key_id).read_text()
    store.erase("acme", "id:u1")
    (tmp_path / "acme" / "keys" / key.key_id).write_text(saved)  # crash before the unlink
    assert not store.destroyed("acme", key.key_id, _pseudonym(store, "id:u1"))


def _take_keys(root: str, rounds: int, out: Any) -> None:
    store = DirectoryKeyStore(Path(root))
    out.put([store.key_for("acme", "id:u1").key_id for _ in range(rounds)])


def _erase_often(root: str, rounds: int) -> None:
    store = DirectoryKeyStore(Path(root))
    for _ in range(rounds):
        store.erase("acme", "id:u1")


def test_producers_and_an_eraser_racing_leave_no_key_an_erasure_cannot_find(
    tmp_path: Path,
) -> None:
    """Every key handed out is either the subject's current key or destroyed: none is
    live but unreachable (an erasure would then leave it readable)."""
    root = str(tmp_path / "privacy")
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    takers = [context.Process(target=_take_keys, args=(root, 150, out)) for _ in range(3)]
    eraser = context.Process(target=_erase_often, args=(root, 60))
    for process in [*takers, eraser]:
        process.start()
    handed_out = {key_id for _ in takers for key_id in out.get(timeout=120)}
    for process in [*takers, eraser]:
        process.join(timeout=120)
        assert process.exitcode == 0
    store = DirectoryKeyStore(Path(root))
    store.erase("acme", "id:u1")
    assert [key_id for key_id in handed_out if store.find("acme", key_id) is not None] == []
    assert not list((tmp_path / "privacy" / "acme" / "keys").iterdir())
