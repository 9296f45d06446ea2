"""The shipped Avro schemas: shape rules, and evolution in both directions.

``schema_versions/auth_event_v1.avsc`` is a frozen copy of the first released AuthEvent
schema and must never change; ``auth_event_v2.avsc`` is a hand-written next version (one
new nullable field, one enum symbol appended). Together they prove that a newer reader
reads older data and an older reader reads newer data, and the guard test below keeps
the shipped schema a compatible extension of v1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from authtrail.errors import InvalidArgumentError, UnknownSchemaError
from authtrail.schemas import (
    AUTH_EVENT,
    CHAINED_RECORD,
    CHECKPOINT,
    DEAD_LETTER,
    SCHEMA_NAMES,
    load_schema,
)
from authtrail.schemas.codec import SingleObjectCodec, parsing_canonical_form, schema_fingerprint
from authtrail.stream.core.canonical import canonical_leaf

VERSIONS = Path(__file__).parent / "schema_versions"
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
REQUIRED_EVENT_FIELDS = {"event_id", "tenant_id", "event_type", "occurred_at"}
EVENT_TYPES = [
    "LOGIN",
    "LOGIN_FAILED",
    "LOGOUT",
    "SESSION_EXPIRED",
    "ACCOUNT_LOCKED",
    "ACCOUNT_UNLOCKED",
    "PASSWORD_CHANGED",
    "PASSWORD_RESET_REQUESTED",
    "PASSWORD_RESET_COMPLETED",
    "MFA_CHALLENGE",
    "MFA_SUCCESS",
    "MFA_FAILURE",
    "TOKEN_ISSUED",
    "TOKEN_REFRESHED",
    "TOKEN_REVOKED",
    "BRUTE_FORCE_SUSPECTED",
    "OTHER",
]


def version(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VERSIONS / f"{name}.avsc").read_text())
    return loaded


def fields_of(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {field["name"]: field for field in schema["fields"]}


def walk(node: Any) -> list[Any]:
    """Every dict, list and string node of a schema, depth first."""
    found = [node]
    if isinstance(node, list):
        for item in node:
            found += walk(item)
    elif isinstance(node, dict):
        for key in ("type", "items", "values"):
            if key in node:
                found += walk(node[key])
        for field in node.get("fields", ()):
            found += walk(field["type"])
    return found


def v1_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "keycloak:5ee1b9ee",
        "tenant_id": "acme",
        "event_type": "PASSWORD_CHANGED",
        "outcome": "SUCCESS",
        "occurred_at": 1_628_091_019_154_000,
        "source": "keycloak",
        "source_event_type": "UPDATE_PASSWORD",
        "user_id": "db85bef5",
        "user_name": "johnny",
        "client_ip": "172.30.0.1",
        "attributes": {"details.remember_me": "false"},
    }
    event.update(changes)
    return event


# --- shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_schema_loads_and_has_a_stable_fingerprint(name: str) -> None:
    schema = load_schema(name)
    assert schema["namespace"] == "io.authtrail"
    assert len(schema_fingerprint(schema)) == 8
    assert schema_fingerprint(schema) == schema_fingerprint(load_schema(name))


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_field_names_are_snake_case_and_no_floats_anywhere(name: str) -> None:
    for node in walk(load_schema(name)):
        if isinstance(node, dict):
            for field in node.get("fields", ()):
                assert FIELD_NAME.match(field["name"]), field["name"]
        assert node not in ("float", "double"), f"{name} has a floating-point type"


def test_auth_event_is_flat_with_only_leaf_encodable_types() -> None:
    # docs/INTEGRITY.md section 2: string, enum, long/int, map<string,string>; nothing else.
    allowed = {"string", "long", "int", "enum", "map"}
    for field in load_schema(AUTH_EVENT)["fields"]:
        field_type = field["type"]
        branches = field_type if isinstance(field_type, list) else [field_type]
        for branch in branches:
            kind = branch if isinstance(branch, str) else branch["type"]
            if kind == "null":
                continue
            assert kind in allowed, f"{field['name']} has type {kind}"
            if kind == "map":
                assert branch["values"] == "string"


def test_auth_event_required_and_optional_fields() -> None:
    fields = fields_of(load_schema(AUTH_EVENT))
    required = {name for name, field in fields.items() if "default" not in field}
    assert required == REQUIRED_EVENT_FIELDS
    for name, field in fields.items():
        assert field.get("doc"), f"{name} needs a doc"
        if name in required or name in ("outcome", "attributes"):
            continue
        assert field["type"][0] == "null" and field["default"] is None, name
    assert fields["outcome"]["default"] == "UNKNOWN"
    assert fields["attributes"]["default"] == {}
    assert fields["occurred_at"]["type"] == {"type": "long", "logicalType": "timestamp-micros"}


def test_enums_carry_defaults_for_symbols_a_reader_does_not_know() -> None:
    fields = fields_of(load_schema(AUTH_EVENT))
    event_type = fields["event_type"]["type"]
    assert event_type["symbols"][: len(EVENT_TYPES)] == EVENT_TYPES
    assert event_type["default"] == "OTHER"
    assert fields["outcome"]["type"]["symbols"] == ["SUCCESS", "FAILURE", "UNKNOWN"]
    assert fields["outcome"]["type"]["default"] == "UNKNOWN"


def test_chained_record_embeds_exactly_the_auth_event_schema() -> None:
    chained = load_schema(CHAINED_RECORD)
    fields = fields_of(chained)
    assert parsing_canonical_form(fields["event"]["type"]) == parsing_canonical_form(
        load_schema(AUTH_EVENT)
    )
    assert fields["seq"]["type"] == "long"
    # Sha256 is defined once and referred to by name after that, as the spec requires.
    assert fields["prev_hash"]["type"] == {
        "type": "fixed",
        "name": "Sha256",
        "size": 32,
        "doc": "A SHA-256 digest.",
    }
    assert fields["hash"]["type"] == fields["leaf_hash"]["type"] == "io.authtrail.Sha256"
    assert parsing_canonical_form(chained).count('"type":"fixed"') == 1
    assert parsing_canonical_form(chained).count('"name":"io.authtrail.EventType"') == 1


def test_checkpoint_and_dead_letter_fields() -> None:
    checkpoint = fields_of(load_schema(CHECKPOINT))
    assert {
        "tenant_id",
        "size",
        "note",
        "root",
        "batch_first_seq",
        "batch_last_seq",
        "batch_root",
        "time_micros",
    } <= set(checkpoint)
    dead_letter = fields_of(load_schema(DEAD_LETTER))
    assert {
        "original",
        "reason",
        "error_kind",
        "source_topic",
        "source_partition",
        "source_offset",
        "rejected_at",
    } <= set(dead_letter)
    assert dead_letter["original"]["type"] == "bytes"


def test_load_schema_returns_a_fresh_copy_and_refuses_unknown_names() -> None:
    schema = load_schema(AUTH_EVENT)
    schema["fields"].clear()
    assert load_schema(AUTH_EVENT)["fields"]
    with pytest.raises(InvalidArgumentError, match="unknown schema 'nope'"):
        load_schema("nope")


# --- evolution -----------------------------------------------------------------------


def test_shipped_schema_is_a_compatible_extension_of_frozen_v1() -> None:
    """The rules that make both evolution directions work, checked field by field."""
    v1 = fields_of(version("auth_event_v1"))
    current = fields_of(load_schema(AUTH_EVENT))
    for name, old in v1.items():
        assert name in current, f"field {name} was removed"
        new_type, old_type = current[name]["type"], old["type"]
        if isinstance(old_type, dict) and old_type["type"] == "enum":
            symbols = new_type["symbols"]
            assert symbols[: len(old_type["symbols"])] == old_type["symbols"], "append only"
            assert new_type["default"] == old_type["default"]
        else:
            assert parsing_canonical_form(new_type) == parsing_canonical_form(old_type), name
    for name in current.keys() - v1.keys():
        assert "default" in current[name], f"new field {name} needs a default"


def test_newer_reader_reads_older_data() -> None:
    v1_writer = SingleObjectCodec(version("auth_event_v1"))
    v2_reader = SingleObjectCodec(
        version("auth_event_v2"), writer_schemas=[version("auth_event_v1")]
    )
    event = v1_event()
    decoded = v2_reader.decode(v1_writer.encode(event))
    assert decoded["device_id"] is None  # the new field's default
    assert {name: decoded[name] for name in event} == event
    # The canonical leaf ignores null fields, so the v1 event hashes the same either way.
    assert canonical_leaf(decoded) == canonical_leaf(v1_writer.decode(v1_writer.encode(event)))


def test_older_reader_reads_newer_data_and_falls_back_to_the_enum_default() -> None:
    v2_writer = SingleObjectCodec(version("auth_event_v2"))
    v1_reader = SingleObjectCodec(
        version("auth_event_v1"), writer_schemas=[version("auth_event_v2")]
    )
    newer = v1_event(event_type="ACCOUNT_CREATED", device_id="laptop-7", outcome="SUCCESS")
    decoded = v1_reader.decode(v2_writer.encode(newer))
    assert decoded["event_type"] == "OTHER"  # symbol unknown to v1: the enum default
    assert "device_id" not in decoded  # field unknown to v1: skipped
    assert decoded["user_name"] == "johnny" and decoded["outcome"] == "SUCCESS"
    # A symbol v1 does know survives the trip unchanged.
    known = v1_reader.decode(v2_writer.encode(v1_event(event_type="LOGIN_FAILED")))
    assert known["event_type"] == "LOGIN_FAILED"


def test_a_reader_that_was_not_told_about_a_version_rejects_it_by_fingerprint() -> None:
    v2 = version("auth_event_v2")
    v1_only = SingleObjectCodec(version("auth_event_v1"))
    fingerprint = schema_fingerprint(v2).hex()
    with pytest.raises(UnknownSchemaError, match=f"unknown schema fingerprint {fingerprint}"):
        v1_only.decode(SingleObjectCodec(v2).encode(v1_event()))


def test_shipped_reader_reads_frozen_v1_data() -> None:
    v1 = version("auth_event_v1")
    shipped = SingleObjectCodec(load_schema(AUTH_EVENT), writer_schemas=[v1])
    event = v1_event(event_type="BRUTE_FORCE_SUSPECTED")
    assert shipped.decode(SingleObjectCodec(v1).encode(event))["event_type"] == (
        "BRUTE_FORCE_SUSPECTED"
    )


def test_docs_and_defaults_do_not_change_the_fingerprint_but_types_do() -> None:
    v1 = version("auth_event_v1")
    reworded = json.loads(json.dumps(v1).replace("One authentication event", "An auth event"))
    assert schema_fingerprint(reworded) == schema_fingerprint(v1)
    assert schema_fingerprint(version("auth_event_v2")) != schema_fingerprint(v1)


@pytest.mark.parametrize(
    ("name", "version", "missing", "default"),
    [
        ("chained_record", 0, "epoch", 0),  # v1: before writer epochs
        ("checkpoint", 0, "epoch", 0),
        ("chained_record", 1, "source_index", None),  # v2: before envelopes
        ("dead_letter", 0, "source_index", None),
    ],
)
def test_records_written_before_a_schema_change_still_decode(
    name: str, version: int, missing: str, default: object
) -> None:
    """Records written by an earlier schema version (without ``missing``) decode with
    today's reader, the new field taking its default."""
    from authtrail.schemas import load_schema, previous_versions
    from authtrail.schemas.codec import SingleObjectCodec

    old = previous_versions(name)[version]
    assert missing not in {field["name"] for field in old["fields"]}
    current = load_schema(name)
    record = {field["name"]: _sample(field["type"]) for field in old["fields"]}
    written = SingleObjectCodec(old).encode(record)
    decoded = SingleObjectCodec(current, writer_schemas=previous_versions(name)).decode(written)
    assert decoded[missing] == default
    assert {k: decoded[k] for k in record} == record


