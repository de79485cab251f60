"""Parse produced streams and check the invariants of protocols.md §5.14.9."""

from __future__ import annotations

from typing import Any

import orjson

from proxygate.wire.sse import SSEEvent, SSEParser


def sse_events(data: bytes) -> list[SSEEvent]:
    """Every SSE event of a produced stream, read whole."""
    parser = SSEParser()
    return parser.feed(data) + parser.close()


def ant_events(data: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    return [(e.event, orjson.loads(e.data)) for e in sse_events(data)]


def assert_ant_grammar(data: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """One message_start first; sequential non-overlapping blocks; message_delta then message_stop."""
    events = ant_events(data)
    names = [name for name, _ in events]
    for name, payload in events:
        assert name == payload["type"], "every event has an event: line equal to its type (§6.13)"
    assert names[0] == "message_start" and names.count("message_start") == 1
    if "error" in names:
        assert names[-1] == "error" and "message_stop" not in names
    else:
        assert names[-2:] == ["message_delta", "message_stop"]
        delta = events[-2][1]
        assert delta["delta"]["stop_reason"] is not None and "output_tokens" in delta["usage"]
    expected, open_index = 0, None
    json_parts: dict[int, str] = {}
    for name, payload in events:
        if name == "content_block_start":
            assert open_index is None and payload["index"] == expected
            block = payload["content_block"]
            if block["type"] == "tool_use":
                assert block["input"] == {}
                json_parts[payload["index"]] = ""
            if block["type"] == "thinking":
                assert block["signature"] == ""
            open_index = expected
        elif name == "content_block_delta":
            assert payload["index"] == open_index
            if payload["delta"]["type"] == "input_json_delta":
                json_parts[open_index] += payload["delta"]["partial_json"]
        elif name == "content_block_stop":
            assert payload["index"] == open_index
            open_index, expected = None, expected + 1
        elif name == "message_delta":
            assert open_index is None
    for text in json_parts.values():
        assert isinstance(orjson.loads(text or "{}"), dict)
    texts: dict[int, str] = {}
    for name, payload in events:
        if name == "content_block_delta" and payload["delta"]["type"] == "text_delta":
            texts[payload["index"]] = texts.get(payload["index"], "") + payload["delta"]["text"]
        if name == "content_block_start" and payload["content_block"]["type"] == "text":
            texts.setdefault(payload["index"], "")
    assert all(texts.values()), "no empty text blocks"
    return events


def chat_chunks(data: bytes) -> list[Any]:
    return [e.data if e.data == "[DONE]" else orjson.loads(e.data) for e in sse_events(data)]


def assert_chat_grammar(data: bytes, *, include_usage: bool = True) -> list[Any]:
    """Role first; one id/created/model; tool fragments keyed; one finish; usage chunk; [DONE] last."""
    chunks = chat_chunks(data)
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({(c["id"], c["created"], c["model"]) for c in body}) == 1
    finishes = [i for i, c in enumerate(body) if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishes) == 1
    if include_usage:
        assert finishes[0] == len(body) - 2
        assert body[-1]["choices"] == [] and "prompt_tokens" in body[-1]["usage"]
    else:
        assert finishes[0] == len(body) - 1
    seen: set[int] = set()
    for chunk in body:
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls", ()):
                if call["index"] not in seen:
                    seen.add(call["index"])
                    assert call["id"] and call["type"] == "function" and call["function"]["name"]
    return chunks
