"""Anthropic Messages streams: upstream SSE → IR events, IR events → client SSE (protocols.md §1.14,
§5.14.9)."""

from __future__ import annotations

from typing import Any

import orjson

from proxygate.wire.anthropic_blocks import (
    STOP_FROM_IR,
    STOP_TO_IR,
    decode_usage,
    encode_usage,
    error_class_of,
    message_id,
    reasoning_state,
    signature_for,
)
from proxygate.wire.content import (
    input_to_arguments,
)
from proxygate.wire.errors import stream_error_event
from proxygate.wire.ir import (
    BlockStart,
    BlockStop,
    Delta,
    Error,
    Finish,
    Format,
    KeepAlive,
    ProtocolError,
    Start,
    StopReason,
    StreamEvent,
    StreamTruncated,
    Usage,
)
from proxygate.wire.sse import encode_event
from proxygate.wire.stream import SSEStreamDecoder


class StreamDecoder(SSEStreamDecoder):
    """Anthropic SSE bytes from an upstream → IR stream events (§1.14)."""

    def __init__(self, *, fallback_id: str = "") -> None:
        super().__init__(fallback_id=fallback_id)
        self._usage = Usage()
        self._stop = StopReason.end_turn
        self._stop_sequence: str | None = None
        self._index: dict[int, int] = {}  # upstream block index → IR index
        self._next = 0

    def _end(self, out: list[StreamEvent]) -> None:
        raise StreamTruncated("anthropic: stream ended before message_stop")

    def _data(self, data: str, out: list[StreamEvent]) -> None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"anthropic: unparseable stream event: {data[:200]!r}") from exc
        if not isinstance(event, dict):
            return
        match event.get("type"):
            case "message_start":
                message = event.get("message") or {}
                self._usage = decode_usage(message.get("usage"))
                out.append(Start(str(message.get("id", "")), str(message.get("model", "")), self._usage))
            case "content_block_start":
                self._block_start(event, out)
            case "content_block_delta":
                self._delta(event, out)
            case "content_block_stop":
                index = self._index.get(int(event.get("index", -1)))
                if index is not None:
                    out.append(BlockStop(index))
            case "message_delta":
                delta = event.get("delta") or {}
                if delta.get("stop_reason"):
                    self._stop = STOP_TO_IR.get(str(delta["stop_reason"]), StopReason.end_turn)
                if isinstance(delta.get("stop_sequence"), str):
                    self._stop_sequence = delta["stop_sequence"]
                self._usage = self._usage.merge(decode_usage(event.get("usage")))
            case "message_stop":
                self.finish = Finish(self._stop, self._stop_sequence, self._usage)
                out.append(self.finish)
                self._is_done = True
            case "ping":
                out.append(KeepAlive())
            case "error":
                cls, message, status = error_class_of(event.get("error"))
                out.append(Error(cls, message, status))
                self._is_done = True
            # unknown event types are ignored (§1.14)

    def _block_start(self, event: dict[str, Any], out: list[StreamEvent]) -> None:
        block = event.get("content_block")
        if not isinstance(block, dict):
            return
        index = self._next
        self._next += 1
        self._index[int(event.get("index", index))] = index
        match block.get("type"):
            case "text":
                out.append(BlockStart(index, "text"))
                if block.get("text"):
                    out.append(Delta(index, text=str(block["text"])))
            case "thinking":
                out.append(BlockStart(index, "reasoning"))
                if block.get("thinking"):
                    out.append(Delta(index, reasoning=str(block["thinking"])))
                if block.get("signature"):
                    out.append(Delta(index, state=reasoning_state(str(block["signature"]), "signature")))
            case "redacted_thinking":
                out.append(BlockStart(index, "reasoning"))
                out.append(Delta(index, state=reasoning_state(str(block.get("data", "")), "redacted")))
            case "tool_use":
                out.append(
                    BlockStart(
                        index,
                        "tool_call",
                        tool_id=str(block.get("id", "")),
                        tool_name=str(block.get("name", "")),
                    )
                )
                if block.get("input"):  # some servers send the whole input in the start
                    out.append(Delta(index, args=input_to_arguments(block["input"])))
            case _:
                out.append(BlockStart(index, "opaque", raw=block, fmt=Format.anthropic))

    def _delta(self, event: dict[str, Any], out: list[StreamEvent]) -> None:
        index = self._index.get(int(event.get("index", -1)))
        delta = event.get("delta")
        if index is None or not isinstance(delta, dict):
            return
        match delta.get("type"):
            case "text_delta" if delta.get("text"):
                out.append(Delta(index, text=str(delta["text"])))
            case "input_json_delta" if delta.get("partial_json"):
                out.append(Delta(index, args=str(delta["partial_json"])))
            case "thinking_delta" if delta.get("thinking"):
                out.append(Delta(index, reasoning=str(delta["thinking"])))
            case "signature_delta" if delta.get("signature"):
                out.append(Delta(index, state=reasoning_state(str(delta["signature"]), "signature")))
            # citations_delta and unknown delta types are dropped


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return encode_event(orjson.dumps(payload), name)


