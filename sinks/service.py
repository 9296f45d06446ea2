"""Build the sink and its ClickHouse backend from settings (adapter wiring only)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from authtrail.atomic_file import replace_file
from authtrail.errors import ConfigurationError
from authtrail.keys import load_signer, load_witness_keys
from authtrail.schemas import (
    CHAINED_BATCH,
    CHAINED_RECORD,
    CHAINED_REJECTION,
    CHECKPOINT,
    CLAIM,
    load_schema,
    previous_versions,
)
from authtrail.schemas.codec import SingleObjectCodec
from authtrail.settings import Settings
from authtrail.sinks.backend import ClickHouseBackend, EmbeddedBackend, ServerBackend
from authtrail.sinks.publication import Publication
from authtrail.sinks.sink import Sink
from authtrail.sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE
from authtrail.witness_client import WitnessSubmitter, parse_cosigning_witness

ENDPOINT_FILE = "clickhouse.endpoint"
_LOG = logging.getLogger(__name__)


def endpoint_path(settings: Settings) -> Path:
    """Where a running ``authtrail up`` announces the HTTP front of its embedded store."""
    return settings.data_dir / ENDPOINT_FILE


def announce_endpoint(settings: Settings, url: str) -> Path:
    """Record ``url``, the broker and this process as the way into a running ``up``.

    ``url`` carries the analyst token, so the file is readable by this user only (see
    :func:`write_private_file`). Raises OSError when it cannot be written.
    """
    path = endpoint_path(settings)
    announced = {"url": url, "bootstrap_servers": settings.bootstrap_servers, "pid": os.getpid()}
    write_private_file(path, json.dumps(announced) + "\n")
    return path


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text``, mode 0600 (a secret may be in it).

    See :func:`replace_file`. Raises OSError.
    """
    replace_file(path, text, 0o600)


def _announced(settings: Settings) -> dict[str, Any] | None:
    try:
        announced = json.loads(endpoint_path(settings).read_text())
        os.kill(int(announced["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return announced if isinstance(announced, dict) else None


def running_endpoint(settings: Settings) -> str | None:
    """The HTTP front URL of a live ``authtrail up`` on this data dir, if there is one."""
    announced = _announced(settings)
    return str(announced["url"]) if announced else None


def running_broker(settings: Settings) -> str | None:
    """The bootstrap servers of a live ``authtrail up`` on this data dir, if there is one."""
    announced = _announced(settings)
    servers = announced.get("bootstrap_servers") if announced else None
    return str(servers) if servers else None


def open_backend(settings: Settings, *, read_only: bool = False) -> ClickHouseBackend:
    """The store: the ClickHouse server at ``settings.clickhouse_url``; else, while
    ``authtrail up`` owns the embedded directory, its HTTP front (as analyst, with the
    token it announced); else embedded chdb.

    One process owns a chdb directory at a time, which is why a second terminal goes
    through the owner's front. That front is read-only for everyone else: asking it for
    a writing backend raises ConfigurationError.
    """
    if settings.clickhouse_url:
        return ServerBackend(settings.clickhouse_url, read_only=read_only)
    running = running_endpoint(settings)
    if running:
        if not read_only:
            raise ConfigurationError(
                f"`authtrail up` owns the store in {settings.data_dir} and serves it "
                "read-only; stop it first, or name a ClickHouse server with --clickhouse-url"
            )
        return ServerBackend(running, read_only=True)
    return EmbeddedBackend(settings.data_dir / "clickhouse", read_only=read_only)


def _codec(name: str) -> SingleObjectCodec:
    """Reads what this and earlier versions of schema ``name`` wrote."""
    return SingleObjectCodec(load_schema(name), previous_versions(name))


def _publication(settings: Settings) -> Publication | None:
    """The publication of ``settings.publication_dir`` (None: not configured).

    Tenant directories are signed with ``publisher_key_path``; when that file does not
    exist, checkpoints are still published and a WARNING says directories are not.
    Raises :class:`ConfigurationError` for an unusable key file or directory.
    """
    if settings.publication_dir is None:
        return None
    signer = None
    key_path = settings.publisher_key_path
    if os.path.lexists(key_path):
        signer = load_signer(key_path)
    else:
        _LOG.warning(
            "publisher key %s not found: publishing checkpoints to %s but no signed tenant "
            "directory (set AUTHTRAIL_PUBLISHER_KEY)", key_path, settings.publication_dir
        )  # fmt: skip
    return Publication(settings.publication_dir, log_origin=settings.log_origin, signer=signer)


def witness_submitter(settings: Settings) -> WitnessSubmitter | None:
    """The submitter to ``settings.cosigning_witnesses`` (None: none configured).

    Each ``URL=KEYFILE``'s file must hold exactly one witness vkey: only that witness's
    valid cosignatures are published. Raises :class:`ConfigurationError` for a malformed
    item, an unreadable key file or one with another number of keys, a URL named twice,
    or witnesses without ``publication_dir``.
    """
    if not settings.cosigning_witnesses:
        return None
    if settings.publication_dir is None:
        raise ConfigurationError(
            "AUTHTRAIL_COSIGNING_WITNESSES needs AUTHTRAIL_PUBLICATION_DIR: cosigned "
            "checkpoints are published there"
        )
    keys = {}
    for item in settings.cosigning_witnesses:
        url, key_file = parse_cosigning_witness(item)
        witness_keys = load_witness_keys([key_file])
        if len(witness_keys) != 1:
            raise ConfigurationError(
                f"cosigning witness {url}: {key_file} holds {len(witness_keys)} keys, not one"
            )
        if url in keys:
            raise ConfigurationError(f"cosigning witness {url} is named twice")
        keys[url] = witness_keys[0]
    return WitnessSubmitter(
        list(keys), keys=keys, timeout=settings.witness_timeout_ms / 1000,
        retry_after=settings.witness_retry_ms / 1000,
    )  # fmt: skip


def build_sink(
    settings: Settings,
    backend: ClickHouseBackend,
    *,
    consumer_config: Mapping[str, Any] | None = None,
) -> Sink:
    """A sink over the topics named in ``settings``. Requires bootstrap servers.

    With ``settings.publication_dir`` it also publishes checkpoints there (see
    :func:`_publication`), cosigned by ``settings.cosigning_witnesses``
    (:func:`witness_submitter`).
    """
    # Rejections reach `rejected` chained, on the chained topic (stream/core/rejection.py); the
    # dead-letter topic is for tools that replay fixed input.
    topics = {EVENTS_TABLE: settings.chained_topic, CHECKPOINTS_TABLE: settings.checkpoints_topic}
    codecs = {EVENTS_TABLE: _codec(CHAINED_RECORD), CHECKPOINTS_TABLE: _codec(CHECKPOINT)}
    return Sink(
        backend,
        publication=_publication(settings),
        witnesses=witness_submitter(settings),
        publication_interval=settings.publication_interval_ms / 1000,
        bootstrap_servers=settings.bootstrap_servers or "",
        topics=topics,
        codecs=codecs,
        claim_codec=_codec(CLAIM),
        rejection_codec=_codec(CHAINED_REJECTION),
        batch_codec=_codec(CHAINED_BATCH),
        group_id=f"{settings.consumer_group}-sink",
        batch_rows=settings.sink_batch_rows,
        batch_seconds=settings.sink_batch_ms / 1000,
        consumer_config=consumer_config,
    )
