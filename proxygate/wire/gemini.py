"""Gemini generateContent codec: request, response and stream, to and from the IR (protocols.md §4).

The model and stream-ness come from the URL (``/v1beta/models/{model}:generateContent`` or
``:streamGenerateContent``), so ``decode_request`` takes both from the relay, and
``encode_request`` leaves them out of the body (the provider puts ``req.model`` and
``req.stream`` into the path).

The one idea to grasp first: Gemini has no tool-call ids and pairs calls with results by count
and order (§4.7 rule 2). Decoding pairs each ``functionResponse`` with a preceding call — by id
when both have one (Gemini CLI invents ``name_<ms>_<n>`` ids for both), else by order, then by
name — and synthesises stable ids (``gemini_parts.synth_call_id``). Encoding repairs the pairing
first (``history.repair_tool_pairing``) and merges consecutive same-role turns (§4.7 rule 1).
"""

from __future__ import annotations

from typing import Any

from proxygate.wire.gemini_parts import (
    FINISH_FROM_IR,
    decode_function_response,
    decode_media,
    decode_model_parts,
    decode_usage,
    encode_function_response,
    encode_media,
    encode_model_parts,
    encode_usage,
    field,
    stop_reason_of,
    synth_call_id,
)
from proxygate.wire.gemini_schema import lowercase_types, sanitize_schema, strip_meta
from proxygate.wire.gemini_stream import StreamDecoder, StreamEncoder
from proxygate.wire.history import repair_tool_pairing
from proxygate.wire.ir import (
    Audio,
    Document,
    Effort,
    Format,
    Image,
    InvalidRequest,
    Message,
    Part,
    ReasoningConfig,
    Refusal,
    Request,
    Response,
    ResponseFormat,
    Sampling,
    Text,
    ToolCall,
    ToolChoice,
    ToolDef,
    ToolResult,
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
    "use_openapi_parameters",
]

MAX_STOP_SEQUENCES = 5  # §5.8
HISTORY_SEED = "history"  # seed of ids synthesised for client history (same history → same ids)

_REQUEST_FIELDS = frozenset(
    {"contents", "systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config"}
    | {"generationConfig", "generation_config", "model"}
)
_GENERATION_FIELDS = frozenset(
    {"maxOutputTokens", "temperature", "topP", "topK", "stopSequences", "seed", "presencePenalty"}
    | {"frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema", "thinkingConfig"}
)
# §5.7.4 effort → Gemini 2.5 thinkingBudget / Gemini 3 thinkingLevel
EFFORT_BUDGET = {
    "none": 0,
    "minimal": 512,
    "low": 2048,
    "medium": 8192,
    "high": 24576,
    "xhigh": 32768,
    "max": -1,
}
EFFORT_LEVEL = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "XHIGH",
    "max": "XHIGH",
}
_LEVEL_EFFORT: dict[str, Effort] = {
    "MINIMAL": "minimal",
    "LOW": "low",
    "MEDIUM": "medium",
    "HIGH": "high",
    "XHIGH": "xhigh",
}
PRO_MIN_BUDGET = 128  # 2.5 Pro cannot switch thinking off (§5.7.4)


# --------------------------------------------------------------------------- request: decode


