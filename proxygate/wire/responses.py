"""OpenAI Responses codec: request, response and stream, to and from the IR (protocols.md §3).

The one idea to grasp first: a Responses ``input`` is a flat list of items, the IR a list of
messages. Decoding groups consecutive assistant-side items (reasoning, message, function_call)
into one assistant message and folds ``function_call_output`` items into the user turn that
follows, results first (§5.6). ``instructions`` and the *leading* ``developer``/``system``
messages become ``Request.system`` — Codex 0.169 sends no ``instructions`` at all, only
developer messages (CLIENTS.md); later ones stay as mid-conversation ``system`` messages.

Encoding for a Responses upstream is stateless: ``store:false`` unless the client said
otherwise, reasoning items only when they carry OpenAI's own ``encrypted_content`` (ids alone
404 with ``store:false``, §3.3), assistant text as ``output_text``, tools flat with an explicit
``strict`` (§6.15). Namespaced tools are flattened on decode and regrouped on encode
(``responses_items.NAMESPACE_SEP``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from proxygate.wire.history import has_content
from proxygate.wire.ir import (
    Effort,
    Format,
    InvalidRequest,
    Message,
    Opaque,
    Part,
    Reasoning,
    ReasoningConfig,
    Request,
    Response,
    ResponseFormat,
    Role,
    Sampling,
    Text,
    ToolCall,
    ToolChoice,
    ToolDef,
    ToolResult,
    sampling_number,
)
from proxygate.wire.responses_items import (
    HOSTED_ITEMS,
    NAMESPACE_SEP,
    base_id,
    decode_call,
    decode_content,
    decode_output_items,
    decode_reasoning,
    decode_tool_output,
    decode_usage,
    encode_call,
    encode_input_part,
    encode_output_items,
    encode_output_part,
    encode_tool_output,
    encode_usage,
    flatten_name,
    native_payload,
    response_id,
    split_name,
    status_of,
    stop_reason_of,
)
from proxygate.wire.responses_stream import StreamDecoder, StreamEncoder
from proxygate.wire.target import PERMISSIVE, Target

__all__ = [
    "StreamDecoder",
    "StreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "instructions_as_developer",
]

ENCRYPTED_REASONING = "reasoning.encrypted_content"
# OpenAI rejects max_output_tokens below 16 (§3.2); translated values are floored.
MIN_OUTPUT_TOKENS = 16
# safety_identifier is limited to 64 characters; longer ids are hashed, never truncated (§6.23).
MAX_USER_ID = 64

_REQUEST_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "prompt_cache_key",
        "safety_identifier",
        "user",
        "stream",
    }
)
_ASSISTANT_ITEMS = frozenset({"reasoning", "function_call", "custom_tool_call"})
_RESULT_ITEMS = frozenset({"function_call_output", "custom_tool_call_output"})


# --------------------------------------------------------------------------- request: decode


class _Conversation:
    """Groups items into IR messages: same-role runs merge; tool outputs open a user turn."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._role: Role | None = None
        self._parts: list[Part] = []
        self._names: dict[str, str] = {}

    def add(self, role: Role, parts: list[Part], *, merge: bool = True) -> None:
        if not parts:
            return
        if role != self._role or not merge:
            self.flush()
            self._role = role
        self._parts.extend(parts)
        for part in parts:
            if isinstance(part, ToolCall):
                self._names[part.id] = part.name

    def name_of(self, call_id: str) -> str | None:
        return self._names.get(call_id)

    def is_results_turn(self) -> bool:
        return self._role == "user" and any(isinstance(p, ToolResult) for p in self._parts)

    def flush(self) -> None:
        if self._role is not None and self._parts:
            self.messages.append(Message(self._role, tuple(self._parts)))
        self._role, self._parts = None, []


