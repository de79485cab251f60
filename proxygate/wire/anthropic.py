"""Anthropic Messages codec: request, response and stream, to and from the IR (protocols.md §1).

Decoding keeps everything an Anthropic upstream may need again (thinking signatures, server-tool
blocks as ``Opaque``); encoding produces what the API accepts from a converted history: tool
calls answered first in the next user turn (§6.3), no empty text (§6.1), only Anthropic-origin
thinking (§5.7.2), ``max_tokens`` always set, and cache breakpoints injected for clients that
do not place their own (§5.13).

Sampling parameters and API versions (§1.3): a converted request goes out with the provider
layer's ``anthropic-version: 2023-06-01``, which takes ``temperature``/``top_p``/``top_k``, so
they are kept (a Chat client's ``temperature: 0`` must not become the default 1.0), clamped to
Anthropic's 0–1, and dropped where the target refuses them: all three while thinking is on, and
``top_p`` next to ``temperature`` for models that take only one (``Target.exclusive_sampling``).
A native client's own sampling goes out as it sent it (its version header is forwarded).
"""

from typing import Any

import orjson

from proxygate.wire.anthropic_blocks import (
    STOP_FROM_IR,
    STOP_TO_IR,
    cache_mark,
    decode_content,
    decode_usage,
    encode_cache,
    encode_usage,
    message_id,
    signature_for,
    with_cache,
)
from proxygate.wire.anthropic_stream import StreamDecoder, StreamEncoder
from proxygate.wire.content import (
    arguments_to_input,
    sanitize_id,
)
from proxygate.wire.history import repair_tool_pairing
from proxygate.wire.ir import (
    Base64Source,
    Document,
    FileSource,
    Format,
    Image,
    InvalidRequest,
    MediaSource,
    Message,
    Opaque,
    Part,
    ProtocolError,
    Reasoning,
    ReasoningConfig,
    ReasoningState,
    Refusal,
    Request,
    Response,
    ResponseFormat,
    Role,
    Sampling,
    StopReason,
    Text,
    TextSource,
    ToolCall,
    ToolChoice,
    ToolDef,
    ToolResult,
    UrlSource,
    sampling_number,
)
from proxygate.wire.target import PERMISSIVE, Target

__all__ = [
    "StreamDecoder",
    "StreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]


# A converted request must carry max_tokens (§1.4, §6.6); 32000 is what current Claude models
# accept as output and the proxy default suggested in §5.8. The provider layer may pass a
# per-model value.
DEFAULT_MAX_TOKENS = 32000
# Tokens left for the answer when max_tokens is raised above a thinking budget (§5.7.4).
ANSWER_RESERVE_TOKENS = 4096
MIN_THINKING_BUDGET = 1024  # API minimum for budget_tokens (§1.9)
MAX_CACHE_BREAKPOINTS = 4  # per request, top-level marker included (§1.10)
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})  # §5.2

# Effort → manual thinking budget (§5.7.4); "max" is clamped below max_tokens at use.
EFFORT_BUDGET = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32000,
    "max": 64000,
}

_REQUEST_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "cache_control",
        "metadata",
    }
)


# --------------------------------------------------------------------------- decoding blocks


# --------------------------------------------------------------------------- requests


def decode_request(body: dict[str, Any], *, path_model: str | None = None) -> Request:
    """An Anthropic Messages request body → IR."""
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise InvalidRequest("messages: expected a list of messages")
    messages: list[Message] = []
    for i, msg in enumerate(raw_messages):
        if not isinstance(msg, dict):
            raise InvalidRequest(f"messages.{i}: expected an object")
        role = msg.get("role")
        if role not in ("user", "assistant", "system"):
            raise InvalidRequest(f"messages.{i}.role: expected user, assistant or system")
        messages.append(Message(role, decode_content(msg.get("content"))))

    system = body.get("system")
    system_parts = tuple(p for p in decode_content(system) if isinstance(p, Text))

    tools = tuple(_decode_tool(t) for t in body.get("tools") or () if isinstance(t, dict))
    tool_choice, parallel = _decode_tool_choice(body.get("tool_choice"))
    output_config = body.get("output_config") if isinstance(body.get("output_config"), dict) else {}
    assert isinstance(output_config, dict)
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    stop = body.get("stop_sequences")
    max_tokens = body.get("max_tokens")
    top_k = body.get("top_k")
    extras = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS}
    return Request(
        model=str(body.get("model") or path_model or ""),
        messages=tuple(messages),
        system=system_parts,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
        sampling=Sampling(
            temperature=sampling_number(body.get("temperature")),
            top_p=sampling_number(body.get("top_p")),
            top_k=top_k if isinstance(top_k, int) else None,
            stop=tuple(s for s in stop if isinstance(s, str)) if isinstance(stop, list) else (),
        ),
        reasoning=_decode_thinking(body.get("thinking"), output_config),
        response_format=_decode_output_format(output_config.get("format")),
        cache=cache_mark(body),
        user_id=user_id if isinstance(user_id, str) else None,
        stream=bool(body.get("stream", False)),
        source=Format.anthropic,
        passthrough={Format.anthropic: extras} if extras else {},
    )


