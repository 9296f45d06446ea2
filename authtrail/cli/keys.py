"""``authtrail keys rotate`` and ``authtrail keys retire``: the key rotation procedure.

docs/INTEGRITY.md ("Key rotation") is the procedure; these commands do its file work and
say what to configure next. They touch only key files and the keyring, never the store.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from authtrail.errors import ConfigurationError
from authtrail.settings import Settings

EXIT_OK = 0


def add_keys_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys rotate`` and ``keys retire`` to ``commands`` (subparsers)."""
    keys = commands.add_parser(
        "keys",
        help="rotate the checkpoint signing key; retire an old one",
        description="Key rotation (docs/INTEGRITY.md, Key rotation): `keys rotate` makes the "
        "key that takes over and adds it to the keyring; restart every worker with the new "
        "key as AUTHTRAIL_SIGNING_KEY and the old as AUTHTRAIL_HANDOVER_KEY: each log is "
        "handed over at once by a checkpoint both sign (idle ones by a record of the "
        "worker's own), then the old private key can go. `keys retire` marks the old key "
        "retired in the keyring: checkpoints stamped from then on need another signer.",
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    rotate = actions.add_parser(
        "rotate",
        help="make the new signing key and add it to the keyring",
        description="Write NAME.key / NAME.pub beside the current signing key "
        "(AUTHTRAIL_SIGNING_KEY, default DATA_DIR/keys/authtrail.key) and add the current "
        "and the new verifier key to the keyring (AUTHTRAIL_KEYRING, default "
        "DATA_DIR/keys/authtrail.keyring). Prints the worker settings for the hand-over.",
    )
    rotate.add_argument("--name", help="the new key's name (default: the old one's, then -2, -3…)")
    rotate.set_defaults(handler=rotate_command)
    retire = actions.add_parser(
        "retire",
        help="mark a key retired in the keyring from a time on",
        description="Mark KEY (NAME+HEX8 key id, as `verify` prints it) retired in the "
        "keyring: it keeps verifying checkpoints stamped before --at, and any stamped at or "
        "after it must also carry another trusted key's signature (`verify` reports "
        "'retired key' otherwise). Run it once every worker signs with the new key.",
    )
    retire.add_argument("key", metavar="KEY", help="e.g. authtrail+1a2b3c4d")
    retire.add_argument("--at", metavar="TIME", help="YYYY-MM-DDTHH:MM:SSZ (UTC; default: now)")
    retire.set_defaults(handler=retire_command)


def rotate_command(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.keys import rotate_signing_key

    if settings.handover_key is not None:
        raise ConfigurationError(
            "a rotation is still running (AUTHTRAIL_HANDOVER_KEY is set): finish it first — "
            "every tenant's newest checkpoint signed by the new key — then unset it"
        )
    current = settings.signing_key_path
    old, new, new_key_path, keyring = rotate_signing_key(current, settings.keyring_path, args.name)
    print(f"new signing key (keep secret, mode 0600): {new_key_path}")
    print(f"keyring with {old.verifier_key().label} and {new.verifier_key().label}: {keyring}")
    print("hand the keyring to auditors (verify --key); then restart every worker with:")
    print(f"  AUTHTRAIL_SIGNING_KEY={_absolute(new_key_path)}")
    print(f"  AUTHTRAIL_HANDOVER_KEY={_absolute(current)}")
    print(f"  AUTHTRAIL_KEYRING={_absolute(keyring)}")
    print(
        "each worker then hands every log it owns over at once (a checkpoint signed by both "
        "keys; idle logs get one record of the worker's own) and signs with the new key "
        f"alone after it; then run: authtrail keys retire {old.verifier_key().label}; once "
        "every worker logged 'handed over' for its logs, unset AUTHTRAIL_HANDOVER_KEY and "
        "destroy the old .key"
    )
    return EXIT_OK


def retire_command(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.keys import retire_key
    from authtrail.stream.core.rotation import format_time, parse_time

    at = parse_time(args.at) if args.at else time.time_ns() // 1000
    marked = retire_key(settings.keyring_path, args.key, at)
    retired = format_time(marked.retired_micros or at)
    print(f"{marked.label} retired from {retired} in {settings.keyring_path}")
    print(
        "checkpoints stamped from then on need another trusted key's signature; hand the "
        "keyring to auditors again. Once `verify` shows every tenant's newest checkpoint "
        "signed by the new key, unset AUTHTRAIL_HANDOVER_KEY and destroy the old .key file."
    )
    return EXIT_OK


def _absolute(path: Path) -> Path:
    return path.resolve()