def decode_request(body: dict[str, Any], *, path_model: str | None = None) -> Request:
    """A ``POST /v1/responses`` body → IR request."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    if not isinstance(items, list):
        raise InvalidRequest("input: expected a string or a list of items")

    system: list[Text] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        system.append(Text(instructions))
    conversation = _Conversation()
    is_leading = True
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        role = item.get("role")
        if kind == "message" and role in ("system", "developer"):
            texts = [p for p in decode_content(item.get("content")) if isinstance(p, Text)]
            if is_leading:
                system.extend(texts)
            else:
                conversation.add("system", list(texts), merge=False)
            continue
        is_leading = False
        _decode_item(conversation, kind, item)
    conversation.flush()

    reasoning = _decode_reasoning(body.get("reasoning"), body.get("include"))
    sampling = Sampling(
        temperature=sampling_number(body.get("temperature")), top_p=sampling_number(body.get("top_p"))
    )
    max_output = body.get("max_output_tokens")
    user = body.get("safety_identifier") or body.get("user")
    cache_key = body.get("prompt_cache_key")
    return Request(
        model=str(body.get("model") or path_model or ""),
        messages=tuple(conversation.messages),
        system=tuple(system),
        tools=tuple(_decode_tools(body.get("tools"))),
        tool_choice=_decode_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=_bool(body.get("parallel_tool_calls")),
        max_output_tokens=max_output if isinstance(max_output, int) else None,
        sampling=sampling,
        reasoning=reasoning,
        response_format=_decode_text_format(body.get("text")),
        cache_key=cache_key if isinstance(cache_key, str) else None,
        user_id=user if isinstance(user, str) else None,
        stream=body.get("stream") is True,
        source=Format.responses,
        passthrough={Format.responses: {k: v for k, v in body.items() if k not in _REQUEST_FIELDS}},
    )


def _decode_item(conversation: _Conversation, kind: Any, item: dict[str, Any]) -> None:
    if kind == "message":
        role: Role = "assistant" if item.get("role") == "assistant" else "user"
        parts = decode_content(item.get("content"))
        # A user message right after tool outputs joins that turn, after the results (§5.6).
        merge = role == "assistant" or conversation.is_results_turn()
        conversation.add(role, parts, merge=merge)
    elif kind == "reasoning":
        reasoning = decode_reasoning(item)
        conversation.add("assistant", [reasoning] if reasoning else [])
    elif kind in ("function_call", "custom_tool_call"):
        conversation.add("assistant", [decode_call(item)])
    elif kind in _RESULT_ITEMS:
        call_id = str(item.get("call_id") or "")
        result = ToolResult(
            call_id, decode_tool_output(item.get("output")), name=conversation.name_of(call_id)
        )
        conversation.add("user", [result], merge=conversation.is_results_turn())
    elif kind in HOSTED_ITEMS:
        role = "user" if str(kind).endswith("_output") or kind == "compaction_trigger" else "assistant"
        conversation.add(role, [Opaque(Format.responses, item)])
    # unknown item types are skipped (§0 rule c)


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _decode_function(tool: dict[str, Any], namespace: dict[str, Any] | None) -> ToolDef:
    params = tool.get("parameters")
    strict = tool.get("strict")
    ns_name = str(namespace.get("name", "")) if namespace else None
    return ToolDef(
        name=flatten_name(ns_name, str(tool.get("name", ""))),
        description=str(tool.get("description") or ""),
        parameters=params if isinstance(params, dict) else None,
        strict=strict if isinstance(strict, bool) else None,
        # The namespace header (sans tools) lets encode_request regroup the flattened tools.
        origin=Format.responses if namespace else None,
        raw={k: v for k, v in namespace.items() if k != "tools"} if namespace else None,
    )


def _decode_tools(tools: Any) -> list[ToolDef]:
    out: list[ToolDef] = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        match tool.get("type"):
            case "function":
                out.append(_decode_function(tool, None))
            case "namespace":
                inner = tool.get("tools")
                for sub in inner if isinstance(inner, list) else []:
                    if isinstance(sub, dict) and sub.get("type", "function") == "function":
                        out.append(_decode_function(sub, tool))
            case "custom":
                fmt = tool.get("format")
                out.append(
                    ToolDef(
                        name=str(tool.get("name", "")),
                        description=str(tool.get("description") or ""),
                        kind="custom",
                        grammar=fmt if isinstance(fmt, dict) else None,
                    )
                )
            case str(kind):
                # web_search, file_search, mcp…: OpenAI-hosted, dropped for other targets (§6.27)
                out.append(ToolDef(name=kind, kind="hosted", origin=Format.responses, raw=tool))
    return out


def _decode_tool_choice(choice: Any) -> ToolChoice | None:
    if choice in ("auto", "none", "required"):
        return ToolChoice(mode=choice)
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind in ("function", "custom") and isinstance(choice.get("name"), str):
        namespace = choice.get("namespace")
        name = flatten_name(namespace if isinstance(namespace, str) else None, choice["name"])
        return ToolChoice(mode="tool", name=name)
    if kind == "allowed_tools":
        tools = choice.get("tools")
        names = (
            tuple(str(t["name"]) for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str))
            if isinstance(tools, list)
            else ()
        )
        if choice.get("mode") == "required":
            return ToolChoice(mode="required", allowed=names)
        return ToolChoice(mode="auto", allowed=names)
    return None  # hosted-tool choices have no IR meaning


def _decode_reasoning(reasoning: Any, include: Any) -> ReasoningConfig | None:
    wants_encrypted = isinstance(include, list) and ENCRYPTED_REASONING in include
    if not isinstance(reasoning, dict):
        return ReasoningConfig(include_encrypted=True) if wants_encrypted else None
    effort = reasoning.get("effort")
    summary = reasoning.get("summary") or reasoning.get("generate_summary")
    valid = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
    return ReasoningConfig(
        mode="off" if effort == "none" else "effort",
        effort=effort if effort in valid else None,
        summary=summary if isinstance(summary, str) else None,
        include_encrypted=wants_encrypted,
    )


def _decode_text_format(text: Any) -> ResponseFormat | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    match fmt.get("type"):
        case "json_schema":
            schema, name, strict, description = (
                fmt.get(k) for k in ("schema", "name", "strict", "description")
            )
            return ResponseFormat(
                kind="json_schema",
                schema=schema if isinstance(schema, dict) else None,
                name=name if isinstance(name, str) else None,
                strict=strict if isinstance(strict, bool) else None,
                description=description if isinstance(description, str) else None,
            )
        case "json_object":
            return ResponseFormat(kind="json_object")
    return None


# --------------------------------------------------------------------------- request: encode


def encode_request(req: Request, *, target: Target = PERMISSIVE) -> dict[str, Any]:
    """IR request → a stateless ``POST /v1/responses`` body; same IR, same dict (§5.13).

    ``target``: a model that takes no reasoning (gpt-4.1) gets no ``reasoning`` and no encrypted
    reasoning ``include``; others get the nearest effort they accept.
    """
    passthrough = req.passthrough.get(Format.responses, {}) if req.source == Format.responses else {}
    body: dict[str, Any] = {"model": req.model}
    instructions = "\n\n".join(t.text for t in req.system if t.text)
    if instructions:
        body["instructions"] = instructions
    body["input"] = _encode_input(req.messages)
    tools = _encode_tools(req.tools)
    if tools:
        body["tools"] = tools
        choice = _encode_tool_choice(req.tool_choice, req.tools)
        if choice is not None:
            body["tool_choice"] = choice
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.max_output_tokens is not None:
        body["max_output_tokens"] = max(req.max_output_tokens, MIN_OUTPUT_TOKENS)
    if req.sampling.temperature is not None:
        body["temperature"] = req.sampling.temperature
    if req.sampling.top_p is not None:
        body["top_p"] = req.sampling.top_p
    # stop sequences have no Responses equivalent (§5.8): dropped
    takes_reasoning = target.reasoning_efforts != ()
    reasoning = _encode_reasoning(req.reasoning, target) if takes_reasoning else None
    if reasoning is not None:
        body["reasoning"] = reasoning
    include = [i for i in passthrough.get("include") or [] if takes_reasoning or i != ENCRYPTED_REASONING]
    if reasoning is not None and ENCRYPTED_REASONING not in include:
        # Stateless multi-turn reasoning needs the encrypted item back (§3.9).
        include.append(ENCRYPTED_REASONING)
    if include:
        body["include"] = include
    body["store"] = passthrough.get("store", False)
    text = _encode_text_format(req.response_format)
    if text is not None:
        body["text"] = text
    if req.cache_key and target.accepts_cache_key:
        body["prompt_cache_key"] = req.cache_key
    if req.user_id:
        body["safety_identifier"] = _user_id(req.user_id)
    body["stream"] = req.stream
    for key, value in passthrough.items():
        body.setdefault(key, value)
    return body


def _user_id(value: str) -> str:
    if len(value) <= MAX_USER_ID:
        return value
    return hashlib.sha256(value.encode()).hexdigest()[:MAX_USER_ID]


def _encode_input(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kinds: dict[str, str] = {}  # call id → "function" | "custom", for the matching output type
    for msg in messages:
        if msg.role == "assistant":
            items.extend(_encode_assistant(msg.parts, kinds))
        elif msg.role == "system":
            content = [e for e in map(encode_input_part, msg.parts) if e is not None]
            if content:
                items.append({"type": "message", "role": "developer", "content": content})
        else:
            items.extend(_encode_user(msg.parts, kinds))
    return items


def _encode_user(parts: tuple[Part, ...], kinds: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, ToolResult):
            kind = (
                "custom_tool_call_output" if kinds.get(part.call_id) == "custom" else "function_call_output"
            )
            items.append({"type": kind, "call_id": part.call_id, "output": encode_tool_output(part)})
        elif isinstance(part, Opaque):
            if part.fmt == Format.responses:
                items.append(part.raw)
        else:
            encoded = encode_input_part(part)
            if encoded is not None:
                content.append(encoded)
    if content:
        items.append({"type": "message", "role": "user", "content": content})
    return items


def _encode_assistant(parts: tuple[Part, ...], kinds: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []

    def flush() -> None:
        if content:
            items.append({"type": "message", "role": "assistant", "content": list(content)})
            content.clear()

    for part in parts:
        encoded = encode_output_part(part) if has_content(part) else None
        if encoded is not None:
            content.append(encoded)
            continue
        match part:
            case Reasoning(state=state) if native_payload(state) is not None:
                flush()
                item_id, encrypted = native_payload(state) or ("", "")
                summary = [{"type": "summary_text", "text": part.text}] if part.text else []
                items.append(
                    {"type": "reasoning", "id": item_id, "summary": summary, "encrypted_content": encrypted}
                )
            case ToolCall():
                flush()
                kinds[part.id] = part.kind
                items.append(encode_call(part, item_id=None, status=None))
            case Opaque(fmt=Format.responses, raw=raw):
                flush()
                items.append(raw)
        # foreign reasoning never reaches OpenAI (§5.7.2)
    flush()
    return items


def _encode_tools(tools: tuple[ToolDef, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    namespaces: dict[str, dict[str, Any]] = {}
    for tool in tools:
        if tool.kind == "hosted":
            if tool.origin == Format.responses and tool.raw is not None:
                out.append(tool.raw)
            continue
        if tool.kind == "custom":
            fmt = tool.grammar or {"type": "text"}
            out.append({"type": "custom", "name": tool.name, "description": tool.description, "format": fmt})
            continue
        namespace, name = split_name(tool.name) if _is_namespaced(tool) else (None, tool.name)
        function = {
            "type": "function",
            "name": name,
            "description": tool.description,
            "parameters": tool.parameters
            if tool.parameters is not None
            else {"type": "object", "properties": {}},
            "strict": bool(tool.strict),
        }
        if namespace is None or tool.raw is None:  # (raw is set whenever namespaced)
            out.append(function)
        elif namespace in namespaces:
            namespaces[namespace]["tools"].append(function)
        else:
            namespaces[namespace] = {**tool.raw, "tools": [function]}
            out.append(namespaces[namespace])
    return out


def _is_namespaced(tool: ToolDef) -> bool:
    return tool.origin == Format.responses and tool.raw is not None and NAMESPACE_SEP in tool.name


def _encode_tool_choice(choice: ToolChoice | None, tools: tuple[ToolDef, ...]) -> Any:
    if choice is None:
        return None
    if choice.mode == "tool" and choice.name:
        tool = next((t for t in tools if t.name == choice.name), None)
        namespace, name = split_name(choice.name) if tool and _is_namespaced(tool) else (None, choice.name)
        kind = "custom" if tool and tool.kind == "custom" else "function"
        out: dict[str, Any] = {"type": kind, "name": name}
        if namespace:
            out["namespace"] = namespace
        return out
    if choice.allowed:
        mode = "required" if choice.mode == "required" else "auto"
        return {
            "type": "allowed_tools",
            "mode": mode,
            "tools": [{"type": "function", "name": n} for n in choice.allowed],
        }
    return choice.mode if choice.mode != "tool" else "required"


# Manual thinking budget → effort (§5.7.4, reverse table)
_BUDGET_EFFORT: tuple[tuple[int, Effort], ...] = (
    (0, "none"),
    (1536, "minimal"),
    (4096, "low"),
    (12288, "medium"),
    (24576, "high"),
)


def _encode_reasoning(cfg: ReasoningConfig | None, target: Target) -> dict[str, Any] | None:
    if cfg is None or cfg.mode == "off":
        return None
    effort = cfg.effort
    if cfg.mode == "budget" and cfg.budget_tokens is not None and effort is None:
        budget = cfg.budget_tokens
        effort = next((e for limit, e in _BUDGET_EFFORT if budget <= limit), "xhigh")
    if cfg.mode == "adaptive" and effort is None:
        effort = "medium"
    out: dict[str, Any] = {}
    accepted = target.effort(effort) if effort is not None else None
    if accepted is not None:
        out["effort"] = accepted
    # A summary is what foreign clients get to see of the reasoning (§5.7.4).
    out["summary"] = cfg.summary or "auto"
    return out


def _encode_text_format(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    if fmt is None or fmt.kind == "text":
        return None
    if fmt.kind == "json_object":
        return {"format": {"type": "json_object"}}
    out: dict[str, Any] = {"type": "json_schema", "name": fmt.name or "response", "schema": fmt.schema or {}}
    if fmt.description:
        out["description"] = fmt.description
    if fmt.strict is not None:
        out["strict"] = fmt.strict
    return {"format": out}


def instructions_as_developer(body: dict[str, Any]) -> dict[str, Any]:
    """Move ``instructions`` into a leading developer message, for backends that validate it (§5.1)."""
    instructions = body.get("instructions")
    if not isinstance(instructions, str):
        return body
    out = {k: v for k, v in body.items() if k != "instructions"}
    developer = {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": instructions}],
    }
    out["input"] = [developer, *body.get("input", [])]
    return out


# --------------------------------------------------------------------------- responses


def decode_response(body: dict[str, Any]) -> Response:
    """A non-streaming Responses object → IR response."""
    parts = decode_output_items(body.get("output"))
    has_calls = any(isinstance(p, ToolCall) for p in parts)
    return Response(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        parts=tuple(parts),
        stop_reason=stop_reason_of(body, has_calls=has_calls),
        usage=decode_usage(body.get("usage")),
    )


def encode_response(resp: Response) -> dict[str, Any]:
    """IR response → a Responses object as ``POST /v1/responses`` (non-streaming) returns it."""
    rid = response_id(resp.id)
    status, incomplete = status_of(resp.stop_reason)
    return {
        "id": rid,
        "object": "response",
        "created_at": 0,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "model": resp.model,
        "output": encode_output_items(resp.parts, base_id=base_id(rid)),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": encode_usage(resp.usage),
    }