def _decode_tool(tool: dict[str, Any]) -> ToolDef:
    kind = tool.get("type")
    name = str(tool.get("name", ""))
    if kind not in (None, "custom"):  # versioned server/client tools: web_search_*, bash_* …
        return ToolDef(name=name, kind="hosted", origin=Format.anthropic, raw=tool)
    schema = tool.get("input_schema")
    strict = tool.get("strict")
    return ToolDef(
        name=name,
        description=str(tool.get("description") or ""),
        parameters=schema if isinstance(schema, dict) else None,
        strict=strict if isinstance(strict, bool) else None,
        cache=cache_mark(tool),
    )


def _decode_tool_choice(choice: Any) -> tuple[ToolChoice | None, bool | None]:
    if not isinstance(choice, dict):
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    match choice.get("type"):
        case "any":
            return ToolChoice("required"), parallel
        case "tool":
            return ToolChoice("tool", name=str(choice.get("name", ""))), parallel
        case "none":
            return ToolChoice("none"), parallel
    return ToolChoice("auto"), parallel


def _decode_thinking(thinking: Any, output_config: dict[str, Any]) -> ReasoningConfig | None:
    effort = output_config.get("effort")
    effort = effort if effort in ("low", "medium", "high", "xhigh", "max") else None
    display = thinking.get("display") if isinstance(thinking, dict) else None
    display = display if isinstance(display, str) else None
    match thinking.get("type") if isinstance(thinking, dict) else None:
        case "enabled":
            assert isinstance(thinking, dict)
            budget = thinking.get("budget_tokens")
            return ReasoningConfig(
                "budget",
                budget_tokens=budget if isinstance(budget, int) else None,
                effort=effort,
                display=display,
            )
        case "adaptive" | "between_tools":
            return ReasoningConfig("adaptive", effort=effort, display=display)
        case "disabled":
            return ReasoningConfig("off")
    return ReasoningConfig("effort", effort=effort) if effort else None


def _decode_output_format(fmt: Any) -> ResponseFormat | None:
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return ResponseFormat("json_schema", schema=fmt["schema"])
    return None


def encode_request(
    req: Request, *, default_max_tokens: int = DEFAULT_MAX_TOKENS, target: Target = PERMISSIVE
) -> dict[str, Any]:
    """IR → an Anthropic Messages request body for ``req.model`` (deterministic).

    ``max_tokens`` is required: the client's, else the model's known output limit
    (``target``), else ``default_max_tokens``; a converted request never asks for more than
    the model's limit.
    """
    is_native = req.source is Format.anthropic
    system, messages = _place_system(req, repair_tool_pairing(req.messages), is_native=is_native)
    encoded = [m for m in (_encode_message(m) for m in messages) if m is not None]
    if not encoded:
        raise InvalidRequest("messages: the conversation has no content to send")
    if encoded[-1]["role"] == "user" and not encoded[-1]["content"]:
        raise InvalidRequest("messages: the last user turn is empty")
    encoded = [m for m in encoded if m["content"]]
    tools = [t for t in (_encode_tool(t) for t in req.tools) if t is not None]

    body: dict[str, Any] = {"model": req.model}
    limit = 0 if is_native else target.max_output_tokens
    max_tokens = req.max_output_tokens or limit or default_max_tokens
    if limit:
        max_tokens = min(max_tokens, limit)
    thinking, max_tokens = _encode_thinking(req, encoded, max_tokens, limit)
    body["max_tokens"] = max_tokens
    if thinking is not None:
        body["thinking"] = thinking
    output_config = _encode_output_config(req, thinking)
    if output_config:
        body["output_config"] = output_config
    if system:
        body["system"] = system
    body["messages"] = encoded
    if tools:
        body["tools"] = tools
        choice = _encode_tool_choice(req, thinking_on=thinking is not None and thinking["type"] != "disabled")
        if choice is not None:
            body["tool_choice"] = choice
    if req.sampling.stop:
        body["stop_sequences"] = list(req.sampling.stop)
    if thinking is None:  # thinking refuses sampling changes; see the module docstring (§1.3)
        sampling = req.sampling
        if sampling.temperature is not None:
            body["temperature"] = min(max(sampling.temperature, 0.0), 1.0)
        if sampling.top_p is not None and not (
            target.exclusive_sampling and sampling.temperature is not None and not is_native
        ):
            body["top_p"] = sampling.top_p
        if sampling.top_k is not None:
            body["top_k"] = sampling.top_k
    if req.user_id:
        body["metadata"] = {"user_id": req.user_id}
    if req.cache is not None:
        body["cache_control"] = encode_cache(req.cache)
    if req.stream:
        body["stream"] = True
    if is_native:
        for key, value in req.passthrough.get(Format.anthropic, {}).items():
            body.setdefault(key, value)
    else:
        _inject_cache_breakpoints(body)
    return body


