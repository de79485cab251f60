"""OpenAI Responses streams: SSE events ↔ IR stream events (protocols.md §3.7, §5.14.4–6).

The decoder survives every upstream dialect seen in the wild (§3.7 quirks): values only in the
``.done`` events, whole arguments in one delta, empty deltas, missing ``output_item.added``, and
a terminal ``response.completed`` whose ``output`` is empty — per-item events are the source of
truth, the terminal object only fills in when no item event came at all.

The encoder writes the grammar the openai SDK and Codex check (§5.14.9): ``sequence_number``
from 0 in steps of 1, every ``*.added`` closed by its ``*.done``, and exactly one terminal event.
That event is always ``response.completed`` — also after a length limit, with status
``incomplete`` inside — because Codex treats any stream without it as a disconnect and retries
(§3.7, §6.16); failures end with ``response.failed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from proxygate.wire.ir import (
    BlockKind,
    BlockStart,
    BlockStop,
    Delta,
    Error,
    Finish,
    KeepAlive,
    Reasoning,
    ReasoningState,
    Start,
    StopReason,
    StreamEvent,
    StreamTruncated,
    ToolCall,
    ToolKind,
    Usage,
)
from proxygate.wire.responses_items import (
    ERROR_CODES,
    base_id,
    decode_call,
    decode_reasoning,
    decode_usage,
    encode_call,
    encode_reasoning,
    encode_usage,
    error_of,
    response_id,
    state_of_slot,
    status_of,
    stop_reason_of,
)
from proxygate.wire.sse import encode_event
from proxygate.wire.stream import SSEStreamDecoder

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


# --------------------------------------------------------------------------- decoding


@dataclass(slots=True)
class _Block:
    """One IR block being read from a Responses item (or one content part of a message item)."""

    kind: BlockKind
    tool_id: str = ""
    tool_name: str = ""
    tool_kind: ToolKind = "function"
    index: int | None = None  # IR index once opened
    has_delta: bool = False
    is_closed: bool = False
    summary_index: int | None = None


class StreamDecoder(SSEStreamDecoder):
    """Responses SSE bytes → IR events; ``close()`` raises if no terminal event arrived."""

    def __init__(self, *, fallback_id: str = "") -> None:
        super().__init__(fallback_id=fallback_id)
        self._blocks: dict[tuple[int, int], _Block] = {}
        self._indexes: dict[str, int] = {}  # item id → output_index
        self._open: _Block | None = None
        self._next = 0
        self._is_started = False
        self._has_calls = False

    def _end(self, out: list[StreamEvent]) -> None:
        raise StreamTruncated("responses stream ended before a terminal event (response.completed)")

    # -- dispatch

    def _data(self, data: str, out: list[StreamEvent]) -> None:
        if data == "[DONE]":
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # not an event we can read; the terminal check still guards the stream
        if not isinstance(event, dict):
            return
        kind = str(event.get("type", ""))
        response = _dict(event.get("response"))
        self._start(response, out)
        oi = self._output_index(event)
        content_index = event.get("content_index")
        ci = content_index if isinstance(content_index, int) else 0
        match kind:
            case "response.output_item.added":
                self._item_added(oi, event.get("item"), out)
            case "response.content_part.added":
                if _dict(event.get("part")).get("type") == "refusal":
                    self._block((oi, ci), "refusal")
            case "response.output_text.delta" | "response.refusal.delta":
                block_kind: BlockKind = "refusal" if kind.startswith("response.refusal") else "text"
                self._text(self._block((oi, ci), block_kind), str(event.get("delta", "")), out)
            case "response.output_text.done" | "response.refusal.done":
                block_kind = "refusal" if kind.startswith("response.refusal") else "text"
                value = event.get("refusal") if block_kind == "refusal" else event.get("text")
                self._text_done(self._block((oi, ci), block_kind), str(value or ""), out)
            case "response.content_part.done":
                self._close(self._blocks.get((oi, ci)), out)
            case "response.reasoning_summary_text.delta" | "response.reasoning_text.delta":
                summary = event.get("summary_index") if kind.endswith("summary_text.delta") else None
                self._reasoning(oi, str(event.get("delta", "")), summary, out)
            case "response.reasoning_summary_text.done" | "response.reasoning_text.done":
                block = self._block((oi, -1), "reasoning")
                if not block.has_delta:
                    self._reasoning(oi, str(event.get("text", "")), event.get("summary_index"), out)
            case "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta":
                self._args(self._blocks.get((oi, -1)), str(event.get("delta", "")), out)
            case "response.function_call_arguments.done" | "response.custom_tool_call_input.done":
                pending = self._blocks.get((oi, -1))
                if pending is not None and not pending.has_delta:
                    self._args(pending, str(event.get("arguments", event.get("input", ""))), out)
            case "response.output_item.done":
                self._item_done(oi, event.get("item"), out)
            case "response.completed" | "response.incomplete":
                self._completed(response, out)
            case "response.failed":
                self._fail(response.get("error"), out)
            case "error":
                self._fail(event, out)
        # other families (web_search_call.*, annotations, in_progress…) carry nothing for the IR

    def _start(self, response: dict[str, Any], out: list[StreamEvent]) -> None:
        if not self._is_started:
            self._is_started = True
            out.append(Start(id=str(response.get("id", "")), model=str(response.get("model", ""))))

    def _output_index(self, event: dict[str, Any]) -> int:
        oi = event.get("output_index")
        item = _dict(event.get("item"))
        item_id = event.get("item_id") or item.get("id")
        if isinstance(oi, int):
            if isinstance(item_id, str):
                self._indexes[item_id] = oi
            return oi
        return self._indexes.get(str(item_id), 0)

    # -- blocks

    def _block(self, key: tuple[int, int], kind: BlockKind) -> _Block:
        block = self._blocks.get(key)
        if block is None:
            block = self._blocks[key] = _Block(kind)
        return block

    def _ensure_open(self, block: _Block, out: list[StreamEvent]) -> bool:
        """Open ``block`` (closing the previous one: IR blocks are sequential); False if closed."""
        if block.is_closed:
            return False
        if block.index is None:
            if self._open is not None:
                self._close(self._open, out)
            block.index = self._next
            self._next += 1
            self._open = block
            out.append(BlockStart(block.index, block.kind, block.tool_id, block.tool_name, block.tool_kind))
        return True

    def _close(self, block: _Block | None, out: list[StreamEvent]) -> None:
        if block is None or block.is_closed:
            return
        block.is_closed = True
        if block.index is not None:
            out.append(BlockStop(block.index))
        if self._open is block:
            self._open = None

    def _text(self, block: _Block, text: str, out: list[StreamEvent]) -> None:
        if text and self._ensure_open(block, out):
            block.has_delta = True
            out.append(Delta(block.index or 0, text=text))

    def _text_done(self, block: _Block, text: str, out: list[StreamEvent]) -> None:
        if not block.has_delta:
            self._text(block, text, out)

    def _reasoning(self, oi: int, text: str, summary_index: Any, out: list[StreamEvent]) -> None:
        block = self._block((oi, -1), "reasoning")
        if not text or not self._ensure_open(block, out):
            return
        if isinstance(summary_index, int):
            if block.summary_index is not None and summary_index != block.summary_index and block.has_delta:
                text = "\n\n" + text  # one thinking text from several summary parts (§5.14.4)
            block.summary_index = summary_index
        block.has_delta = True
        out.append(Delta(block.index or 0, reasoning=text))

    def _state(self, oi: int, state: ReasoningState, out: list[StreamEvent]) -> None:
        block = self._block((oi, -1), "reasoning")
        if self._ensure_open(block, out):
            out.append(Delta(block.index or 0, state=state))

    def _args(self, block: _Block | None, fragment: str, out: list[StreamEvent]) -> None:
        if block is None or not fragment or not self._ensure_open(block, out):
            return  # "" fragments carry nothing (§6.2)
        block.has_delta = True
        out.append(Delta(block.index or 0, args=fragment))

    # -- items

    def _item_added(self, oi: int, item: Any, out: list[StreamEvent]) -> None:
        if not isinstance(item, dict) or item.get("type") not in ("function_call", "custom_tool_call"):
            return  # messages and reasoning open lazily at their first content
        call = decode_call(item)
        block = self._block((oi, -1), "tool_call")
        block.tool_id, block.tool_name, block.tool_kind = call.id, call.name, call.kind
        self._has_calls = True
        self._ensure_open(block, out)
        if call.arguments and call.arguments != "{}":
            self._args(block, call.arguments, out)

    def _item_done(self, oi: int, item: Any, out: list[StreamEvent]) -> None:
        if not isinstance(item, dict):
            return
        match item.get("type"):
            case "message":
                for ci, part in enumerate(item.get("content") or []):
                    if not isinstance(part, dict):
                        continue
                    if part.get("type") == "refusal":
                        self._text_done(self._block((oi, ci), "refusal"), str(part.get("refusal", "")), out)
                    else:
                        self._text_done(self._block((oi, ci), "text"), str(part.get("text", "")), out)
                    self._close(self._blocks.get((oi, ci)), out)
            case "reasoning":
                block = self._block((oi, -1), "reasoning")
                reasoning = decode_reasoning(item)
                if reasoning is not None and not block.has_delta:
                    self._reasoning(oi, reasoning.text, None, out)
                encrypted = item.get("encrypted_content")
                if isinstance(encrypted, str) and encrypted:
                    self._state(oi, state_of_slot(str(item.get("id") or ""), encrypted), out)
                self._close(block, out)
            case "function_call" | "custom_tool_call":
                if (oi, -1) not in self._blocks:  # some backends omit output_item.added (§3.7)
                    self._item_added(oi, {**item, "arguments": "", "input": ""}, out)
                call_block = self._blocks[(oi, -1)]
                if not call_block.has_delta:
                    self._args(call_block, decode_call(item).arguments, out)
                self._close(call_block, out)

    def _completed(self, response: dict[str, Any], out: list[StreamEvent]) -> None:
        if not self._blocks:
            # Nothing came per item: the terminal object is all there is.
            for oi, item in enumerate(response.get("output") or []):
                if isinstance(item, dict) and item.get("type") in ("function_call", "custom_tool_call"):
                    self._has_calls = True
                self._item_done(oi, item, out)
        self._close(self._open, out)
        stop = stop_reason_of(response, has_calls=self._has_calls)
        self.finish = Finish(stop_reason=stop, usage=decode_usage(response.get("usage")))
        out.append(self.finish)
        self._is_done = True

    def _fail(self, error: Any, out: list[StreamEvent]) -> None:
        self._close(self._open, out)
        cls, message, status = error_of(error)
        out.append(Error(cls, message, status))
        self._is_done = True


# --------------------------------------------------------------------------- encoding


@dataclass(slots=True)
class _Item:
    """The output item being written for the open IR block."""

    kind: BlockKind
    ir_index: int
    output_index: int = -1  # -1 until announced (text/reasoning open at their first content)
    item_id: str = ""
    text: str = ""
    call: ToolCall | None = None
    state: ReasoningState | None = None
    has_summary_part: bool = False


class StreamEncoder:
    """IR stream events → Responses SSE bytes (§3.7 grammar, one terminal event)."""

    def __init__(self, *, model: str, response_id: str, include_usage: bool = True) -> None:
        # Usage always travels in the terminal event: Responses has no opt-out (§3.2).
        self._model = model
        self._id = response_id_of(response_id)
        self._base = base_id(self._id)
        self._seq = 0
        self._items: list[dict[str, Any]] = []
        self._item: _Item | None = None
        self._usage = Usage()
        self._is_started = False
        self._is_done = False

    def encode(self, event: StreamEvent) -> bytes:
        if self._is_done:
            return b""
        match event:
            case KeepAlive():
                return b": keep-alive\n\n"  # comment line: ignored by SSE readers (§5.14.1 rule 6)
            case Start(usage=usage):
                self._usage = usage
                return self._start()
        out = self._start()
        match event:
            case BlockStart():
                out += self._finish_item()
                out += self._block_start(event)
            case Delta():
                out += self._delta(event)
            case BlockStop(index=index) if self._item is not None and self._item.ir_index == index:
                out += self._finish_item()
            case Finish(stop_reason=stop, usage=usage):
                out += self._finish_item()
                out += self._terminal(stop, self._usage.merge(usage))
            case Error(error_class=cls, message=message):
                out += self._finish_item()
                out += self._failed(cls, message)
        return out

    def close(self) -> bytes:
        """A stream that ended without Finish/Error still gets its terminal event (§6.22)."""
        if self._is_done:
            return b""
        return self._start() + self._finish_item() + self._failed("server", "upstream stream ended early")

    # -- framing

    def _emit(self, kind: str, payload: dict[str, Any]) -> bytes:
        data = {"type": kind, **payload, "sequence_number": self._seq}
        self._seq += 1
        return encode_event(orjson.dumps(data), kind)

    def _response(self, status: str) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "response",
            "created_at": 0,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "model": self._model,
            "output": list(self._items),
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": None,
        }

    def _start(self) -> bytes:
        if self._is_started:
            return b""
        self._is_started = True
        response = self._response("in_progress")
        out = self._emit("response.created", {"response": response})
        return out + self._emit("response.in_progress", {"response": response})

    def _terminal(self, stop: StopReason, usage: Usage) -> bytes:
        self._is_done = True
        status, incomplete = status_of(stop)
        response = self._response(status)
        response["incomplete_details"] = incomplete
        response["usage"] = encode_usage(usage)
        return self._emit("response.completed", {"response": response})

    def _failed(self, error_class: str, message: str) -> bytes:
        self._is_done = True
        response = self._response("failed")
        response["error"] = {"code": ERROR_CODES.get(error_class, "server_error"), "message": message}
        return self._emit("response.failed", {"response": response})

    # -- items

    def _block_start(self, event: BlockStart) -> bytes:
        self._item = _Item(event.kind, event.index)
        if event.kind != "tool_call":
            return b""  # text/refusal/reasoning: announced at their first content
        call = ToolCall(id=event.tool_id, name=event.tool_name, arguments="", kind=event.tool_kind)
        self._item.call = call
        return self._announce(self._item)

    def _announce(self, item: _Item) -> bytes:
        item.output_index = len(self._items)
        n = item.output_index
        match item.kind:
            case "tool_call" if item.call is not None:
                prefix = "ctc" if item.call.kind == "custom" else "fc"
                item.item_id = f"{prefix}_{self._base}_{n}"
                added = encode_call(item.call, item_id=item.item_id, status="in_progress")
                if item.call.kind == "custom":
                    added.pop("status")
                else:
                    added["arguments"] = ""  # arguments stream in after the item is announced
            case "reasoning":
                item.item_id = f"rs_{self._base}_{n}"
                added = {"type": "reasoning", "id": item.item_id, "summary": []}
            case _:
                item.item_id = f"msg_{self._base}_{n}"
                added = {"type": "message", "id": item.item_id, "status": "in_progress", "role": "assistant"}
                added["content"] = []
        out = self._emit("response.output_item.added", {"output_index": n, "item": added})
        if item.kind in ("text", "refusal"):
            out += self._emit(
                "response.content_part.added", {**self._where(item), "part": _part(item.kind, "")}
            )
        return out

    def _where(self, item: _Item) -> dict[str, Any]:
        where: dict[str, Any] = {"item_id": item.item_id, "output_index": item.output_index}
        if item.kind in ("text", "refusal"):
            where["content_index"] = 0
        return where

    def _delta(self, event: Delta) -> bytes:
        item = self._item
        if item is None or item.ir_index != event.index:
            return b""
        if event.state is not None:
            item.state = event.state
            if item.kind == "reasoning" and item.output_index < 0:
                return self._announce(item)
            return b""
        fragment = event.text or event.args or event.reasoning
        if not fragment:
            return b""
        out = self._announce(item) if item.output_index < 0 else b""
        match item.kind:
            case "text":
                item.text += fragment
                out += self._emit(
                    "response.output_text.delta", {**self._where(item), "delta": fragment, "logprobs": []}
                )
            case "refusal":
                item.text += fragment
                out += self._emit("response.refusal.delta", {**self._where(item), "delta": fragment})
            case "reasoning":
                if not item.has_summary_part:
                    item.has_summary_part = True
                    part = {"type": "summary_text", "text": ""}
                    out += self._emit(
                        "response.reasoning_summary_part.added",
                        {**self._where(item), "summary_index": 0, "part": part},
                    )
                item.text += fragment
                out += self._emit(
                    "response.reasoning_summary_text.delta",
                    {**self._where(item), "summary_index": 0, "delta": fragment},
                )
            case "tool_call" if item.call is not None:
                item.text += fragment
                name = "custom_tool_call_input" if item.call.kind == "custom" else "function_call_arguments"
                out += self._emit(f"response.{name}.delta", {**self._where(item), "delta": fragment})
        return out

    def _finish_item(self) -> bytes:
        item, self._item = self._item, None
        if item is None or item.output_index < 0:
            return b""  # never announced: an empty block leaves no trace
        where = self._where(item)
        out = b""
        done: dict[str, Any]
        match item.kind:
            case "text" | "refusal":
                part = _part(item.kind, item.text)
                if item.kind == "text":
                    out += self._emit(
                        "response.output_text.done", {**where, "text": item.text, "logprobs": []}
                    )
                else:
                    out += self._emit("response.refusal.done", {**where, "refusal": item.text})
                out += self._emit("response.content_part.done", {**where, "part": part})
                done = {"type": "message", "id": item.item_id, "status": "completed", "role": "assistant"}
                done["content"] = [part]
            case "reasoning":
                if item.has_summary_part:
                    summary = {"type": "summary_text", "text": item.text}
                    out += self._emit(
                        "response.reasoning_summary_text.done",
                        {**where, "summary_index": 0, "text": item.text},
                    )
                    out += self._emit(
                        "response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": summary}
                    )
                done = encode_reasoning(Reasoning(item.text, item.state), item_id=item.item_id)
                done["id"] = item.item_id
            case _:
                call = item.call or ToolCall(id="", name="")
                if call.kind == "custom":
                    out += self._emit("response.custom_tool_call_input.done", {**where, "input": item.text})
                    done = encode_call(
                        ToolCall(call.id, call.name, item.text, "custom"), item_id=item.item_id, status=None
                    )
                else:
                    arguments = item.text or "{}"
                    out += self._emit(
                        "response.function_call_arguments.done", {**where, "arguments": arguments}
                    )
                    done = encode_call(
                        ToolCall(call.id, call.name, arguments), item_id=item.item_id, status="completed"
                    )
        self._items.append(done)
        return out + self._emit(
            "response.output_item.done", {"output_index": item.output_index, "item": done}
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _part(kind: BlockKind, text: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": []}


def response_id_of(value: str) -> str:
    return response_id(value or "proxygate")


__all__ = ["TERMINAL_EVENTS", "StreamDecoder", "StreamEncoder"]
