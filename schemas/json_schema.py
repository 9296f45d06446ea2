"""JSON Schema (draft 2020-12) of the auth event, generated from ``auth_event.avsc``.

For producers in other languages: an event in JSON, with the Avro schema's field names,
that validates against ``schemas/auth_event.schema.json`` encodes with the Avro schema and
passes the producer SDK's and the worker's checks on its own fields. Run
``python -m authtrail.schemas.json_schema`` to print it, ``--check FILE`` to compare (``make
json-schema`` rewrites the checked-in file; a unit test fails when it is stale).

The Avro → JSON mapping (JSON as a producer writes it, not Avro's JSON encoding: a
nullable field is the value or ``null``, never ``{"string": ...}``):

* ``string`` → string; ``long``/``int`` → integer within the type's range;
  ``timestamp-micros`` → integer, microseconds since the epoch; ``boolean``, ``float``,
  ``double`` → boolean, number;
* ``enum`` → string with ``enum`` of the symbols; ``map`` → object of the value type;
  ``array`` → array; ``["null", T]`` → T or ``null``;
* ``record`` → object, ``additionalProperties: false``, every field without a default is
  ``required``; ``doc`` → ``description``, ``default`` → ``default``.

What Avro cannot say and the pipeline checks is added (:data:`PIPELINE_RULES`, kept equal
to the SDK's and the worker's constants by a unit test): the tenant id pattern, event id
length, the earliest ``occurred_at``, LOGIN_FAILED ⇒ outcome FAILURE, and
``event_type_other`` only with OTHER. The latest ``occurred_at`` (a day after sending)
depends on the clock and cannot be in a schema.

Imports only the standard library and :mod:`schemas`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from authtrail.errors import InvalidArgumentError
from authtrail.schemas import AUTH_EVENT, load_schema

__all__ = ["PIPELINE_RULES", "SCHEMA_ID", "auth_event_json_schema", "avro_to_json_schema"]

SCHEMA_ID = "https://authtrail.invalid/schemas/auth_event.schema.json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_SIMPLE = {"string": "string", "boolean": "boolean", "float": "number", "double": "number"}

# Field constraints the SDK (producers/sdk/producer.py) and admission (stream/worker/admission.py)
# apply.
PIPELINE_RULES: dict[str, dict[str, Any]] = {
    "tenant_id": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
    "event_id": {"minLength": 1, "maxLength": 256, "pattern": "\\S"},
    "occurred_at": {"minimum": 946_684_800_000_000},  # 2000-01-01T00:00:00Z
}
_CROSS_FIELD_RULES: list[dict[str, Any]] = [
    {
        "if": {"properties": {"event_type": {"const": "LOGIN_FAILED"}}},
        "then": {"required": ["outcome"], "properties": {"outcome": {"const": "FAILURE"}}},
    },
    {
        "if": {
            "required": ["event_type_other"],
            "properties": {"event_type_other": {"type": "string"}},
        },
        "then": {"required": ["event_type"], "properties": {"event_type": {"const": "OTHER"}}},
    },
]


def avro_to_json_schema(node: Any, named: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of one Avro type (as :func:`schemas.load_schema` returns it).

    Named types are inlined at each use (``named`` collects them by full name). Raises
    :class:`InvalidArgumentError` for an Avro type this mapping does not cover (``bytes``,
    ``fixed``, unions other than ``["null", T]``).
    """
    named = {} if named is None else named
    if isinstance(node, str):
        if node in named:
            return avro_to_json_schema(named[node], named)
        if node in _SIMPLE:
            return {"type": _SIMPLE[node]}
        if node in _RANGES:
            low, high = _RANGES[node]
            return {"type": "integer", "minimum": low, "maximum": high}
        if node == "null":
            return {"type": "null"}
        raise InvalidArgumentError(f"Avro type {node!r} has no JSON mapping here")
    if isinstance(node, list):
        branches = [branch for branch in node if branch != "null"]
        if len(branches) != 1 or len(node) != 2:
            raise InvalidArgumentError(f"only [null, T] unions are mapped, not {node!r}")
        inner = avro_to_json_schema(branches[0], named)
        return {"anyOf": [{"type": "null"}, inner]}
    if not isinstance(node, Mapping):
        raise InvalidArgumentError(f"not an Avro type: {node!r}")
    kind = node["type"]
    if "name" in node:
        full = (
            node["name"] if "." in node["name"] else f"{node.get('namespace', '')}.{node['name']}"
        )
        named.setdefault(full.lstrip("."), node)
    schema: dict[str, Any]
    if node.get("logicalType") == "timestamp-micros" and kind == "long":
        schema = {"type": "integer", "minimum": 0, "maximum": _RANGES["long"][1]}
    elif kind == "record":
        schema = _record(node, named)
    elif kind == "enum":
        schema = {"type": "string", "enum": list(node["symbols"])}
    elif kind == "map":
        schema = {
            "type": "object",
            "additionalProperties": avro_to_json_schema(node["values"], named),
        }
    elif kind == "array":
        schema = {"type": "array", "items": avro_to_json_schema(node["items"], named)}
    else:
        schema = avro_to_json_schema(kind, named)
    if node.get("doc"):
        schema["description"] = node["doc"]
    return schema


def _record(node: Mapping[str, Any], named: dict[str, Any]) -> dict[str, Any]:
    properties = {}
    required = []
    for field in node["fields"]:
        schema = avro_to_json_schema(field["type"], named)
        schema.pop("description", None)  # the type's doc; the field's says more here
        if field.get("doc"):
            schema["description"] = field["doc"]
        if "default" in field:
            schema["default"] = field["default"]
        else:
            required.append(field["name"])
        properties[field["name"]] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def auth_event_json_schema() -> dict[str, Any]:
    """The auth event's JSON Schema: the Avro mapping plus :data:`PIPELINE_RULES`."""
    schema = avro_to_json_schema(load_schema(AUTH_EVENT))
    for name, rules in PIPELINE_RULES.items():
        schema["properties"][name].update(rules)
    return {
        "$schema": _DIALECT,
        "$id": SCHEMA_ID,
        "title": "io.authtrail.AuthEvent",
        **schema,
        "allOf": _CROSS_FIELD_RULES,
    }


def render() -> str:
    """The schema as the checked-in file holds it."""
    return json.dumps(auth_event_json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m authtrail.schemas.json_schema",
        description="Print the auth event's JSON Schema, or check that FILE holds it.",
    )
    parser.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if FILE differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    if args.check.read_text(encoding="utf-8") != text:
        print(f"{args.check} is stale: run make json-schema", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
