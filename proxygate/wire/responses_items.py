"""OpenAI Responses items ↔ IR parts: the pieces the request, response and stream codecs share.

A Responses conversation is a flat list of *items* (protocols.md §3.3); the IR groups them into
messages. This module converts single items and content parts both ways, maps usage (§5.11),
stop reasons (§5.10) and error codes (§5.12), and keeps two reversible conventions:

* Namespaced tools (Codex's ``{"type":"namespace","name":"multi_agent_v1","tools":[…]}``) are
  flattened to ``<namespace>--<name>`` for every other format and split again when a call goes
  back to a Responses peer. ``--`` because ``__`` is already taken: Codex names MCP tools
  ``mcp__server__tool``, and those must stay whole.
* OpenAI reasoning state (``encrypted_content``) is kept with its item id as the payload of a
  ``ReasoningState(origin="responses", kind="encrypted")`` — both are needed to send the item
  back statelessly (§3.3, §3.9); foreign state travels through ``encrypted_content`` sealed (§5.7.3).
"""

from __future__ import annotations

from typing import Any

import orjson

from proxygate.wire import envelope
from proxygate.wire.content import data_url, document_text, url_source
from proxygate.wire.history import result_text
from proxygate.wire.ir import (
    Base64Source,
    Document,
    FileSource,
    Format,
    Image,
    MediaSource,
    Opaque,
    Part,
    Reasoning,
    ReasoningState,
    Refusal,
    StopReason,
    Text,
    TextSource,
    ToolCall,
    ToolResult,
    UrlSource,
    Usage,
)
from proxygate.wire.usage import responses_usage, token_count

NAMESPACE_SEP = "--"

# Item types that only an OpenAI upstream understands; kept as Opaque for RESP→RESP (§3.3).
HOSTED_ITEMS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "image_generation_call",
        "code_interpreter_call",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "compaction",
        "compaction_trigger",
        "item_reference",
    }
)

# IR error class → Responses error code in response.failed (§3.8, §5.12)
ERROR_CODES = {
    "rate_limited": "rate_limit_exceeded",
    "context_exceeded": "context_length_exceeded",
    "billing": "insufficient_quota",
    "invalid_request": "invalid_prompt",
    "overloaded": "server_is_overloaded",
    "timeout": "server_error",
}
# Responses error code → (IR error class, HTTP status)
ERROR_CLASSES = {
    "rate_limit_exceeded": ("rate_limited", 429),
    "context_length_exceeded": ("context_exceeded", 400),
    "insufficient_quota": ("billing", 429),
    "invalid_prompt": ("invalid_request", 400),
    "invalid_request_error": ("invalid_request", 400),
    "invalid_image": ("invalid_request", 400),
    "server_is_overloaded": ("overloaded", 503),
    "slow_down": ("overloaded", 503),
    "server_error": ("server", 500),
}


# --------------------------------------------------------------------------- names


def flatten_name(namespace: str | None, name: str) -> str:
    return f"{namespace}{NAMESPACE_SEP}{name}" if namespace else name


def split_name(name: str) -> tuple[str | None, str]:
    """``multi_agent_v1--spawn_agent`` → (``multi_agent_v1``, ``spawn_agent``)."""
    namespace, sep, inner = name.partition(NAMESPACE_SEP)
    if sep and namespace and inner:
        return namespace, inner
    return None, name


# --------------------------------------------------------------------------- reasoning state


def native_state(item_id: str, encrypted: str) -> ReasoningState:
    payload = orjson.dumps({"id": item_id, "encrypted_content": encrypted}).decode()
    return ReasoningState(origin=Format.responses, kind="encrypted", payload=payload)


def state_of_slot(item_id: str, encrypted: str) -> ReasoningState:
    """An ``encrypted_content`` value: our envelope (foreign state), else OpenAI's own."""
    return envelope.unseal(encrypted) or native_state(item_id, encrypted)


def native_payload(state: ReasoningState | None) -> tuple[str, str] | None:
    """(item id, encrypted_content) of an OpenAI-origin state, else None."""
    if state is None or state.origin != Format.responses or state.kind != "encrypted":
        return None
    try:
        body = orjson.loads(state.payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("encrypted_content"), str):
        return None
    return str(body.get("id") or ""), body["encrypted_content"]


def slot_value(state: ReasoningState | None) -> str | None:
    """What goes into a client's ``encrypted_content``: OpenAI's own value, or an envelope."""
    if state is None:
        return None
    native = native_payload(state)
    return native[1] if native else envelope.seal(state)


def reasoning_text(item: dict[str, Any]) -> tuple[str, bool]:
    """Visible text of a reasoning item (summaries joined by a blank line) and whether it is a summary."""
    summary = [str(s.get("text", "")) for s in item.get("summary") or [] if isinstance(s, dict)]
    if any(summary):
        return "\n\n".join(summary), True
    content = [str(c.get("text", "")) for c in item.get("content") or [] if isinstance(c, dict)]
    return "".join(content), False


