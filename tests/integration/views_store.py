"""A small store with known answers, built by the real worker and stored as the sink stores.

:class:`~authtrail.stream.worker.sequencing.SequencerWorker` (admission, sequencer, lockout and
spraying guard, rejection log) runs in-process; its decisions go back into its input, as through
the events topic, and what it publishes on the chained and checkpoints topics becomes
rows through the sink's own conversions (:mod:`authtrail.sinks.rows`). Only Kafka is left out.

The traffic (tenant ``acme`` unless said, 2026-01-01, times from 09:00:00 UTC):

====  ========  =====================================================================
seq   at        event
====  ========  =====================================================================
1     +0 s      LOGIN alice (sso, 192.0.2.10)
2-4   +60..80   LOGIN_FAILED alice (sso, 203.0.113.9): the 3rd locks her until +140 s
5     +100      LOGIN_FAILED alice while locked (not counted)
6     +200      LOGIN bob: the tenant's event time passes +140 s, the lock expires
7-9   +300..320 LOGIN_FAILED bob, carol, dave (vpn, 198.51.100.66): password spraying
10-15 +400..450 tokens: portal issued x2, refreshed, revoked, a failed refresh;
                billing-api issued
16-19 +500..530 MFA_FAILURE erin x2 (totp), MFA_SUCCESS erin, failed MFA_CHALLENGE frank
20    +3700     LOGIN with outcome FAILURE, grace (sshd, 192.0.2.30)
21-23           the worker's decisions: ACCOUNT_LOCKED, ACCOUNT_UNLOCKED, BRUTE_FORCE_SUSPECTED
24-25 +3800..   LOGIN ivan x2, after a clean stop signed everything: an unsigned tail of 2
====  ========  =====================================================================

``globex``: LOGIN heidi (+30 s), LOGIN_FAILED heidi (vpn, 198.51.100.7, +3630 s).
One undecodable input: the rejection log ``authtrail-rejected-0`` holds it.
Batches of 4: acme has 6 checkpoints (size 23), globex 1 (2), the rejection log 1 (1).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from authtrail.keys import load_signer, write_key_pair
from authtrail.schemas import (
    AUTH_EVENT,
    CHAINED_BATCH,
    CHAINED_RECORD,
    CHAINED_REJECTION,
    CHECKPOINT,
    DEAD_LETTER,
)
from authtrail.sinks.embedded import EmbeddedBackend
from authtrail.sinks.rows import (
    CHECKPOINTS_SCHEMA,
    EVENTS_SCHEMA,
    REJECTED_SCHEMA,
    chained_row,
    checkpoint_row,
    rejected_row,
    to_arrow,
)
from authtrail.sinks.tables import create_statements
from authtrail.stream.core.sequencer import Sequencer
from authtrail.stream.detection.guard import Guard
from authtrail.stream.detection.lockout_policy import LockoutPolicy, PolicySet, SprayPolicy
from authtrail.stream.worker.app import codec
from authtrail.stream.worker.chained_batch import chained_records
from authtrail.stream.worker.recovery import Recovery
from authtrail.stream.worker.sequencing import (
    CHAINED,
    CHECKPOINTS,
    EVENTS,
    InputRecord,
    SequencerWorker,
)

START = 1_767_258_000_000_000  # 2026-01-01T09:00:00Z
CHECKPOINT_TIME = 1_767_272_400_000_000  # 2026-01-01T13:00:00Z: the signer's clock
POLICIES = PolicySet(
    lockout=LockoutPolicy(max_login_failures=3),
    spray=SprayPolicy(distinct_users=3),
    allowed_lateness_seconds=0.0,
)
_EVENT_CODEC = codec(AUTH_EVENT)
_REJECTION_CODEC = codec(CHAINED_REJECTION)


def _event(n: int, seconds: int, event_type: str, user: str | None, **fields: Any) -> dict:
    return {
        "event_id": f"ev-{n:02d}",
        "tenant_id": fields.pop("tenant_id", "acme"),
        "event_type": event_type,
        "outcome": fields.pop("outcome", "FAILURE" if event_type == "LOGIN_FAILED" else "SUCCESS"),
        "occurred_at": START + seconds * 1_000_000,
        "user_name": user,
        **fields,
    }


def _failed(n: int, seconds: int, user: str, ip: str, service: str, **fields: Any) -> dict:
    return _event(n, seconds, "LOGIN_FAILED", user, client_ip=ip, service=service,
                  failure_reason="invalid_credentials", **fields)  # fmt: skip


def _token(n: int, seconds: int, event_type: str, user: str, client: str, **fields: Any) -> dict:
    return _event(n, seconds, event_type, user, client_id=client,
                  service=fields.pop("service", "sso"), **fields)  # fmt: skip


def _mfa(n: int, seconds: int, event_type: str, user: str, factor: str, **fields: Any) -> dict:
    return _event(n, seconds, event_type, user, mfa_factor=factor, **fields)


TRAFFIC: list[dict[str, Any] | bytes] = [
    _event(1, 0, "LOGIN", "alice", service="sso", client_ip="192.0.2.10"),
    _event(31, 30, "LOGIN", "heidi", service="sso", client_ip="192.0.2.40", tenant_id="globex"),
    *[_failed(n, 50 + 10 * n, "alice", "203.0.113.9", "sso") for n in (2, 3, 4)],
    _failed(5, 100, "alice", "203.0.113.9", "sso"),
    _event(6, 200, "LOGIN", "bob", service="sso", client_ip="192.0.2.11"),
    _failed(7, 300, "bob", "198.51.100.66", "vpn"),
    _failed(8, 310, "carol", "198.51.100.66", "vpn"),
    _failed(9, 320, "dave", "198.51.100.66", "vpn"),
    _token(10, 400, "TOKEN_ISSUED", "alice", "portal"),
    b"\x00not an avro event",
    _token(11, 410, "TOKEN_ISSUED", "erin", "portal"),
    _token(12, 420, "TOKEN_REFRESHED", "alice", "portal"),
    _token(13, 430, "TOKEN_REVOKED", "alice", "portal"),
    _token(14, 440, "TOKEN_ISSUED", "svc-billing", "billing-api", service="api-gateway"),
    _token(
        15,
        450,
        "TOKEN_REFRESHED",
        "erin",
        "portal",
        outcome="FAILURE",
        failure_reason="invalid_grant",
    ),
    *[
        _mfa(
            n,
            500 + 10 * (n - 16),
            "MFA_FAILURE",
            "erin",
            "totp",
            outcome="FAILURE",
            service="sso",
            client_ip="192.0.2.20",
        )
        for n in (16, 17)
    ],
    _mfa(18, 520, "MFA_SUCCESS", "erin", "totp", service="sso", client_ip="192.0.2.20"),
    _mfa(
        19,
        530,
        "MFA_CHALLENGE",
        "frank",
        "push",
        outcome="FAILURE",
        service="vpn",
        client_ip="192.0.2.21",
    ),
    _event(
        20,
        3700,
        "LOGIN",
        "grace",
        outcome="FAILURE",
        service="sshd",
        client_ip="192.0.2.30",
        failure_reason="invalid_credentials",
    ),
    _failed(32, 3630, "heidi", "198.51.100.7", "vpn", tenant_id="globex"),
]
#: Sent after the clean stop signed every batch: chained, never signed.
TAIL = [_event(n, 3800 + n, "LOGIN", "ivan", service="sso") for n in (21, 22)]


class _Store:
    """The worker's publisher: decisions back into the input, chained records and
    checkpoints into the store (records first, as the sink holds checkpoints back)."""

    def __init__(self, backend: EmbeddedBackend) -> None:
        self.backend = backend
        self.queue: list[bytes] = []
        self.offset = 0  # the next input offset
        self.outputs: list[tuple[str, bytes]] = []
        self.output_offset = 0

    def publish(self, role: str, key: bytes | None, value: bytes, partition: int) -> None:
        if role == EVENTS:
            self.queue.append(value)
        elif role in (CHAINED, CHECKPOINTS):
            self.outputs.append((role, value))

    async def flush(self) -> None:
        rows: dict[str, list[dict[str, Any]]] = {"events": [], "rejected": [], "checkpoints": []}
        for role, value in self.outputs:
            self.output_offset += 1
            if role == CHECKPOINTS:
                record = codec(CHECKPOINT).decode(value)
                rows["checkpoints"].append(checkpoint_row(record, "views", 0, self.output_offset))
            elif value[2:10] == _REJECTION_CODEC.reader_fingerprint:
                record = _REJECTION_CODEC.decode(value)
                rows["rejected"].append(rejected_row(record, "views", 0, self.output_offset))
            else:
                for record in chained_records(value, codec(CHAINED_RECORD), codec(CHAINED_BATCH)):
                    rows["events"].append(chained_row(record, "views", 0, self.output_offset))
        self.outputs = []
        for table, schema in (("rejected", REJECTED_SCHEMA), ("events", EVENTS_SCHEMA),
                              ("checkpoints", CHECKPOINTS_SCHEMA)):  # fmt: skip
            if rows[table]:
                self.backend.insert_arrow(table, to_arrow(rows[table], schema))

    def take_acknowledged(self) -> dict[tuple[str, int], tuple[int, int]]:
        return {}


def build_store(data_dir: Path) -> None:
    """Sequence :data:`TRAFFIC` and :data:`TAIL` into a new store under ``data_dir``."""
    write_key_pair(data_dir / "keys", "authtrail")
    signer = load_signer(data_dir / "keys" / "authtrail.key")
    backend = EmbeddedBackend(data_dir / "clickhouse")
    try:
        for statement in create_statements():
            backend.command(statement)
        store = _Store(backend)
        worker = SequencerWorker(
            new_sequencer=lambda: Sequencer(signer, "authtrail.local", batch_size=4,
                                            batch_interval=86_400,
                                            wall_clock_micros=lambda: CHECKPOINT_TIME),
            recover=lambda sequencer, partition, guard: Recovery(0, epoch=0),
            fetch=lambda partition, start, end: [],
            publisher=store,
            event_codec=_EVENT_CODEC,
            chained_codec=codec(CHAINED_RECORD),
            checkpoint_codec=codec(CHECKPOINT),
            dead_letter_codec=codec(DEAD_LETTER),
            rejection_codec=_REJECTION_CODEC,
            events_topic="authtrail.events",
            new_guard=lambda: Guard(POLICIES),
            batch_codec=codec(CHAINED_BATCH),
        )  # fmt: skip

        def send(items: list[dict[str, Any] | bytes]) -> None:
            store.queue += [i if isinstance(i, bytes) else _EVENT_CODEC.encode(i) for i in items]
            while store.queue:  # one at a time: a decision is appended to what is waiting
                value = store.queue.pop(0)
                record = InputRecord(0, store.offset, b"acme", value)
                store.offset += 1
                asyncio.run(worker.process([record]))

        send(TRAFFIC)
        asyncio.run(worker.close_open_batches())  # a clean stop
        send(list(TAIL))
    finally:
        backend.close()
