"""The sink's publisher submits every tenant's newest checkpoint to two real witnesses.

On the real local broker, the embedded ClickHouse engine and two witnesses over HTTP:
witness A runs as ``authtrail witness`` in a subprocess this test kills with SIGKILL,
witness B in-process. Records and checkpoints are written to Kafka as a worker would
(tests/integration/test_publication.py's ``Worker``); the sink is the real one, built
from settings with ``cosigning_witnesses``; ``authtrail verify`` is the real CLI.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from authtrail.broker import LocalBroker, free_loopback_port
from authtrail.cli import main as cli
from authtrail.errors import PublicationError
from authtrail.keys import load_keyring, load_signer, write_key_pair
from authtrail.settings import Settings
from authtrail.sinks.publication import (
    Publication,
    all_checkpoints,
    late_cosignatures,
    newest_checkpoints,
)
from authtrail.sinks.published_view import read_published
from authtrail.sinks.publishing import CheckpointPublishing
from authtrail.sinks.sink import SinkCounters
from authtrail.sinks.witnessing import CheckpointWitnessing
from authtrail.stream.core import merkle
from authtrail.stream.core.audit import MerkleLevels
from authtrail.stream.core.cosignature import WitnessPolicy, check_witness_reply, witness_key_of
from authtrail.stream.core.sequencer import Sequencer
from authtrail.witness import StateDirectory, Witness, WitnessServer, parse_log_keys
from authtrail.witness_client import WitnessSubmitter
from tests.integration.broker_fixtures import running_broker
from tests.integration.test_publication import (
    TENANTS,
    Worker,
    _run_sink,
    _stored_checkpoints,
    publication_settings,
)
from tests.integration.test_witness import CliWitness, _start_cli_witness

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    yield from running_broker(tmp_path_factory.mktemp("broker"))


@pytest.fixture
def settings(broker: LocalBroker, tmp_path: Path) -> Settings:
    return publication_settings(broker, tmp_path)


@dataclasses.dataclass
class Witnesses:
    a: CliWitness
    b: WitnessServer
    a_vkey: Path
    b_vkey: Path
    b_witness: Witness


@pytest.fixture
def witnesses(settings: Settings, tmp_path: Path) -> Iterator[Witnesses]:
    a_key, _ = write_key_pair(tmp_path / "witness-keys", "witness-a.test/authtrail")
    b_key, _ = write_key_pair(tmp_path / "witness-keys", "witness-b.test/authtrail")
    log_pub = settings.keys_dir / "authtrail.pub"
    a = _start_cli_witness(a_key, tmp_path / "state-a", log_pub)
    b_witness = Witness(
        load_signer(b_key),
        parse_log_keys([f"{settings.log_origin}/={log_pub}"]),
        StateDirectory(tmp_path / "state-b"),
    )
    a_vkey, b_vkey = tmp_path / "witness-a.vkey", tmp_path / "witness-b.vkey"
    a_vkey.write_text(a.key.key_string() + "\n")  # what witness A printed at start
    b_vkey.write_text(witness_key_of(load_signer(b_key)).key_string() + "\n")
    try:
        with WitnessServer(b_witness) as b:
            yield Witnesses(a, b, a_vkey, b_vkey, b_witness)
    finally:
        if a.process.poll() is None:
            a.process.kill()
        a.process.wait(timeout=10)
        if a.process.stdout is not None:
            a.process.stdout.close()


def _verify(
    settings: Settings, publication: Path, capsys: pytest.CaptureFixture[str], *arguments: str
) -> tuple[int, str]:
    code = cli.main([
        "--data-dir", str(settings.data_dir), "verify",
        "--key", str(settings.keys_dir / "authtrail.pub"), "--published", str(publication),
        *arguments,
    ])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _witness_flags(witnesses: Witnesses, required: int) -> list[str]:
    return ["--witness-key", str(witnesses.a_vkey), "--witness-key", str(witnesses.b_vkey),
            "--witnesses", str(required)]  # fmt: skip


def test_published_checkpoints_are_cosigned_a_killed_witness_costs_only_its_cosignature(
    settings: Settings,
    witnesses: Witnesses,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    submitting = dataclasses.replace(
        settings,
        cosigning_witnesses=(
            f"{witnesses.a.url}={witnesses.a_vkey}",
            f"{witnesses.b.url}={witnesses.b_vkey}",
        ),
        witness_timeout_ms=3000,
    )
    published = settings.publication_dir
    assert published is not None

    # 1. Both witnesses up: every tenant's newest published checkpoint carries both.
    worker = Worker(submitting)
    expected = worker.write(events_per_tenant=14)  # sizes 7 and 14 of each tenant
    sink = _run_sink(submitting, until_checkpoints=expected)
    counters = sink.counters
    assert counters.published_checkpoints == expected == 6
    assert counters.witness_cosignatures >= 2 * len(TENANTS)
    assert (counters.witness_unreachable, counters.witness_refusals, counters.witness_errors) == (
        0, 0, 0,
    )  # fmt: skip
    stored = {(tenant, size): note for tenant, size, note in _stored_checkpoints(settings)}
    for tenant_id, (size, note) in newest_checkpoints(published).items():
        assert size == 14
        cosignatures = note.removeprefix(stored[tenant_id, size]).decode().splitlines()
        assert note.startswith(stored[tenant_id, size]) and len(cosignatures) == 2
        assert {line.split()[1] for line in cosignatures} == {
            "witness-a.test/authtrail", "witness-b.test/authtrail",
        }  # fmt: skip
    code, output = _verify(settings, published, capsys, *_witness_flags(witnesses, 2))
    assert code == 0, output
    assert "cosigned by witness-a.test/authtrail" in output, output
    _prove_with_the_published_cosignatures(settings, published, witnesses, tmp_path, capsys)
    older_store = tmp_path / "older-clickhouse"
    shutil.copytree(
        settings.data_dir / "clickhouse", older_store, symlinks=True
    )  # sizes 14, for step 3

    # 2. Witness A is killed: checkpoints are still published, cosigned by B only.
    witnesses.a.process.kill()
    witnesses.a.process.wait(timeout=10)
    expected = worker.write(events_per_tenant=7)  # size 21 of each tenant
    with caplog.at_level(logging.WARNING, logger="authtrail.sinks.witnessing"):
        sink = _run_sink(submitting, until_checkpoints=expected)
    counters = sink.counters
    assert counters.published_checkpoints == expected == 3
    assert counters.witness_cosignatures == len(TENANTS)  # B, once per tenant
    assert counters.witness_unreachable == len(TENANTS)  # A: refused, then resting
    assert (counters.witness_refusals, counters.witness_errors) == (0, 0)
    assert "published without the cosignature of " + witnesses.a.url in caplog.text
    assert {size for size, _ in newest_checkpoints(published).values()} == {21}
    code, output = _verify(settings, published, capsys, *_witness_flags(witnesses, 2))
    assert code == 1 and "missing cosignatures" in output, output
    assert "1 of 2 required witness cosignatures" in output, output
    code, output = _verify(settings, published, capsys, *_witness_flags(witnesses, 1))
    assert code == 0, output

    # 3. The store is rolled back to its older copy (sizes 14) and a sink publishes it
    # anew, somewhere else, for auditors who never saw size 21: B holds 21 and refuses.
    shutil.rmtree(settings.data_dir / "clickhouse")
    shutil.copytree(older_store, settings.data_dir / "clickhouse", symlinks=True)
    elsewhere = tmp_path / "another-publication"
    with caplog.at_level(logging.ERROR, logger="authtrail.sinks.witnessing"):
        rolled_back = _run_sink(
            dataclasses.replace(submitting, publication_dir=elsewhere), until_checkpoints=None
        )
    counters = rolled_back.counters
    assert counters.published_checkpoints == 6  # published: a checkpoint is never held back
    assert counters.witness_cosignatures == 0
    assert counters.witness_refusals == len(TENANTS)  # B: 409, it holds 21 > 14
    assert counters.witness_unreachable == len(TENANTS)  # A is still dead
    assert "witness holds size 21, more than this checkpoint's 14" in caplog.text, caplog.text
    for tenant_id, (size, note) in newest_checkpoints(elsewhere).items():
        assert (size, note) == (14, stored[tenant_id, 14])  # nothing refused is cosigned
    code, output = _verify(settings, elsewhere, capsys, *_witness_flags(witnesses, 1))
    assert code == 1 and "0 of 1 required witness cosignatures" in output, output
    # The first publication still names the rollback.
    code, output = _verify(settings, published, capsys)
    assert code == 1 and "truncated" in output, output

    # 4. Tampered cosignatures in the publication are named as forged: a flipped bit in
    # B's signature, and B's valid line of size 14 pasted under size 21.
    acme = dict(all_checkpoints(published, "acme"))
    b_line = acme[21].decode().splitlines()[-1]
    name_part, payload = b_line.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(payload))
    raw[-1] ^= 0x01
    flipped = acme[21].replace(
        b_line.encode(), f"{name_part} {base64.b64encode(raw).decode()}".encode()
    )
    b_line_14 = next(line for line in acme[14].decode().splitlines() if "witness-b" in line)
    pasted = acme[21].replace(b_line.encode(), b_line_14.encode())
    for tampered in (flipped, pasted):
        forged = tmp_path / f"forged-{len(list(tmp_path.glob('forged-*')))}"
        shutil.copytree(published, forged)
        note_path = forged / "checkpoints" / "acme" / f"{21:020d}.note"
        note_path.chmod(0o644)
        note_path.write_bytes(tampered)
        code, output = _verify(settings, forged, capsys, "--witness-key", str(witnesses.b_vkey))
        assert code == 1 and "forged cosignature" in output, output


def _prove_with_the_published_cosignatures(
    settings: Settings, published: Path, witnesses: Witnesses, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`prove --published`: the bundle carries the published, cosigned note; without it
    the stored note has no cosignature; a publication saying otherwise is refused."""
    pub = str(settings.keys_dir / "authtrail.pub")

    def prove(out: Path, *arguments: str) -> int:
        return cli.main(["--data-dir", str(settings.data_dir), "prove", "--tenant", "acme",
                         "--seq", "3", "--out", str(out), *arguments])  # fmt: skip

    cosigned, plain = tmp_path / "cosigned.json", tmp_path / "plain.json"
    assert prove(cosigned, "--published", str(published)) == 0
    assert prove(plain) == 0
    assert json.loads(cosigned.read_text())["tree_size"] == 14
    flags = ["verify-proof", "--key", pub, *_witness_flags(witnesses, 2)]
    assert cli.main([*flags, str(cosigned)]) == 0
    assert cli.main([*flags, str(plain)]) == 1
    capsys.readouterr()
    other = tmp_path / "other-publication"
    shutil.copytree(published, other)
    note_path = other / "checkpoints" / "acme" / f"{14:020d}.note"
    note_path.chmod(0o644)
    text = note_path.read_text().splitlines(keepends=True)
    text[1] = "13\n"  # the size line of the body: another checkpoint than the stored one
    note_path.write_text("".join(text))
    assert prove(tmp_path / "refused.json", "--published", str(other)) == 1
    assert "is not the one" in capsys.readouterr().err
    # A note planted as a symlink (to any file the prover can read) is not followed.
    note_path.unlink()
    note_path.symlink_to(published / "checkpoints" / "acme" / f"{14:020d}.note")
    assert prove(tmp_path / "refused.json", "--published", str(other)) == 1
    assert "is a symlink" in capsys.readouterr().err


