"""Error bodies and in-stream error events in each client's format (protocols.md §5.12).

Handlers never build error JSON by hand: they raise a ``ProxyError`` (or hold an upstream
error class) and these renderers speak the client's dialect, so SDK retry logic and the
coding agents' own failover read it as they would the real API's.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxygate.wire.ir import Format
from proxygate.wire.sse import encode_event

# IR error class → (Anthropic error.type, OpenAI error.type, OpenAI code, Gemini status)
_KINDS: dict[str, tuple[str, str, str | None, str]] = {
    "invalid_request": ("invalid_request_error", "invalid_request_error", None, "INVALID_ARGUMENT"),
    "context_exceeded": (
        "invalid_request_error",
        "invalid_request_error",
        "context_length_exceeded",
        "INVALID_ARGUMENT",
    ),
    "authentication": ("authentication_error", "invalid_request_error", "invalid_api_key", "UNAUTHENTICATED"),
    "permission": ("permission_error", "invalid_request_error", None, "PERMISSION_DENIED"),
    "billing": ("billing_error", "insufficient_quota", "insufficient_quota", "PERMISSION_DENIED"),
    "not_found": ("not_found_error", "invalid_request_error", "model_not_found", "NOT_FOUND"),
    "unknown_endpoint": ("not_found_error", "invalid_request_error", "unknown_url", "NOT_FOUND"),
    "too_large": ("request_too_large", "invalid_request_error", None, "INVALID_ARGUMENT"),
    "rate_limited": ("rate_limit_error", "rate_limit_exceeded", "rate_limit_exceeded", "RESOURCE_EXHAUSTED"),
    "overloaded": ("overloaded_error", "server_error", "server_error", "UNAVAILABLE"),
    "server": ("api_error", "server_error", "server_error", "INTERNAL"),
    "timeout": ("timeout_error", "server_error", "timeout", "DEADLINE_EXCEEDED"),
}

# What the client sees per class when proxygate answers itself: OpenAI and Gemini clients get
# 503 for "overloaded" (529 is Anthropic's own code) — protocols.md §5.12, second table.
_OPENAI_STATUS = {"overloaded": 503}


def client_status(fmt: Format, error_class: str, status: int) -> int:
    if fmt is Format.anthropic:
        return status
    if error_class in _OPENAI_STATUS:
        return _OPENAI_STATUS[error_class]
    if fmt is Format.gemini and status == 413:
        return 400
    return status


def error_body(fmt: Format, error_class: str, message: str, *, status: int, request_id: str = "") -> bytes:
    ant, oai_type, oai_code, gem_status = _KINDS.get(error_class, _KINDS["server"])
    body: dict[str, Any]
    if fmt is Format.anthropic:
        body = {"type": "error", "error": {"type": ant, "message": message}}
        if request_id:
            body["request_id"] = request_id
    elif fmt is Format.gemini:
        body = {"error": {"code": status, "message": message, "status": gem_status}}
    else:
        body = {"error": {"message": message, "type": oai_type, "param": None, "code": oai_code}}
    return orjson.dumps(body)


def stream_error_event(
    fmt: Format, error_class: str, message: str, *, status: int, sequence_number: int = 0
) -> bytes:
    """The event that ends a stream which already sent its first byte (protocols.md §5.12)."""
    ant, oai_type, oai_code, _ = _KINDS.get(error_class, _KINDS["server"])
    if fmt is Format.anthropic:
        data = orjson.dumps({"type": "error", "error": {"type": ant, "message": message}})
        return encode_event(data, "error")
    if fmt is Format.responses:
        # Codex waits for a terminal event; never end silently.
        data = orjson.dumps(
            {
                "type": "response.failed",
                "sequence_number": sequence_number,
                "response": {
                    "object": "response",
                    "status": "failed",
                    "error": {"code": oai_code or oai_type, "message": message},
                },
            }
        )
        return encode_event(data, "response.failed")
    if fmt is Format.gemini:
        # google-genai raises only for a chunk whose JSON starts with {"error": and a numeric code.
        return encode_event(orjson.dumps({"error": {"code": status, "message": message}}))
    data = orjson.dumps({"error": {"message": message, "type": oai_type, "code": oai_code}})
    return encode_event(data)
