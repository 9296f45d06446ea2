"""authtrail.stream.core.bundle: known answers, and every field of a bundle tampered with, must
fail.

Bundles are built as `authtrail prove` builds them (proofs from MerkleLevels nodes via
authtrail.stream.core.tree_proofs), over logs the real Sequencer chained and signed.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from authtrail.errors import FormatError, VerificationError
from authtrail.stream.core.audit import MerkleLevels
from authtrail.stream.core.bundle import (
    BundleCheckpointError,
    BundleProofError,
    ChainLinkError,
    ConsistencyVerdict,
    EventMismatchError,
    InclusionVerdict,
    bundle_json,
    load_bundle,
    make_consistency_bundle,
    make_inclusion_bundle,
    verify_bundle,
    verify_consistency_bundle,
    verify_inclusion_bundle,
)
from authtrail.stream.core.canonical import canonical_leaf
from authtrail.stream.core.chain import chain_hash
from authtrail.stream.core.checkpoint import Checkpoint, sign
from authtrail.stream.core.note import Signer, make_keyring
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.core.tree_proofs import (
    consistency_proof_from_nodes,
    inclusion_proof_from_nodes,
)

SIGNER = Signer("bundle-test", bytes(range(32)))
OTHER_SIGNER = Signer("bundle-test", bytes(range(1, 33)))  # same name, another key
KEYRING = make_keyring([SIGNER.verifier_key()])
ORIGIN = "authtrail.test"


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _event(tenant_id: str, n: int, variant: str = "") -> dict[str, Any]:
    return {
        "event_id": f"{tenant_id}-{n}{variant}",
        "tenant_id": tenant_id,
        "event_type": "LOGIN_FAILED" if n % 2 else "LOGIN",
        "outcome": "FAILURE" if n % 2 else "SUCCESS",
        "occurred_at": 1_700_000_000_000_000 + n,
        "received_at": None,
        "user_name": f"user{n % 3}",
        "client_ip": "203.0.113.7",
        "message": 'é "quoted" \\',
        "attributes": {"b": str(n), "a": "x"} if n % 2 else {},
    }


@dataclass
class Log:
    """One tenant's log as the sequencer built it: events, links, notes by size, levels."""

    tenant_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[Any] = field(default_factory=list)
    notes: dict[int, bytes] = field(default_factory=dict)

    @property
    def levels(self) -> MerkleLevels:
        return MerkleLevels.from_leaf_hashes([link.leaf_hash for link in self.links])

    def inclusion(self, seq: int, size: int | None = None) -> dict[str, Any]:
        size = size or max(self.notes)
        link = self.links[seq - 1]
        return make_inclusion_bundle(
            log_origin=ORIGIN, tenant_id=self.tenant_id, seq=seq, event=self.events[seq - 1],
            tree_size=size, inclusion_proof=inclusion_proof_from_nodes(self.levels.node, seq - 1,
            size), checkpoint_note=self.notes[size], stored_leaf_hash=link.leaf_hash,
            chain=(link.prev_hash, link.hash),
        )  # fmt: skip

    def consistency(self, old_size: int, new_size: int) -> dict[str, Any]:
        return make_consistency_bundle(
            log_origin=ORIGIN, tenant_id=self.tenant_id, old_note=self.notes[old_size],
            new_note=self.notes[new_size],
            consistency_proof=consistency_proof_from_nodes(self.levels.node, old_size, new_size),
        )  # fmt: skip


def _log(tenant_id: str, count: int, batch: int, variant: str = "", fork_at: int = 0) -> Log:
    sequencer = Sequencer(SIGNER, ORIGIN, batch_size=batch, batch_interval=3600)
    log = Log(tenant_id)
    for n in range(1, count + 1):
        event = _event(tenant_id, n, variant if n > fork_at else "")
        offer = sequencer.offer(tenant_id, event["event_id"], canonical_leaf(event), n)
        assert offer.link is not None
        log.events.append(event)
        log.links.append(offer.link)
        if sequencer.full_batches() or n == count:
            signed = sequencer.close_batch(tenant_id)
            log.notes[signed.checkpoint.size] = signed.note
    return log


