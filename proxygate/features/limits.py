"""Stage: model limit overrides and capability shaping (``[models."<glob>"]``, issue 14).

One idea first: a request the model cannot take as sent is *shaped* to fit instead of failing
upstream. For a model whose provider reports its limits wrongly or not at all, the config says
what it takes; the first ``[models."<glob>"]`` entry matching the model applies (the name the
client asked for, or what ``[routing] aliases`` turn it into):

    max_output_tokens   the request's output limit is clamped to it
    context_window      and to what the window leaves after the prompt (wire/tokens.py's
                        estimate, which errs high)
    tools = false       tool definitions and tool_choice removed; tool calls and results in
                        the history become text, so the conversation keeps its meaning
    thinking = false    thinking / reasoning settings removed, thinking blocks dropped
    images = false      each image (and its data) becomes ``[image omitted: model has no vision]``

The body is changed in the client's own format, before the broker (so every account gets the
same request), and the answer says what changed: ``x-proxygate-shaped: images,thinking``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from proxygate.call import Call
from proxygate.config import ModelLimitSettings
from proxygate.errors import ProxyError
from proxygate.wire.codecs import CODECS
from proxygate.wire.ir import TURNS_FIELD, Format
from proxygate.wire.tokens import estimate_input_tokens

IMAGE_PLACEHOLDER = "[image omitted: model has no vision]"

# The output limit's field per format (Gemini's lives in generationConfig).
_MAX_FIELDS = {
    Format.anthropic: ("max_tokens",),
    Format.chat: ("max_tokens", "max_completion_tokens"),
    Format.responses: ("max_output_tokens",),
}
_TOOL_FIELDS = {
    Format.anthropic: ("tools", "tool_choice"),
    Format.chat: ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls"),
    Format.responses: ("tools", "tool_choice", "parallel_tool_calls"),
    Format.gemini: ("tools", "toolConfig", "tool_config"),
}
_THINKING_FIELDS = {
    Format.anthropic: ("thinking",),
    Format.chat: ("reasoning_effort", "reasoning"),
    Format.responses: ("reasoning",),
    Format.gemini: (),
}


class ModelLimits:
    def __init__(
        self, models: Mapping[str, ModelLimitSettings], aliases: Mapping[str, str] | None = None
    ) -> None:
        self.models = dict(models)
        self.aliases = dict(aliases or {})

    def limits_for(self, model: str) -> ModelLimitSettings | None:
        names = (model, self.aliases.get(model, model))
        for glob, limits in self.models.items():
            if any(fnmatch.fnmatchcase(name, glob) for name in names):
                return limits
        return None

    def on_request(self, call: Call) -> None:
        if not self.models:
            return
        limits = self.limits_for(call.model)
        if limits is None:
            return
        body, shaped = shape(call.fmt, call.body, limits, model=call.model)
        if shaped:
            call.body = body
            call.raw_body = orjson.dumps(body)  # the fast path sends these bytes
            call.shaped = shaped


def shape(
    fmt: Format, body: dict[str, Any], limits: ModelLimitSettings, *, model: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """The body fitted to ``limits`` and what was changed (in a fixed order)."""
    body = dict(body)
    shaped: list[str] = []
    if _clamp(fmt, body, limits, model):
        shaped.append("max_tokens")
    if limits.tools is False and _drop_tools(fmt, body):
        shaped.append("tools")
    if limits.thinking is False and _drop_thinking(fmt, body):
        shaped.append("thinking")
    if limits.images is False and _drop_images(fmt, body):
        shaped.append("images")
    return body, shaped


# -- max tokens ------------------------------------------------------------------------------


def _clamp(fmt: Format, body: dict[str, Any], limits: ModelLimitSettings, model: str) -> bool:
    caps = [n for n in (limits.max_output_tokens, limits.context_window) if n > 0]
    if not caps:
        return False
    if limits.context_window > 0:
        caps.append(max(limits.context_window - _prompt_tokens(fmt, body, model), 1))
    cap = min(caps)
    if fmt is Format.gemini:
        config = body.get("generationConfig")
        if isinstance(config, dict) and _over(config.get("maxOutputTokens"), cap):
            body["generationConfig"] = {**config, "maxOutputTokens": cap}
            return True
        return False
    changed = False
    for name in _MAX_FIELDS[fmt]:
        if _over(body.get(name), cap):
            body[name] = cap
            changed = True
    return changed


def _prompt_tokens(fmt: Format, body: dict[str, Any], model: str) -> int:
    """The prompt's size, estimated (0 when the body cannot be read: the provider will say why)."""
    try:
        return estimate_input_tokens(CODECS[fmt].decode_request(body, path_model=model))
    except (ProxyError, ValueError, TypeError, KeyError, AttributeError):
        return 0


