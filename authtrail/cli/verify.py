"""``authtrail verify``: which keys and which earlier views to trust, then the verdicts.

The store being verified is the thing an attacker may have edited, so nothing it holds
decides what is trusted: verifier keys come from ``--key`` (the data dir's own ``.pub``
only when none is given, with a warning), and what the store must still contain comes
from outside it — the auditor's state from an earlier run (``--state``) and the
checkpoints published outside the store (``--published``). Witness cosignatures
(``--witness-key``, ``--witnesses N``) are required of the published notes: the publisher
adds them there, the note stored in ClickHouse is the one the worker signed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authtrail.atomic_file import read_bounded
from authtrail.cli.witness_flags import witness_policy
from authtrail.errors import ConfigurationError
from authtrail.settings import Settings, redact_url
from authtrail.stream.core.auditor_state import (
    AuditorState,
    RememberedCheckpoint,
    state_from_json,
    state_to_json,
)
from authtrail.stream.core.checkpoint import Checkpoint
from authtrail.stream.core.cosignature import WitnessPolicy
from authtrail.stream.core.monitor import Anchor
from authtrail.stream.core.note import Keyring

if TYPE_CHECKING:
    from authtrail.sinks.published_view import PublishedView

EXIT_OK, EXIT_DAMAGE = 0, 1
_STATE_MAX_BYTES = 256 * 1024 * 1024
_WITNESSES_NEED_PUBLISHED = (
    "requiring {} witness cosignature(s) needs --published DIR: the publisher adds them to "
    "the published checkpoints, the store holds the notes without them"
)


def _trusted_keys(settings: Settings) -> tuple[Keyring, list[str]]:
    """The keyring, and lines saying which key came from where.

    Without pinned keys the data dir's own ``.pub`` is used, with a warning, once it
    loaded (a missing one is one error line saying to pass ``--key``).
    """
    from authtrail.keys import describe_keys, load_keyring

    paths = list(settings.verifier_keys)
    pinned = bool(paths)
    if not pinned:
        paths = list(settings.verifier_key_paths)
        if not paths[0].exists():
            raise ConfigurationError(
                f"no --key given and no verifier key in the data dir ({paths[0]}): pass the "
                "verifier key you were given with --key FILE"
            )
    keyring = load_keyring(paths)
    if not pinned:
        print(
            f"authtrail: warning: no --key given; trusting {paths[0]} from the data dir being "
            "verified. Whoever can edit the store may have replaced it: pin the key you were "
            "given with --key FILE.",
            file=sys.stderr,
        )
    lines = [f"{label} from {source}" for label, source in describe_keys(paths).items()]
    return keyring, lines


def _read_state(path: Path, keyring: Keyring, log_origin: str) -> AuditorState | None:
    data = read_bounded(path, _STATE_MAX_BYTES, "auditor state")
    if data is None:
        return None
    try:
        return state_from_json(data, keyring, log_origin)
    except ConfigurationError as exc:
        raise ConfigurationError(f"auditor state {path}: {exc}") from None


def _write_state(path: Path, state: AuditorState) -> None:
    """Replace ``path`` atomically: a crash leaves the old state or the new, never half."""
    from authtrail.sinks.service import write_private_file

    try:
        write_private_file(path, state_to_json(state).decode("utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot write auditor state {path}: {exc.strerror}") from None


def _store_description(settings: Settings) -> str:
    from authtrail.sinks.service import endpoint_path, running_endpoint

    if settings.clickhouse_url:
        return f"ClickHouse at {redact_url(settings.clickhouse_url)}"
    if running_endpoint(settings):
        return (
            f"the running `authtrail up` of {settings.data_dir} "
            f"(announced in {endpoint_path(settings)})"
        )
    return f"embedded ClickHouse in {settings.data_dir / 'clickhouse'}"


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.cli.progress import Progress
    from authtrail.sinks.published_view import read_published
    from authtrail.sinks.service import open_backend
    from authtrail.sinks.verify_layout import check_definitions
    from authtrail.sinks.verify_store import UnsignedPolicy, verify_store

    witnesses = witness_policy(args)
    if witnesses is not None and witnesses.required and not args.published:
        raise ConfigurationError(_WITNESSES_NEED_PUBLISHED.format(witnesses.required))
    keyring, key_lines = _trusted_keys(settings)
    anchors: dict[str, list[Anchor]] = {}
    state = _read_state(args.state, keyring, settings.log_origin) if args.state else None
    if state is not None:
        for tenant_id, anchor in state.anchors().items():
            anchors.setdefault(tenant_id, []).append(anchor)
    published: PublishedView | None = None
    if args.published:
        published = read_published(args.published, keyring, settings.log_origin, witnesses)
        for tenant_id, seen in published.anchors.items():
            anchors.setdefault(tenant_id, []).extend(seen)
    store = _store_description(settings)
    backend = open_backend(settings, read_only=True)
    progress = Progress("verifying tenants", enabled=False if args.json else None)
    unsigned = UnsignedPolicy(
        now_micros=time.time_ns() // 1000,
        grace_micros=int((args.unsigned_grace + settings.batch_interval_ms / 1000) * 1e6),
    )
    try:
        store_damage = [damage.__dict__ for damage in check_definitions(backend)]
        results = list(
            verify_store(
                backend, keyring, settings.log_origin, tenant_id=args.tenant,
                progress=progress.update, anchors=anchors, unsigned=unsigned,
            )
        )  # fmt: skip
    finally:
        progress.close()
        backend.close()
    if published is not None:
        store_damage += published.damage
        if state is not None and published.directory_index < state.directory_index:
            store_damage.append({
                "name": str(args.published), "damage": "rolled back",
                "detail": f"the newest tenant directory is number {published.directory_index}, "
                f"the auditor state saw number {state.directory_index}",
            })  # fmt: skip
    damaged = [result for result in results if result.damage]
    if args.state:
        verified = {
            result.tenant_id: RememberedCheckpoint(
                result.signed_size, Checkpoint.parse(_body(result.newest_note)).root,
                result.newest_note, _now_iso(),
            )
            for result in results
            if not result.damage and result.newest_note is not None
        }  # fmt: skip
        base = state or AuditorState(settings.log_origin)
        index = published.directory_index if published is not None else 0
        _write_state(args.state, base.remember(verified, index))
    publication = _publication_report(args.published, published, witnesses)
    exit_code = EXIT_DAMAGE if damaged or store_damage else EXIT_OK
    document: dict[str, Any] = {
        "store": store,
        "trusted_keys": key_lines,
        "tenants": [result.report() for result in results],
        "store_damage": store_damage,
    }
    if publication is not None:
        document["publication"] = publication
    if args.report_json is not None:  # the console's "last verify run" (verify_report.py)
        from authtrail.verify_report import write_report

        write_report(args.report_json, document | {"verified_at": _now_iso(),
                                                   "exit_code": exit_code})  # fmt: skip
    _report(args, document, results)
    return exit_code


def _publication_report(
    directory: Path | None, published: PublishedView | None, witnesses: WitnessPolicy | None
) -> dict[str, Any] | None:
    """What the report says about the publication: per tenant its newest published size
    and the trusted witnesses that cosigned it (``None`` without ``--published``)."""
    if directory is None or published is None:
        return None
    keys = witnesses.keys if witnesses is not None else ()
    return {
        "directory": str(directory),
        "directory_index": published.directory_index,
        "witnesses_required": witnesses.required if witnesses is not None else 0,
        "trusted_witnesses": sorted({key.key_string() for key in keys}),
        "tenants": [
            {"tenant_id": tenant_id, "size": size, "cosigned_by": cosigners}
            for tenant_id, (size, cosigners) in sorted(published.cosigned_by.items())
        ],
    }


def _body(note: bytes) -> bytes:
    body, _, _ = note.rpartition(b"\n\n")
    return body + b"\n"


def _retention(result: Any) -> str:
    """What a signed retention statement did to the tenant's records, if any."""
    if result.pruned_size:
        return (f"; records 1..{result.pruned_size} pruned under a signed retention "
                f"(retained from seq {result.pruned_size + 1})")  # fmt: skip
    if result.retention_cut:
        return f"; retention of records 1..{result.retention_cut} signed, deletion pending"
    return ""


