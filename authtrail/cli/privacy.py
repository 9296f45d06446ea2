"""``authtrail erase`` and ``authtrail hash``: a data subject's erasure, a value's pseudonym.

docs/PRIVACY.md explains both; the work is :mod:`authtrail.privacy`'s.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from authtrail.settings import Settings

EXIT_OK = 0


def add_privacy_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``erase`` and ``hash`` to ``commands`` (subparsers)."""
    erase = commands.add_parser(
        "erase",
        help="destroy a data subject's key: their sealed fields become unreadable everywhere",
        description="Destroy the key that seals SUBJECT's personal fields in TENANT's events "
        "(key store DATA_DIR/privacy), then send a chained, signed erasure record naming the "
        "destroyed key ids and the subject's pseudonym to the events topic. Hashes, chains, "
        "checkpoints and proofs stay verifiable. Idempotent: a second run changes nothing "
        "and re-sends the same record. See docs/PRIVACY.md.",
    )
    erase.add_argument("--tenant", required=True, help="the tenant id")
    erase.add_argument(
        "--subject", required=True,
        help="id:<user_id>, name:<user_name> (events without user_id) or unattributed",
    )  # fmt: skip
    erase.add_argument("--json", action="store_true", help="machine-readable output")
    erase.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (AUTHTRAIL_BOOTSTRAP_SERVERS)"
    )
    erase.set_defaults(handler=erase_command)
    hashed = commands.add_parser(
        "hash",
        help="the pseudonym a tenant's events carry for a value",
        description="Print HMAC-SHA-256 of VALUE under TENANT's pseudonym key, as stored in "
        "attributes['pseudonym.<field>'] (e.g. to count one user's failures without "
        "reading names). Needs the key store DATA_DIR/privacy.",
    )
    hashed.add_argument("--tenant", required=True, help="the tenant id")
    hashed.add_argument("value", metavar="VALUE", help="a user name, IP address, …")
    hashed.set_defaults(handler=hash_command)


def erase_command(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.events_topic import resolve_broker
    from authtrail.privacy import check_subject, erase_subject

    check_subject(args.subject)  # before looking for a broker: a typo is a usage error
    outcome = erase_subject(resolve_broker(settings, "erase"), args.tenant, args.subject)
    erasure = outcome.erasure
    if args.json:
        report = {
            "tenant_id": args.tenant, "destroyed": list(erasure.destroyed),
            "already_erased": list(erasure.already), "erased_at_micros": erasure.erased_at,
            "record_event_id": outcome.record["event_id"] if outcome.record else None,
            "clear_text_in_topics": _clear_text_in_topics(settings),
        }  # fmt: skip
        print(json.dumps(report))
        return EXIT_OK
    elif erasure.destroyed:
        print(f"erased {args.subject} of tenant {args.tenant}: destroyed key "
              f"{', '.join(erasure.destroyed)}; erasure record sent")  # fmt: skip
    elif erasure.already:
        when = datetime.fromtimestamp(erasure.erased_at / 1e6, UTC).isoformat(timespec="seconds")
        print(f"{args.subject} of tenant {args.tenant} was already erased at {when} (keys "
              f"{', '.join(erasure.already)}); erasure record re-sent")  # fmt: skip
    else:
        print(f"{args.subject} of tenant {args.tenant} has no key: none of their fields was "
              "sealed here (wrong subject, tenant or --data-dir?); nothing to erase")  # fmt: skip
        return EXIT_OK
    print(_clear_text_line(settings))
    return EXIT_OK


def _clear_text_in_topics(settings: Settings) -> dict[str, Any]:
    """Where the subject's input stays in clear text, and for how long at most."""
    from authtrail.topics import clear_text_bound_ms

    return {
        "topics": [settings.events_topic, settings.dead_letter_topic],
        "retention_ms": settings.topic_retention_ms or None,
        "at_most_ms": clear_text_bound_ms(settings.topic_retention_ms),
    }


def _clear_text_line(settings: Settings) -> str:
    where = _clear_text_in_topics(settings)
    topics = " and ".join(where["topics"])
    if where["at_most_ms"] is None:
        how_long = "until the Kafka cluster's own retention deletes it (topic_retention_ms = 0)"
    else:
        how_long = (f"for up to {_days(where['at_most_ms'])} after it was sent (topic_retention_ms "
                    f"{_days(where['retention_ms'])}, plus up to a day until its segment closes; "
                    "for topics authtrail created with that setting)")  # fmt: skip
    return (f"note: their input as sent remains in clear text in {topics} {how_long}, and in "
            "`rejected` rows of input refused before sealing (docs/PRIVACY.md)")  # fmt: skip


def _days(milliseconds: int) -> str:
    amount, unit = milliseconds / 86_400_000, "day"
    if amount < 1:
        amount, unit = milliseconds / 3_600_000, "hour"
    return f"{amount:g} {unit}{'' if amount == 1 else 's'}"


def hash_command(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.privacy import hash_value

    print(hash_value(settings, args.tenant, args.value))
    return EXIT_OK
