"""Content transforms every codec shares: tool arguments (§5.5, §6.2), media sources (§5.2).

Tool arguments travel as JSON *text* in the IR (CHAT/RESP ``arguments``) and as objects in
ANT/GEM (``input``/``args``). Serialising an object uses orjson: compact, insertion order kept,
non-ASCII unescaped — the same bytes every turn, so upstream prefix caches hit (§5.13).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import orjson

from proxygate.wire.ir import Base64Source, UrlSource

# Key under which unparseable arguments are handed on, so the client's own validation fails
# visibly and the model can correct itself next turn — never a silent {} (§5.5).
RAW_ARGUMENTS_KEY = "_raw_arguments"

_ID_OK = re.compile(r"[A-Za-z0-9_-]+")
_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")


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


def url_source(url: str) -> Base64Source | UrlSource:
    """A URL field's source: the inline bytes of a data URL, else the URL itself (§5.2)."""
    return parse_data_url(url) or UrlSource(url)


def document_text(text: str, title: str | None) -> str:
    """A text document as plain text, for formats with no text-document block: title, blank line, body."""
    return f"{title}\n\n{text}" if title else text


def sanitize_id(value: str, *, max_len: int | None = None) -> str:
    """A tool-call id valid for ``[A-Za-z0-9_-]{1,max_len}``; a pure function of ``value`` (§5.5).

    Valid ids pass unchanged so transcripts stay portable across routes; others get invalid
    characters replaced and, when too long, a hash suffix that keeps distinct ids distinct.
    """
    if value and _ID_OK.fullmatch(value) and (max_len is None or len(value) <= max_len):
        return value
    cleaned = _ID_BAD.sub("_", value) or "id"
    if max_len is None or len(cleaned) <= max_len:
        return cleaned
    digest = base64.b32encode(hashlib.sha256(value.encode()).digest()).decode().lower()[:10]
    return f"{cleaned[: max_len - 11]}_{digest}"