def decode_request(
    body: dict[str, Any], *, path_model: str | None = None, stream: bool | None = None
) -> Request:
    """A generateContent body plus the model and method from its URL → IR request."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    contents = body.get("contents")
    if not isinstance(contents, list):
        raise InvalidRequest("contents: expected a list of Content objects")
    system_content = field(body, "systemInstruction", "system_instruction")
    system = tuple(
        Text(str(p["text"]))
        for p in field(system_content, "parts", "parts") or []
        if isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"]
    )
    generation = field(body, "generationConfig", "generation_config")
    generation = generation if isinstance(generation, dict) else {}
    model = path_model or str(body.get("model") or "")
    passthrough = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS}
    extra_generation = {k: v for k, v in generation.items() if k not in _GENERATION_FIELDS}
    if extra_generation:
        passthrough["generationConfig"] = extra_generation
    stops = _get(generation, "stopSequences")
    max_output = _get(generation, "maxOutputTokens")
    tools = body.get("tools")
    return Request(
        model=model.removeprefix("models/"),
        messages=tuple(_decode_contents(contents)),
        system=system,
        tools=tuple(_decode_tools(tools)),
        tool_choice=_decode_tool_choice(field(body, "toolConfig", "tool_config")),
        max_output_tokens=max_output if isinstance(max_output, int) else None,
        sampling=Sampling(
            temperature=sampling_number(_get(generation, "temperature")),
            top_p=sampling_number(_get(generation, "topP")),
            top_k=_get(generation, "topK") if isinstance(_get(generation, "topK"), int) else None,
            seed=_get(generation, "seed") if isinstance(_get(generation, "seed"), int) else None,
            stop=tuple(s for s in stops if isinstance(s, str)) if isinstance(stops, list) else (),
            presence_penalty=sampling_number(_get(generation, "presencePenalty")),
            frequency_penalty=sampling_number(_get(generation, "frequencyPenalty")),
        ),
        reasoning=_decode_thinking(_get(generation, "thinkingConfig")),
        response_format=_decode_response_format(generation),
        stream=bool(stream),
        source=Format.gemini,
        passthrough={Format.gemini: passthrough},
    )


def _get(config: dict[str, Any], camel: str) -> Any:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return field(config, camel, snake)


def _decode_contents(contents: list[Any]) -> list[Message]:
    messages: list[Message] = []
    pending: list[ToolCall] = []  # calls of the last model turn not yet answered
    ordinal = 0
    for content in contents:
        if not isinstance(content, dict):
            continue
        parts = content.get("parts")
        if content.get("role") == "model":
            decoded = decode_model_parts(parts, seed=HISTORY_SEED, first_ordinal=ordinal, in_response=False)
            calls = [p for p in decoded if isinstance(p, ToolCall)]
            ordinal += len(calls)
            pending = calls
            if decoded:
                messages.append(Message("assistant", tuple(decoded)))
            continue
        user_parts: list[Part] = []
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            response = field(part, "functionResponse", "function_response")
            if isinstance(response, dict):
                call_id = _match_call(response, pending, ordinal=len(user_parts))
                user_parts.append(decode_function_response(response, call_id=call_id))
            elif isinstance(part.get("text"), str):
                if part["text"]:
                    user_parts.append(Text(part["text"]))
            elif (media := decode_media(part)) is not None:
                user_parts.append(media)
        if user_parts:
            messages.append(Message("user", tuple(user_parts)))
    return messages


def _match_call(response: dict[str, Any], pending: list[ToolCall], *, ordinal: int) -> str:
    """Pair a functionResponse with an unanswered call: by id, else order, else name (§5.6)."""
    name = str(response.get("name", ""))
    wire_id = response.get("id")
    chosen: ToolCall | None = None
    if isinstance(wire_id, str) and wire_id:
        chosen = next((c for c in pending if c.id == wire_id), None)
    if chosen is None and pending and pending[0].name == name:
        chosen = pending[0]
    if chosen is None:
        chosen = next((c for c in pending if c.name == name), pending[0] if pending else None)
    if chosen is None:
        return wire_id if isinstance(wire_id, str) and wire_id else synth_call_id("orphan", ordinal, name)
    pending.remove(chosen)
    return chosen.id


def _decode_tools(tools: Any) -> list[ToolDef]:
    out: list[ToolDef] = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        declarations = field(tool, "functionDeclarations", "function_declarations")
        for decl in declarations if isinstance(declarations, list) else []:
            if not isinstance(decl, dict):
                continue
            schema = field(decl, "parametersJsonSchema", "parameters_json_schema") or decl.get("parameters")
            out.append(
                ToolDef(
                    name=str(decl.get("name", "")),
                    description=str(decl.get("description") or ""),
                    # Gemini CLI writes OpenAPI upper-case types; other targets need JSON Schema (§5.15)
                    parameters=lowercase_types(schema) if isinstance(schema, dict) else None,
                )
            )
        for key in tool:
            if key not in ("functionDeclarations", "function_declarations"):
                # googleSearch, codeExecution…: Gemini-hosted, dropped for other targets (§6.27)
                out.append(ToolDef(name=key, kind="hosted", origin=Format.gemini, raw={key: tool[key]}))
    return out


def _decode_tool_choice(config: Any) -> ToolChoice | None:
    calling = field(config, "functionCallingConfig", "function_calling_config")
    if not isinstance(calling, dict):
        return None
    allowed_raw = field(calling, "allowedFunctionNames", "allowed_function_names")
    allowed = tuple(n for n in allowed_raw if isinstance(n, str)) if isinstance(allowed_raw, list) else ()
    match calling.get("mode"):
        case "NONE":
            return ToolChoice(mode="none")
        case "ANY" if len(allowed) == 1:
            return ToolChoice(mode="tool", name=allowed[0])
        case "ANY":
            return ToolChoice(mode="required", allowed=allowed)
    return ToolChoice(mode="auto", allowed=allowed)


def _decode_thinking(config: Any) -> ReasoningConfig | None:
    if not isinstance(config, dict):
        return None
    summary = "auto" if _get(config, "includeThoughts") is True else None
    budget = _get(config, "thinkingBudget")
    level = _get(config, "thinkingLevel")
    if isinstance(level, str) and level.upper() in _LEVEL_EFFORT:
        return ReasoningConfig(mode="effort", effort=_LEVEL_EFFORT[level.upper()], summary=summary)
    if budget == 0:
        return ReasoningConfig(mode="off")
    if budget == -1:
        return ReasoningConfig(mode="adaptive", summary=summary)
    if isinstance(budget, int):
        return ReasoningConfig(mode="budget", budget_tokens=budget, summary=summary)
    return ReasoningConfig(mode="adaptive", summary=summary)


def _decode_response_format(generation: dict[str, Any]) -> ResponseFormat | None:
    if _get(generation, "responseMimeType") != "application/json":
        return None
    schema = _get(generation, "responseJsonSchema") or _get(generation, "responseSchema")
    if isinstance(schema, dict):
        return ResponseFormat(kind="json_schema", schema=lowercase_types(schema), name="response")
    return ResponseFormat(kind="json_object")


# --------------------------------------------------------------------------- request: encode


def encode_request(req: Request, *, target: Target = PERMISSIVE) -> dict[str, Any]:
    """IR request → a generateContent body (model and stream go in the URL); deterministic.

    ``target``: ``maxOutputTokens`` is capped at the model's known output limit.
    """
    passthrough = dict(req.passthrough.get(Format.gemini, {})) if req.source == Format.gemini else {}
    body: dict[str, Any] = {"contents": _encode_contents(repair_tool_pairing(req.messages))}
    system = [{"text": t.text} for t in req.system if t.text.strip()]
    if system:
        body["systemInstruction"] = {"parts": system}
    declarations = [_encode_declaration(t) for t in req.tools if t.kind != "hosted"]
    hosted = [t.raw for t in req.tools if t.kind == "hosted" and t.origin == Format.gemini and t.raw]
    if declarations or hosted:
        body["tools"] = ([{"functionDeclarations": declarations}] if declarations else []) + hosted
    if declarations and req.tool_choice is not None:
        body["toolConfig"] = {"functionCallingConfig": _encode_tool_choice(req.tool_choice)}
    generation = _encode_generation(req, passthrough.pop("generationConfig", {}), target)
    if generation:
        body["generationConfig"] = generation
    for key, value in passthrough.items():
        body.setdefault(key, value)
    return body


def _encode_contents(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for msg in messages:
        if msg.role == "assistant":
            role = "model"
            for part in msg.parts:
                if isinstance(part, ToolCall):
                    names[part.id] = part.name
            parts = encode_model_parts(msg.parts, for_client=False)
        else:
            # mid-conversation system text becomes user text: Gemini has no such role (§5.1)
            role, parts = "user", _encode_user_parts(msg.parts, names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)  # strict alternation (§4.7 rule 1)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _encode_user_parts(parts: tuple[Part, ...], names: dict[str, str]) -> list[dict[str, Any]]:
    responses: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for part in parts:
        match part:
            case ToolResult():
                name = names.get(part.call_id) or part.name or "tool"
                responses.append(encode_function_response(part, name=name))
                # tool-result media rides after the responses in the same turn (§5.6)
                media.extend(
                    m for p in part.parts if isinstance(p, Image | Document) and (m := encode_media(p))
                )
            case Text(text=text) | Refusal(text=text) if text.strip():
                rest.append({"text": text})
            case Image() | Document() | Audio():
                encoded = encode_media(part)
                if encoded is not None:
                    rest.append(encoded)
    return responses + media + rest


def _encode_declaration(tool: ToolDef) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": tool.name}
    description = tool.description
    if tool.kind == "custom":
        # A freeform tool becomes {"input": string} (§5.3); the grammar goes into the description.
        grammar = (tool.grammar or {}).get("definition")
        description = f"{description}\n\nInput grammar:\n{grammar}" if grammar else description
        params: dict[str, Any] | None = {
            "type": "object",
            "properties": {"input": {"type": "string", "description": "The raw tool input."}},
            "required": ["input"],
        }
    else:
        params = tool.parameters
    if description:
        decl["description"] = description
    if params and (params.get("properties") or params.get("type", "object") != "object"):
        decl["parametersJsonSchema"] = strip_meta(params)
    return decl


def _encode_tool_choice(choice: ToolChoice) -> dict[str, Any]:
    match choice.mode:
        case "none":
            return {"mode": "NONE"}
        case "tool" if choice.name:
            return {"mode": "ANY", "allowedFunctionNames": [choice.name]}
        case "required" | "tool":
            out: dict[str, Any] = {"mode": "ANY"}
        case _:
            out = {"mode": "AUTO"}
    if choice.allowed:
        out["allowedFunctionNames"] = list(choice.allowed)
    return out


def _encode_generation(req: Request, extra: dict[str, Any], target: Target) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if req.max_output_tokens is not None:
        config["maxOutputTokens"] = min(
            req.max_output_tokens, target.max_output_tokens or req.max_output_tokens
        )
    sampling = req.sampling
    for key, value in (
        ("temperature", sampling.temperature),
        ("topP", sampling.top_p),
        ("topK", sampling.top_k),
        ("seed", sampling.seed),
        ("presencePenalty", sampling.presence_penalty),
        ("frequencyPenalty", sampling.frequency_penalty),
    ):
        if value is not None:
            config[key] = value
    if sampling.stop:
        config["stopSequences"] = list(sampling.stop[:MAX_STOP_SEQUENCES])
    fmt = req.response_format
    if fmt is not None and fmt.kind != "text":
        config["responseMimeType"] = "application/json"
        if fmt.kind == "json_schema" and fmt.schema is not None:
            config["responseJsonSchema"] = fmt.schema
    thinking = _encode_thinking(req.reasoning, req.model)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    for key, value in extra.items():
        config.setdefault(key, value)
    return config


def _encode_thinking(cfg: ReasoningConfig | None, model: str) -> dict[str, Any] | None:
    """§5.7.4: Gemini 2.x takes ``thinkingBudget``, Gemini 3 ``thinkingLevel`` — never both."""
    if cfg is None:
        return None
    is_budget_model = model.removeprefix("models/").startswith(("gemini-2", "gemini-1"))
    if cfg.mode == "off":
        if is_budget_model:
            return {"thinkingBudget": PRO_MIN_BUDGET if "pro" in model else 0}
        return {"thinkingLevel": "MINIMAL"}
    out: dict[str, Any] = {"includeThoughts": True}
    if cfg.mode == "budget" and cfg.budget_tokens is not None:
        out["thinkingBudget"] = cfg.budget_tokens
        return out
    effort = cfg.effort
    if effort is None:
        if is_budget_model:
            out["thinkingBudget"] = -1  # dynamic
        return out
    if is_budget_model:
        out["thinkingBudget"] = EFFORT_BUDGET[effort]
    else:
        out["thinkingLevel"] = EFFORT_LEVEL[effort]
    return out


def use_openapi_parameters(body: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``parametersJsonSchema`` as sanitised ``parameters`` for models/Vertex without it (§5.15)."""
    tools = []
    for tool in body.get("tools", []):
        decls = tool.get("functionDeclarations")
        if isinstance(decls, list):
            tool = {**tool, "functionDeclarations": [_as_openapi(d) for d in decls]}
        tools.append(tool)
    return {**body, "tools": tools} if "tools" in body else body