def _report(args: argparse.Namespace, document: dict[str, Any], results: list[Any]) -> None:
    if args.json:
        print(json.dumps(document, indent=2))
        return
    store, key_lines = document["store"], document["trusted_keys"]
    store_damage, publication = document["store_damage"], document.get("publication")
    print(f"store: {store}", file=sys.stderr)
    for line in key_lines:
        print(f"trusted key: {line}", file=sys.stderr)
    if publication is not None and publication["trusted_witnesses"]:
        for vkey in publication["trusted_witnesses"]:
            print(f"trusted witness: {vkey}", file=sys.stderr)
        required = publication["witnesses_required"]
        for entry in publication["tenants"]:
            print(
                f"{entry['tenant_id']}: published size {entry['size']} cosigned by "
                f"{', '.join(entry['cosigned_by']) or 'no trusted witness'} "
                f"({required} required)"
            )
    for damage in store_damage:
        print(f"{damage['name']}: DAMAGED: {damage['damage']}: {damage['detail']}")
    for result in results:
        ranges = ", ".join(signed.describe() for signed in result.signed_ranges)
        verdict = (
            f"DAMAGED at seq {result.seq}: {result.damage}: {result.detail}"
            if result.damage
            else f"ok: {result.records} records, {result.checkpoints} checkpoints, "
            f"signed up to seq {result.signed_size}"
            + (f" by {ranges}" if ranges else "")
            + _retention(result)
        )
        print(f"{result.tenant_id}: {verdict}")
    damaged = sum(1 for result in results if result.damage)
    print(
        f"{len(results)} tenants verified, {damaged} damaged"
        + (f"; {len(store_damage)} damaged definitions or publications" if store_damage else ""),
        file=sys.stderr,
    )
