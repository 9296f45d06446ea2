"""The signed tenant directory: which tenants a log has, and each one's newest checkpoint.

Signed checkpoints prove what a tenant's log held, but not that the tenant exists: a
store with a whole tenant deleted, its checkpoints with it, looks intact. The sink
therefore also publishes, outside the store, a directory of every tenant it has
published checkpoints for (docs/DEPLOYMENT.md, "Publishing checkpoints outside the
store"). Its body, every line ending in ``\\n``::

    authtrail-tenants-v1
    <log_origin>                          checkpoint origins are "<log_origin>/<tenant_id>"
    <time micros>                         when the directory was built (informational)
    <count>                               number of tenant lines that follow
    <tenant_id> <size> <base64 root>      one per tenant, ascending bytewise tenant_id

``size`` and ``root`` are those of the tenant's newest published checkpoint. Numbers are
ASCII decimal without sign or leading zeros (``0`` is ``0``), at most 2^64-1; roots are
32 bytes in canonical standard base64 with padding; so each directory has exactly one
spelling. The first line holds no ``/`` while every checkpoint origin does, and a
checkpoint's second line is a number while here it is an origin: a directory can never
be read as a checkpoint, nor a checkpoint as a directory.

The body is then signed as a C2SP signed note (:mod:`authtrail.stream.core.note`).

Pure: no I/O. Malformed bodies raise :class:`TenantDirectoryError`; notes without a
trusted signature raise :class:`SignatureError` (both are :class:`CheckpointError`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from authtrail.errors import InvalidArgumentError, TenantDirectoryError
from authtrail.stream.core.note import Keyring, Signer, open_note, sign_note
from authtrail.stream.core.rotation import check_retirement

DIRECTORY_MAGIC = "authtrail-tenants-v1"
HASH_SIZE = 32
MAX_NUMBER = 2**64 - 1  # as checkpoints: every number fits a ClickHouse UInt64

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_HEADER_LINES = 4


def is_valid_tenant_id(tenant_id: str) -> bool:
    """Return whether ``tenant_id`` matches ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.

    Such an id is also a safe file name: no ``/``, no leading ``.``, no NUL.
    """
    return _TENANT_ID.fullmatch(tenant_id) is not None


def _is_valid_log_origin(log_origin: str) -> bool:
    # As checkpoint origins (stream/core/checkpoint.py): no space, '+' or control character,
    # so the line splits cleanly and "<log_origin>/<tenant_id>" is a checkpoint origin.
    return (
        bool(log_origin)
        and "+" not in log_origin
        and not any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in log_origin)
    )


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


@dataclass(frozen=True)
class TenantDirectory:
    """Every tenant of ``log_origin`` with its newest checkpoint's ``(size, root)``.

    Requires (else :class:`InvalidArgumentError`): a log origin without space, ``+`` or
    control character; ``0 <= time_micros <= 2^64-1``; tenant ids matching
    :func:`is_valid_tenant_id`; ``1 <= size <= 2^64-1`` (a tenant is listed once it
    has a checkpoint); 32-byte roots. ``entries`` is copied into a read-only mapping in
    ascending tenant order, so equal directories compare equal.
    """

    log_origin: str
    time_micros: int
    entries: Mapping[str, tuple[int, bytes]]

    def __post_init__(self) -> None:
        if not _is_valid_log_origin(self.log_origin):
            raise InvalidArgumentError(f"invalid log origin {self.log_origin!r}")
        if not 0 <= self.time_micros <= MAX_NUMBER:
            raise InvalidArgumentError(f"time_micros must be in 0..2^64-1, got {self.time_micros}")
        for tenant_id, (size, root) in self.entries.items():
            if not is_valid_tenant_id(tenant_id):
                raise InvalidArgumentError(f"invalid tenant id {tenant_id!r}")
            if not 1 <= size <= MAX_NUMBER:
                raise InvalidArgumentError(f"tenant {tenant_id!r}: size {size} not in 1..2^64-1")
            if len(root) != HASH_SIZE:
                raise InvalidArgumentError(f"tenant {tenant_id!r}: root must be {HASH_SIZE} bytes")
        # Tenant ids are ASCII, so sorting the strings is sorting their bytes.
        ordered = {tenant_id: self.entries[tenant_id] for tenant_id in sorted(self.entries)}
        object.__setattr__(self, "entries", MappingProxyType(ordered))


def directory_body(directory: TenantDirectory) -> bytes:
    """Return the directory's body (the signed bytes): the lines of the module docstring."""
    lines = [
        DIRECTORY_MAGIC,
        directory.log_origin,
        str(directory.time_micros),
        str(len(directory.entries)),
    ]
    lines += [
        f"{tenant_id} {size} {_b64(root)}" for tenant_id, (size, root) in directory.entries.items()
    ]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def parse_directory(body: bytes) -> TenantDirectory:
    """Parse a directory body (the note text, without blank line and signatures).

    Raises :class:`TenantDirectoryError` naming the line if the body is not UTF-8, does
    not end in a newline, does not start with the ``authtrail-tenants-v1`` line, spells
    a number or root in any but the canonical way, has a count that differs from the
    number of tenant lines, lists tenants out of ascending order or twice, or breaks a
    :class:`TenantDirectory` requirement.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise TenantDirectoryError("tenant directory is not valid UTF-8") from None
    if not text.endswith("\n"):
        raise TenantDirectoryError("tenant directory must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < _HEADER_LINES:
        raise TenantDirectoryError(
            f"tenant directory has {len(lines)} lines, expected at least {_HEADER_LINES}"
        )
    magic, log_origin, time_text, count_text = lines[:_HEADER_LINES]
    if magic != DIRECTORY_MAGIC:
        raise TenantDirectoryError(
            f"line 1 must be {DIRECTORY_MAGIC!r}, got {magic[:40]!r}: not a tenant directory"
        )
    if not _is_valid_log_origin(log_origin):
        raise TenantDirectoryError(f"line 2: invalid log origin {log_origin[:60]!r}")
    time_micros = _number(time_text, "time", line_number=3)
    count = _number(count_text, "count", line_number=4)
    tenant_lines = lines[_HEADER_LINES:]
    if count != len(tenant_lines):
        raise TenantDirectoryError(
            f"line 4: count {count} does not match the {len(tenant_lines)} tenant lines"
        )
    entries: dict[str, tuple[int, bytes]] = {}
    previous = ""
    for line_number, line in enumerate(tenant_lines, _HEADER_LINES + 1):
        parts = line.split(" ")
        if len(parts) != 3:
            raise TenantDirectoryError(
                f"line {line_number} must be '<tenant_id> <size> <root>', got {line[:60]!r}"
            )
        tenant_id, size_text, root_text = parts
        if not is_valid_tenant_id(tenant_id):
            raise TenantDirectoryError(f"line {line_number}: invalid tenant id {tenant_id[:60]!r}")
        if tenant_id <= previous:
            what = "listed twice" if tenant_id == previous else f"listed after {previous!r}"
            raise TenantDirectoryError(f"line {line_number}: tenant {tenant_id!r} {what}")
        previous = tenant_id
        size = _number(size_text, f"tenant {tenant_id!r} size", line_number)
        if size < 1:
            raise TenantDirectoryError(f"line {line_number}: tenant {tenant_id!r} has size 0")
        entries[tenant_id] = (size, _root(root_text, tenant_id, line_number))
    try:
        directory = TenantDirectory(log_origin, time_micros, entries)
    except InvalidArgumentError as exc:
        raise TenantDirectoryError(f"invalid tenant directory: {exc}") from None
    # Canonical spellings make this hold; check anyway, one spelling per value is the point.
    if directory_body(directory) != body:
        raise TenantDirectoryError("tenant directory is not in canonical form")
    return directory


def _number(text: str, what: str, line_number: int) -> int:
    if not _DECIMAL.fullmatch(text) or int(text) > MAX_NUMBER:
        raise TenantDirectoryError(
            f"line {line_number}: {what} {text[:24]!r} is not a canonical decimal in 0..2^64-1"
        )
    return int(text)


def _root(text: str, tenant_id: str, line_number: int) -> bytes:
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TenantDirectoryError(
            f"line {line_number}: tenant {tenant_id!r} root is not standard base64"
        ) from None
    if len(value) != HASH_SIZE or _b64(value) != text:
        raise TenantDirectoryError(
            f"line {line_number}: tenant {tenant_id!r} root is not a canonical base64 "
            f"{HASH_SIZE}-byte hash"
        )
    return value


def sign_directory(directory: TenantDirectory, signer: Signer) -> bytes:
    """Return the signed note of ``directory``, signed by ``signer``."""
    return sign_note(directory_body(directory), signer)


def open_directory(note: bytes, keyring: Keyring, log_origin: str) -> TenantDirectory:
    """Verify a signed tenant directory note against ``keyring`` and return the directory.

    Raises :class:`SignatureError` if no trusted key signed it or a trusted key's
    signature fails, its subclass :class:`~authtrail.stream.core.rotation.RetiredKeyError` if only
    keys retired by its time stamp signed it; :class:`CheckpointError` if the note is
    malformed; :class:`TenantDirectoryError` if the body is malformed (a checkpoint note
    given here fails at line 1) or belongs to another log than ``log_origin``.
    """
    opened = open_note(note, keyring)
    directory = parse_directory(opened.text)
    signers = [keyring[signature.name, signature.key_id] for signature in opened.signatures]
    check_retirement(directory.time_micros, signers)
    if directory.log_origin != log_origin:
        raise TenantDirectoryError(
            f"tenant directory of log {directory.log_origin!r} is not the expected {log_origin!r}"
        )
    return directory