def _as_openapi(decl: dict[str, Any]) -> dict[str, Any]:
    if "parametersJsonSchema" not in decl:
        return decl
    out = {k: v for k, v in decl.items() if k != "parametersJsonSchema"}
    out["parameters"] = sanitize_schema(decl["parametersJsonSchema"])
    return out


# --------------------------------------------------------------------------- responses


def decode_response(body: dict[str, Any]) -> Response:
    """A non-streaming GenerateContentResponse → IR response."""
    response_id = str(field(body, "responseId", "response_id") or "")
    candidates = body.get("candidates")
    candidate = candidates[0] if isinstance(candidates, list) and candidates else {}
    content = candidate.get("content") if isinstance(candidate, dict) else None
    parts = decode_model_parts(
        field(content, "parts", "parts"), seed=response_id, first_ordinal=0, in_response=True
    )
    feedback = field(body, "promptFeedback", "prompt_feedback")
    stop = stop_reason_of(
        field(candidate, "finishReason", "finish_reason"),
        has_calls=any(isinstance(p, ToolCall) for p in parts),
        is_blocked=isinstance(feedback, dict) and bool(field(feedback, "blockReason", "block_reason")),
    )
    return Response(
        id=response_id,
        model=str(field(body, "modelVersion", "model_version") or ""),
        parts=tuple(parts),
        stop_reason=stop,
        usage=decode_usage(field(body, "usageMetadata", "usage_metadata")),
    )


def encode_response(resp: Response) -> dict[str, Any]:
    """IR response → a GenerateContentResponse as ``:generateContent`` returns it."""
    parts = encode_model_parts(resp.parts, for_client=True)
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": FINISH_FROM_IR[resp.stop_reason],
                "index": 0,
            }
        ],
        "usageMetadata": encode_usage(resp.usage),
        "modelVersion": resp.model,
        "responseId": resp.id,
    }
