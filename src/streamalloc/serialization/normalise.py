"""JSON of the contract's shape -> the Avro record: checked, with defaults filled.

A normaliser is compiled once per schema into nested closures, so checking a record
costs a few function calls per field. Nullable unions take plain values (`"region":
"eu"`), not Avro-JSON's tagged form. Unknown fields are ignored, so a newer producer
can add fields before the engine knows them. An identifier (`IDENTIFIERS`, in any
record) must not be empty, as it must not be missing: nothing could be keyed or traced
by it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

Normaliser = Callable[[Any, str], Any]

#: Fields that identify an event, an order, a line, a SKU or a channel: never empty.
IDENTIFIERS = frozenset({"event_id", "order_id", "line_id", "sku", "channel"})


class Invalid(Exception):
    """Raised with a path (`lines[0].qty`) and what is wrong there."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path or 'record'}: {problem}")


def compile_schema(schema: Any, names: dict[str, Any] | None = None) -> Normaliser:
    names = {} if names is None else names
    return _compile(schema, names)


def _compile(schema: Any, names: dict[str, Any]) -> Normaliser:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema in names:
            return lambda value, path: names[schema](value, path)
        raise ValueError(f"unknown type {schema}")
    if isinstance(schema, list):
        return _union(schema, names)
    kind = schema["type"]
    if kind == "record":
        return _record(schema, names)
    if kind == "enum":
        symbols = frozenset(schema["symbols"])

        def enum(value: Any, path: str) -> Any:
            if value not in symbols:
                raise Invalid(path, f"must be one of {', '.join(schema['symbols'])}, not {value!r}")
            return value

        _register(schema, enum, names)
        return enum
    if kind == "array":
        items = _compile(schema["items"], names)

        def array(value: Any, path: str) -> Any:
            if not isinstance(value, list):
                raise Invalid(path, f"must be a list, not {type(value).__name__}")
            return [items(item, f"{path}[{i}]") for i, item in enumerate(value)]

        return array
    if kind == "map":
        values = _compile(schema["values"], names)

        def mapping(value: Any, path: str) -> Any:
            if not isinstance(value, dict):
                raise Invalid(path, f"must be an object, not {type(value).__name__}")
            return {k: values(v, f"{path}.{k}") for k, v in value.items()}

        return mapping
    return _compile(kind, names)


def _register(schema: dict[str, Any], normaliser: Normaliser, names: dict[str, Any]) -> None:
    name = schema["name"]
    names[name] = normaliser
    if "namespace" in schema:
        names[f"{schema['namespace']}.{name}"] = normaliser


def _record(schema: dict[str, Any], names: dict[str, Any]) -> Normaliser:
    fields: list[tuple[str, Normaliser, bool, Any]] = []

    def record(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise Invalid(path, f"must be an object, not {type(value).__name__}")
        out = {}
        for name, normalise, has_default, default in fields:
            where = f"{path}.{name}" if path else name
            if name in value:
                out[name] = normalise(value[name], where)
            elif has_default:
                out[name] = copy.copy(default) if isinstance(default, list | dict) else default
            else:
                raise Invalid(where, "is required")
        return out

    _register(schema, record, names)  # before fields: a record may refer to itself
    for field in schema["fields"]:
        normalise = _compile(field["type"], names)
        if field["name"] in IDENTIFIERS:
            normalise = _non_empty(normalise)
        fields.append((field["name"], normalise, "default" in field, field.get("default")))
    return record


def _non_empty(normalise: Normaliser) -> Normaliser:
    def identifier(value: Any, path: str) -> Any:
        if value == "":
            raise Invalid(path, "must not be empty")
        return normalise(value, path)

    return identifier


def _union(branches: list[Any], names: dict[str, Any]) -> Normaliser:
    nullable = "null" in branches
    others = [_compile(b, names) for b in branches if b != "null"]
    if len(others) == 1:
        only = others[0]

        def optional(value: Any, path: str) -> Any:
            return None if value is None else only(value, path)

        return optional if nullable else only

    def union(value: Any, path: str) -> Any:
        if value is None:
            if nullable:
                return None
            raise Invalid(path, "must not be null")
        problems = []
        for branch in others:
            try:
                return branch(value, path)
            except Invalid as exc:
                problems.append(exc.problem)
        raise Invalid(path, " or ".join(problems))

    return union


def _long(value: Any, path: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    raise Invalid(path, f"must be a whole number, not {value!r}")


def _int(value: Any, path: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
        return value
    raise Invalid(path, f"must be a whole number within 32 bits, not {value!r}")


def _number(value: Any, path: str) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise Invalid(path, f"must be a finite number, not {value!r}")


def _string(value: Any, path: str) -> Any:
    if isinstance(value, str):
        return value
    raise Invalid(path, f"must be a string, not {value!r}")


def _boolean(value: Any, path: str) -> Any:
    if isinstance(value, bool):
        return value
    raise Invalid(path, f"must be true or false, not {value!r}")


def _bytes(value: Any, path: str) -> Any:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:  # Avro's JSON encoding: one code point 0-255 per byte
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise Invalid(path, "as a string, may hold only code points 0-255 (one per byte)") from None
    raise Invalid(path, f"must be bytes or a string, not {value!r}")


def _null(value: Any, path: str) -> Any:
    if value is None:
        return None
    raise Invalid(path, f"must be null, not {value!r}")


_PRIMITIVES: dict[str, Normaliser] = {
    "int": _int,
    "long": _long,
    "float": _number,
    "double": _number,
    "string": _string,
    "boolean": _boolean,
    "bytes": _bytes,
    "null": _null,
}
