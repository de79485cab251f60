"""Invariants of produced Responses and Gemini streams (protocols.md §5.14.9)."""

from __future__ import annotations

from typing import Any

import orjson

from tests.unit.wire.grammar import sse_events

TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")


def resp_events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for event in sse_events(data):
        payload = orjson.loads(event.data)
        assert event.event == payload["type"], "event: line equals the payload type"
        out.append(payload)
    return out


def assert_resp_grammar(data: bytes) -> list[dict[str, Any]]:
    """Sequence numbers 0..n; created first; added/done pairs; one terminal event, last, echoing the items."""
    events = resp_events(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    terminals = [e for e in events if e["type"] in TERMINAL]
    assert len(terminals) == 1 and terminals[0] is events[-1]
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1
    added: dict[int, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for event in events:
        if event["type"] == "response.output_item.added":
            assert event["output_index"] not in added
            added[event["output_index"]] = event["item"]
        elif event["type"] == "response.output_item.done":
            first = added[event["output_index"]]
            item = event["item"]
            assert (first["type"], first["id"], first.get("call_id")) == (
                item["type"],
                item["id"],
                item.get("call_id"),
            )
            done.append(item)
        elif "item_id" in event:
            assert added[event["output_index"]]["id"] == event["item_id"]
    assert sorted(added) == list(range(len(done)))
    if events[-1]["type"] == "response.completed":
        assert events[-1]["response"]["output"] == done
        usage = events[-1]["response"]["usage"]
        assert {"input_tokens_details", "output_tokens_details", "total_tokens"} <= set(usage)
    return events


def assert_gem_grammar(data: bytes) -> list[dict[str, Any]]:
    """Only ``data: `` lines (one space), each a JSON object; args are objects; finishReason last."""
    lines = data.split(b"\n")
    for line in lines:
        assert line == b"" or line.startswith(b"data: {"), f"unexpected line {line!r}"
    chunks = [orjson.loads(line[6:]) for line in lines if line]
    for chunk in chunks:
        if "error" in chunk:
            assert next(iter(chunk)) == "error" and isinstance(chunk["error"]["code"], int)
            continue
        for part in chunk["candidates"][0]["content"]["parts"]:
            if "functionCall" in part:
                assert isinstance(part["functionCall"]["args"], dict)
    if "error" not in chunks[-1]:
        assert "finishReason" in chunks[-1]["candidates"][0]
        assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    return chunks
