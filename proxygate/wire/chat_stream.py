"""OpenAI Chat Completions streams: upstream chunks → IR events, IR events → client chunks.

The decoder is where upstream dialects meet (protocols.md §2.7, §5.14.2, §6.9, §6.10): tool-call
fragments keyed by ``index`` (else ``id``, else "a name starts a new call"), interleaved indexes,
whole calls in one fragment, empty fragments, names in pieces, usage on any chunk including
``choices: []``. It turns all of them into strictly sequential IR blocks: a tool call whose
fragments arrive while another tool is still open is buffered and emitted whole at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxygate.wire.content import is_complete_json
from proxygate.wire.errors import stream_error_event
from proxygate.wire.ir import (
    BlockKind,
    BlockStart,
    BlockStop,
    Delta,
    Error,
    Finish,
    Format,
    KeepAlive,
    ProtocolError,
    ReasoningState,
    Start,
    StopReason,
    StreamEvent,
    StreamTruncated,
    Usage,
)
from proxygate.wire.sse import encode_event
from proxygate.wire.stream import SSEStreamDecoder
from proxygate.wire.usage import token_count

# finish_reason → IR (§5.10); "stop" becomes tool_use when calls were emitted (§2.5).
FINISH_TO_IR = {
    "stop": StopReason.end_turn,
    "length": StopReason.max_tokens,
    "tool_calls": StopReason.tool_use,
    "function_call": StopReason.tool_use,
    "content_filter": StopReason.refusal,
}
FINISH_FROM_IR = {
    StopReason.end_turn: "stop",
    StopReason.stop_sequence: "stop",
    StopReason.pause_turn: "stop",
    StopReason.tool_use: "tool_calls",
    StopReason.max_tokens: "length",
    StopReason.context_exceeded: "length",
    StopReason.refusal: "content_filter",
    StopReason.error: "stop",
}
# OpenAI error.type / code → (IR error class, status) (§2.8, §5.12).
_ERROR_CLASSES = {
    "context_length_exceeded": ("context_exceeded", 400),
    "rate_limit_exceeded": ("rate_limited", 429),
    "insufficient_quota": ("billing", 429),
    "invalid_request_error": ("invalid_request", 400),
    "invalid_api_key": ("authentication", 401),
    "server_error": ("server", 500),
    "timeout": ("timeout", 504),
}


def stop_reason(finish_reason: str | None, *, has_tool_calls: bool) -> StopReason:
    reason = FINISH_TO_IR.get(finish_reason or "stop", StopReason.end_turn)
    if reason is StopReason.end_turn and has_tool_calls:
        return StopReason.tool_use
    return reason


def decode_usage(usage: Any) -> Usage:
    """CHAT usage → IR: prompt_tokens include cache reads and writes (§5.11)."""
    if not isinstance(usage, dict):
        return Usage()
    prompt_details = usage.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = usage.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    # DeepSeek reports its cache hits as prompt_cache_hit_tokens (§2.6).
    cached = token_count(prompt_details.get("cached_tokens")) or token_count(
        usage.get("prompt_cache_hit_tokens")
    )
    written = token_count(prompt_details.get("cache_write_tokens"))
    return Usage(
        input_tokens=max(0, token_count(usage.get("prompt_tokens")) - cached - written),
        output_tokens=token_count(usage.get("completion_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=token_count(completion_details.get("reasoning_tokens")),
    )


def encode_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.prompt_tokens
    prompt_details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def error_event(error: Any) -> Error:
    """A CHAT error object (any of the shapes compatible servers send, §2.8) → IR Error."""
    if not isinstance(error, dict):
        return Error("server", str(error), 500)
    message = str(error.get("message") or "upstream error")
    code, kind = error.get("code"), error.get("type")
    for key in (code, kind):
        if isinstance(key, str) and key in _ERROR_CLASSES:
            cls, status = _ERROR_CLASSES[key]
            return Error(cls, message, status)
    if isinstance(code, int) and code >= 400:
        return Error("rate_limited" if code == 429 else "server", message, code)
    return Error("server", message, 500)


@dataclass(slots=True)
class _Tool:
    """One upstream tool call being assembled."""

    id: str
    name: str = ""
    args: list[str] = field(default_factory=list)
    index: int | None = None  # IR block index once opened
    is_closed: bool = False


class StreamDecoder(SSEStreamDecoder):
    """CHAT SSE bytes from an upstream → IR stream events (§5.14.2)."""

    def __init__(self, *, fallback_id: str = "") -> None:
        super().__init__(fallback_id=fallback_id)
        self._is_started = False
        self._id = ""
        self._model = ""
        self._next = 0
        self._open: int | None = None  # IR index of the open block
        self._open_kind: BlockKind | None = None
        self._open_tool: _Tool | None = None
        self._tools: list[_Tool] = []
        self._by_index: dict[int, _Tool] = {}
        self._by_id: dict[str, _Tool] = {}
        self._finish_reason: str | None = None
        self._usage = Usage()

    def _end(self, out: list[StreamEvent]) -> None:
        # EOF before [DONE] is an upstream failure even after a finish_reason: the usage chunk
        # may still have been due, and the fast path judges the same (protocols.md §5.14.1 rule 5).
        if self._finish_reason is None:
            raise StreamTruncated("chat: stream ended before a finish_reason and [DONE]")
        raise StreamTruncated("chat: stream ended after its finish_reason but before [DONE]")

    def _data(self, data: str, out: list[StreamEvent]) -> None:
        if data.strip() == "[DONE]":
            if self._finish_reason is None and not self._is_started:
                raise StreamTruncated("chat: [DONE] before any chunk")
            self._finalize(out)
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"chat: unparseable stream chunk: {data[:200]!r}") from exc
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            out.append(error_event(chunk["error"]))
            self._is_done = True
            return
        if not self._is_started:
            self._is_started = True
            self._id = str(chunk.get("id") or "")
            self._model = str(chunk.get("model") or "")
            out.append(Start(self._id, self._model))
        if isinstance(chunk.get("usage"), dict):
            self._usage = decode_usage(chunk["usage"])
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if choice is None:
            return
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._delta(delta, out)
        if choice.get("finish_reason"):
            self._finish_reason = str(choice["finish_reason"])

    def _delta(self, delta: dict[str, Any], out: list[StreamEvent]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._ensure("reasoning", out)
            out.append(Delta(self._index(), reasoning=reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:  # never open a block for "" (§5.14.2 rule 3)
            self._ensure("text", out)
            out.append(Delta(self._index(), text=content))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._ensure("refusal", out)
            out.append(Delta(self._index(), text=refusal))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for fragment in calls:
                if isinstance(fragment, dict):
                    self._tool_fragment(fragment, out)

    def _index(self) -> int:
        assert self._open is not None
        return self._open

    def _ensure(self, kind: BlockKind, out: list[StreamEvent]) -> None:
        if self._open is not None and self._open_kind == kind:
            return
        self._close_open(out)
        self._open, self._open_kind = self._next, kind
        self._next += 1
        out.append(BlockStart(self._open, kind))

    def _close_open(self, out: list[StreamEvent]) -> None:
        if self._open is None:
            return
        if self._open_kind == "reasoning":
            # The plain text is the continuity state of DeepSeek-like upstreams (§5.7.3, §5.14.2 rule 2).
            state = ReasoningState(origin=Format.chat, kind="plaintext", model=self._model)
            out.append(Delta(self._open, state=state))
        if self._open_tool is not None:
            self._open_tool.is_closed = True
            self._open_tool = None
        out.append(BlockStop(self._open))
        self._open = self._open_kind = None

    def _find_tool(self, fragment: dict[str, Any]) -> _Tool:
        index = fragment.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else None
        call_id = fragment.get("id") if isinstance(fragment.get("id"), str) else ""
        function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
        assert isinstance(function, dict)
        name = function.get("name") if isinstance(function.get("name"), str) else ""
        if call_id and call_id in self._by_id:
            return self._by_id[call_id]
        known = self._by_index.get(index) if index is not None else None
        if known is not None and not (call_id and known.id != call_id and known.args):
            if call_id and not known.id:
                known.id = call_id
                self._by_id[call_id] = known
            return known
        if index is None and not call_id and not name and self._tools:
            return self._tools[-1]  # continuation without any key: the last call (§2.7 rule 3)
        # Without an id from the upstream, calls of two answers must still differ: Anthropic
        # rejects a history with duplicate tool_use ids.
        tool = _Tool(id=call_id or f"call_{self._id or self.fallback_id or 'proxygate'}_{len(self._tools)}")
        self._tools.append(tool)
        self._by_id[tool.id] = tool
        if index is not None:
            self._by_index[index] = tool
        return tool

    def _tool_fragment(self, fragment: dict[str, Any], out: list[StreamEvent]) -> None:
        tool = self._find_tool(fragment)
        function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
        assert isinstance(function, dict)
        name = function.get("name")
        if isinstance(name, str) and name and tool.index is None and name != tool.name and not tool.args:
            tool.name += name  # names may arrive in pieces before the first argument
        args = function.get("arguments")
        if isinstance(args, dict):  # some servers send an object instead of JSON text
            args = orjson.dumps(args).decode()
        if not isinstance(args, str) or not args:
            return  # empty fragments carry nothing (§6.2)
        if tool is self._open_tool:
            out.append(Delta(self._index(), args=args))
            return
        tool.args.append(args)
        if tool.index is None and not tool.is_closed and self._can_open_tool():
            self._open_tool_block(tool, out)

    def _can_open_tool(self) -> bool:
        """A new tool streams live unless another tool is still mid-arguments (interleaving)."""
        if self._open_tool is None:
            return True
        return is_complete_json("".join(self._open_tool.args))

    def _open_tool_block(self, tool: _Tool, out: list[StreamEvent]) -> None:
        self._close_open(out)
        tool.index = self._open = self._next
        self._open_kind, self._open_tool = "tool_call", tool
        self._next += 1
        out.append(BlockStart(tool.index, "tool_call", tool_id=tool.id, tool_name=tool.name))
        if tool.args:
            out.append(Delta(tool.index, args="".join(tool.args)))

    def _finalize(self, out: list[StreamEvent]) -> None:
        self._close_open(out)
        for tool in self._tools:  # buffered (interleaved or late) calls, whole, in order
            if tool.index is None:
                self._open_tool_block(tool, out)
                self._close_open(out)
        reason = stop_reason(self._finish_reason, has_tool_calls=bool(self._tools))
        self.finish = Finish(reason, None, self._usage)
        out.append(self.finish)
        self._is_done = True


def _chunk(base: dict[str, Any], delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return encode_event(orjson.dumps({**base, "choices": [choice]}))


def completion_id(value: str) -> str:
    return value if value.startswith("chatcmpl-") else f"chatcmpl-{value}"


class StreamEncoder:
    """IR stream events → CHAT chunks with the grammar of §2.7 / §5.14.9.

    ``created`` comes from the caller (the wire layer has no clock). Reasoning text goes out as
    ``delta.reasoning_content``; opaque reasoning state has no CHAT slot and is dropped, so the
    next turn toward Anthropic runs without thinking for that tool cycle (§5.7.2, §5.7.3).
    """

    def __init__(self, *, model: str, response_id: str, include_usage: bool = True, created: int = 0) -> None:
        self._base: dict[str, Any] = {
            "id": completion_id(response_id or "proxygate"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        self._has_role = False
        self._is_done = False
        self._is_finished = False
        self._kind: str | None = None
        self._tool_ordinal: dict[int, int] = {}  # IR block index → CHAT tool index
        self._usage = Usage()

    def encode(self, event: StreamEvent) -> bytes:
        if self._is_done:
            return b""
        match event:
            case Start(usage=usage):
                self._usage = usage
                return self._role()
            case KeepAlive():
                return b": keep-alive\n\n"
            case Error(error_class=cls, message=message, status=status):
                self._is_done = True
                return stream_error_event(Format.chat, cls, message, status=status)
            case BlockStart(index=index, kind=kind, tool_id=tool_id, tool_name=name):
                self._kind = kind
                if kind != "tool_call":
                    return self._role()
                ordinal = self._tool_ordinal[index] = len(self._tool_ordinal)
                call = {
                    "index": ordinal,
                    "id": tool_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                return self._role(content=None) + _chunk(self._base, {"tool_calls": [call]})
            case Delta(index=index, text=text, args=args, reasoning=reasoning):
                if text and self._kind in ("text", "refusal"):
                    key = "content" if self._kind == "text" else "refusal"
                    return self._role() + _chunk(self._base, {key: text})
                if reasoning:
                    return self._role() + _chunk(self._base, {"reasoning_content": reasoning})
                if args and index in self._tool_ordinal:
                    call = {"index": self._tool_ordinal[index], "function": {"arguments": args}}
                    return _chunk(self._base, {"tool_calls": [call]})
                return b""
            case Finish(stop_reason=stop, usage=usage):
                self._is_done = self._is_finished = True
                out = self._role() + _chunk(self._base, {}, FINISH_FROM_IR[stop])
                if self._include_usage:
                    usage_chunk = {
                        **self._base,
                        "choices": [],
                        "usage": encode_usage(self._usage.merge(usage)),
                    }
                    out += encode_event(orjson.dumps(usage_chunk))
                return out
        return b""  # BlockStop: CHAT has no block boundaries

    def close(self) -> bytes:
        """``data: [DONE]`` after a finished stream; nothing after an error (§5.12)."""
        return b"data: [DONE]\n\n" if self._is_finished else b""

    def _role(self, content: str | None = "") -> bytes:
        if self._has_role:
            return b""
        self._has_role = True
        return _chunk(self._base, {"role": "assistant", "content": content})