ACME = _log("acme", 10, batch=3)  # checkpoints at sizes 3, 6, 9, 10
GLOBEX = _log("globex", 10, batch=3)


# --- Known answers ---------------------------------------------------------------------


def _tiny_event(n: int) -> dict[str, Any]:
    return {"event_id": f"e{n}", "tenant_id": "acme", "occurred_at": n}


def _tiny_leaf(n: int) -> bytes:
    """INTEGRITY.md §2, written out by hand: fields sorted, str(name) || type || value."""
    return (
        b"authtrail-event-v1\n"
        + b"\x00\x00\x00\x08event_id" + b"s" + b"\x00\x00\x00\x02" + f"e{n}".encode()
        + b"\x00\x00\x00\x0boccurred_at" + b"i" + b"\x00\x00\x00\x01" + str(n).encode()
        + b"\x00\x00\x00\x09tenant_id" + b"s" + b"\x00\x00\x00\x04acme"
    )  # fmt: skip


def test_three_leaf_bundle_by_hand() -> None:
    """A 3-leaf log: every hash recomputed here with hashlib from INTEGRITY.md §2-§4."""
    leaves = [_tiny_leaf(n) for n in (1, 2, 3)]
    assert [canonical_leaf(_tiny_event(n)) for n in (1, 2, 3)] == leaves
    h1, h2, h3 = (_sha(b"\x00" + leaf) for leaf in leaves)
    h12 = _sha(b"\x01" + h1 + h2)
    root = _sha(b"\x01" + h12 + h3)  # RFC 6962: k = 2, MTH = H(MTH(D[0:2]) || MTH(D[2:3]))
    chain, prev = [], bytes(32)
    for seq, leaf_hash in enumerate((h1, h2, h3), 1):
        prev = _sha(b"authtrail-chain-v1\n" + struct.pack(">I", 4) + b"acme"
                    + struct.pack(">Q", seq) + prev + leaf_hash)  # fmt: skip
        chain.append(prev)
    checkpoint = Checkpoint(
        origin="authtrail.test/acme", size=3, root=root, batch_first_seq=1, batch_last_seq=3,
        batch_root=root, chain_hash=chain[2], prev_digest=bytes(32), time_micros=1,
    )  # fmt: skip
    note = sign(checkpoint, SIGNER)
    levels = MerkleLevels.from_leaf_hashes([h1, h2, h3])
    expected_proofs = {1: [h2, h3], 2: [h1, h3], 3: [h12]}
    for seq, expected_proof in expected_proofs.items():
        bundle = make_inclusion_bundle(
            log_origin=ORIGIN, tenant_id="acme", seq=seq, event=_tiny_event(seq), tree_size=3,
            inclusion_proof=inclusion_proof_from_nodes(levels.node, seq - 1, 3),
            checkpoint_note=note, chain=(bytes(32) if seq == 1 else chain[seq - 2], chain[seq - 1]),
        )  # fmt: skip
        assert bundle["inclusion_proof"] == [_b64(value) for value in expected_proof]
        assert bundle["canonical_leaf"] == _b64(leaves[seq - 1])
        assert bundle["leaf_hash"] == _b64((h1, h2, h3)[seq - 1])
        assert bundle["chain"]["hash"] == _b64(chain[seq - 1])
        assert bundle["event"] == _tiny_event(seq)
        assert bundle["checkpoint"] == note.decode()
        assert bundle["checkpoint"].split("\n")[2] == _b64(root)
        verdict = verify_inclusion_bundle(load_bundle(bundle_json(bundle)), KEYRING)
        assert (verdict.seq, verdict.checkpoint.root, verdict.chain_checked) == (seq, root, True)
        assert verdict.signed_by == (f"bundle-test+{SIGNER.key_id:08x}",)


def test_bundle_file_round_trip_and_report() -> None:
    bundle = ACME.inclusion(5)
    assert next(iter(bundle)) == "format" and bundle["format"] == "authtrail-inclusion-v1"
    assert bundle["event"]["received_at"] is None  # stored nulls are written as null
    verdict = verify_bundle(load_bundle(bundle_json(bundle)), KEYRING, log_origin=ORIGIN)
    assert isinstance(verdict, InclusionVerdict)
    report = verdict.report()
    assert report["ok"] and report["event_id"] == "acme-5" and report["tree_size"] == 10
    assert report["origin"] == "authtrail.test/acme"