def _fork_nodes(leaf_hashes: list[bytes]) -> object:
    """A :class:`authtrail.sinks.proofs.TreeNodes` over the forked log's own leaves."""
    levels = MerkleLevels.from_leaf_hashes(leaf_hashes)

    class Nodes:
        def nodes(
            self, tenant_id: str, size: int, wanted: list[tuple[int, int]]
        ) -> dict[tuple[int, int], bytes]:
            return {node: levels.node(*node) for node in wanted}

    return Nodes()


def test_a_forked_log_signed_with_the_real_key_is_refused_and_not_published_cosigned(
    settings: Settings,
    witnesses: Witnesses,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whoever holds the signing key signs another history of the same tenant: witness
    B, which cosigned the real one, refuses it at the same size (409) and when it grew
    (422); the publisher publishes the fork's note, if at all, without B's line."""
    submitting = dataclasses.replace(
        settings, cosigning_witnesses=(f"{witnesses.b.url}={witnesses.b_vkey}",)
    )
    expected = Worker(submitting).write(events_per_tenant=14)
    assert _run_sink(submitting, until_checkpoints=expected).counters.witness_cosignatures >= 3

    sequencer = Sequencer(load_signer(settings.signing_key_path), settings.log_origin,
                          batch_size=7, batch_interval=3600)  # fmt: skip
    leaves, fork_notes = [], {}
    for offset in range(21):
        leaves.append(f"forked event {offset}".encode())
        sequencer.offer("acme", f"fork-{offset}", leaves[-1], offset)
        for tenant_id in sequencer.full_batches():
            signed = sequencer.close_batch(tenant_id)
            fork_notes[signed.checkpoint.size] = signed.note
    counters = SinkCounters()
    witnessing = CheckpointWitnessing(
        WitnessSubmitter([witnesses.b.url], keys={witnesses.b.url: witnesses.b_witness.key}),
        _fork_nodes([merkle.leaf_hash(leaf) for leaf in leaves]),  # type: ignore[arg-type]
        counters,
    )
    with caplog.at_level(logging.ERROR, logger="authtrail.sinks.witnessing"):
        same_size = witnessing.cosign("acme", 14, fork_notes[14])
        grown = witnessing.cosign("acme", 21, fork_notes[21])
    assert (same_size, grown) == (fork_notes[14], fork_notes[21])  # no cosignature added
    assert (counters.witness_refusals, counters.witness_cosignatures) == (2, 0)
    assert "differs from the witnessed root" in caplog.text  # 409: a fork
    assert "refused (HTTP 422)" in caplog.text, caplog.text  # no consistency from 14 to 21

    # Through the publisher: the fork at 14 conflicts with the published size 14; the
    # fork at 21 is new there and is published as signed, without B's cosignature.
    published = settings.publication_dir
    assert published is not None
    publication = Publication(published, log_origin=settings.log_origin, signer=None)
    publishing = CheckpointPublishing(publication, counters, interval=60, witnessing=witnessing)
    publishing.stored([{"tenant_id": "acme", "size": 14, "note": fork_notes[14]},
                       {"tenant_id": "acme", "size": 21, "note": fork_notes[21]}])  # fmt: skip
    publishing.publish_pending()
    assert counters.publication_conflicts == 1 and counters.witness_refusals == 3
    assert dict(all_checkpoints(published, "acme"))[21] == fork_notes[21]


class _FailingOnce(Publication):
    """A publication whose first write fails as a full disk would."""

    failed = False

    def publish_checkpoints(self, notes):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        return super().publish_checkpoints(notes)


def _log(
    signer_path: Path, origin: str, tenant_id: str, count: int
) -> tuple[list[bytes], dict[int, bytes]]:
    sequencer = Sequencer(load_signer(signer_path), origin, batch_size=4, batch_interval=3600)
    leaf_hashes, notes = [], {}
    for offset in range(count):
        leaf = f"{tenant_id} event {offset}".encode()
        leaf_hashes.append(merkle.leaf_hash(leaf))
        sequencer.offer(tenant_id, f"{tenant_id}-{offset}", leaf, offset)
        for due in sequencer.full_batches():
            signed = sequencer.close_batch(due)
            notes[signed.checkpoint.size] = signed.note
    return leaf_hashes, notes


def test_only_the_newest_of_a_round_is_submitted_and_a_retry_asks_no_witness_again(
    settings: Settings,
    witnesses: Witnesses,
) -> None:
    witnesses.a.process.kill()  # this test needs B only
    leaf_hashes, notes = _log(settings.signing_key_path, settings.log_origin, "acme", 12)
    counters = SinkCounters()
    key = witnesses.b_witness.key
    witnessing = CheckpointWitnessing(
        WitnessSubmitter([witnesses.b.url], keys={witnesses.b.url: key}),
        _fork_nodes(leaf_hashes),  # type: ignore[arg-type]
        counters,
    )
    published = settings.publication_dir
    assert published is not None
    publication = _FailingOnce(published, log_origin=settings.log_origin, signer=None)
    publishing = CheckpointPublishing(publication, counters, interval=60, witnessing=witnessing)
    publishing.stored([{"tenant_id": "acme", "size": size, "note": notes[size]} for size in (4, 8)])
    with pytest.raises(OSError):
        publishing.publish_pending()
    assert counters.witness_cosignatures == 1 and publishing.pending == 2
    publishing.stored([{"tenant_id": "acme", "size": 12, "note": notes[12]}])
    publishing.publish_pending()  # 4 and 8 as prepared before, 12 cosigned now (from 8)
    assert counters.witness_cosignatures == 2 and publishing.pending == 0
    files = dict(all_checkpoints(published, "acme"))
    assert files[4] == notes[4]  # not the newest of its round: published as stored
    for size in (8, 12):
        lines = files[size].removeprefix(notes[size]).decode()
        assert check_witness_reply(notes[size][: notes[size].rfind(b"\n\n") + 1],
                                   [lines], key) == [lines]  # fmt: skip


def test_a_witness_answering_with_another_key_publishes_no_cosignature(
    settings: Settings,
    witnesses: Witnesses,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The submitter keeps only what verifies under the key configured for the URL: a
    witness that signs with another key (or a mix-up of URLs and key files) adds nothing."""
    leaf_hashes, notes = _log(settings.signing_key_path, settings.log_origin, "acme", 4)
    counters = SinkCounters()
    a_key = witnesses.a.key  # A's key configured for B's URL
    witnessing = CheckpointWitnessing(
        WitnessSubmitter([witnesses.b.url], keys={witnesses.b.url: a_key}),
        _fork_nodes(leaf_hashes),  # type: ignore[arg-type]
        counters,
    )
    with caplog.at_level(logging.ERROR, logger="authtrail.sinks.witnessing"):
        assert witnessing.cosign("acme", 4, notes[4]) == notes[4]
    assert (counters.witness_refusals, counters.witness_cosignatures) == (1, 0)
    assert "0 of 1 required witness cosignatures" in caplog.text


def test_a_witness_back_after_an_outage_cosigns_an_idle_tenants_published_checkpoint(
    settings: Settings, witnesses: Witnesses
) -> None:
    """The note stays as first published; the late cosignature is published beside it
    (cosignatures/), `verify --published` counts it, a forged one is named, and a
    restarted sink knows from the publication whom to ask again."""
    witnesses.a.process.kill()  # this test needs B only, on a port it can leave and rejoin
    leaf_hashes, notes = _log(settings.signing_key_path, settings.log_origin, "acme", 8)
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    key = witnesses.b_witness.key

    def publishing_with_b() -> tuple[CheckpointPublishing, CheckpointWitnessing, SinkCounters]:
        counters = SinkCounters()
        submitter = WitnessSubmitter([url], keys={url: key}, timeout=2)
        witnessing = CheckpointWitnessing(submitter, _fork_nodes(leaf_hashes), counters)  # type: ignore[arg-type]
        publication = Publication(published, log_origin=settings.log_origin, signer=None)
        return (CheckpointPublishing(publication, counters, interval=0, witnessing=witnessing),
                witnessing, counters)  # fmt: skip

    published = settings.publication_dir
    assert published is not None
    keyring = load_keyring([settings.keys_dir / "authtrail.pub"])
    policy = WitnessPolicy((key,), 1)
    publishing, _, counters = publishing_with_b()
    publishing.stored([{"tenant_id": "acme", "size": 8, "note": notes[8]}])
    publishing.publish_pending()  # B is down: published without its cosignature
    assert counters.witness_unreachable == 1
    publishing.late_cosignatures_if_due()  # still down: nothing
    assert read_published(published, keyring, settings.log_origin, policy).damage[0][
        "damage"] == "missing cosignatures"  # fmt: skip

    with WitnessServer(witnesses.b_witness, port=port):
        publishing.late_cosignatures_if_due()
    assert counters.witness_cosignatures == 1
    assert dict(all_checkpoints(published, "acme"))[8] == notes[8]  # never rewritten
    (line,) = late_cosignatures(published, "acme", 8)
    view = read_published(published, keyring, settings.log_origin, policy)
    assert view.damage == [] and view.cosigned_by["acme"][0] == 8
    publishing.late_cosignatures_if_due()  # nothing lacking any more: nothing asked
    assert counters.witness_cosignatures == 1

    # A restarted sink reads who cosigned what from the publication: nothing to ask.
    _, witnessing, _ = publishing_with_b()
    witnessing.resume({"acme": (8, notes[8] + line)})
    assert witnessing.late_cosignatures() == []
    witnessing.resume({"acme": (8, notes[8])})  # without the late line: B is asked again
    with WitnessServer(witnesses.b_witness, port=port):
        ((tenant, size, key_id, again),) = witnessing.late_cosignatures()
    assert (tenant, size, key_id) == ("acme", 8, key.key_id)
    body = notes[8][: notes[8].rfind(b"\n\n") + 1]
    assert check_witness_reply(body, [again.decode()], key) == [again.decode()]

    # A forged late cosignature is named; anything else in the folder breaks the layout.
    cosig = published / "cosignatures" / "acme" / f"{8:020d}-{key.key_id:08x}.cosig"
    cosig.chmod(0o644)
    cosig.write_bytes(line.replace(line[-6:-1], b"AAAAA"))
    (damage,) = read_published(published, keyring, settings.log_origin, policy).damage
    assert damage["damage"] == "forged cosignature"
    cosig.write_bytes(b"not a signature line\n")
    (damage,) = read_published(published, keyring, settings.log_origin, policy).damage
    assert damage["damage"] == "forged cosignature"
    (published / "cosignatures" / "acme" / "stray").write_text("x")
    with pytest.raises(PublicationError):
        read_published(published, keyring, settings.log_origin, policy)