def test_a_rejection_chained_before_envelopes_decodes_without_an_index() -> None:
    from authtrail.schemas import CHAINED_REJECTION, load_schema, previous_versions
    from authtrail.schemas.codec import SingleObjectCodec

    (old,) = previous_versions(CHAINED_REJECTION)
    record = {field["name"]: _sample(field["type"]) for field in old["fields"]}
    written = SingleObjectCodec(old).encode(record)
    codec = SingleObjectCodec(load_schema(CHAINED_REJECTION), previous_versions(CHAINED_REJECTION))
    assert written[2:10] != codec.reader_fingerprint
    assert written[2:10] in codec.known_fingerprints  # what recovery and the sink test
    decoded = codec.decode(written)
    assert decoded["rejection"]["source_index"] is None
    assert decoded["rejection"] == {**record["rejection"], "source_index": None}


def _sample(field_type):
    if isinstance(field_type, dict) and field_type.get("type") == "fixed":
        return bytes(field_type["size"])
    if isinstance(field_type, dict) and field_type.get("type") == "record":
        return {f["name"]: _sample(f["type"]) for f in field_type["fields"]}
    if isinstance(field_type, dict) and field_type.get("type") == "enum":
        return field_type["symbols"][0]
    if isinstance(field_type, dict) and field_type.get("type") == "map":
        return {}
    if isinstance(field_type, dict):
        return _sample(field_type["type"])
    if isinstance(field_type, list):
        return None
    if isinstance(field_type, str) and field_type.startswith("io.authtrail."):
        return bytes(32)  # the named Sha256 fixed
    return {"string": "x", "long": 1_700_000_000_000_000, "int": 1, "bytes": b"x"}[field_type]
