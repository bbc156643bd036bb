"""The part of JSON Schema (draft 2020-12 keywords) that a validation case needs to check a model's JSON answer.

Written here rather than taken from a package: the checks an answer needs are a few dozen lines, and the
reference implementation brings a compiled dependency to a 2 GB server for them. A keyword outside this subset is
refused when the suite is loaded (``check_schema``), never silently ignored.
"""

from __future__ import annotations

import re
from typing import Any

TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}
ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "examples", "$comment"}
KEYWORDS = {"type", "enum", "const", "properties", "required", "additionalProperties", "items", "minItems",
            "maxItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
            "pattern", "anyOf", "allOf", "oneOf", "not"}


def check_schema(schema: Any, where: str = "schema") -> None:
    """ValueError naming the place of the first keyword this subset does not know, or of a malformed value."""
    if not isinstance(schema, dict):
        raise ValueError(f"{where} must be a mapping")
    unknown = sorted(set(schema) - KEYWORDS - ANNOTATIONS)
    if unknown:
        raise ValueError(f"{where}: JSON Schema keyword {unknown[0]!r} is not supported; supported: "
                         f"{', '.join(sorted(KEYWORDS))}")
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else ([kinds] if kinds is not None else []):
        if kind not in TYPES:
            raise ValueError(f"{where}.type: {kind!r} is not a JSON type ({', '.join(sorted(TYPES))})")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{where}.properties.{name}")
    for key in ("items", "not"):
        if isinstance(schema.get(key), dict):
            check_schema(schema[key], f"{where}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        check_schema(schema["additionalProperties"], f"{where}.additionalProperties")
    for key in ("anyOf", "allOf", "oneOf"):
        for index, sub in enumerate(schema.get(key) or []):
            check_schema(sub, f"{where}.{key}[{index}]")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            raise ValueError(f"{where}.pattern: {exc}") from None


def _is(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, {"string": str, "number": int | float, "object": dict, "array": list}[kind])


def errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (a schema ``check_schema`` accepted), each with its JSON path."""
    found: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(value, kind) for kind in kinds):
            return [f"{path}: expected {' or '.join(kinds)}, got {_name(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        found.append(f"{path}: expected {schema['const']!r}, got {value!r}")
    if isinstance(value, dict):
        found += _object(value, schema, path)
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            found.append(f"{path}: {len(value)} items, at least {schema['minItems']} wanted")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            found.append(f"{path}: {len(value)} items, at most {schema['maxItems']} wanted")
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                found += errors(item, schema["items"], f"{path}[{index}]")
    if isinstance(value, int | float) and not isinstance(value, bool):
        for key, test, words in (("minimum", lambda v, b: v >= b, "at least"), ("maximum", lambda v, b: v <= b,
                                 "at most"), ("exclusiveMinimum", lambda v, b: v > b, "above"),
                                 ("exclusiveMaximum", lambda v, b: v < b, "below")):
            if key in schema and not test(value, schema[key]):
                found.append(f"{path}: {value} is not {words} {schema[key]}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            found.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            found.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            found.append(f"{path}: {value!r} does not match {schema['pattern']!r}")
    found += _combined(value, schema, path)
    return found


def _object(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    found = [f"{path}: required property {name!r} is missing" for name in schema.get("required", [])
             if name not in value]
    properties = schema.get("properties") or {}
    for name, sub in properties.items():
        if name in value:
            found += errors(value[name], sub, f"{path}.{name}")
    extra = schema.get("additionalProperties", True)
    for name in [n for n in value if n not in properties]:
        if extra is False:
            found.append(f"{path}: property {name!r} is not allowed")
        elif isinstance(extra, dict):
            found += errors(value[name], extra, f"{path}.{name}")
    return found


def _combined(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    found = []
    for sub in schema.get("allOf") or []:
        found += errors(value, sub, path)
    if "anyOf" in schema and not any(not errors(value, sub, path) for sub in schema["anyOf"]):
        found.append(f"{path}: matches none of anyOf")
    if "oneOf" in schema:
        matching = sum(1 for sub in schema["oneOf"] if not errors(value, sub, path))
        if matching != 1:
            found.append(f"{path}: matches {matching} of oneOf, exactly 1 wanted")
    if "not" in schema and not errors(value, schema["not"], path):
        found.append(f"{path}: matches the schema under 'not'")
    return found


def _name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", dict: "object", list: "array"}.get(type(value), "value")