def decode_reasoning(item: dict[str, Any]) -> Reasoning | None:
    text, is_summary = reasoning_text(item)
    encrypted = item.get("encrypted_content")
    state = state_of_slot(str(item.get("id") or ""), encrypted) if isinstance(encrypted, str) else None
    if not text and state is None:
        return None  # an id alone is useless with store:false (§3.3)
    return Reasoning(text, state, is_summary=is_summary)


# --------------------------------------------------------------------------- content parts


def _media(url: Any, file_id: Any) -> MediaSource | None:
    if isinstance(url, str) and url:
        return url_source(url)
    if isinstance(file_id, str) and file_id:
        return FileSource(file_id)
    return None


def decode_content_part(part: Any) -> Part | None:
    """One input/output content part; unknown types are skipped (§0 rule c)."""
    if isinstance(part, str):
        return Text(part)
    if not isinstance(part, dict):
        return None
    match part.get("type"):
        case "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text":
            return Text(str(part.get("text", "")))
        case "refusal":
            return Refusal(str(part.get("refusal", "")))
        case "input_image":
            source = _media(part.get("image_url"), part.get("file_id"))
            detail = part.get("detail")
            return Image(source, detail=detail if isinstance(detail, str) else None) if source else None
        case "input_file":
            source = _media(part.get("file_data") or part.get("file_url"), part.get("file_id"))
            filename = part.get("filename")
            name = filename if isinstance(filename, str) else None
            return Document(source, filename=name) if source else None
    return None


