"""``authtrail prove`` and ``authtrail verify-proof``: proof bundles out of the store, and
their offline check by anyone holding the log's verifier key (docs/INTEGRITY.md, Proof bundles).

``verify-proof`` imports only the pure integrity core and the key-file reader: no
ClickHouse, Arrow or Kafka client (tests/unit/test_prove_cli.py runs it in a fresh
interpreter and checks), so an outsider can run it anywhere. ``prove`` reads the store.

Exit codes as everywhere: 0 ok; 1 the bundle does not prove its claim (or the store is
too damaged to build one); 2 usage, unreadable or malformed bundle, bad keys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from authtrail.cli.commands import EXIT_DAMAGE, EXIT_OK, EXIT_USAGE
from authtrail.cli.witness_flags import add_witness_flags, witness_policy
from authtrail.errors import ConfigurationError, FormatError, VerificationError
from authtrail.settings import ENV_PREFIX, Settings

_MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # an event with huge attributes, never a whole log


def add_proof_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``prove`` and ``verify-proof`` subcommands to ``commands`` (subparsers)."""
    prove = commands.add_parser(
        "prove",
        help="write a proof bundle: one event's inclusion, or two checkpoints' consistency",
        description="Write a JSON proof bundle (docs/INTEGRITY.md, Proof bundles) that anyone "
        "can check offline with `authtrail verify-proof` and the verifier key. Forms: "
        "`prove EVENT_ID [--tenant T]`, `prove --tenant T --seq N`, "
        "`prove --consistency --tenant T OLD NEW`, `prove --tiles DIR (--seq N | EVENT_ID)`. "
        "An inclusion proof leads to the newest stored checkpoint covering the event (or the "
        "one of --tree-size); a consistency proof joins the stored checkpoints of sizes OLD "
        "and NEW. With --tiles, the proof is read from a directory `authtrail export-tiles` "
        "wrote, with no store, and leads to that directory's checkpoint. Needs no key.",
    )
    prove.add_argument("targets", nargs="*", metavar="EVENT_ID | OLD NEW")
    prove.add_argument(
        "--tenant",
        help="tenant of the event (needed with --seq, --consistency; with --tiles, must be "
        "the directory's tenant)",
    )
    prove.add_argument(
        "--seq", type=int, help="prove the record of this seq of --tenant (or of --tiles DIR)"
    )
    prove.add_argument(
        "--tree-size", type=int, metavar="N",
        help="prove against the stored checkpoint of size N instead of the newest",
    )  # fmt: skip
    prove.add_argument(
        "--consistency", action="store_true", help="prove checkpoint OLD is a prefix of NEW"
    )
    prove.add_argument(
        "--published", type=Path, metavar="DIR",
        help="take the checkpoint from this publication (with its witnesses' cosignatures; "
        "AUTHTRAIL_PUBLICATION_DIR's layout): an inclusion proof then leads to the newest "
        "published checkpoint, which must be the stored one",
    )  # fmt: skip
    prove.add_argument(
        "--tiles", type=Path, metavar="DIR",
        help="prove from this static tlog-tiles directory (written by `authtrail export-tiles`) "
        "instead of the store: the proof leads to DIR/checkpoint; the bundle has no chain link",
    )  # fmt: skip
    prove.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    prove.add_argument(
        "--clickhouse-url", help="http://user:pass@host:8123/db (AUTHTRAIL_CLICKHOUSE_URL)"
    )
    prove.set_defaults(handler=run_prove)

    verify_proof = commands.add_parser(
        "verify-proof",
        help="check a proof bundle offline with the log's verifier key",
        description="Check a bundle written by `authtrail prove`: the event hashes to its "
        "leaf, the Merkle proof leads to the root of a checkpoint signed by a trusted key "
        "(or the new checkpoint extends the old one). With --witness-key, the (new) "
        "checkpoint must also carry N witness cosignatures. Reads no store and no network. "
        "Exit 0 when it proves its claim, 1 when it does not, 2 for a malformed or "
        "unreadable bundle or bad keys.",
    )
    verify_proof.add_argument("bundle", metavar="BUNDLE", help="bundle file ('-': stdin)")
    verify_proof.add_argument(
        "--key", dest="verifier_keys", action="append", type=Path, metavar="FILE",
        help="trusted verifier key file, obtained out of band (repeatable; "
        "AUTHTRAIL_VERIFIER_KEYS)",
    )  # fmt: skip
    verify_proof.add_argument(
        "--log-origin", metavar="ORIGIN",
        help="require the bundle to be of this log (AUTHTRAIL_LOG_ORIGIN); default: any "
        "log the trusted keys sign",
    )  # fmt: skip
    add_witness_flags(verify_proof, "the bundle's checkpoint (a consistency bundle's new one)")
    verify_proof.add_argument("--json", action="store_true", help="machine-readable output")
    verify_proof.set_defaults(handler=run_verify_proof)