def _system_reminder(parts: tuple[Part, ...]) -> Text | None:
    text = "\n\n".join(p.text for p in parts if isinstance(p, Text) and p.text.strip())
    return Text(f"<system-reminder>\n{text}\n</system-reminder>") if text else None


def _place_system(
    req: Request, messages: tuple[Message, ...], *, is_native: bool
) -> tuple[list[dict[str, Any]], list[Message]]:
    """Top-level system blocks plus the messages with mid-conversation system turns placed (§1.5, §5.1)."""
    system = [p for p in req.system if p.text.strip()]
    i = 0
    while i < len(messages) and messages[i].role == "system":
        system.extend(p for p in messages[i].parts if isinstance(p, Text) and p.text.strip())
        i += 1
    rest: list[Message] = []
    pending: list[Text] = []
    for msg in messages[i:]:
        if msg.role == "system" and not is_native:
            reminder = _system_reminder(msg.parts)
            if reminder is not None:
                pending.append(reminder)
            continue
        if pending and msg.role in ("user", "tool"):
            # Fold into the next user turn, after its tool results (§1.16 rule 2).
            msg = Message("user", (*_results_first(msg.parts), *pending, *_non_results(msg.parts)))
            pending = []
        rest.append(msg)
    if pending:  # the system turn was last: the previous user turn, or a new one
        if rest and rest[-1].role in ("user", "tool"):
            rest[-1] = Message("user", (*rest[-1].parts, *pending))
        else:
            rest.append(Message("user", tuple(pending)))
    blocks = []
    for part in system:
        block: dict[str, Any] = {"type": "text", "text": part.text}
        if part.cache is not None:
            block["cache_control"] = encode_cache(part.cache)
        blocks.append(block)
    return blocks, rest