def _over(value: Any, cap: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > cap


# -- walking the turns ---------------------------------------------------------------------------


def _map_parts(
    fmt: Format, body: dict[str, Any], change: Callable[[dict[str, Any]], list[Any] | None]
) -> bool:
    """Apply ``change`` to every content part of every turn; it returns replacement parts or None."""
    turns_field = TURNS_FIELD[fmt]
    turns = body.get(turns_field)
    changed = False
    if isinstance(turns, list):
        new_turns = []
        for turn in turns:
            if not isinstance(turn, dict):
                new_turns.append(turn)
                continue
            if fmt is Format.responses and turn.get("type") not in (None, "message"):
                replaced = change(turn)  # items: function_call, reasoning, …
                if replaced is not None:
                    changed = True
                    new_turns.extend(replaced)
                else:
                    new_turns.append(turn)
                continue
            key = "parts" if fmt is Format.gemini else "content"
            parts = turn.get(key)
            if not isinstance(parts, list):
                new_turns.append(turn)
                continue
            new_parts: list[Any] = []
            turn_changed = False
            for part in parts:
                replaced = change(part) if isinstance(part, dict) else None
                if replaced is None:
                    new_parts.append(part)
                else:
                    turn_changed = True
                    new_parts.extend(replaced)
            if turn_changed:
                changed = True
                turn = {**turn, key: new_parts or _empty_text(fmt)}
            new_turns.append(turn)
        if changed:
            body[turns_field] = new_turns
    if fmt is Format.anthropic and isinstance(body.get("system"), list):
        system = [p for part in body["system"] for p in (change(part) or [part])] if body["system"] else []
        if system != body["system"]:
            body["system"] = system
            changed = True
    return changed


def _empty_text(fmt: Format) -> list[dict[str, Any]]:
    if fmt is Format.gemini:
        return [{"text": "(omitted)"}]
    if fmt is Format.responses:
        return [{"type": "input_text", "text": "(omitted)"}]
    return [{"type": "text", "text": "(omitted)"}]


def _text_part(fmt: Format, text: str) -> dict[str, Any]:
    if fmt is Format.gemini:
        return {"text": text}
    if fmt is Format.responses:
        return {"type": "input_text", "text": text}
    return {"type": "text", "text": text}


# -- images ------------------------------------------------------------------------------------


def _drop_images(fmt: Format, body: dict[str, Any]) -> bool:
    def change(part: dict[str, Any]) -> list[Any] | None:
        kind = part.get("type")
        if fmt is Format.gemini:
            blob = (
                part.get("inlineData")
                or part.get("inline_data")
                or part.get("fileData")
                or part.get("file_data")
            )
            mime = str(blob.get("mimeType") or blob.get("mime_type") or "") if isinstance(blob, dict) else ""
            return [_text_part(fmt, IMAGE_PLACEHOLDER)] if mime.startswith("image/") else None
        if kind in ("image", "image_url", "input_image"):
            return [_text_part(fmt, IMAGE_PLACEHOLDER)]
        if fmt is Format.anthropic and kind == "tool_result" and isinstance(part.get("content"), list):
            inner = [
                _text_part(fmt, IMAGE_PLACEHOLDER) if isinstance(p, dict) and p.get("type") == "image" else p
                for p in part["content"]
            ]
            return [{**part, "content": inner}] if inner != part["content"] else None
        return None

    return _map_parts(fmt, body, change)


# -- thinking ----------------------------------------------------------------------------------


def _drop_thinking(fmt: Format, body: dict[str, Any]) -> bool:
    changed = False
    for name in _THINKING_FIELDS[fmt]:
        if name in body:
            del body[name]
            changed = True
    if fmt is Format.gemini:
        config = body.get("generationConfig")
        for key in ("thinkingConfig", "thinking_config"):
            if isinstance(config, dict) and key in config:
                config = {k: v for k, v in config.items() if k != key}
                body["generationConfig"] = config
                changed = True

    def change(part: dict[str, Any]) -> list[Any] | None:
        kind = part.get("type")
        if kind in ("thinking", "redacted_thinking", "reasoning"):  # Anthropic blocks, Responses items
            return []
        if fmt is Format.gemini and part.get("thought") is True:
            return []
        return None

    return _map_parts(fmt, body, change) or changed


# -- tools -------------------------------------------------------------------------------------


def _drop_tools(fmt: Format, body: dict[str, Any]) -> bool:
    changed = False
    for name in _TOOL_FIELDS[fmt]:
        if name in body:
            del body[name]
            changed = True
    if fmt is Format.chat:
        return _chat_tool_turns(body) or changed

    def change(part: dict[str, Any]) -> list[Any] | None:
        kind = part.get("type")
        if kind == "tool_use" or kind == "function_call":  # Anthropic block, Responses item
            call = f"[tool call {part.get('name', '')}: {_compact(part.get('input', part.get('arguments')))}]"
            return (
                [_message_text(fmt, call, "assistant")]
                if fmt is Format.responses
                else [_text_part(fmt, call)]
            )
        if kind == "tool_result":
            return [_text_part(fmt, f"[tool result: {_compact(part.get('content'))}]")]
        if kind == "function_call_output":
            return [_message_text(fmt, f"[tool result: {_compact(part.get('output'))}]", "user")]
        if fmt is Format.gemini and isinstance(part.get("functionCall"), dict):
            fc = part["functionCall"]
            return [_text_part(fmt, f"[tool call {fc.get('name', '')}: {_compact(fc.get('args'))}]")]
        if fmt is Format.gemini and isinstance(part.get("functionResponse"), dict):
            fr = part["functionResponse"]
            return [_text_part(fmt, f"[tool result {fr.get('name', '')}: {_compact(fr.get('response'))}]")]
        return None

    return _map_parts(fmt, body, change) or changed


def _message_text(fmt: Format, text: str, role: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def _chat_tool_turns(body: dict[str, Any]) -> bool:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    changed = False
    out: list[Any] = []
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "tool":
            out.append({"role": "user", "content": f"[tool result: {_compact(m.get('content'))}]"})
            changed = True
        elif (
            isinstance(m, dict)
            and m.get("role") == "assistant"
            and (m.get("tool_calls") or m.get("function_call"))
        ):
            calls = m.get("tool_calls") or [{"function": m.get("function_call")}]
            text = " ".join(
                f"[tool call {(c.get('function') or {}).get('name', '')}: {(c.get('function') or {}).get('arguments', '')}]"
                for c in calls
                if isinstance(c, dict)
            )
            content = m.get("content")
            prefix = content + "\n" if isinstance(content, str) and content else ""
            out.append({"role": "assistant", "content": prefix + text})
            changed = True
        else:
            out.append(m)
    if changed:
        body["messages"] = out
    return changed


def _compact(value: Any) -> str:
    """A tool call's input or a result as short text (a placeholder, not a transcript)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        text = " ".join(
            str(p.get("text", "")) if isinstance(p, dict) and "text" in p else orjson.dumps(p).decode()
            for p in value
        )
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = str(value)
    return text if len(text) <= 2000 else text[:2000] + "…"


__all__ = ["IMAGE_PLACEHOLDER", "ModelLimits", "shape"]
