"""Anthropic content blocks, usage, stop reasons and errors shared by the request, response and
stream codecs (protocols.md §1.6, §1.11-§1.15)."""

from __future__ import annotations

from typing import Any

from proxygate.wire import envelope
from proxygate.wire.content import (
    input_to_arguments,
)
from proxygate.wire.ir import (
    Base64Source,
    CacheMark,
    Document,
    FileSource,
    Format,
    Image,
    MediaSource,
    Opaque,
    Part,
    Reasoning,
    ReasoningState,
    StopReason,
    Text,
    TextSource,
    ToolCall,
    ToolResult,
    UrlSource,
    Usage,
)
from proxygate.wire.usage import token_count

STOP_TO_IR = {
    "end_turn": StopReason.end_turn,
    "max_tokens": StopReason.max_tokens,
    "stop_sequence": StopReason.stop_sequence,
    "tool_use": StopReason.tool_use,
    "pause_turn": StopReason.pause_turn,
    "refusal": StopReason.refusal,
    "model_context_window_exceeded": StopReason.context_exceeded,
}
STOP_FROM_IR = {
    StopReason.end_turn: "end_turn",
    StopReason.max_tokens: "max_tokens",
    StopReason.stop_sequence: "stop_sequence",
    StopReason.tool_use: "tool_use",
    StopReason.pause_turn: "pause_turn",
    StopReason.refusal: "refusal",
    StopReason.context_exceeded: "model_context_window_exceeded",
    StopReason.error: "end_turn",
}
# Anthropic error.type → (IR error class, status) (§1.15, §5.12).
ERROR_CLASSES = {
    "invalid_request_error": ("invalid_request", 400),
    "authentication_error": ("authentication", 401),
    "billing_error": ("billing", 402),
    "permission_error": ("permission", 403),
    "not_found_error": ("not_found", 404),
    "request_too_large": ("too_large", 413),
    "rate_limit_error": ("rate_limited", 429),
    "api_error": ("server", 500),
    "timeout_error": ("timeout", 504),
    "overloaded_error": ("overloaded", 529),
}


def cache_mark(block: dict[str, Any]) -> CacheMark | None:
    mark = block.get("cache_control")
    if not isinstance(mark, dict):
        return None
    ttl = mark.get("ttl")
    return CacheMark(ttl if isinstance(ttl, str) else None)


def decode_source(src: Any) -> MediaSource | None:
    if not isinstance(src, dict):
        return None
    match src.get("type"):
        case "base64":
            return Base64Source(str(src.get("media_type", "")), str(src.get("data", "")))
        case "url":
            return UrlSource(str(src.get("url", "")))
        case "file":
            return FileSource(str(src.get("file_id", "")))
        case "text":
            return TextSource(str(src.get("data", "")), str(src.get("media_type", "text/plain")))
        case "content":
            content = src.get("content")
            if isinstance(content, str):
                return TextSource(content)
            if isinstance(content, list):
                texts = [str(b.get("text", "")) for b in content if isinstance(b, dict)]
                return TextSource("\n".join(texts))
    return None


def reasoning_state(value: str, kind: str) -> ReasoningState:
    """A signature slot's state: our envelope, else Anthropic's own (§5.7.3)."""
    return envelope.unseal(value) or ReasoningState(origin=Format.anthropic, kind=kind, payload=value)


def decode_block(block: Any) -> Part | None:
    if isinstance(block, str):
        return Text(block)
    if not isinstance(block, dict):
        return None
    match block.get("type"):
        case "text":
            return Text(str(block.get("text", "")), cache_mark(block))
        case "image":
            source = decode_source(block.get("source"))
            return Image(source, cache=cache_mark(block)) if source else None
        case "document":
            source = decode_source(block.get("source"))
            if source is None:
                return None
            title = block.get("title")
            return Document(source, title=title if isinstance(title, str) else None, cache=cache_mark(block))
        case "tool_use":
            return ToolCall(
                id=str(block.get("id", "")),
                name=str(block.get("name", "")),
                arguments=input_to_arguments(block.get("input")),
                cache=cache_mark(block),
            )
        case "tool_result":
            return _decode_tool_result(block)
        case "thinking":
            signature = str(block.get("signature") or "")
            state = reasoning_state(signature, "signature") if signature else None
            return Reasoning(str(block.get("thinking", "")), state)
        case "redacted_thinking":
            return Reasoning("", reasoning_state(str(block.get("data", "")), "redacted"))
    # server_tool_use, *_tool_result, container_upload and unknown types: ANT-only (§6.27)
    return Opaque(Format.anthropic, block)


def _decode_tool_result(block: dict[str, Any]) -> ToolResult:
    content = block.get("content")
    parts: list[Text | Image | Document] = []
    if isinstance(content, str):
        parts.append(Text(content))
    elif isinstance(content, list):
        for item in content:
            part = decode_block(item)
            if isinstance(part, Text | Image | Document):
                parts.append(part)
    return ToolResult(
        call_id=str(block.get("tool_use_id", "")),
        parts=tuple(parts),
        is_error=bool(block.get("is_error", False)),
        cache=cache_mark(block),
    )


def decode_content(content: Any) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (Text(content),)
    if not isinstance(content, list):
        return ()
    return tuple(p for p in map(decode_block, content) if p is not None)


def decode_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    creation = usage.get("cache_creation")
    written_1h = creation.get("ephemeral_1h_input_tokens") if isinstance(creation, dict) else None
    return Usage(
        input_tokens=token_count(usage.get("input_tokens")),
        output_tokens=token_count(usage.get("output_tokens")),
        cache_read_tokens=token_count(usage.get("cache_read_input_tokens")),
        cache_write_tokens=token_count(usage.get("cache_creation_input_tokens")),
        reasoning_tokens=token_count(thinking),
        cache_write_1h_tokens=token_count(written_1h),
    )


def encode_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.cache_write_1h_tokens:
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens - usage.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        }
    return out


def encode_cache(mark: CacheMark) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": mark.ttl} if mark.ttl else {"type": "ephemeral"}


def with_cache(block: dict[str, Any], mark: CacheMark | None) -> dict[str, Any]:
    if mark is not None:
        block["cache_control"] = encode_cache(mark)
    return block


def message_id(value: str) -> str:
    return value if value.startswith("msg_") else f"msg_{value}"


def signature_for(state: ReasoningState | None) -> str:
    """Anthropic's own signature as is; foreign state sealed; nothing is never fabricated (§5.7)."""
    if state is None:
        return ""
    if state.origin == Format.anthropic and state.kind == "signature":
        return state.payload
    return envelope.seal(state)


def error_class_of(error: Any) -> tuple[str, str, int]:
    if not isinstance(error, dict):
        return "server", str(error), 500
    message = str(error.get("message", ""))
    cls, status = ERROR_CLASSES.get(str(error.get("type")), ("server", 500))
    if cls == "invalid_request" and message.startswith("prompt is too long"):
        cls = "context_exceeded"
    return cls, message, status