def run_prove(args: argparse.Namespace, settings: Settings) -> int:
    mode = _prove_mode(args)
    if args.tiles is not None:  # no store: nothing of ClickHouse is imported
        return _prove_from_tiles(args, mode)
    from authtrail.sinks.proofs import find_event, prove_consistency, prove_inclusion
    from authtrail.sinks.service import open_backend
    from authtrail.stream.core.bundle import bundle_json

    backend = open_backend(settings, read_only=True)
    try:
        if mode == "consistency":
            old_size, new_size = (_size(text) for text in args.targets)
            bundle = prove_consistency(
                backend, settings.log_origin, args.tenant, old_size, new_size
            )
            if args.published is not None:
                for side, size in (("old", old_size), ("new", new_size)):
                    bundle[side] = _published_note(args.published, args.tenant, size, bundle[side])
            summary = f"tenant {args.tenant!r}: consistency from size {old_size} to {new_size}"
        else:
            tenant_id, seq = (
                (args.tenant, args.seq)
                if mode == "seq"
                else find_event(backend, args.targets[0], args.tenant)
            )
            tree_size = args.tree_size
            if args.published is not None and tree_size is None:
                tree_size = _newest_published(args.published, tenant_id, seq)
            bundle = prove_inclusion(
                backend, settings.log_origin, tenant_id, seq, tree_size=tree_size
            )
            if args.published is not None:
                bundle["checkpoint"] = _published_note(
                    args.published, tenant_id, bundle["tree_size"], bundle["checkpoint"]
                )
            summary = (
                f"tenant {tenant_id!r} seq {seq} (event {bundle['event'].get('event_id')!r}): "
                f"inclusion in the tree of size {bundle['tree_size']}"
            )
    finally:
        backend.close()
    return _write_bundle(args, bundle_json(bundle), summary)


def _prove_from_tiles(args: argparse.Namespace, mode: str) -> int:
    from authtrail.stream.core.bundle import bundle_json
    from authtrail.tile_proofs import prove_from_tiles

    if mode == "consistency" or args.tree_size is not None or args.published is not None:
        raise ConfigurationError(
            "prove --tiles DIR proves one record's inclusion in DIR/checkpoint's tree: "
            "no --consistency, --tree-size or --published"
        )
    bundle = prove_from_tiles(
        args.tiles, args.seq, event_id=args.targets[0] if mode == "event" else None,
        tenant_id=args.tenant,
    )  # fmt: skip
    summary = (
        f"tenant {bundle['tenant_id']!r} seq {bundle['seq']} (event "
        f"{bundle['event'].get('event_id')!r}): inclusion in the tree of size "
        f"{bundle['tree_size']}, from {args.tiles}"
    )
    return _write_bundle(args, bundle_json(bundle), summary)


def _write_bundle(args: argparse.Namespace, data: bytes, summary: str) -> int:
    if args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        try:
            args.out.write_bytes(data)
        except OSError as exc:
            raise ConfigurationError(f"cannot write {args.out}: {exc.strerror}") from None
    where = f"; written to {args.out}" if args.out else ""
    print(f"{summary}{where}", file=sys.stderr)
    return EXIT_OK


def _newest_published(directory: Path, tenant_id: str, seq: int) -> int:
    """The newest published checkpoint size of ``tenant_id``; it must cover ``seq``."""
    from authtrail.sinks.publication_files import published_sizes

    sizes = published_sizes(directory).get(tenant_id, [])
    if not sizes or sizes[-1] < seq:
        newest = f"only up to size {sizes[-1]}" if sizes else "no checkpoint"
        raise ConfigurationError(
            f"{directory} holds {newest} of tenant {tenant_id!r}, none covering seq {seq} yet"
        )
    return sizes[-1]


def _published_note(directory: Path, tenant_id: str, size: int, stored: str) -> str:
    """The published note of ``tenant_id`` at ``size`` with its cosignatures, also those
    published later beside it. It must say what the stored one says: VerificationError if
    it does not (or the publication breaks its layout), ConfigurationError if none is
    published."""
    from authtrail.sinks.publication_files import late_cosignatures, note_body, published_checkpoint
    from authtrail.stream.core.tenant_directory import is_valid_tenant_id

    if not is_valid_tenant_id(tenant_id):
        raise ConfigurationError(f"invalid tenant id {tenant_id!r}")
    note = published_checkpoint(directory, tenant_id, size)
    if note is None:
        raise ConfigurationError(f"{directory} has no checkpoint of size {size} of tenant "
                                 f"{tenant_id!r}")  # fmt: skip
    if note_body(note) != note_body(stored.encode()):
        raise VerificationError(
            f"tenant {tenant_id!r}: the store's checkpoint of size {size} is not the one "
            f"{directory} published; run `authtrail verify --published {directory}`"
        )
    note += b"".join(late_cosignatures(directory, tenant_id, size))  # given after publishing
    try:
        return note.decode()
    except UnicodeDecodeError:
        raise VerificationError(
            f"the published checkpoint of tenant {tenant_id!r} at size {size} is not UTF-8 text"
        ) from None


