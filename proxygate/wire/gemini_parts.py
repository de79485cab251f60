"""Gemini parts ↔ IR parts, ids, signatures, finish reasons, usage and errors (protocols.md §4).

Three conventions hold the Gemini codec together:

* **No tool-call ids on the wire** (§4.3, §5.5). A missing ``functionCall.id`` is synthesised as
  ``call_gem_<hash>`` from a seed (the response id, or "history") and the call's ordinal and
  name, so the same history or replayed response always yields the same ids. Encoding towards
  Gemini drops ids with that prefix again and keeps every other id (Gemini CLI's own ones).
* **Thought signatures** (§4.5) become ``ReasoningState(origin="gemini")``. In client history a
  signed ``functionCall`` keeps it on ``ToolCall.state``; in an upstream *response* a signature
  on a non-thought part becomes a state-only ``Reasoning`` right before that part, which is the
  slot ANT/RESP clients can carry (§5.14.7). Both shapes encode back onto the part.
* Only Gemini's own signatures go to Gemini; for calls without one, the first ``functionCall``
  of the turn gets the documented placeholder ``skip_thought_signature_validator`` (§4.5) —
  nothing is ever fabricated. Foreign state reaches a Gemini *client* sealed (§5.7.3).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from proxygate.wire import envelope
from proxygate.wire.content import arguments_to_input, document_text, input_to_arguments
from proxygate.wire.history import result_text
from proxygate.wire.ir import (
    Audio,
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
from proxygate.wire.usage import gemini_usage, token_count

SYNTH_PREFIX = "call_gem_"
# Google's documented placeholder for function calls whose history Gemini did not produce (§4.5).
SKIP_SIGNATURE = "skip_thought_signature_validator"

# §5.10: finish reasons that mean "blocked"; MALFORMED_FUNCTION_CALL & co. end the turn.
REFUSAL_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
        "ESCALATION",
    }
)
FINISH_FROM_IR = {
    StopReason.end_turn: "STOP",
    StopReason.stop_sequence: "STOP",
    StopReason.tool_use: "STOP",
    StopReason.pause_turn: "STOP",
    StopReason.max_tokens: "MAX_TOKENS",
    StopReason.context_exceeded: "MAX_TOKENS",
    StopReason.refusal: "SAFETY",
    StopReason.error: "OTHER",
}
# google.rpc status → (IR error class, HTTP status) (§4.6, §5.12)
ERROR_CLASSES = {
    "INVALID_ARGUMENT": ("invalid_request", 400),
    "FAILED_PRECONDITION": ("invalid_request", 400),
    "UNAUTHENTICATED": ("authentication", 401),
    "PERMISSION_DENIED": ("permission", 403),
    "NOT_FOUND": ("not_found", 404),
    "RESOURCE_EXHAUSTED": ("rate_limited", 429),
    "CANCELLED": ("server", 499),
    "INTERNAL": ("server", 500),
    "UNAVAILABLE": ("overloaded", 503),
    "DEADLINE_EXCEEDED": ("timeout", 504),
}


def field(obj: Any, camel: str, snake: str) -> Any:
    """Gemini accepts camelCase and snake_case (proto3 JSON); decoders read both (§4.1)."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def synth_call_id(seed: str, ordinal: int, name: str) -> str:
    digest = hashlib.sha256(f"{seed}:{ordinal}:{name}".encode()).hexdigest()
    return SYNTH_PREFIX + digest[:20]


def wire_call_id(call_id: str) -> str | None:
    """The id to show Gemini: none for ids proxygate synthesised (§5.5)."""
    return None if not call_id or call_id.startswith(SYNTH_PREFIX) else call_id


# --------------------------------------------------------------------------- signatures


def state_of_signature(signature: str) -> ReasoningState:
    return envelope.unseal(signature) or ReasoningState(
        origin=Format.gemini, kind="thought_signature", payload=signature
    )


def upstream_signature(state: ReasoningState | None) -> str | None:
    """A signature Gemini may receive: its own only (§5.7.2)."""
    if state is not None and state.origin == Format.gemini and state.kind == "thought_signature":
        return state.payload
    return None


def client_signature(state: ReasoningState | None) -> str | None:
    """What a Gemini client holds in ``thoughtSignature``: Gemini's own, or an envelope (§5.7.3)."""
    if state is None:
        return None
    return upstream_signature(state) or envelope.seal(state)


# --------------------------------------------------------------------------- media


