"""JSON Schema for Gemini, both directions (protocols.md §5.15).

``sanitize_schema`` turns a full JSON Schema into the OpenAPI-3.0 subset that Gemini's
``parameters``/``responseSchema`` accept: unknown keywords there are hard 400s ("Unknown name
\\"additionalProperties\\"…", "Proto field is not repeating" for type arrays). It is a whitelist
of the SDK ``Schema`` keys plus the rewrites of the §5.15 table; ``$ref`` is inlined with a
depth guard. ``parametersJsonSchema`` takes full JSON Schema and only loses the meta keys.

``lowercase_types`` goes the other way: Gemini CLI writes OpenAPI upper-case types
(``"OBJECT"``) that other providers' JSON Schema validators reject.
"""

from __future__ import annotations

from typing import Any

ALLOWED = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "items",
        "properties",
        "required",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "anyOf",
        "propertyOrdering",
        "default",
        "example",
    }
)
META_KEYS = frozenset({"$schema", "$id", "$comment"})
# Formats Gemini knows per type; others (uri, email, uuid…) are dropped (§5.15).
FORMATS = {"string": {"enum", "date-time"}, "number": {"float", "double"}, "integer": {"int32", "int64"}}
# Past this depth a recursive $ref becomes a plain object (§5.15 cycle guard).
MAX_REF_DEPTH = 3


def strip_meta(schema: dict[str, Any]) -> dict[str, Any]:
    """A full JSON Schema for ``parametersJsonSchema``, minus ``$schema``/``$id``/``$comment``."""
    return {k: v for k, v in schema.items() if k not in META_KEYS}


def lowercase_types(value: Any) -> Any:
    """Every ``type`` value lower-cased, recursively (Gemini CLI's ``"OBJECT"`` → ``"object"``)."""
    if isinstance(value, list):
        return [lowercase_types(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "type" and isinstance(item, str):
            out[key] = item.lower()
        elif key == "type" and isinstance(item, list):
            out[key] = [t.lower() if isinstance(t, str) else t for t in item]
        elif key == "properties" and isinstance(item, dict):
            out[key] = {name: lowercase_types(sub) for name, sub in item.items()}
        else:
            out[key] = lowercase_types(item)
    return out


def sanitize_schema(schema: Any) -> dict[str, Any]:
    """Full JSON Schema → Gemini's OpenAPI subset (see the module docstring)."""
    if not isinstance(schema, dict):
        return {}
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": sub for name, sub in schema[key].items()})
    return _sanitize(schema, defs, 0)


def _resolve(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref)
        if depth >= MAX_REF_DEPTH or not isinstance(target, dict):
            return {"type": "object", "description": str(schema.get("description") or f"See {ref}.")}
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return {**target, **siblings}
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in all_of:
            sub = _resolve(sub, defs, depth + 1) if isinstance(sub, dict) else {}
            for key, value in sub.items():
                if key == "properties" and isinstance(value, dict):
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged
    return schema


def _sanitize(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    is_ref = "$ref" in schema
    schema = _resolve(schema, defs, depth)
    depth += 1 if is_ref else 0
    out: dict[str, Any] = {}
    type_ = schema.get("type")
    if isinstance(type_, list):
        kinds = [t for t in type_ if isinstance(t, str) and t != "null"]
        if "null" in type_:
            out["nullable"] = True
        if len(kinds) == 1:
            type_ = kinds[0]
        else:
            type_ = None
            if kinds:
                out["anyOf"] = [{"type": t} for t in kinds]
    if isinstance(type_, str):
        out["type"] = type_
    kind = type_.lower() if isinstance(type_, str) else None

    for key, value in schema.items():
        if key in (
            "type",
            "anyOf",
            "oneOf",
            "const",
            "enum",
            "format",
            "exclusiveMinimum",
            "exclusiveMaximum",
        ):
            continue
        if key == "properties" and isinstance(value, dict):
            props = {n: _sanitize(s, defs, depth) for n, s in value.items() if isinstance(s, dict)}
            if props:
                out["properties"] = props
        elif key == "items" and isinstance(value, dict):
            out["items"] = _sanitize(value, defs, depth)
        elif key in ALLOWED and key not in out:
            out[key] = value

    variants = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(variants, list):
        subs = [_sanitize(v, defs, depth) for v in variants if isinstance(v, dict)]
        if any(s.get("type") == "null" for s in subs):
            out["nullable"] = True
        subs = [s for s in subs if s.get("type") != "null"]
        if len(subs) == 1:
            out = {**subs[0], **out}
        elif subs:
            out["anyOf"] = subs
    _enum(schema, out, kind)
    _bounds(schema, out, kind)
    fmt = schema.get("format")
    if isinstance(fmt, str) and kind in FORMATS and fmt in FORMATS[kind]:
        out["format"] = fmt
    if isinstance(out.get("required"), list):
        known = out.get("properties", {})
        required = [n for n in out["required"] if n in known]
        if required:
            out["required"] = required
        else:
            out.pop("required")
    if kind == "array" and "items" not in out:
        out["items"] = {"type": "string"}  # an ARRAY needs an items schema (§5.15)
    return out


def _enum(schema: dict[str, Any], out: dict[str, Any], kind: str | None) -> None:
    values = [schema["const"]] if "const" in schema else schema.get("enum")
    if not isinstance(values, list) or not values:
        return
    if all(isinstance(v, str) for v in values):
        out["enum"] = values
        if "anyOf" not in out:
            out.setdefault("type", "string")  # Gemini enums are typed STRING
    elif kind in (None, "string"):
        out["enum"] = [str(v) for v in values]
        out.setdefault("type", "string")
    else:
        # Gemini enums are strings only; say the allowed values instead (§5.15).
        note = "Allowed values: " + ", ".join(str(v) for v in values) + "."
        out["description"] = f"{out['description']} {note}" if out.get("description") else note


def _bounds(schema: dict[str, Any], out: dict[str, Any], kind: str | None) -> None:
    step = 1 if kind == "integer" else 0
    low, high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(low, int | float) and not isinstance(low, bool) and "minimum" not in out:
        out["minimum"] = low + step
    if isinstance(high, int | float) and not isinstance(high, bool) and "maximum" not in out:
        out["maximum"] = high - step