def _prove_mode(args: argparse.Namespace) -> str:
    if args.consistency:
        if len(args.targets) != 2 or not args.tenant or args.seq is not None:
            raise ConfigurationError("usage: prove --consistency --tenant T OLD NEW")
        return "consistency"
    if args.seq is not None:
        if args.targets or not (args.tenant or args.tiles):
            raise ConfigurationError(
                "usage: prove --tenant T --seq N | prove --tiles DIR --seq N (no EVENT_ID)"
            )
        return "seq"
    if len(args.targets) != 1:
        raise ConfigurationError(
            "usage: prove EVENT_ID [--tenant T] | prove --tenant T --seq N | "
            "prove --consistency --tenant T OLD NEW | prove --tiles DIR (--seq N | EVENT_ID)"
        )
    return "event"


def _size(text: str) -> int:
    if not text.isdigit():
        raise ConfigurationError(f"size {text!r} is not a number")
    return int(text)


def run_verify_proof(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.keys import describe_keys, load_keyring
    from authtrail.stream.core.bundle import InclusionVerdict, load_bundle, verify_bundle

    paths = list(settings.verifier_keys)
    if not paths:
        raise ConfigurationError(
            "verify-proof needs --key FILE: the log's verifier key, obtained out of band "
            "(or AUTHTRAIL_VERIFIER_KEYS)"
        )
    keyring = load_keyring(paths)
    sources = describe_keys(paths)
    log_origin = args.log_origin or os.environ.get(f"{ENV_PREFIX}LOG_ORIGIN") or None
    witnesses = witness_policy(args)
    try:
        verdict = verify_bundle(
            load_bundle(_read(args.bundle)), keyring, log_origin=log_origin, witnesses=witnesses
        )
    except (FormatError, VerificationError) as exc:
        if not args.json:
            raise  # main() prints it and picks the exit code
        failed = isinstance(exc, VerificationError)
        report = {"ok": False, "bundle": args.bundle, "error": type(exc).__name__,
                  "detail": str(exc)}  # fmt: skip
        print(json.dumps(report, indent=2))
        return EXIT_DAMAGE if failed else EXIT_USAGE
    if args.json:
        report = verdict.report() | {"bundle": args.bundle, "trusted_keys": sources}
        print(json.dumps(report, indent=2))
        return EXIT_OK
    if isinstance(verdict, InclusionVerdict):
        checkpoint = verdict.checkpoint
        print(
            f"ok: event {verdict.event_id!r} is seq {verdict.seq} of tenant "
            f"{verdict.tenant_id!r} in the log {checkpoint.origin} of size {checkpoint.size}"
        )
        print(f"  chain link: {'checked' if verdict.chain_checked else 'not in the bundle'}")
        _print_signers("checkpoint", verdict.signed_by, sources)
        _print_cosigners("checkpoint", verdict.cosigned_by, witnesses is not None)
    else:
        print(
            f"ok: the log {verdict.new.origin} at size {verdict.new.size} extends its "
            f"checkpoint of size {verdict.old.size}"
        )
        _print_signers("old checkpoint", verdict.old_signed_by, sources)
        _print_signers("new checkpoint", verdict.new_signed_by, sources)
        _print_cosigners("new checkpoint", verdict.new_cosigned_by, witnesses is not None)
    return EXIT_OK


def _print_signers(what: str, labels: tuple[str, ...], sources: dict[str, str]) -> None:
    for label in labels:
        print(f"  {what} signed by {label} (trusted key from {sources.get(label, '?')})")


def _print_cosigners(what: str, labels: tuple[str, ...], checked: bool) -> None:
    if checked:
        print(f"  {what} cosigned by: {', '.join(labels) or 'no trusted witness'}")


def _read(name: str) -> bytes:
    try:
        if name == "-":
            data = sys.stdin.buffer.read(_MAX_BUNDLE_BYTES + 1)
        else:
            with open(name, "rb") as file:
                data = file.read(_MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read bundle {name}: {exc.strerror}") from None
    if len(data) > _MAX_BUNDLE_BYTES:
        raise FormatError(f"bundle {name} is larger than {_MAX_BUNDLE_BYTES} bytes")
    return data
