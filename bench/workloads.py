"""The benchmark's requests and canned answers, built deterministically (same bytes every run).

The request is what a coding agent sends on a mid-conversation turn: a ~13 KB system
prompt, 7 tools and 5 turns including a tool call and its result, ~20 KB in all. The same
conversation is built in Anthropic Messages and in Chat Completions shape. The mock's
answers (a JSON message, a canned SSE stream of 200 text deltas, a paced stream) carry
usage the way each provider does, so proxygate's usage sniffing does its real work.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

# Models select the mock's behaviour; the mock finds them in the body (see mock_upstream.py).
MODEL_ANTHROPIC = "claude-bench-1"
MODEL_PACED = "claude-bench-paced"
MODEL_SLOW = "claude-bench-slow"
MODEL_CHAT = "gpt-bench-1"
MODEL_CONVERTED = "deepseek-bench-1"  # only a Chat-speaking account serves it: converted route

SSE_DELTAS = 200
PACED_CHUNKS = 20
PACED_INTERVAL_S = 0.025
SLOW_CHUNKS = 20
SLOW_INTERVAL_S = 0.25
SLOW_RAMP_S = 4.0
"The slow streams (5 s each) arrive over this long (250/s), so all 1,000 are open together for 1 s."

_WORDS = [
    "agent",
    "tool",
    "file",
    "edit",
    "patch",
    "test",
    "repository",
    "function",
    "module",
    "import",
    "class",
    "return",
    "value",
    "error",
    "handle",
    "stream",
    "request",
    "response",
    "token",
    "cache",
    "model",
    "user",
    "system",
    "prompt",
    "context",
    "review",
    "change",
    "commit",
    "branch",
    "diff",
    "build",
    "lint",
    "format",
    "type",
    "check",
    "run",
    "shell",
    "command",
    "path",
]


def _text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 16))).capitalize() + ". "
        out.append(sentence)
        n += len(sentence)
    return "".join(out)[:size]


def _tools(rng: random.Random) -> list[dict[str, Any]]:
    names = ("read_file", "write_file", "edit_file", "run_shell", "search_code", "list_dir", "web_fetch")
    tools = []
    for name in names:
        tools.append(
            {
                "name": name,
                "description": _text(rng, 420),
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": _text(rng, 60)},
                        "content": {"type": "string", "description": _text(rng, 60)},
                        "timeout_s": {"type": "integer", "description": "Seconds before giving up."},
                    },
                    "required": ["path"],
                },
            }
        )
    return tools


def _conversation(rng: random.Random) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(system prompt, tools, turns) in a neutral shape; turn 3 is a tool call, turn 4 its result."""
    system = _text(rng, 13_000)
    tools = _tools(rng)
    turns: list[dict[str, Any]] = [
        {"role": "user", "text": _text(rng, 600)},
        {"role": "assistant", "text": _text(rng, 500)},
        {
            "role": "tool_call",
            "text": _text(rng, 120),
            "id": "toolu_bench_01",
            "name": "read_file",
            "input": {"path": "src/app/module.py"},
        },
        {"role": "tool_result", "id": "toolu_bench_01", "text": _text(rng, 900)},
        {"role": "user", "text": _text(rng, 300)},
    ]
    return system, tools, turns


def anthropic_request(model: str = MODEL_ANTHROPIC, *, stream: bool = False) -> dict[str, Any]:
    system, tools, turns = _conversation(random.Random(7))
    messages: list[dict[str, Any]] = []
    for turn in turns:
        match turn["role"]:
            case "user" | "assistant":
                messages.append({"role": turn["role"], "content": [{"type": "text", "text": turn["text"]}]})
            case "tool_call":
                messages.append(
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "text", "text": turn["text"]},
                            {
                                "type": "tool_use",
                                "id": turn["id"],
                                "name": turn["name"],
                                "input": turn["input"],
                            },
                        ],
                    }
                )
            case "tool_result":
                messages.append(
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": turn["id"], "content": turn["text"]},
                        ],
                    }
                )
    return {
        "model": model,
        "max_tokens": 4096,
        "stream": stream,
        "system": [{"type": "text", "text": system}],
        "tools": tools,
        "messages": messages,
    }


def chat_request(model: str = MODEL_CHAT, *, stream: bool = False) -> dict[str, Any]:
    system, tools, turns = _conversation(random.Random(7))
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for turn in turns:
        match turn["role"]:
            case "user" | "assistant":
                messages.append({"role": turn["role"], "content": turn["text"]})
            case "tool_call":
                messages.append(
                    {
                        "role": "assistant",
                        "content": turn["text"],
                        "tool_calls": [
                            {
                                "id": turn["id"],
                                "type": "function",
                                "function": {
                                    "name": turn["name"],
                                    "arguments": orjson.dumps(turn["input"]).decode(),
                                },
                            },
                        ],
                    }
                )
            case "tool_result":
                messages.append({"role": "tool", "tool_call_id": turn["id"], "content": turn["text"]})
    chat_tools = [
        {
            "type": "function",
            "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
        }
        for t in tools
    ]
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 4096,
        "stream": stream,
        "messages": messages,
        "tools": chat_tools,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def body_bytes(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


# -- canned answers (the mock's side) ------------------------------------------------------------

ANTHROPIC_USAGE = {
    "input_tokens": 5120,
    "output_tokens": 210,
    "cache_read_input_tokens": 4096,
    "cache_creation_input_tokens": 0,
}


def anthropic_message(model: str = MODEL_ANTHROPIC) -> bytes:
    return orjson.dumps(
        {
            "id": "msg_bench_0001",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": _text(random.Random(3), 800)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": ANTHROPIC_USAGE,
        }
    )


def chat_completion(model: str = MODEL_CHAT) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": 1_800_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _text(random.Random(3), 800)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 5120,
                "completion_tokens": 210,
                "total_tokens": 5330,
                "prompt_tokens_details": {"cached_tokens": 4096},
            },
        }
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def anthropic_stream_events(model: str, deltas: int) -> list[bytes]:
    """An Anthropic stream as a list of SSE events: start, ``deltas`` text deltas, end, usage."""
    rng = random.Random(5)
    start_usage = {**ANTHROPIC_USAGE, "output_tokens": 1}
    events = [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bench_0002",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    for _ in range(deltas):
        events.append(
            _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": _text(rng, 24)},
                },
            )
        )
    events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": deltas},
            },
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


def chat_stream_events(model: str, deltas: int) -> list[bytes]:
    rng = random.Random(5)
    base = {
        "id": "chatcmpl-bench0002",
        "object": "chat.completion.chunk",
        "created": 1_800_000_000,
        "model": model,
    }
    events = [
        b"data: "
        + orjson.dumps(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                ],
            }
        )
        + b"\n\n"
    ]
    for _ in range(deltas):
        events.append(
            b"data: "
            + orjson.dumps(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": _text(rng, 24)}, "finish_reason": None}],
                }
            )
            + b"\n\n"
        )
    events.append(
        b"data: "
        + orjson.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        + b"\n\n"
    )
    events.append(
        b"data: "
        + orjson.dumps(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 5120, "completion_tokens": deltas, "total_tokens": 5120 + deltas},
            }
        )
        + b"\n\n"
    )
    events.append(b"data: [DONE]\n\n")
    return events