@pytest.mark.parametrize("seq", range(1, 11))
@pytest.mark.parametrize("size", [3, 6, 9, 10])
def test_every_event_against_every_checkpoint_that_covers_it(seq: int, size: int) -> None:
    if seq > size:
        return
    verify_inclusion_bundle(ACME.inclusion(seq, size), KEYRING)


def test_consistency_between_every_pair_of_checkpoints() -> None:
    for old in ACME.notes:
        for new in ACME.notes:
            if old <= new:
                verdict = verify_bundle(ACME.consistency(old, new), KEYRING)
                assert isinstance(verdict, ConsistencyVerdict)
                assert (verdict.old.size, verdict.new.size) == (old, new)


# --- What is not tampering: nulls are spelled null or left out --------------------------


@pytest.mark.parametrize(
    "change",
    [lambda b: b["event"].pop("received_at"), lambda b: b["event"].pop("attributes"),
     lambda b: b["event"].update(user_id=None), lambda b: b["event"].update(attributes={}),
     lambda b: b.pop("chain")],
    ids=["null field left out", "empty map left out", "null field added", "empty map added",
         "no chain"],
)  # fmt: skip
def test_equivalent_spellings_still_verify(change: Callable[[dict[str, Any]], object]) -> None:
    bundle = ACME.inclusion(4)  # an even seq: its attributes are empty
    change(bundle)
    verdict = verify_inclusion_bundle(bundle, KEYRING)
    assert verdict.chain_checked == ("chain" in bundle)


# --- Tampered inclusion bundles ----------------------------------------------------------


def _flip(text: str, byte: int = 0) -> str:
    data = bytearray(base64.b64decode(text))
    data[byte] ^= 0x01
    return _b64(bytes(data))


def _resign(note: str, signer: Signer) -> str:
    body = note[: note.index("\n\n") + 1]
    return sign(Checkpoint.parse(body.encode()), signer).decode()


def _edit_body(note: str) -> str:
    """The note with the last digit of its time line changed, signatures kept."""
    start = note.index("authtrail-time ")
    end = note.index("\n", start)
    digit = "1" if note[end - 1] != "1" else "2"
    return note[: end - 1] + digit + note[end:]