class StreamEncoder:
    """IR stream events → Anthropic SSE bytes with the exact grammar of §1.14 / §5.14.9.

    Text and thinking blocks open lazily at their first content, so no empty text block is
    ever sent; a foreign reasoning state becomes a ``signature_delta`` envelope (§5.7.3).
    """

    def __init__(self, *, model: str, response_id: str, include_usage: bool = True) -> None:
        self._model = model
        self._id = message_id(response_id) if response_id else ""
        self._is_started = False
        self._is_done = False
        self._next = 0
        self._open: int | None = None  # ANT index of the block on the wire
        self._kind: str | None = None  # IR kind of the current IR block
        self._tool_kind = "function"
        self._custom_sent = False
        self._ir_index: int | None = None
        self._usage = Usage()

    def encode(self, event: StreamEvent) -> bytes:
        if self._is_done:
            return b""
        match event:
            case Start():
                return self._start(event.id, event.usage)
            case KeepAlive():
                return _event("ping", {"type": "ping"})
            case Error(error_class=cls, message=message, status=status):
                self._is_done = True
                return self._start("", Usage()) + stream_error_event(
                    Format.anthropic, cls, message, status=status
                )
        out = self._start("", Usage())
        match event:
            case BlockStart():
                out += self._close_block()
                out += self._block_start(event)
            case Delta():
                out += self._delta(event)
            case BlockStop(index=index) if index == self._ir_index:
                out += self._close_block()
                self._ir_index = self._kind = None
            case Finish(stop_reason=stop, stop_sequence=sequence, usage=usage):
                out += self._close_block()
                self._is_done = True
                usage = self._usage.merge(usage)
                out += _event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": STOP_FROM_IR[stop], "stop_sequence": sequence},
                        "usage": encode_usage(usage),
                    },
                )
                out += _event("message_stop", {"type": "message_stop"})
        return out

    def close(self) -> bytes:
        return b""

    def _start(self, upstream_id: str, usage: Usage) -> bytes:
        if self._is_started:
            return b""
        self._is_started = True
        self._usage = usage
        self._id = self._id or message_id(upstream_id or "proxygate")
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": encode_usage(usage),
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _open_block(self, block: dict[str, Any]) -> bytes:
        self._open = self._next
        self._next += 1
        return _event(
            "content_block_start",
            {"type": "content_block_start", "index": self._open, "content_block": block},
        )

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._kind == "tool_call" and self._tool_kind == "custom":
            out += self._json_delta('"}' if self._custom_sent else '{"input":""}')
        out += _event("content_block_stop", {"type": "content_block_stop", "index": self._open})
        self._open = None
        return out

    def _block_start(self, event: BlockStart) -> bytes:
        self._ir_index, self._kind = event.index, event.kind
        match event.kind:
            case "tool_call":
                self._tool_kind, self._custom_sent = event.tool_kind, False
                block = {"type": "tool_use", "id": event.tool_id, "name": event.tool_name, "input": {}}
                return self._open_block(block)
            case "opaque" if event.fmt is Format.anthropic and event.raw is not None:
                return self._open_block(event.raw)
        return b""  # text, refusal and reasoning open at their first content

    def _json_delta(self, fragment: str) -> bytes:
        return self._content_delta({"type": "input_json_delta", "partial_json": fragment})

    def _content_delta(self, delta: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": delta}
        )

    def _delta(self, event: Delta) -> bytes:
        if event.index != self._ir_index:
            return b""
        kind = self._kind
        if kind in ("text", "refusal") and event.text:
            out = self._open_block({"type": "text", "text": ""}) if self._open is None else b""
            return out + self._content_delta({"type": "text_delta", "text": event.text})
        if kind == "reasoning":
            return self._reasoning_delta(event)
        if kind in ("tool_call", "opaque") and event.args and self._open is not None:
            if kind == "tool_call" and self._tool_kind == "custom":
                # Raw custom-tool text travels as the string value of {"input": …} (§5.14.4).
                escaped = orjson.dumps(event.args).decode()[1:-1]
                prefix = "" if self._custom_sent else '{"input":"'
                self._custom_sent = True
                return self._json_delta(prefix + escaped)
            return self._json_delta(event.args)
        return b""

    def _reasoning_delta(self, event: Delta) -> bytes:
        state = event.state
        if state is not None and state.origin == Format.anthropic and state.kind == "redacted":
            if self._open is not None:
                return b""
            out = self._open_block({"type": "redacted_thinking", "data": state.payload})
            return out + self._close_block()
        out = b""
        if self._open is None and (event.reasoning or state is not None):
            out = self._open_block({"type": "thinking", "thinking": "", "signature": ""})
        if event.reasoning:
            out += self._content_delta({"type": "thinking_delta", "thinking": event.reasoning})
        if state is not None:
            out += self._content_delta({"type": "signature_delta", "signature": signature_for(state)})
        return out