def decode_media(part: dict[str, Any]) -> Part | None:
    inline = field(part, "inlineData", "inline_data")
    if isinstance(inline, dict):
        mime = str(field(inline, "mimeType", "mime_type") or "application/octet-stream")
        data = str(inline.get("data", ""))
        if mime.startswith("image/"):
            return Image(Base64Source(mime, data))
        if mime.startswith("audio/"):
            return Audio(data, mime.removeprefix("audio/"))
        return Document(Base64Source(mime, data))
    file = field(part, "fileData", "file_data")
    if isinstance(file, dict):
        uri = str(field(file, "fileUri", "file_uri") or "")
        mime = str(field(file, "mimeType", "mime_type") or "")
        # Files-API and GCS uris are provider-scoped ids; anything else is a plain URL (§5.2).
        is_provider_file = uri.startswith(("gs://", "https://generativelanguage.googleapis.com/"))
        source: MediaSource = FileSource(uri) if is_provider_file else UrlSource(uri)
        return Image(source) if mime.startswith("image/") else Document(source)
    return None


_SUFFIX_TYPES = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp", ".pdf": "application/pdf"}


def encode_media(part: Image | Document | Audio) -> dict[str, Any] | None:
    if isinstance(part, Audio):
        return {"inlineData": {"mimeType": f"audio/{part.format}", "data": part.data}}
    source = part.source
    match source:
        case Base64Source(media_type=mime, data=data):
            return {"inlineData": {"mimeType": mime, "data": data}}
        case TextSource(text=text):
            title = part.title if isinstance(part, Document) else None
            return {"text": document_text(text, title)}
        case UrlSource(url=uri) | FileSource(file_id=uri):
            # AI Studio fetches only Files-API/GCS uris; plain URLs need inlining upstream of
            # the codec (§5.2, §6.7), so the best a sans-I/O encoder can do is name it.
            suffix = "." + uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
            default = "image/jpeg" if isinstance(part, Image) else "application/octet-stream"
            return {"fileData": {"mimeType": _SUFFIX_TYPES.get(suffix, default), "fileUri": uri}}
    return None


# --------------------------------------------------------------------------- model parts


def decode_model_parts(parts: Any, *, seed: str, first_ordinal: int, in_response: bool) -> list[Part]:
    """A ``model`` content's parts → IR assistant parts (see the module docstring for state)."""
    out: list[Part] = []
    ordinal = first_ordinal
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        signature = field(part, "thoughtSignature", "thought_signature")
        state = state_of_signature(signature) if isinstance(signature, str) and signature else None
        call = field(part, "functionCall", "function_call")
        text = part.get("text")
        if isinstance(call, dict):
            name = str(call.get("name", ""))
            call_id = call.get("id")
            tool_call = ToolCall(
                id=call_id if isinstance(call_id, str) and call_id else synth_call_id(seed, ordinal, name),
                name=name,
                arguments=input_to_arguments(call.get("args") or {}),
                state=None if in_response else state,
            )
            ordinal += 1
            if in_response and state is not None:
                out.append(Reasoning("", state))
            out.append(tool_call)
        elif isinstance(text, str) and part.get("thought") is True:
            previous = out[-1] if out else None
            if not text and state and isinstance(previous, Reasoning) and previous.state is None:
                out[-1] = Reasoning(
                    previous.text, state, is_summary=True
                )  # our own split (encode_model_parts)
            elif text or state:
                out.append(Reasoning(text, state, is_summary=True))
        elif isinstance(text, str):
            if state is not None:
                out.append(Reasoning("", state))
            if text:
                out.append(Text(text))
        elif (media := decode_media(part)) is not None:
            out.append(media)
        elif any(k in part for k in ("executableCode", "codeExecutionResult", "executable_code")):
            out.append(Opaque(Format.gemini, part))
    return out


def _with_signature(part: dict[str, Any], signature: str | None) -> dict[str, Any]:
    return {**part, "thoughtSignature": signature} if signature else part