def _set(key: str, value: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    return lambda bundle: bundle.__setitem__(key, value(bundle))


INCLUSION_TAMPERS: dict[str, tuple[Callable[[dict[str, Any]], object], type[Exception], str]] = {
    "event field changed": (lambda b: b["event"].update(user_name="mallory"),
                            EventMismatchError, "canonical leaf"),
    "event field added": (lambda b: b["event"].update(user_id="u1"),
                          EventMismatchError, "canonical leaf"),
    "event map entry changed": (lambda b: b["event"]["attributes"].update(a="y"),
                                EventMismatchError, "canonical leaf"),
    "event timestamp moved": (lambda b: b["event"].update(occurred_at=1_700_000_000_000_000),
                              EventMismatchError, "canonical leaf"),
    "event of another tenant": (lambda b: b["event"].update(tenant_id="globex"),
                                EventMismatchError, "tenant_id"),
    "canonical_leaf changed": (_set("canonical_leaf", lambda b: _flip(b["canonical_leaf"], 30)),
                               EventMismatchError, "first differ at byte 30"),
    "leaf_hash changed": (_set("leaf_hash", lambda b: _flip(b["leaf_hash"])),
                          EventMismatchError, "leaf hash"),
    "seq + 1": (_set("seq", lambda b: b["seq"] + 1), BundleProofError, "inclusion proof"),
    "seq - 1": (_set("seq", lambda b: b["seq"] - 1), BundleProofError, "inclusion proof"),
    "seq beyond the tree": (_set("seq", lambda b: 11), BundleProofError, "not in the signed tree"),
    "tree_size + 1": (_set("tree_size", lambda b: 11), BundleCheckpointError, "tree size"),
    "tree_size - 1": (_set("tree_size", lambda b: 9), BundleCheckpointError, "tree size"),
    "proof truncated": (_set("inclusion_proof", lambda b: b["inclusion_proof"][:-1]),
                        BundleProofError, "must have"),
    "proof extended": (_set("inclusion_proof", lambda b: [*b["inclusion_proof"], b["leaf_hash"]]),
                       BundleProofError, "must have"),
    "proof reversed": (_set("inclusion_proof", lambda b: b["inclusion_proof"][::-1]),
                       BundleProofError, "root of tree size 10"),
    "checkpoint body edited": (_set("checkpoint", lambda b: _edit_body(b["checkpoint"])),
                               BundleCheckpointError, "invalid signature"),
    "checkpoint signature removed": (_set("checkpoint", lambda b: b["checkpoint"].split("\n\n")[0]
                                     + "\n\n"), BundleCheckpointError, "checkpoint"),
    "checkpoint signed by an untrusted key": (_set("checkpoint", lambda b: _resign(
                                              b["checkpoint"], OTHER_SIGNER)),
                                              BundleCheckpointError, "no signature by a trusted"),
    "checkpoint of another tenant": (_set("checkpoint", lambda b: GLOBEX.notes[10].decode()),
                                     BundleCheckpointError, "origin expected"),
    "older checkpoint, proof unchanged": (lambda b: b.update(checkpoint=ACME.notes[9].decode(),
                                          tree_size=9), BundleProofError, "inclusion proof"),
    "log_origin changed": (_set("log_origin", lambda b: "evil.example"),
                           BundleCheckpointError, "origin expected"),
    "tenant_id changed": (_set("tenant_id", lambda b: "globex"), EventMismatchError, "tenant_id"),
    "chain hash changed": (lambda b: b["chain"].update(hash=_flip(b["chain"]["hash"])),
                           ChainLinkError, "chain hash"),
    "chain prev_hash changed": (lambda b: b["chain"].update(
                                prev_hash=_flip(b["chain"]["prev_hash"])),
                                ChainLinkError, "chain hash"),
}  # fmt: skip


@pytest.mark.parametrize("name", INCLUSION_TAMPERS)
def test_tampered_inclusion_bundle_fails(name: str) -> None:
    change, error, words = INCLUSION_TAMPERS[name]
    bundle = ACME.inclusion(5)  # seq 5 of 10: a 4-hash proof, odd seq has attributes
    change(bundle)
    with pytest.raises(error, match=words) as caught:
        verify_inclusion_bundle(bundle, KEYRING)
    assert "tenant 'acme'" in str(caught.value) or "tenant 'globex'" in str(caught.value)


@pytest.mark.parametrize("position", range(4))
@pytest.mark.parametrize("byte", [0, 31])
def test_each_proof_element_flipped_fails(position: int, byte: int) -> None:
    bundle = ACME.inclusion(5)
    assert len(bundle["inclusion_proof"]) == 4
    bundle["inclusion_proof"][position] = _flip(bundle["inclusion_proof"][position], byte)
    with pytest.raises(BundleProofError, match="root of tree size 10: expected") as caught:
        verify_inclusion_bundle(bundle, KEYRING)
    assert caught.value.where == "seq 5"


def test_last_seq_chain_link_is_the_signed_chain_head() -> None:
    verify_inclusion_bundle(ACME.inclusion(10), KEYRING)
    # prev_hash edited and hash recomputed: a link that hashes correctly, which only the
    # signed chain head line of the checkpoint (seq == size) can catch.
    bundle = ACME.inclusion(10)
    prev_hash = base64.b64decode(_flip(bundle["chain"]["prev_hash"]))
    leaf_hash = base64.b64decode(bundle["leaf_hash"])
    forged = chain_hash("acme", 10, prev_hash, leaf_hash)
    bundle["chain"] = {"prev_hash": _b64(prev_hash), "hash": _b64(forged)}
    with pytest.raises(ChainLinkError, match="chain head"):
        verify_inclusion_bundle(bundle, KEYRING)
    first = ACME.inclusion(1)
    first["chain"]["prev_hash"] = _flip(first["chain"]["prev_hash"])
    with pytest.raises(ChainLinkError, match="genesis"):
        verify_inclusion_bundle(first, KEYRING)


def test_pinned_log_origin() -> None:
    verify_inclusion_bundle(ACME.inclusion(2), KEYRING, log_origin=ORIGIN)
    with pytest.raises(BundleCheckpointError, match="log origin"):
        verify_inclusion_bundle(ACME.inclusion(2), KEYRING, log_origin="other.example")


# --- Malformed bundles: FormatError, never a verdict -------------------------------------


FORMAT_TAMPERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "unknown format": _set("format", lambda b: "authtrail-inclusion-v2"),
    "unknown key": lambda b: b.update(note="hello"),
    "seq as text": _set("seq", lambda b: "5"),
    "seq as bool": _set("seq", lambda b: True),
    "seq zero": _set("seq", lambda b: 0),
    "seq fractional": _set("seq", lambda b: 5.0),
    "tree_size negative": _set("tree_size", lambda b: -1),
    "tree_size too large": _set("tree_size", lambda b: 2**64),
    "proof not a list": _set("inclusion_proof", lambda b: " ".join(b["inclusion_proof"])),
    "proof element not base64": lambda b: b["inclusion_proof"].__setitem__(0, "not base64!"),
    "proof element 31 bytes": lambda b: b["inclusion_proof"].__setitem__(0, _b64(bytes(31))),
    "non-canonical base64": _set("leaf_hash", lambda b: b["leaf_hash"][:-2] + "B="),
    "leaf_hash as hex": _set("leaf_hash", lambda b: base64.b64decode(b["leaf_hash"]).hex()),
    "event not an object": _set("event", lambda b: list(b["event"].items())),
    "event value a list": lambda b: b["event"].update(user_name=["a"]),
    "event value a float": lambda b: b["event"].update(occurred_at=1.5),
    "event value a bool": lambda b: b["event"].update(outcome=True),
    "event map of numbers": lambda b: b["event"].update(attributes={"a": 1}),
    "event field name not canonical": lambda b: b["event"].update(UserName="x"),
    "event text lone surrogate": lambda b: b["event"].update(user_name="\ud800"),
    "checkpoint not text": _set("checkpoint", lambda b: b["checkpoint"].encode()),
    "chain with an extra key": lambda b: b["chain"].update(seq=5),
    "tenant_id invalid": _set("tenant_id", lambda b: "acme corp"),
    "log_origin with a space": _set("log_origin", lambda b: "authtrail test"),
    **{f"missing {key}": (lambda b, key=key: b.pop(key)) for key in (
        "format", "log_origin", "tenant_id", "seq", "event", "canonical_leaf", "leaf_hash",
        "tree_size", "inclusion_proof", "checkpoint")},
}  # fmt: skip


