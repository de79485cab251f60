"""Gemini streams (``:streamGenerateContent?alt=sse``) ↔ IR stream events (protocols.md §4.4, §5.14.7–8).

Upstream chunks are whole GenerateContentResponses holding only the *new* parts; a
``functionCall`` arrives complete in one part, usage may repeat on every chunk (the last one
wins), and the stream simply ends — so the decoder finishes at EOF and calls a stream without
any ``finishReason`` truncated. An ``{"error": …}`` chunk ends it with an IR ``Error``.

Towards a Gemini client every line is ``data: <json>`` with exactly one space, and nothing
else: no comments and no keep-alives, because google-genai feeds any other line to a JSON brace
balancer (§5.14.1 rule 6). The encoder holds back the latest part for one step so that the final
chunk carries content together with ``finishReason`` and ``usageMetadata``.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxygate.wire.content import arguments_to_input
from proxygate.wire.errors import stream_error_event
from proxygate.wire.gemini_parts import (
    FINISH_FROM_IR,
    client_signature,
    decode_usage,
    encode_usage,
    error_of,
    field,
    state_of_signature,
    stop_reason_of,
    synth_call_id,
)
from proxygate.wire.ir import (
    BlockKind,
    BlockStart,
    BlockStop,
    Delta,
    Error,
    Finish,
    Format,
    KeepAlive,
    ReasoningState,
    Start,
    StopReason,
    StreamEvent,
    StreamTruncated,
    ToolKind,
    Usage,
)
from proxygate.wire.sse import encode_event
from proxygate.wire.stream import SSEStreamDecoder

# --------------------------------------------------------------------------- decoding


class StreamDecoder(SSEStreamDecoder):
    """Gemini SSE bytes → IR events; ``close()`` finishes, or raises if no finishReason came."""

    def __init__(self, *, fallback_id: str = "") -> None:
        super().__init__(fallback_id=fallback_id)
        self._is_started = False
        self._open: BlockKind | None = None
        self._next = 0
        self._calls = 0
        self._has_calls = False
        self._is_blocked = False
        self._response_id = ""
        self._finish_reason: str | None = None
        self._usage = Usage()

    def _end(self, out: list[StreamEvent]) -> None:
        if self._finish_reason is None and not self._is_blocked:
            raise StreamTruncated("gemini stream ended without a finishReason")
        self._close(out)
        stop = stop_reason_of(self._finish_reason, has_calls=self._has_calls, is_blocked=self._is_blocked)
        self.finish = Finish(stop_reason=stop, usage=self._usage)
        out.append(self.finish)
        self._is_done = True

    def _data(self, data: str, out: list[StreamEvent]) -> None:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            self._close(out)
            out.append(Error(*error_of(chunk["error"])))
            self._is_done = True
            return
        if not self._is_started:
            self._is_started = True
            self._response_id = str(field(chunk, "responseId", "response_id") or "")
            model = str(field(chunk, "modelVersion", "model_version") or "")
            out.append(Start(id=self._response_id, model=model))
        candidates = chunk.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else {}
        if isinstance(candidate, dict):
            content = candidate.get("content")
            for part in field(content, "parts", "parts") or []:
                if isinstance(part, dict):
                    self._part(part, out)
            reason = field(candidate, "finishReason", "finish_reason")
            if isinstance(reason, str):
                self._finish_reason = reason
        metadata = field(chunk, "usageMetadata", "usage_metadata")
        if isinstance(metadata, dict):
            self._usage = decode_usage(metadata)  # repeated or cumulative: the latest wins
        feedback = field(chunk, "promptFeedback", "prompt_feedback")
        if isinstance(feedback, dict) and field(feedback, "blockReason", "block_reason"):
            self._is_blocked = True

    def _part(self, part: dict[str, Any], out: list[StreamEvent]) -> None:
        signature = field(part, "thoughtSignature", "thought_signature")
        state = state_of_signature(signature) if isinstance(signature, str) and signature else None
        call = field(part, "functionCall", "function_call")
        text = part.get("text")
        if isinstance(call, dict):
            self._close(out)
            if state is not None:
                self._state_block(state, out)  # the signature precedes its call (§5.14.7)
            name = str(call.get("name", ""))
            call_id = call.get("id")
            if not (isinstance(call_id, str) and call_id):
                call_id = synth_call_id(self._response_id or self.fallback_id, self._calls, name)
            self._calls += 1
            self._has_calls = True
            index = self._open_block("tool_call", out, tool_id=call_id, tool_name=name)
            out.append(Delta(index, args=orjson.dumps(call.get("args") or {}).decode()))
            self._close(out)
        elif isinstance(text, str) and part.get("thought") is True:
            index = self._open_block("reasoning", out)
            if text:
                out.append(Delta(index, reasoning=text))
            if state is not None:
                out.append(Delta(index, state=state))
                self._close(out)  # a signature is the last thing in a thinking block
        elif isinstance(text, str):
            if state is not None:
                self._close(out)
                self._state_block(state, out)
            if text:
                out.append(Delta(self._open_block("text", out), text=text))

    def _open_block(
        self, kind: BlockKind, out: list[StreamEvent], *, tool_id: str = "", tool_name: str = ""
    ) -> int:
        if self._open == kind and kind != "tool_call":
            return self._next - 1
        self._close(out)
        self._open = kind
        self._next += 1
        out.append(BlockStart(self._next - 1, kind, tool_id=tool_id, tool_name=tool_name))
        return self._next - 1

    def _state_block(self, state: ReasoningState, out: list[StreamEvent]) -> None:
        index = self._open_block("reasoning", out)
        out.append(Delta(index, state=state))
        self._close(out)

    def _close(self, out: list[StreamEvent]) -> None:
        if self._open is not None:
            out.append(BlockStop(self._next - 1))
            self._open = None


# --------------------------------------------------------------------------- encoding


class StreamEncoder:
    """IR stream events → ``data: {GenerateContentResponse}`` lines for Gemini clients."""

    def __init__(self, *, model: str, response_id: str, include_usage: bool = True) -> None:
        self._model = model
        self._id = response_id
        self._usage = Usage()
        self._held: dict[str, Any] | None = None
        self._pending_signature: str | None = None
        self._kind: BlockKind | None = None
        self._index: int | None = None
        self._tool_id = ""
        self._tool_name = ""
        self._tool_kind: ToolKind = "function"
        self._buffer = ""
        self._state: ReasoningState | None = None
        self._has_text = False
        self._is_done = False

    def encode(self, event: StreamEvent) -> bytes:
        if self._is_done:
            return b""
        match event:
            case Start(usage=usage):
                self._usage = usage
            case KeepAlive():
                pass  # never a comment line towards google-genai (§6.12)
            case BlockStart():
                self._kind, self._index = event.kind, event.index
                self._tool_id, self._tool_name, self._tool_kind = (
                    event.tool_id,
                    event.tool_name,
                    event.tool_kind,
                )
                self._buffer, self._state, self._has_text = "", None, False
            case Delta(index=index) if index == self._index:
                return self._delta(event)
            case BlockStop(index=index) if index == self._index:
                return self._block_stop()
            case Finish(stop_reason=stop, usage=usage):
                self._is_done = True
                return self._final(stop, self._usage.merge(usage))
            case Error(error_class=cls, message=message, status=status):
                self._is_done = True
                return self._release() + stream_error_event(Format.gemini, cls, message, status=status)
        return b""

    def close(self) -> bytes:
        """A stream that ended without Finish must not look finished (§6.22)."""
        if self._is_done:
            return b""
        self._is_done = True
        message = "upstream stream ended early"
        return self._release() + stream_error_event(Format.gemini, "server", message, status=502)

    def _delta(self, event: Delta) -> bytes:
        if event.state is not None:
            self._state = event.state
            return b""
        if event.args:
            self._buffer += event.args
            return b""
        if event.text:
            return self._push({"text": event.text})
        if event.reasoning:
            self._has_text = True
            return self._push({"text": event.reasoning, "thought": True})
        return b""

    def _block_stop(self) -> bytes:
        kind, self._kind, self._index = self._kind, None, None
        if kind == "tool_call":
            args = (
                {"input": self._buffer} if self._tool_kind == "custom" else arguments_to_input(self._buffer)
            )
            call: dict[str, Any] = {"name": self._tool_name, "args": args}
            if self._tool_id:
                call["id"] = self._tool_id
            return self._push({"functionCall": call})
        signature = client_signature(self._state)
        if kind == "reasoning" and signature:
            if self._has_text:
                return self._push({"text": "", "thought": True, "thoughtSignature": signature})
            self._pending_signature = signature  # signs the next part (a call, usually)
        return b""

    def _push(self, part: dict[str, Any]) -> bytes:
        if self._pending_signature and "thoughtSignature" not in part:
            part = {**part, "thoughtSignature": self._pending_signature}
            self._pending_signature = None
        out = self._release()
        self._held = part
        return out

    def _release(self) -> bytes:
        held, self._held = self._held, None
        return self._chunk([held]) if held is not None else b""

    def _final(self, stop: StopReason, usage: Usage) -> bytes:
        parts = [self._held] if self._held is not None else []
        self._held = None
        if self._pending_signature:
            parts.append({"text": "", "thought": True, "thoughtSignature": self._pending_signature})
        return self._chunk(parts, finish=FINISH_FROM_IR[stop], usage=usage)

    def _chunk(
        self, parts: list[dict[str, Any]], *, finish: str | None = None, usage: Usage | None = None
    ) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        if finish is not None:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        chunk: dict[str, Any] = {"candidates": [candidate]}
        if usage is not None:
            chunk["usageMetadata"] = encode_usage(usage)
        chunk["modelVersion"] = self._model
        chunk["responseId"] = self._id
        return encode_event(orjson.dumps(chunk))