def encode_model_parts(parts: tuple[Part, ...], *, for_client: bool) -> list[dict[str, Any]]:
    """IR assistant parts → ``model`` parts for a Gemini upstream or (``for_client``) a Gemini client."""
    signature_of = client_signature if for_client else upstream_signature
    out: list[dict[str, Any]] = []
    pending: str | None = None  # a state-only Reasoning signs the next part
    for part in parts:
        encoded: dict[str, Any] | None = None
        match part:
            case Reasoning(text=text, state=state):
                signature = signature_of(state)
                if text and (signature or for_client):
                    encoded = _with_signature({"text": text, "thought": True}, signature)
                elif signature:
                    pending = signature
            case Text(text=text) if text:
                encoded = {"text": text}
            case Refusal(text=text) if text:
                encoded = {"text": text}
            case ToolCall():
                call: dict[str, Any] = {"name": part.name, "args": arguments_to_input(part.arguments)}
                call_id = part.id if for_client else wire_call_id(part.id)
                if call_id:
                    call["id"] = call_id
                encoded = _with_signature({"functionCall": call}, signature_of(part.state))
            case Image() | Document() | Audio():
                encoded = encode_media(part)
            case Opaque(fmt=Format.gemini, raw=raw):
                encoded = raw
        if encoded is None:
            continue
        if pending and "thoughtSignature" not in encoded:
            encoded = _with_signature(encoded, pending)
            pending = None
        out.append(encoded)
    if pending:
        # the signature arrived on an empty part (§4.4): return it the same way
        out.append(
            {"text": "", "thought": True, "thoughtSignature": pending}
            if for_client
            else {"text": "", "thoughtSignature": pending}
        )
    if not for_client:
        _sign_first_call(out)
    return out


def _sign_first_call(parts: list[dict[str, Any]]) -> None:
    """Gemini 3 requires a signature on the turn's first call; use the placeholder, never a fake (§4.5)."""
    calls = [p for p in parts if "functionCall" in p]
    if calls and not any("thoughtSignature" in p for p in calls):
        index = parts.index(calls[0])
        parts[index] = _with_signature(calls[0], SKIP_SIGNATURE)


# --------------------------------------------------------------------------- tool results


def decode_function_response(response: dict[str, Any], *, call_id: str) -> ToolResult:
    body = response.get("response")
    is_error = isinstance(body, dict) and "error" in body and "output" not in body
    value = body.get("error" if is_error else "output", body) if isinstance(body, dict) else body
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    parts: list[Text | Image | Document] = [Text(text)] if text else []
    for media_part in response.get("parts") or []:
        media = decode_media(media_part) if isinstance(media_part, dict) else None
        if isinstance(media, Image | Document):
            parts.append(media)
    name = response.get("name")
    return ToolResult(call_id, tuple(parts), is_error=is_error, name=name if isinstance(name, str) else None)


def encode_function_response(result: ToolResult, *, name: str) -> dict[str, Any]:
    text = result_text(result)
    response: dict[str, Any] = {"name": name}
    wire_id = wire_call_id(result.call_id)
    if wire_id:
        response["id"] = wire_id
    # "Use `output` … and `error` …; otherwise the whole response is output" (§4.2)
    response["response"] = {"error" if result.is_error else "output": text}
    return {"functionResponse": response}


# --------------------------------------------------------------------------- finish, usage, errors


def stop_reason_of(finish: Any, *, has_calls: bool, is_blocked: bool = False) -> StopReason:
    if is_blocked or finish in REFUSAL_REASONS:
        return StopReason.refusal
    if finish == "MAX_TOKENS":
        return StopReason.max_tokens
    return StopReason.tool_use if has_calls else StopReason.end_turn


def decode_usage(metadata: Any) -> Usage:
    """§5.11: tool-use prompt tokens count as input; thoughts are output outside candidates."""
    usage = gemini_usage(metadata)
    tool_prompt = token_count(field(metadata, "toolUsePromptTokenCount", "tool_use_prompt_token_count"))
    if tool_prompt:
        return Usage(
            usage.input_tokens + tool_prompt,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
        )
    return usage


def encode_usage(usage: Usage) -> dict[str, int]:
    out = {"promptTokenCount": usage.prompt_tokens}
    if usage.cache_read_tokens:
        out["cachedContentTokenCount"] = usage.cache_read_tokens
    out["candidatesTokenCount"] = max(usage.output_tokens - usage.reasoning_tokens, 0)
    if usage.reasoning_tokens:
        out["thoughtsTokenCount"] = usage.reasoning_tokens
    out["totalTokenCount"] = usage.prompt_tokens + usage.output_tokens
    return out


def error_of(error: Any) -> tuple[str, str, int]:
    """A Gemini ``{"error": …}`` object → (IR class, message, HTTP status)."""
    if not isinstance(error, dict):
        return "server", str(error or "upstream error"), 500
    message = str(error.get("message") or "upstream error")
    if str(error.get("status")) in ERROR_CLASSES:
        cls, status = ERROR_CLASSES[str(error["status"])]
        return cls, message, status
    code = error.get("code")
    by_code = {400: "invalid_request", 401: "authentication", 403: "permission", 404: "not_found"}
    by_code |= {429: "rate_limited", 503: "overloaded", 504: "timeout"}
    status = code if isinstance(code, int) else 500
    return by_code.get(status, "server"), message, status