def decode_content(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [Text(content)] if content else []
    if not isinstance(content, list):
        return []
    return [p for p in map(decode_content_part, content) if p is not None]


def encode_media(source: MediaSource, *, key: str) -> dict[str, Any]:
    match source:
        case Base64Source():
            return {key: data_url(source)}
        case UrlSource(url=url):
            return {key: url}
        case FileSource(file_id=file_id):
            return {"file_id": file_id}
        case TextSource(text=text):
            return {"text": text}
    return {}


def encode_input_part(part: Part) -> dict[str, Any] | None:
    """A user-side part: ``input_text`` / ``input_image`` (detail required) / ``input_file`` (§5.2)."""
    match part:
        case Text(text=text) if text:
            return {"type": "input_text", "text": text}
        case Refusal(text=text) if text:
            return {"type": "input_text", "text": text}
        case Image(source=source, detail=detail):
            return {
                "type": "input_image",
                **encode_media(source, key="image_url"),
                "detail": detail or "auto",
            }
        case Document(source=TextSource(text=text), title=title):
            return {"type": "input_text", "text": document_text(text, title)}
        case Document(source=source, filename=filename, title=title):
            media = (
                {"file_url": source.url}
                if isinstance(source, UrlSource)
                else encode_media(source, key="file_data")
            )
            out: dict[str, Any] = {"type": "input_file", **media}
            if filename or title:
                out["filename"] = filename or title
            return out
    return None


def encode_output_part(part: Part) -> dict[str, Any] | None:
    """An assistant-side part: ``output_text`` or ``refusal`` — never ``input_text`` (§3.3)."""
    match part:
        case Text(text=text) if text:
            return {"type": "output_text", "text": text, "annotations": []}
        case Refusal(text=text):
            return {"type": "refusal", "refusal": text}
    return None


def encode_tool_output(result: ToolResult) -> str | list[dict[str, Any]]:
    """``function_call_output.output``: a string, or a part list when media must survive (§5.6)."""
    if all(isinstance(p, Text) for p in result.parts):
        return result_text(result)
    return [e for e in map(encode_input_part, result.parts) if e is not None]


def decode_tool_output(output: Any) -> tuple[Text | Image | Document, ...]:
    if isinstance(output, str):
        return (Text(output),)
    parts = decode_content(output)
    return tuple(p for p in parts if isinstance(p, Text | Image | Document))


# --------------------------------------------------------------------------- output items


def decode_call(item: dict[str, Any]) -> ToolCall:
    if item.get("type") == "custom_tool_call":
        return ToolCall(
            id=str(item.get("call_id") or item.get("id") or ""),
            name=str(item.get("name", "")),
            arguments=str(item.get("input", "")),
            kind="custom",
        )
    namespace = item.get("namespace")
    return ToolCall(
        id=str(item.get("call_id") or item.get("id") or ""),
        name=flatten_name(namespace if isinstance(namespace, str) else None, str(item.get("name", ""))),
        arguments=str(item.get("arguments") or ""),
    )


def decode_output_items(items: Any) -> list[Part]:
    """A response's ``output`` list → assistant parts, in order."""
    parts: list[Part] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        match item.get("type"):
            case "message":
                parts.extend(decode_content(item.get("content")))
            case "reasoning":
                reasoning = decode_reasoning(item)
                if reasoning is not None:
                    parts.append(reasoning)
            case "function_call" | "custom_tool_call":
                parts.append(decode_call(item))
            case kind if kind in HOSTED_ITEMS:
                parts.append(Opaque(Format.responses, item))
    return parts


def encode_call(call: ToolCall, *, item_id: str | None, status: str | None) -> dict[str, Any]:
    """A ``function_call`` / ``custom_tool_call`` item; a flattened name gets its namespace back."""
    head: dict[str, Any] = {"type": "custom_tool_call" if call.kind == "custom" else "function_call"}
    if item_id:
        head["id"] = item_id
    head["call_id"] = call.id
    if call.kind == "custom":
        item = {**head, "name": call.name, "input": call.arguments}
    else:
        namespace, name = split_name(call.name)
        item = {**head, "name": name}
        if namespace:
            item["namespace"] = namespace
        item["arguments"] = call.arguments or "{}"
    if status:
        item["status"] = status
    return item


def encode_reasoning(reasoning: Reasoning, *, item_id: str) -> dict[str, Any]:
    native = native_payload(reasoning.state)
    item: dict[str, Any] = {"type": "reasoning", "id": (native[0] if native else "") or item_id}
    item["summary"] = [{"type": "summary_text", "text": reasoning.text}] if reasoning.text else []
    value = slot_value(reasoning.state)
    if value is not None:
        item["encrypted_content"] = value
    return item


def encode_output_items(parts: tuple[Part, ...], *, base_id: str) -> list[dict[str, Any]]:
    """Assistant parts → a response's ``output`` items with deterministic item ids."""
    items: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []

    def flush() -> None:
        if content:
            n = len(items)
            items.append(
                {
                    "type": "message",
                    "id": f"msg_{base_id}_{n}",
                    "status": "completed",
                    "role": "assistant",
                    "content": list(content),
                }
            )
            content.clear()

    for part in parts:
        if isinstance(part, Text | Refusal):
            encoded = encode_output_part(part)
            if encoded is not None:
                content.append(encoded)
            continue
        flush()
        n = len(items)
        match part:
            case Reasoning():
                items.append(encode_reasoning(part, item_id=f"rs_{base_id}_{n}"))
            case ToolCall():
                prefix = "ctc" if part.kind == "custom" else "fc"
                items.append(encode_call(part, item_id=f"{prefix}_{base_id}_{n}", status="completed"))
            case Opaque(fmt=Format.responses, raw=raw):
                items.append(raw)
    flush()
    return items


# --------------------------------------------------------------------------- usage, stop, ids


def decode_usage(usage: Any) -> Usage:
    """§5.11: OpenAI ``input_tokens`` include cache reads and writes; the IR's exclude both."""
    base = responses_usage(usage)
    details = usage.get("input_tokens_details") if isinstance(usage, dict) else None
    written = token_count(details.get("cache_write_tokens")) if isinstance(details, dict) else 0
    if written:
        return Usage(
            input_tokens=max(base.input_tokens - written, 0),
            output_tokens=base.output_tokens,
            cache_read_tokens=base.cache_read_tokens,
            cache_write_tokens=written,
            reasoning_tokens=base.reasoning_tokens,
        )
    return base


def encode_usage(usage: Usage) -> dict[str, Any]:
    """Both details objects are required by the SDK schema, so they are always present (§5.11)."""
    details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens}
    if usage.cache_write_tokens:
        details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": details,
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
    }


def stop_reason_of(response: dict[str, Any], *, has_calls: bool) -> StopReason:
    """§5.10: RESP has no finish reason; status + incomplete_details + emitted calls decide."""
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        if reason == "content_filter":
            return StopReason.refusal
        if reason == "max_output_tokens":
            return StopReason.max_tokens
        return StopReason.end_turn
    return StopReason.tool_use if has_calls else StopReason.end_turn


def status_of(stop: StopReason) -> tuple[str, dict[str, str] | None]:
    """IR stop reason → (status, incomplete_details) of the response object (§5.10)."""
    if stop in (StopReason.max_tokens, StopReason.context_exceeded):
        return "incomplete", {"reason": "max_output_tokens"}
    if stop is StopReason.refusal:
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def error_of(error: Any) -> tuple[str, str, int]:
    """A ``response.error`` / ``error`` event payload → (IR class, message, status)."""
    if not isinstance(error, dict):
        return "server", str(error or "upstream error"), 500
    code = error.get("code") or error.get("type")
    cls, status = ERROR_CLASSES.get(str(code), ("server", 500))
    return cls, str(error.get("message") or code or "upstream error"), status


def base_id(response_id: str) -> str:
    """The part of a response id that item ids are derived from (``resp_abc`` → ``abc``)."""
    return response_id.removeprefix("resp_") or "0"


def response_id(value: str) -> str:
    return value if value.startswith("resp_") else f"resp_{value}"
