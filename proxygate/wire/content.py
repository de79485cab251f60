"""Content transforms every codec shares: tool arguments (§5.5, §6.2) and data URLs (§5.2).

Tool arguments travel as JSON *text* in the IR (CHAT/RESP ``arguments``) and as objects in
ANT/GEM (``input``/``args``). Serialising an object uses orjson: compact, insertion order kept,
non-ASCII unescaped — the same bytes every turn, so upstream prefix caches hit (§5.13).
"""

from __future__ import annotations

from typing import Any

import orjson

from proxygate.wire.ir import Base64Source

# Key under which unparseable arguments are handed on, so the client's own validation fails
# visibly and the model can correct itself next turn — never a silent {} (§5.5).
RAW_ARGUMENTS_KEY = "_raw_arguments"


def arguments_to_input(arguments: str) -> dict[str, Any]:
    """JSON-text arguments → an object: blank → {}, not an object → ``{"_raw_arguments": …}``."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {RAW_ARGUMENTS_KEY: arguments}
    if isinstance(value, dict):
        return value
    return {RAW_ARGUMENTS_KEY: arguments}


def input_to_arguments(value: Any) -> str:
    """An object (or None) → compact JSON text; the inverse of ``arguments_to_input``."""
    if value is None:
        return "{}"
    if isinstance(value, dict) and set(value) == {RAW_ARGUMENTS_KEY}:
        raw = value[RAW_ARGUMENTS_KEY]
        if isinstance(raw, str):
            return raw
    return orjson.dumps(value).decode()


def is_complete_json(text: str) -> bool:
    """Whether ``text`` parses as JSON (a buffered tool call is finished, §5.14.2 rule 4)."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def parse_data_url(url: str) -> Base64Source | None:
    """``data:<mime>;base64,<payload>`` → a base64 source; None for any other URL (§5.2)."""
    if not url.startswith("data:"):
        return None
    header, sep, payload = url[5:].partition(",")
    if not sep:
        return None
    media_type, _, encoding = header.partition(";")
    if encoding != "base64":
        return None
    return Base64Source(media_type=media_type or "application/octet-stream", data=payload)


def data_url(source: Base64Source) -> str:
    return f"data:{source.media_type};base64,{source.data}"