def _results_first(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    return tuple(p for p in parts if isinstance(p, ToolResult))


def _non_results(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    return tuple(p for p in parts if not isinstance(p, ToolResult))


def _encode_source(source: MediaSource) -> dict[str, Any]:
    match source:
        case Base64Source(media_type=media_type, data=data):
            return {"type": "base64", "media_type": media_type, "data": data}
        case UrlSource(url=url):
            return {"type": "url", "url": url}
        case FileSource(file_id=file_id):
            return {"type": "file", "file_id": file_id}
        case TextSource(text=text, media_type=media_type):
            return {"type": "text", "media_type": media_type, "data": text}


def _encode_part(part: Part, role: Role) -> dict[str, Any] | None:
    match part:
        case Text(text=text, cache=cache):
            return with_cache({"type": "text", "text": text}, cache) if text.strip() else None
        case Image(source=source, cache=cache):
            if isinstance(source, Base64Source) and source.media_type not in IMAGE_TYPES:
                raise InvalidRequest(f"image type {source.media_type!r} is not accepted by Anthropic (§5.2)")
            if isinstance(source, TextSource):
                return None
            return with_cache({"type": "image", "source": _encode_source(source)}, cache)
        case Document(source=source, title=title, cache=cache):
            block: dict[str, Any] = {"type": "document", "source": _encode_source(source)}
            if title:
                block["title"] = title
            return with_cache(block, cache)
        case ToolCall(id=call_id, name=name, arguments=arguments, kind=kind, cache=cache):
            tool_input = {"input": arguments} if kind == "custom" else arguments_to_input(arguments)
            block = {"type": "tool_use", "id": sanitize_id(call_id), "name": name, "input": tool_input}
            return with_cache(block, cache)
        case ToolResult():
            return _encode_tool_result(part)
        case Reasoning(text=text, state=ReasoningState(origin=Format.anthropic, kind=kind, payload=payload)):
            # Only genuine Anthropic state goes back to Anthropic, byte for byte (§5.7.2, §6.5).
            if kind == "redacted":
                return {"type": "redacted_thinking", "data": payload}
            if kind == "signature" and payload:
                return {"type": "thinking", "thinking": text, "signature": payload}
            return None
        case Refusal(text=text):
            return {"type": "text", "text": text} if text.strip() else None
        case Opaque(fmt=Format.anthropic, raw=raw):
            return raw
    return None  # foreign reasoning, audio, other formats' opaque blocks


def _encode_tool_result(result: ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": sanitize_id(result.call_id)}
    content = [b for b in (_encode_part(p, "user") for p in result.parts) if b is not None]
    if len(content) == 1 and content[0]["type"] == "text" and "cache_control" not in content[0]:
        block["content"] = content[0]["text"]
    elif content:
        block["content"] = content
    if result.is_error:
        block["is_error"] = True
    return with_cache(block, result.cache)


def _encode_message(msg: Message) -> dict[str, Any] | None:
    role = "user" if msg.role == "tool" else msg.role
    blocks: list[dict[str, Any]] = []
    for part in msg.parts:
        block = _encode_part(part, role)
        if block is not None:
            blocks.append(block)
        elif isinstance(part, Text) and part.cache is not None and blocks:
            # Keep the breakpoint of a dropped empty block on the block before it (§6.1).
            blocks[-1].setdefault("cache_control", encode_cache(part.cache))
    if role == "assistant":
        blocks = _thinking_first(blocks)
    return {"role": role, "content": blocks}


def _thinking_first(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep thinking only at the start of an assistant turn, where the API expects it."""
    lead = 0
    while lead < len(blocks) and blocks[lead]["type"] in ("thinking", "redacted_thinking"):
        lead += 1
    return blocks[:lead] + [b for b in blocks[lead:] if b["type"] not in ("thinking", "redacted_thinking")]


def _encode_tool(tool: ToolDef) -> dict[str, Any] | None:
    if tool.kind == "hosted":
        return tool.raw if tool.origin is Format.anthropic else None
    out: dict[str, Any] = {"name": tool.name}
    if tool.kind == "custom":
        # Freeform tools become a function with one string field (§5.3).
        hint = f"{tool.description}\n\nPut the raw tool input in `input`.".strip()
        if tool.grammar is not None:
            hint += "\nFormat: " + orjson.dumps(tool.grammar).decode()
        out["description"] = hint
        out["input_schema"] = {
            "type": "object",
            "properties": {"input": {"type": "string", "description": "The raw input text."}},
            "required": ["input"],
        }
    else:
        if tool.description:
            out["description"] = tool.description
        out["input_schema"] = tool.parameters or {"type": "object", "properties": {}}
        if tool.strict:
            out["strict"] = True
    return with_cache(out, tool.cache)


def _encode_tool_choice(req: Request, *, thinking_on: bool) -> dict[str, Any] | None:
    choice = req.tool_choice
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice.mode == "none":
        return {"type": "none"}
    elif thinking_on and choice.mode in ("required", "tool"):
        out = {"type": "auto"}  # thinking cannot force tools: downgrade (§5.4)
    elif choice.mode == "required":
        out = {"type": "any"}
    elif choice.mode == "tool":
        out = {"type": "tool", "name": choice.name or ""}
    else:
        out = {"type": "auto"}
    if req.parallel_tool_calls is False:
        out = out or {"type": "auto"}
        out["disable_parallel_tool_use"] = True
    return out


def _needs_missing_thinking(messages: list[dict[str, Any]]) -> bool:
    """The last assistant turn calls tools but has no Anthropic thinking to start it (§1.16 rule 5)."""
    for msg in reversed(messages):
        if msg["role"] == "assistant":
            content = msg["content"]
            has_tool = any(b.get("type") == "tool_use" for b in content)
            starts_thinking = bool(content) and content[0]["type"] in ("thinking", "redacted_thinking")
            return has_tool and not starts_thinking
    return False


def _encode_thinking(
    req: Request, messages: list[dict[str, Any]], max_tokens: int, limit: int
) -> tuple[dict[str, Any] | None, int]:
    config = req.reasoning
    if config is None or config.mode == "off" or config.effort == "none":
        return None, max_tokens
    if _needs_missing_thinking(messages):
        # No genuine thinking for the open tool cycle: the documented escape hatch is to
        # disable thinking for this request, never to fabricate a signature (§5.7.2 3).
        return None, max_tokens
    if config.mode == "adaptive":
        out: dict[str, Any] = {"type": "adaptive"}
        if config.display:
            out["display"] = config.display
        return out, max_tokens
    budget = config.budget_tokens or EFFORT_BUDGET.get(config.effort or "medium", EFFORT_BUDGET["medium"])
    if budget >= max_tokens:
        if req.max_output_tokens is None and not (limit and budget + ANSWER_RESERVE_TOKENS > limit):
            max_tokens = budget + ANSWER_RESERVE_TOKENS
        else:
            budget = max_tokens - 1
    if budget < MIN_THINKING_BUDGET:
        return None, max_tokens
    out = {"type": "enabled", "budget_tokens": budget}
    if config.display:
        out["display"] = config.display
    return out, max_tokens


def _encode_output_config(req: Request, thinking: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    config = req.reasoning
    if thinking is not None and thinking["type"] == "adaptive" and config and config.effort:
        out["effort"] = config.effort
    fmt = req.response_format
    if fmt is not None and fmt.kind == "json_schema" and fmt.schema is not None:
        out["format"] = {"type": "json_schema", "schema": fmt.schema}
    elif fmt is not None and fmt.kind == "json_object":
        out["format"] = {"type": "json_schema", "schema": {"type": "object"}}
    return out


def _inject_cache_breakpoints(body: dict[str, Any]) -> None:
    """Mark last tool, last system block and the last block of the latest two user turns (§5.13)."""
    targets: list[dict[str, Any]] = []
    if body.get("tools"):
        targets.append(body["tools"][-1])
    if body.get("system"):
        targets.append(body["system"][-1])
    user_turns = [m for m in body["messages"] if m["role"] == "user" and m["content"]]
    targets.extend(m["content"][-1] for m in user_turns[-2:])
    existing = _count_breakpoints(body)
    for block in targets:
        if existing >= MAX_CACHE_BREAKPOINTS:
            break
        if "cache_control" not in block:
            block["cache_control"] = {"type": "ephemeral"}
            existing += 1


def _count_breakpoints(body: dict[str, Any]) -> int:
    blocks = [*body.get("tools", ()), *body.get("system", ())]
    for msg in body["messages"]:
        blocks.extend(msg["content"])
    return sum(1 for b in blocks if "cache_control" in b) + (1 if "cache_control" in body else 0)


# --------------------------------------------------------------------------- responses


def decode_response(body: dict[str, Any]) -> Response:
    """An Anthropic Message object → IR."""
    if body.get("type") == "error":
        raise ProtocolError(f"anthropic: error body where a message was expected: {body.get('error')}")
    content = body.get("content")
    if not isinstance(content, list):
        raise ProtocolError("anthropic: message without a content list")
    stop = body.get("stop_sequence")
    return Response(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        parts=decode_content(content),
        stop_reason=STOP_TO_IR.get(str(body.get("stop_reason")), StopReason.end_turn),
        stop_sequence=stop if isinstance(stop, str) else None,
        usage=decode_usage(body.get("usage")),
    )


def _response_block(part: Part) -> dict[str, Any] | None:
    match part:
        case Text(text=text):
            return {"type": "text", "text": text} if text else None
        case Refusal(text=text):
            return {"type": "text", "text": text} if text else None
        case ToolCall(id=call_id, name=name, arguments=arguments, kind=kind):
            tool_input = {"input": arguments} if kind == "custom" else arguments_to_input(arguments)
            return {"type": "tool_use", "id": sanitize_id(call_id), "name": name, "input": tool_input}
        case Reasoning(text=text, state=state):
            if state is not None and state.origin == Format.anthropic and state.kind == "redacted":
                return {"type": "redacted_thinking", "data": state.payload}
            return {"type": "thinking", "thinking": text, "signature": signature_for(state)}
        case Opaque(fmt=Format.anthropic, raw=raw):
            return raw
    return None


def encode_response(resp: Response) -> dict[str, Any]:
    """IR → an Anthropic Message object."""
    return {
        "id": message_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": [b for b in map(_response_block, resp.parts) if b is not None],
        "stop_reason": STOP_FROM_IR[resp.stop_reason],
        "stop_sequence": resp.stop_sequence,
        "usage": encode_usage(resp.usage),
    }
