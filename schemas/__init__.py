"""The Avro schemas of authtrail, loaded from the ``*.avsc`` files shipped in this package.

The ``.avsc`` files are the source of truth. A file may refer to a named type of another
file by its full name (``chained_record.avsc`` embeds ``io.authtrail.AuthEvent``);
:func:`load_schema` returns a self-contained schema in which every named type is defined
once, at its first use, and referred to by name afterwards. That is the form the Avro
specification's Parsing Canonical Form, and therefore the single-object fingerprint, is
defined on.

Wire framing lives in :mod:`authtrail.schemas.codec`. This module imports only the standard library.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

from authtrail.errors import InvalidArgumentError

__all__ = [
    "AUTH_EVENT",
    "CHAINED_BATCH",
    "CHAINED_RECORD",
    "CHAINED_REJECTION",
    "CHECKPOINT",
    "CLAIM",
    "DEAD_LETTER",
    "EVENT_ENVELOPE",
    "SCHEMA_NAMES",
    "SNAPSHOT",
    "load_schema",
    "previous_versions",
]

AUTH_EVENT = "auth_event"
CHAINED_BATCH = "chained_batch"
CHAINED_RECORD = "chained_record"
CHAINED_REJECTION = "chained_rejection"
CHECKPOINT = "checkpoint"
DEAD_LETTER = "dead_letter"
EVENT_ENVELOPE = "event_envelope"
CLAIM = "claim"
SNAPSHOT = "snapshot"
SCHEMA_NAMES = (
    AUTH_EVENT,
    CHAINED_RECORD,
    CHAINED_REJECTION,
    CHECKPOINT,
    DEAD_LETTER,
    CLAIM,
    SNAPSHOT,
    EVENT_ENVELOPE,
    CHAINED_BATCH,
)

# Which files define the named types a file refers to but does not define itself.
_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    CHAINED_RECORD: (AUTH_EVENT,),
    CHAINED_REJECTION: (DEAD_LETTER,),
}

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})


def load_schema(name: str) -> dict[str, Any]:
    """Return schema ``name`` (one of :data:`SCHEMA_NAMES`) as a fresh, self-contained dict.

    The caller may mutate the result. Raises :class:`InvalidArgumentError` for an unknown
    name.
    """
    if name not in SCHEMA_NAMES:
        raise InvalidArgumentError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return copy.deepcopy(_self_contained(name))


@functools.cache
def _read(name: str) -> Any:
    text = resources.files(__name__).joinpath(f"{name}.avsc").read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _self_contained(name: str) -> Any:
    library: dict[str, tuple[Any, str]] = {}
    for dependency in _DEPENDENCIES.get(name, ()):
        _collect_definitions(_self_contained(dependency), "", library)
    return _inline(_read(name), "", set(), library)


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect_definitions(node: Any, namespace: str, library: dict[str, tuple[Any, str]]) -> None:
    """Index every named type defined anywhere in ``node``: full name -> (node, namespace)."""
    if isinstance(node, list):
        for item in node:
            _collect_definitions(item, namespace, library)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in _NAMED_KINDS:
            full = _full_name(node["name"], node.get("namespace", namespace))
            library[full] = (node, namespace)
            namespace = full.rpartition(".")[0]
        for field in node.get("fields", ()):
            _collect_definitions(field["type"], namespace, library)
        for key in ("type", "items", "values"):
            if key in node and not (key == "type" and kind in _NAMED_KINDS):
                _collect_definitions(node[key], namespace, library)


def _inline(
    node: Any, namespace: str, defined: set[str], library: dict[str, tuple[Any, str]]
) -> Any:
    """Copy ``node``, defining each named type from ``library`` at its first use only.

    A second definition of the same name would make the schema invalid, so a type that
    is already defined (here or inside an inlined dependency) becomes a name reference.
    """
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = _full_name(node, namespace)
        if full in library and full not in defined:
            definition, enclosing_namespace = library[full]
            return _inline(definition, enclosing_namespace, defined, library)
        return node
    if isinstance(node, list):
        return [_inline(item, namespace, defined, library) for item in node]
    if not isinstance(node, dict):
        return node
    result = dict(node)
    kind = node.get("type")
    if kind in _NAMED_KINDS:
        full = _full_name(node["name"], node.get("namespace", namespace))
        if full in defined:
            return full
        defined.add(full)
        namespace = full.rpartition(".")[0]
        if "fields" in node:
            result["fields"] = [
                {**field, "type": _inline(field["type"], namespace, defined, library)}
                for field in node["fields"]
            ]
        return result
    for key in ("type", "items", "values"):
        if key in node:
            result[key] = _inline(node[key], namespace, defined, library)
    return result


def previous_versions(name: str) -> list[dict[str, Any]]:
    """Earlier, self-contained versions of schema ``name`` (``history/<name>.vN.avsc``),
    oldest first: writer schemas a reader must still accept, so data written before a
    schema change keeps decoding."""
    if name not in SCHEMA_NAMES:
        raise InvalidArgumentError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    history = resources.files(__name__).joinpath("history")
    found = sorted(
        (entry for entry in history.iterdir() if entry.name.startswith(f"{name}.v")),
        key=lambda entry: int(entry.name.removeprefix(f"{name}.v").removesuffix(".avsc")),
    )
    return [json.loads(entry.read_text(encoding="utf-8")) for entry in found]
