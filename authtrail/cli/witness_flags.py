"""``--witness-key FILE`` / ``--witnesses N``: the cosignature policy of a verifying command.

Shared by ``authtrail verify`` and ``authtrail verify-proof``. Imports only the key-file
reader and the pure cosignature core, so ``verify-proof`` stays free of adapters.
Flags fall back to ``AUTHTRAIL_TRUSTED_WITNESS_KEYS`` (comma-separated files) and
``AUTHTRAIL_WITNESSES``; ``AUTHTRAIL_WITNESS_KEY`` is the witness's own signer key
(``authtrail witness``), not a trusted one.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.stream.core.cosignature import WitnessPolicy

WITNESS_KEYS_VARIABLE = "AUTHTRAIL_TRUSTED_WITNESS_KEYS"
WITNESSES_VARIABLE = "AUTHTRAIL_WITNESSES"


def add_witness_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--witness-key`` and ``--witnesses`` to ``parser``; ``what`` names the notes."""
    parser.add_argument(
        "--witness-key", dest="witness_keys", action="append", type=Path, metavar="FILE",
        help="trusted witness verifier keys (C2SP vkeys, one per line, '#' comments; "
        f"repeatable; {WITNESS_KEYS_VARIABLE})",
    )  # fmt: skip
    parser.add_argument(
        "--witnesses", type=int, metavar="N",
        help=f"{what} must carry valid cosignatures of at least N distinct trusted "
        f"witnesses (default 1 with --witness-key, else 0; {WITNESSES_VARIABLE})",
    )  # fmt: skip


def witness_policy(args: argparse.Namespace) -> WitnessPolicy | None:
    """The policy the flags (or environment) ask for; ``None`` when no witness key is given.

    Raises :class:`ConfigurationError` for ``N`` below 0, above the number of trusted
    witnesses, or above 0 without witness keys; and for unreadable or malformed key files.
    """
    from authtrail.keys import load_witness_keys

    paths = list(args.witness_keys or ())
    if not paths:
        paths = [Path(p) for p in os.environ.get(WITNESS_KEYS_VARIABLE, "").split(",") if p.strip()]
    required = args.witnesses
    if required is None and os.environ.get(WITNESSES_VARIABLE, "").strip():
        text = os.environ[WITNESSES_VARIABLE].strip()
        if not text.isdigit():
            raise ConfigurationError(f"{WITNESSES_VARIABLE}: {text!r} is not a number")
        required = int(text)
    if required is not None and required < 0:
        raise ConfigurationError(f"--witnesses {required}: must be 0 or more")
    if not paths:
        if required:
            raise ConfigurationError(
                f"--witnesses {required} needs the witnesses' keys: --witness-key FILE"
            )
        return None
    keys = load_witness_keys(paths)
    try:
        return WitnessPolicy(keys, 1 if required is None else required)
    except InvalidArgumentError as exc:
        raise ConfigurationError(f"--witnesses: {exc}") from None