@pytest.mark.parametrize("name", FORMAT_TAMPERS)
def test_malformed_inclusion_bundle_is_a_format_error(name: str) -> None:
    bundle = copy.deepcopy(ACME.inclusion(5))
    FORMAT_TAMPERS[name](bundle)
    with pytest.raises(FormatError):
        verify_bundle(bundle, KEYRING)


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[1, 2]", b'{"format": 1, "format": 2}', b'{"seq": NaN}',
     b"\xff\xfe{}", b"[" * 100_000],
)  # fmt: skip
def test_malformed_json_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        load_bundle(data)


def test_format_errors_are_not_verification_errors() -> None:
    """The CLI maps FormatError to exit 2 and VerificationError to exit 1: keep them apart."""
    assert not issubclass(FormatError, VerificationError)
    assert issubclass(EventMismatchError, VerificationError)


# --- Tampered consistency bundles --------------------------------------------------------

FORK = _log("acme", 10, batch=3, variant="-forked", fork_at=4)  # same signer, seq 5.. differ


CONSISTENCY_TAMPERS: dict[str, tuple[Callable[[dict[str, Any]], object], type[Exception], str]] = {
    "old and new swapped": (lambda b: b.update(old=b["new"], new=b["old"]),
                            BundleProofError, "swapped"),
    "proof truncated": (_set("consistency_proof", lambda b: b["consistency_proof"][:-1]),
                        BundleProofError, "must have"),
    "proof extended": (_set("consistency_proof", lambda b: [*b["consistency_proof"],
                       b["consistency_proof"][0]]), BundleProofError, "must have"),
    "proof emptied": (_set("consistency_proof", lambda b: []), BundleProofError, "must have"),
    "new is a fork": (_set("new", lambda b: FORK.notes[9].decode()), BundleProofError,
                      "a fork, or a wrong proof"),
    "old signed by an untrusted key": (_set("old", lambda b: _resign(b["old"], OTHER_SIGNER)),
                                       BundleCheckpointError, "old checkpoint"),
    "new of another tenant": (_set("new", lambda b: GLOBEX.notes[9].decode()),
                              BundleCheckpointError, "new checkpoint"),
    "log_origin changed": (_set("log_origin", lambda b: "evil.example"), BundleCheckpointError,
                           "origin expected"),
    "old body edited": (_set("old", lambda b: _edit_body(b["old"])), BundleCheckpointError,
                        "invalid signature"),
}  # fmt: skip


