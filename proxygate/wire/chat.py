"""OpenAI Chat Completions codec: request and response to and from the IR (protocols.md §2).

Streams live in ``chat_stream.py`` and are re-exported here, so ``chat`` offers the same six
entry points as every codec. Shape rules kept on encode: leading system prompt as one string
``system`` message (compatible servers reject arrays and ``developer``, §5.1); each assistant
``tool_calls`` turn followed by one ``tool`` message per call, media from tool results in one
``user`` message after them (§5.6); ids ≤ 40 characters (§2.9); ``stream_options.include_usage``
whenever streaming (§5.14.2).

Reasoning (§5.7): decoded ``reasoning_content``/``reasoning`` becomes a ``Reasoning`` part with a
``plaintext`` state of origin ``chat``. On encode only plaintext reasoning (from a CHAT client or
a CHAT upstream, possibly round-tripped through an Anthropic client's envelope) is sent back as
``reasoning_content``, which DeepSeek-style upstreams require on tool-call turns; Anthropic or
other opaque reasoning never leaves toward a CHAT upstream.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import orjson

from proxygate.wire.chat_stream import (
    FINISH_FROM_IR,
    StreamDecoder,
    StreamEncoder,
    completion_id,
    decode_usage,
    encode_usage,
    stop_reason,
)
from proxygate.wire.content import data_url, document_text, parse_data_url, sanitize_id, url_source
from proxygate.wire.history import media_of, repair_tool_pairing, result_text
from proxygate.wire.ir import (
    Audio,
    Base64Source,
    Document,
    FileSource,
    Format,
    Image,
    InvalidRequest,
    Message,
    Part,
    ProtocolError,
    Reasoning,
    ReasoningConfig,
    ReasoningState,
    Refusal,
    Request,
    Response,
    ResponseFormat,
    Sampling,
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

MAX_TOOL_CALL_ID = 40  # OpenAI rejects longer tool_calls[].id (§2.9 rule 2)
MAX_STOP_SEQUENCES = 4  # §2.2
# Budget → effort, the reverse table of §5.7.4.
_BUDGET_EFFORT = ((0, "none"), (1536, "minimal"), (4096, "low"), (12288, "medium"), (24576, "high"))
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

_REQUEST_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_completion_tokens",
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "reasoning_effort",
        "reasoning",
        "thinking",
        "user",
        "safety_identifier",
        "prompt_cache_key",
    }
)


# --------------------------------------------------------------------------- decoding


def _plaintext_reasoning(text: str, model: str = "") -> Reasoning:
    return Reasoning(text, ReasoningState(origin=Format.chat, kind="plaintext", model=model))


def _decode_part(part: Any) -> Part | None:
    if isinstance(part, str):
        return Text(part)
    if not isinstance(part, dict):
        return None
    match part.get("type"):
        case "text":
            return Text(str(part.get("text", "")))
        case "refusal":
            return Refusal(str(part.get("refusal", "")))
        case "image_url":
            image = part.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else image
            detail = image.get("detail") if isinstance(image, dict) else None
            source = url_source(str(url))
            return Image(source, detail=detail if isinstance(detail, str) else None)
        case "input_audio":
            audio = part.get("input_audio") or {}
            return Audio(str(audio.get("data", "")), str(audio.get("format", "")))
        case "file":
            file = part.get("file") or {}
            filename = file.get("filename") if isinstance(file.get("filename"), str) else None
            if isinstance(file.get("file_data"), str):
                pdf = parse_data_url(file["file_data"])
                if pdf is not None:
                    return Document(pdf, filename=filename, title=filename)
            if isinstance(file.get("file_id"), str):
                return Document(FileSource(file["file_id"]), filename=filename, title=filename)
    return None  # unknown part types are skipped


def _decode_content(content: Any) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (Text(content),)
    if isinstance(content, list):
        return tuple(p for p in map(_decode_part, content) if p is not None)
    return ()


def _decode_tool_call(call: Any) -> ToolCall | None:
    if not isinstance(call, dict):
        return None
    call_id = str(call.get("id") or "")
    if call.get("type") == "custom" and isinstance(call.get("custom"), dict):
        custom = call["custom"]
        return ToolCall(call_id, str(custom.get("name", "")), str(custom.get("input", "")), kind="custom")
    function = call.get("function")
    if not isinstance(function, dict):
        return None
    arguments = function.get("arguments")
    if not isinstance(arguments, str):  # some servers send an object
        arguments = orjson.dumps(arguments).decode() if arguments is not None else ""
    return ToolCall(call_id, str(function.get("name", "")), arguments)


def _decode_assistant(msg: dict[str, Any]) -> Message:
    parts: list[Part] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(_plaintext_reasoning(reasoning))
    parts.extend(_decode_content(msg.get("content")))
    if isinstance(msg.get("refusal"), str) and msg["refusal"]:
        parts.append(Refusal(msg["refusal"]))
    for call in msg.get("tool_calls") or ():
        decoded = _decode_tool_call(call)
        if decoded is not None:
            parts.append(decoded)
    legacy = msg.get("function_call")
    if isinstance(legacy, dict):
        parts.append(ToolCall("call_legacy", str(legacy.get("name", "")), str(legacy.get("arguments", ""))))
    return Message("assistant", tuple(parts))


def _with_call_ids(msg: Message, prefix: str) -> tuple[Message, list[str]]:
    """Tool calls without an id get ``{prefix}_{n}``, unique in the request and stable across
    turns (Anthropic rejects the duplicate ids one placeholder would give); returns the ids made,
    for id-less ``tool`` messages to take in order."""
    made: list[str] = []
    parts = list(msg.parts)
    for n, part in enumerate(parts):
        if isinstance(part, ToolCall) and not part.id:
            made.append(f"{prefix}_{n}")
            parts[n] = replace(part, id=made[-1])
    return (Message(msg.role, tuple(parts)) if made else msg), made


def _append_result(messages: list[Message], result: ToolResult) -> None:
    """Consecutive tool messages become one user turn of results (§5.6 CHAT → ANT)."""
    last = messages[-1] if messages else None
    if last is not None and last.role == "user" and all(isinstance(p, ToolResult) for p in last.parts):
        messages[-1] = Message("user", (*last.parts, result))
    else:
        messages.append(Message("user", (result,)))


def decode_request(body: dict[str, Any], *, path_model: str | None = None) -> Request:
    """A Chat Completions request body → IR (Cursor's Responses-shaped bodies included, §2.1)."""
    if "messages" not in body and "input" in body:
        from proxygate.wire import responses  # lazy: built alongside this module

        return responses.decode_request(body, path_model=path_model)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise InvalidRequest("messages: expected a list of messages")
    system: list[Text] = []
    messages: list[Message] = []
    unanswered: list[str] = []  # generated ids of the last assistant turn's calls, in call order
    for i, msg in enumerate(raw_messages):
        if not isinstance(msg, dict):
            raise InvalidRequest(f"messages[{i}]: expected an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            texts = tuple(p for p in _decode_content(msg.get("content")) if isinstance(p, Text))
            if messages:
                messages.append(Message("system", texts))
            else:
                system.extend(texts)
        elif role == "user":
            parts = _decode_content(msg.get("content"))
            last = messages[-1] if messages else None
            if (
                last is not None
                and last.role == "user"
                and all(isinstance(p, ToolResult) for p in last.parts)
            ):
                messages[-1] = Message("user", (*last.parts, *parts))  # results first, then the user
            else:
                messages.append(Message("user", parts))
        elif role == "assistant":
            assistant, unanswered = _with_call_ids(_decode_assistant(msg), f"call_pg{i}")
            messages.append(assistant)
        elif role in ("tool", "function"):
            text_parts = tuple(p for p in _decode_content(msg.get("content")) if isinstance(p, Text))
            call_id = str(msg.get("tool_call_id") or ("call_legacy" if role == "function" else ""))
            if not call_id and unanswered:
                call_id = unanswered.pop(0)
            name = msg.get("name") if isinstance(msg.get("name"), str) else None
            _append_result(messages, ToolResult(call_id, text_parts, name=name))
        else:
            raise InvalidRequest(f"messages[{i}].role: unknown role {role!r}")

    tools = [_decode_tool(t) for t in body.get("tools") or () if isinstance(t, dict)]
    tools.extend(_decode_legacy_function(f) for f in body.get("functions") or () if isinstance(f, dict))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    user_id = body.get("safety_identifier") or body.get("user")
    cache_key = body.get("prompt_cache_key")
    parallel = body.get("parallel_tool_calls")
    extras = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS}
    return Request(
        model=str(body.get("model") or path_model or ""),
        messages=tuple(messages),
        system=tuple(system),
        tools=tuple(t for t in tools if t is not None),
        tool_choice=_decode_tool_choice(body.get("tool_choice") or body.get("function_call")),
        parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
        sampling=_decode_sampling(body),
        reasoning=_decode_reasoning(body),
        response_format=_decode_response_format(body.get("response_format")),
        cache_key=cache_key if isinstance(cache_key, str) else None,
        user_id=user_id if isinstance(user_id, str) else None,
        stream=bool(body.get("stream", False)),
        source=Format.chat,
        passthrough={Format.chat: extras} if extras else {},
    )


def include_usage(body: dict[str, Any]) -> bool:
    """Whether a CHAT client asked for the final usage chunk (for its ``StreamEncoder``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _decode_sampling(body: dict[str, Any]) -> Sampling:
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(s for s in stop or () if isinstance(s, str))
    seed = body.get("seed")
    return Sampling(
        temperature=sampling_number(body.get("temperature")),
        top_p=sampling_number(body.get("top_p")),
        seed=seed if isinstance(seed, int) else None,
        stop=stops,
        presence_penalty=sampling_number(body.get("presence_penalty")),
        frequency_penalty=sampling_number(body.get("frequency_penalty")),
    )


def _decode_tool(tool: dict[str, Any]) -> ToolDef | None:
    match tool.get("type"):
        case "function" if isinstance(tool.get("function"), dict):
            fn = tool["function"]
            params = fn.get("parameters")
            strict = fn.get("strict")
            return ToolDef(
                name=str(fn.get("name", "")),
                description=str(fn.get("description") or ""),
                parameters=params if isinstance(params, dict) else None,
                strict=strict if isinstance(strict, bool) else None,
            )
        case "custom" if isinstance(tool.get("custom"), dict):
            custom = tool["custom"]
            fmt = custom.get("format")
            return ToolDef(
                name=str(custom.get("name", "")),
                description=str(custom.get("description") or ""),
                kind="custom",
                grammar=fmt if isinstance(fmt, dict) else None,
            )
    return ToolDef(name=str(tool.get("type", "")), kind="hosted", origin=Format.chat, raw=tool)


def _decode_legacy_function(fn: dict[str, Any]) -> ToolDef:
    params = fn.get("parameters")
    return ToolDef(
        name=str(fn.get("name", "")),
        description=str(fn.get("description") or ""),
        parameters=params if isinstance(params, dict) else None,
    )


def _tool_name(tool: Any) -> str | None:
    if not isinstance(tool, dict):
        return None
    inner = tool.get("function") or tool.get("custom") or tool
    name = inner.get("name") if isinstance(inner, dict) else None
    return name if isinstance(name, str) else None


def _decode_tool_choice(choice: Any) -> ToolChoice | None:
    match choice:
        case "auto" | "none" | "required":
            return ToolChoice(choice)
        case {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": list(tools)}}:
            names = tuple(n for n in map(_tool_name, tools) if n)
            return ToolChoice("required" if mode == "required" else "auto", allowed=names)
        case {"type": "function" | "custom"} | {"name": str()}:
            name = _tool_name(choice)
            return ToolChoice("tool", name=name) if name else None
    return None


def _decode_reasoning(body: dict[str, Any]) -> ReasoningConfig | None:
    effort = body.get("reasoning_effort")
    if effort == "none":
        return ReasoningConfig("off")
    if effort in _EFFORTS:
        return ReasoningConfig("effort", effort=effort)
    reasoning = body.get("reasoning")  # OpenRouter {effort | max_tokens, exclude}
    if isinstance(reasoning, dict):
        if reasoning.get("effort") in _EFFORTS:
            return ReasoningConfig("effort", effort=reasoning["effort"])
        if isinstance(reasoning.get("max_tokens"), int):
            return ReasoningConfig("budget", budget_tokens=reasoning["max_tokens"])
    thinking = body.get("thinking")  # DeepSeek {type: enabled | disabled}
    if isinstance(thinking, dict):
        return ReasoningConfig("off") if thinking.get("type") == "disabled" else ReasoningConfig("effort")
    return None


def _decode_response_format(fmt: Any) -> ResponseFormat | None:
    if not isinstance(fmt, dict):
        return None
    match fmt.get("type"):
        case "json_object":
            return ResponseFormat("json_object")
        case "json_schema" if isinstance(fmt.get("json_schema"), dict):
            spec = fmt["json_schema"]
            schema, name, strict = spec.get("schema"), spec.get("name"), spec.get("strict")
            return ResponseFormat(
                "json_schema",
                schema=schema if isinstance(schema, dict) else None,
                name=name if isinstance(name, str) else None,
                strict=strict if isinstance(strict, bool) else None,
            )
    return None


# --------------------------------------------------------------------------- encoding


def _texts(parts: tuple[Part, ...]) -> str:
    return "\n\n".join(p.text for p in parts if isinstance(p, Text | Refusal) and p.text.strip())


def _user_part(part: Part) -> dict[str, Any] | None:
    match part:
        case Text(text=text) if text.strip():
            return {"type": "text", "text": text}
        case Image(source=Base64Source() as source, detail=detail):
            return _image(data_url(source), detail)
        case Image(source=UrlSource(url=url), detail=detail):
            return _image(url, detail)
        case Document(source=Base64Source() as source, filename=filename, title=title):
            file: dict[str, Any] = {"file_data": data_url(source)}
            if filename or title:
                file["filename"] = filename or title
            return {"type": "file", "file": file}
        case Document(source=TextSource(text=text), title=title):
            return {"type": "text", "text": document_text(text, title)}
        case Audio(data=data, format=fmt):
            return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
    return None  # file ids are provider-scoped (§5.2); foreign blocks do not convert


def _image(url: str, detail: str | None) -> dict[str, Any]:
    image: dict[str, Any] = {"url": url}
    if detail:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _user_content(parts: tuple[Part, ...]) -> str | list[dict[str, Any]] | None:
    encoded = [b for b in map(_user_part, parts) if b is not None]
    if not encoded:
        return None
    if all(b["type"] == "text" for b in encoded):
        return "\n\n".join(b["text"] for b in encoded)  # many servers accept only strings
    return encoded


def _encode_user(msg: Message) -> list[dict[str, Any]]:
    """A user turn: one ``tool`` message per result, then media from results, then the rest (§5.6)."""
    out: list[dict[str, Any]] = []
    media: list[Part] = []
    rest: list[Part] = []
    for part in msg.parts:
        if isinstance(part, ToolResult):
            tool_id = sanitize_id(part.call_id, max_len=MAX_TOOL_CALL_ID)
            out.append({"role": "tool", "tool_call_id": tool_id, "content": result_text(part)})
            if media_of(part):  # CHAT tool messages cannot carry images
                media.extend((Text(f"Output of tool call {tool_id}:"), *media_of(part)))
        else:
            rest.append(part)
    content = _user_content((*media, *rest))
    if content is not None:
        out.append({"role": "user", "content": content})
    return out


def _encode_tool_call(call: ToolCall) -> dict[str, Any]:
    call_id = sanitize_id(call.id, max_len=MAX_TOOL_CALL_ID)
    if call.kind == "custom":
        return {"id": call_id, "type": "custom", "custom": {"name": call.name, "input": call.arguments}}
    arguments = call.arguments if call.arguments.strip() else "{}"
    return {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _is_plaintext(part: Part) -> bool:
    return isinstance(part, Reasoning) and (part.state is None or part.state.kind == "plaintext")


def _encode_assistant(msg: Message) -> dict[str, Any] | None:
    text = _texts(msg.parts)
    calls = [_encode_tool_call(p) for p in msg.parts if isinstance(p, ToolCall)]
    reasoning = "".join(p.text for p in msg.parts if isinstance(p, Reasoning) and _is_plaintext(p))
    if not text and not calls:
        return None
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    if reasoning:
        out["reasoning_content"] = reasoning
    if calls:
        out["tool_calls"] = calls
    return out


def _encode_tool(tool: ToolDef) -> dict[str, Any] | None:
    match tool.kind:
        case "hosted":
            return tool.raw if tool.origin is Format.chat else None
        case "custom":
            custom: dict[str, Any] = {"name": tool.name}
            if tool.description:
                custom["description"] = tool.description
            if tool.grammar is not None:
                custom["format"] = tool.grammar
            return {"type": "custom", "custom": custom}
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description:
        fn["description"] = tool.description
    if tool.parameters is not None:
        fn["parameters"] = tool.parameters
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


def _encode_tool_choice(choice: ToolChoice, tools: tuple[ToolDef, ...]) -> Any:
    kinds = {t.name: t.kind for t in tools}

    def named(name: str) -> dict[str, Any]:
        kind = "custom" if kinds.get(name) == "custom" else "function"
        return {"type": kind, kind: {"name": name}}

    if choice.allowed:
        mode = "required" if choice.mode == "required" else "auto"
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": mode, "tools": [named(n) for n in choice.allowed]},
        }
    if choice.mode == "tool":
        return named(choice.name or "")
    return choice.mode


def _effort(config: ReasoningConfig) -> str | None:
    if config.mode == "off":
        return None
    if config.effort is not None:
        return config.effort
    if config.mode == "budget" and config.budget_tokens is not None:
        for limit, effort in _BUDGET_EFFORT:
            if config.budget_tokens <= limit:
                return effort
        return "xhigh"
    return "medium"  # adaptive or enabled without effort (§5.7.4)


def _as_parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _merge_user_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join consecutive user messages: strict servers require alternation (§6.4)."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        prev = out[-1] if out else None
        if prev is None or msg["role"] != "user" or prev["role"] != "user":
            out.append(msg)
        elif isinstance(prev["content"], str) and isinstance(msg["content"], str):
            out[-1] = {"role": "user", "content": f"{prev['content']}\n\n{msg['content']}"}
        else:
            out[-1] = {"role": "user", "content": _as_parts(prev["content"]) + _as_parts(msg["content"])}
    return out


def cache_key(req: Request) -> str:
    """A stable per-conversation ``prompt_cache_key`` for OpenAI prefix-cache routing (§5.13)."""
    if req.cache_key:
        return req.cache_key
    basis = req.user_id or orjson.dumps([[p.text for p in req.system], [t.name for t in req.tools]]).decode()
    return "pg-" + hashlib.sha256(basis.encode()).hexdigest()[:32]


def encode_request(
    req: Request, *, max_tokens_field: str = "max_tokens", target: Target = PERMISSIVE
) -> dict[str, Any]:
    """IR → a Chat Completions request body (deterministic).

    ``max_tokens_field``: ``max_tokens`` (compatible servers) or ``max_completion_tokens``
    (OpenAI reasoning models, §5.8) — the provider layer knows which. ``target`` says what the
    provider and model accept: ``prompt_cache_key`` only where known, the reasoning effort the
    model takes (or none), ``reasoning_content`` where the model requires it.
    """
    messages: list[dict[str, Any]] = []
    system = "\n\n".join(p.text for p in req.system if p.text.strip())
    if system:
        messages.append({"role": "system", "content": system})
    for msg in repair_tool_pairing(req.messages):
        match msg.role:
            case "system":
                text = _texts(msg.parts)
                if text:
                    messages.append({"role": "system", "content": text})
            case "assistant":
                encoded = _encode_assistant(msg)
                if encoded is not None:
                    if target.needs_reasoning_content and "tool_calls" in encoded:
                        # DeepSeek reasoner: 400 "Missing reasoning_content field" without it,
                        # also for turns that thought elsewhere (Claude) or not at all.
                        encoded.setdefault("reasoning_content", "")
                    messages.append(encoded)
            case _:
                messages.extend(_encode_user(msg))
    messages = _merge_user_turns(messages)
    if not messages or all(m["role"] == "system" for m in messages):
        raise InvalidRequest("messages: the conversation has no content to send")

    body: dict[str, Any] = {"model": req.model, "messages": messages}
    tools = [t for t in map(_encode_tool, req.tools) if t is not None]
    if tools:
        body["tools"] = tools
        if req.tool_choice is not None:
            body["tool_choice"] = _encode_tool_choice(req.tool_choice, req.tools)
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.max_output_tokens is not None:
        body[max_tokens_field] = req.max_output_tokens
    effort = _effort(req.reasoning) if req.reasoning is not None else None
    if effort is not None and (effort := target.effort(effort)) is not None:
        body["reasoning_effort"] = effort
    sampling = req.sampling
    for key, value in (
        ("temperature", sampling.temperature),
        ("top_p", sampling.top_p),
        ("seed", sampling.seed),
        ("presence_penalty", sampling.presence_penalty),
        ("frequency_penalty", sampling.frequency_penalty),
    ):
        if value is not None:
            body[key] = value
    if sampling.stop:
        body["stop"] = list(sampling.stop[:MAX_STOP_SEQUENCES])
    fmt = req.response_format
    if fmt is not None and fmt.kind == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.kind == "json_schema":
        spec: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema or {}}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    if target.accepts_cache_key:
        body["prompt_cache_key"] = cache_key(req)
    if req.user_id and req.source is Format.chat:
        body["user"] = req.user_id  # never forward another format's user id (PII, §6.23)
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # else no usage at all (§6.19)
    if req.source is Format.chat:
        for key, value in req.passthrough.get(Format.chat, {}).items():
            body.setdefault(key, value)
    return body


# --------------------------------------------------------------------------- responses


def decode_response(body: dict[str, Any]) -> Response:
    """A chat.completion object → IR."""
    if "error" in body and "choices" not in body:
        raise ProtocolError(f"chat: error body where a completion was expected: {body['error']}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProtocolError("chat: completion without choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    assert isinstance(message, dict)
    model = str(body.get("model", ""))
    # Id-less calls (some compatible servers): named after the answer, so two answers' calls
    # never share an id in a later history.
    digest = hashlib.sha256(orjson.dumps(message, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    parts = list(_with_call_ids(_decode_assistant(message), f"call_pg{digest}")[0].parts)
    if parts and isinstance(parts[0], Reasoning):
        parts[0] = _plaintext_reasoning(parts[0].text, model)
    has_calls = any(isinstance(p, ToolCall) for p in parts)
    finish = choice.get("finish_reason")
    return Response(
        id=str(body.get("id", "")),
        model=model,
        parts=tuple(parts),
        stop_reason=stop_reason(finish if isinstance(finish, str) else None, has_tool_calls=has_calls),
        usage=decode_usage(body.get("usage")),
    )


def encode_response(resp: Response, *, created: int = 0) -> dict[str, Any]:
    """IR → a chat.completion object; ``created`` comes from the caller (no clock here)."""
    text = "".join(p.text for p in resp.parts if isinstance(p, Text))
    refusal = "".join(p.text for p in resp.parts if isinstance(p, Refusal))
    reasoning = "".join(p.text for p in resp.parts if isinstance(p, Reasoning))
    calls = [_encode_tool_call(p) for p in resp.parts if isinstance(p, ToolCall)]
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": refusal or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id(resp.id),
        "object": "chat.completion",
        "created": created,
        "model": resp.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_FROM_IR[resp.stop_reason],
            }
        ],
        "usage": encode_usage(resp.usage),
    }
