"""A record-against-schema check compiled once per schema, for the encode path.

fastavro's writer drops fields the schema lacks without a word and writes ``True`` as a
long, and its ``validate`` runs at about a sixth of the writer's speed. This check is
compiled from a parsed schema into nested closures, so the hot path is a handful of
``isinstance`` calls per field, and its messages name the field and what was wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from authtrail.errors import InvalidArgumentError

#: Returns None when the value conforms, else a description of the first problem.
Check = Callable[[Any], str | None]

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


def compile_check(parsed_schema: Any) -> Callable[[Any], None]:
    """Return a function that raises :class:`InvalidArgumentError` unless its argument
    conforms to ``parsed_schema`` (a schema as ``fastavro.parse_schema`` returns it).

    Records must have every field without a default and no field the schema lacks.
    """
    named: Mapping[str, Any] = {}
    if isinstance(parsed_schema, dict):
        named = parsed_schema.get("__named_schemas", {})
    compiled: dict[str, Check] = {}
    check = _compile(parsed_schema, named, compiled)
    name = parsed_schema.get("name", "record") if isinstance(parsed_schema, dict) else "value"

    def raise_unless_conforms(value: Any) -> None:
        problem = check(value)
        if problem is not None:
            raise InvalidArgumentError(f"record does not match {name}: {problem}")

    return raise_unless_conforms


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _integer(low: int, high: int, type_name: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        return f"expected {type_name}, got {_describe(value)}"

    return check


def _instance(kind: type | tuple[type, ...], type_name: str) -> Check:
    def check(value: Any) -> str | None:
        return None if isinstance(value, kind) else f"expected {type_name}, got {_describe(value)}"

    return check


def _number(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return None
    return f"expected a number, got {_describe(value)}"


_PRIMITIVES: dict[str, Check] = {
    "null": lambda value: None if value is None else f"expected null, got {_describe(value)}",
    "boolean": _instance(bool, "boolean"),
    "int": _integer(*_INT_RANGE, "int"),
    "long": _integer(*_LONG_RANGE, "long"),
    "float": _number,
    "double": _number,
    "bytes": _instance(bytes, "bytes"),
    "string": _instance(str, "string"),
}


def _compile(node: Any, named: Mapping[str, Any], compiled: dict[str, Check]) -> Check:
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return _PRIMITIVES[node]
        return _named_reference(node, named, compiled)
    if isinstance(node, list):
        if len(node) == 2 and node[0] == "null":
            return _optional(_compile(node[1], named, compiled))
        return _union([_compile(branch, named, compiled) for branch in node], node)
    kind = node["type"]
    if kind == "record" or kind == "error":
        check = _record(node, named, compiled)
    elif kind == "enum":
        check = _enum(node)
    elif kind == "fixed":
        check = _fixed(node["size"])
    elif kind == "array":
        check = _array(_compile(node["items"], named, compiled))
    elif kind == "map":
        check = _map(_compile(node["values"], named, compiled))
    else:
        return _compile(kind, named, compiled)  # {"type": "long"} and the like
    if "name" in node:
        compiled[node["name"]] = check
    return check


def _named_reference(name: str, named: Mapping[str, Any], compiled: dict[str, Check]) -> Check:
    # Looked up at call time: a recursive type refers to itself before it is compiled.
    def check(value: Any) -> str | None:
        if name not in compiled:
            if name not in named:
                return f"schema refers to unknown type {name!r}"
            _compile(named[name], named, compiled)
        return compiled[name](value)

    return check


def _optional(branch: Check) -> Check:
    # ["null", X] is most fields of an event: a fast path with a plain message.
    def check(value: Any) -> str | None:
        if value is None:
            return None
        problem = branch(value)
        return None if problem is None else f"{problem} (or null)"

    return check


def _union(branches: list[Check], node: list[Any]) -> Check:
    def check(value: Any) -> str | None:
        if any(branch(value) is None for branch in branches):
            return None
        return f"matches no branch of {node}: got {_describe(value)}"

    return check


def _record(node: Mapping[str, Any], named: Mapping[str, Any], compiled: dict[str, Check]) -> Check:
    fields = [
        (field["name"], "default" in field, _compile(field["type"], named, compiled))
        for field in node["fields"]
    ]
    names = frozenset(name for name, _, _ in fields)

    def check(value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"expected a record {node['name']}, got {_describe(value)}"
        unknown = [str(key) for key in value if key not in names]
        if unknown:
            return f"fields not in the schema: {', '.join(sorted(unknown))}"
        for name, has_default, field_check in fields:
            if name not in value:
                if has_default:
                    continue  # the writer fills in the default
                return f"missing required field {name!r}"
            problem = field_check(value[name])
            if problem is not None:
                return f"field {name!r}: {problem}"
        return None

    return check


def _enum(node: Mapping[str, Any]) -> Check:
    symbols = frozenset(node["symbols"])

    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in symbols:
            return None
        return f"expected a symbol of {node['name']}, got {_describe(value)}"

    return check


def _fixed(size: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bytes) and len(value) == size:
            return None
        return f"expected {size} bytes, got {_describe(value)}"

    return check


def _array(items: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list | tuple):
            return f"expected an array, got {_describe(value)}"
        for index, item in enumerate(value):
            problem = items(item)
            if problem is not None:
                return f"item {index}: {problem}"
        return None

    return check


def _map(values: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"expected a map, got {_describe(value)}"
        for key, item in value.items():
            if not isinstance(key, str):
                return f"map key must be a string, got {_describe(key)}"
            problem = values(item)
            if problem is not None:
                return f"value of key {key!r}: {problem}"
        return None

    return check