@pytest.mark.parametrize("name", CONSISTENCY_TAMPERS)
def test_tampered_consistency_bundle_fails(name: str) -> None:
    change, error, words = CONSISTENCY_TAMPERS[name]
    bundle = ACME.consistency(3, 9)
    change(bundle)
    with pytest.raises(error, match=words):
        verify_consistency_bundle(bundle, KEYRING)


@pytest.mark.parametrize("position", range(5))
def test_each_consistency_proof_element_flipped_fails(position: int) -> None:
    bundle = ACME.consistency(3, 9)  # h(2), h(3), MTH(0..2), MTH(4..8), h(8)
    assert len(bundle["consistency_proof"]) == 5
    bundle["consistency_proof"][position] = _flip(bundle["consistency_proof"][position])
    with pytest.raises(BundleProofError, match="root of tree size") as caught:
        verify_consistency_bundle(bundle, KEYRING)
    assert caught.value.where == "sizes 3..9"


def test_a_fork_proves_its_own_history_but_not_the_honest_one() -> None:
    """The forked log is consistent with itself; against the honest log it is caught,
    also at equal sizes, where no proof is needed to see two roots."""
    verify_consistency_bundle(FORK.consistency(3, 9), KEYRING)
    forged = FORK.consistency(3, 9)
    forged["old"] = ACME.notes[3].decode()  # identical prefix up to seq 4: still consistent
    verify_consistency_bundle(forged, KEYRING)
    forged = FORK.consistency(6, 9)
    forged["old"] = ACME.notes[6].decode()  # seq 5, 6 differ
    with pytest.raises(BundleProofError, match="root of tree size 6"):
        verify_consistency_bundle(forged, KEYRING)
    same_size = ACME.consistency(9, 9)
    same_size["new"] = FORK.notes[9].decode()
    with pytest.raises(BundleProofError, match="fork: two signed checkpoints of size 9"):
        verify_consistency_bundle(same_size, KEYRING)


def test_a_successor_must_link_to_the_checkpoint_it_follows() -> None:
    """New's batch starts right after old: its prev line must be old's digest."""
    bundle = ACME.consistency(6, 9)
    verify_consistency_bundle(bundle, KEYRING)
    new = Checkpoint.parse(bundle["new"].split("\n\n")[0].encode() + b"\n")
    relinked = dataclasses.replace(new, prev_digest=_sha(b"elsewhere"))
    bundle["new"] = sign(relinked, SIGNER).decode()
    with pytest.raises(BundleCheckpointError, match="prev link"):
        verify_consistency_bundle(bundle, KEYRING)


@pytest.mark.parametrize(
    "change",
    [lambda b: b.pop("old"), lambda b: b.update(extra=1),
     lambda b: b.update(consistency_proof="abc"), lambda b: b.update(new=None)],
)  # fmt: skip
def test_malformed_consistency_bundle_is_a_format_error(
    change: Callable[[dict[str, Any]], object],
) -> None:
    bundle = ACME.consistency(3, 9)
    change(bundle)
    with pytest.raises(FormatError):
        verify_bundle(bundle, KEYRING)
