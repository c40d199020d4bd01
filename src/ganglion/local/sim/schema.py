"""A valid instance of a JSON schema: what the simulator answers to a structured-output request.

It covers the subset of JSON Schema that LLM tools send (OpenAI's ``response_format``,
Ollama's ``format``, Pydantic's ``model_json_schema()``):

- ``object`` with ``properties`` / ``required`` (every listed property is filled in);
- ``array`` with ``items`` / ``minItems`` / ``maxItems``;
- ``string`` with ``enum``, ``const``, ``minLength`` / ``maxLength`` and the common ``format``s;
- ``integer`` / ``number`` with ``minimum`` / ``maximum`` (and their exclusive forms);
- ``boolean``, ``null``, a list of types (the first non-null one is used);
- ``anyOf`` / ``oneOf`` (the first branch), ``allOf`` (the branches merged);
- ``$ref`` to ``#/$defs/...`` or ``#/definitions/...``.

``pattern`` is not honoured: no generator here can satisfy an arbitrary regular expression.
Strings are filler words, so nobody mistakes the answer for a model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

FILLER = "simulated filler"
"""The text every generated string is made of (repeated or cut to fit its length bounds)."""

MAX_DEPTH = 12
"""Below this depth objects keep only required properties and arrays only ``minItems``, so a
recursive schema still ends."""

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "sim@example.com",
    "uri": "https://example.com/sim",
    "url": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "sim.example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}


def instance_of(schema: dict[str, Any] | bool) -> Any:
    """Return a value that validates against ``schema``."""
    root = schema if isinstance(schema, dict) else {}
    return _Generator(root).value(schema, depth=0)


class _Generator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def value(self, schema: dict[str, Any] | bool, depth: int) -> Any:
        if not isinstance(schema, dict):
            return None if schema is False else {}
        schema = self._resolved(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.value(self._merged(schema, key), depth)
        if schema.get("allOf"):
            return self.value(self._merged(schema, "allOf"), depth)
        return self._typed(schema, _type_of(schema), depth)

    def _typed(self, schema: dict[str, Any], kind: str, depth: int) -> Any:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        scalar = _SCALARS.get(kind)
        return None if scalar is None else scalar(schema)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        keep = [name for name in properties if depth < MAX_DEPTH or name in required]
        result = {name: self.value(properties[name], depth + 1) for name in keep}
        for name in required - set(result):
            result[name] = self.value(_additional(schema), depth + 1)
        return result

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        count = low if depth >= MAX_DEPTH else max(low, 1)
        if high is not None:
            count = min(count, int(high))
        prefix: list[Any] = schema.get("prefixItems", [])
        items = schema.get("items", {})
        return [
            self.value(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(count)
        ]

    def _resolved(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen: set[str] = set()
        while isinstance(ref := schema.get("$ref"), str) and ref not in seen:
            seen.add(ref)
            target = self._lookup(ref)
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
        return schema

    def _lookup(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for escaped in ref.lstrip("#").strip("/").split("/"):
            if not escaped:
                continue
            part = escaped.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}

    def _merged(self, schema: dict[str, Any], key: str) -> dict[str, Any]:
        """The schema with ``key`` replaced by its first branch (or, for allOf, all of them)."""
        rest = {k: v for k, v in schema.items() if k != key}
        branches = schema[key] if key == "allOf" else schema[key][:1]
        for branch in branches:
            rest = _merge(rest, self._resolved(branch) if isinstance(branch, dict) else {})
        return rest


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **extra}
    if "properties" in base and "properties" in extra:
        merged["properties"] = {**base["properties"], **extra["properties"]}
    if "required" in base and "required" in extra:
        merged["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    return merged


def _additional(schema: dict[str, Any]) -> dict[str, Any]:
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else {}


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        return str(non_null[0]) if non_null else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "object" if not schema else "string"


def _string(schema: dict[str, Any]) -> str:
    text = _FORMATS.get(str(schema.get("format", "")), FILLER)
    low = int(schema.get("minLength", 0))
    while len(text) < low:
        text = f"{text} {FILLER}"
    high = schema.get("maxLength")
    return text if high is None else text[: int(high)]


def _bounds(schema: dict[str, Any]) -> tuple[float, float]:
    low = float(schema.get("minimum", -math.inf))
    high = float(schema.get("maximum", math.inf))
    if "exclusiveMinimum" in schema:
        low = max(low, float(schema["exclusiveMinimum"]))
    if "exclusiveMaximum" in schema:
        high = min(high, float(schema["exclusiveMaximum"]))
    return low, high


def _integer(schema: dict[str, Any]) -> int:
    low = math.ceil(float(schema["minimum"])) if "minimum" in schema else None
    high = math.floor(float(schema["maximum"])) if "maximum" in schema else None
    if "exclusiveMinimum" in schema:
        floor_plus = math.floor(float(schema["exclusiveMinimum"])) + 1
        low = floor_plus if low is None else max(low, floor_plus)
    if "exclusiveMaximum" in schema:
        ceil_minus = math.ceil(float(schema["exclusiveMaximum"])) - 1
        high = ceil_minus if high is None else min(high, ceil_minus)
    value = 1
    if high is not None:
        value = min(value, high)
    if low is not None:
        value = max(value, low)
    return value


def _number(schema: dict[str, Any]) -> float:
    low, high = _bounds(schema)
    if math.isinf(low) and math.isinf(high):
        return 0.5
    if math.isinf(high):
        return low + 0.5 if "exclusiveMinimum" in schema else low
    if math.isinf(low):
        return high - 0.5 if "exclusiveMaximum" in schema else high
    return (low + high) / 2


def _boolean(schema: dict[str, Any]) -> bool:
    return True


_SCALARS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
}
