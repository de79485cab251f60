"""Conversions through the IR between Responses/Gemini and the other formats (protocols.md Appendix A, §7)."""

from __future__ import annotations

from typing import Any

import orjson

from proxygate.wire import anthropic, chat, gemini, responses
from proxygate.wire.gemini_parts import SKIP_SIGNATURE
from proxygate.wire.ir import Format, Reasoning, ReasoningState, Text, ToolCall, ToolResult

from .appendix_a import ANT_A, CHAT_A, GEM_A, READ_FILE_SCHEMA, RESP_A
from .grammar import assert_ant_grammar, assert_chat_grammar
from .split import run
from .stream_grammar import assert_gem_grammar, assert_resp_grammar

ARGS = '{"path":"a.py"}'
RESP_INPUT_NO_REASONING = [RESP_A["input"][0], *RESP_A["input"][2:]]


def conversation(req: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """The conversation's skeleton: roles with (part type, key text) in order."""

    def key(part: Any) -> tuple[str, str]:
        match part:
            case Text(text=text):
                return ("text", text)
            case ToolCall(name=name, arguments=arguments):
                return ("call", f"{name}{arguments}")
            case ToolResult(parts=parts):
                return ("result", "".join(p.text for p in parts if isinstance(p, Text)))
            case Reasoning(text=text):
                return ("reasoning", text)
        return (type(part).__name__, "")

    return [(m.role, [key(p) for p in m.parts]) for m in req.messages]


SKELETON = [
    ("user", [("text", "What does a.py do?")]),
    ("assistant", [("reasoning", "Read it first."), ("call", "read_file" + ARGS)]),
    ("user", [("result", "print('hi')"), ("text", "Also, is it safe?")]),
]


def test_appendix_a_decodes_to_the_same_conversation_in_every_format() -> None:
    ant = anthropic.decode_request(ANT_A)
    assert conversation(ant) == SKELETON
    assert conversation(chat.decode_request(CHAT_A)) == SKELETON
    assert conversation(responses.decode_request(RESP_A)) == SKELETON
    gem = gemini.decode_request(GEM_A, path_model="gemini-3-pro")
    assert conversation(gem) == [SKELETON[0], ("assistant", [("call", "read_file" + ARGS)]), SKELETON[2]]
    for req in (ant, responses.decode_request(RESP_A), gem):
        assert req.system == (Text("Be brief."),)
        assert [(t.name, t.description, t.parameters) for t in req.tools] == [
            ("read_file", "Read a file", READ_FILE_SCHEMA)
        ]


def test_appendix_a_to_responses_from_every_format() -> None:
    """Foreign reasoning never reaches OpenAI; the tool cycle and text survive (§5.6, §5.7.2)."""
    for req in (
        anthropic.decode_request(ANT_A),
        chat.decode_request(CHAT_A),
        gemini.decode_request(GEM_A, path_model="g"),
    ):
        body = responses.encode_request(req.with_model("gpt-5.2"))
        assert body["instructions"] == "Be brief."
        assert body["tools"] == RESP_A["tools"]
        assert body["store"] is False
        assert body["input"] == [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What does a.py do?"}],
            },
            {
                "type": "function_call",
                "call_id": body["input"][1]["call_id"],
                "name": "read_file",
                "arguments": ARGS,
            },
            {"type": "function_call_output", "call_id": body["input"][1]["call_id"], "output": "print('hi')"},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Also, is it safe?"}],
            },
        ]
    same = responses.encode_request(responses.decode_request(RESP_A))
    assert same["input"] == [
        RESP_A["input"][0],
        {**RESP_A["input"][1], "summary": [{"type": "summary_text", "text": "Read it first."}]},
        *RESP_A["input"][2:],
    ]


def test_appendix_a_to_gemini_from_every_format() -> None:
    """Only Gemini's own signature goes back; other histories get the placeholder (test case 34)."""
    expected_model = [
        {
            "functionCall": {"name": "read_file", "args": {"path": "a.py"}, "id": "toolu_01A"},
            "thoughtSignature": SKIP_SIGNATURE,
        }
    ]
    for req in (
        anthropic.decode_request(ANT_A),
        chat.decode_request(CHAT_A),
        responses.decode_request(RESP_A),
    ):
        body = gemini.encode_request(req.with_model("gemini-3-pro"))
        assert body["systemInstruction"] == GEM_A["systemInstruction"]
        assert body["tools"] == GEM_A["tools"]
        assert body["contents"] == [
            GEM_A["contents"][0],
            {"role": "model", "parts": expected_model},
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "read_file",
                            "id": "toolu_01A",
                            "response": {"output": "print('hi')"},
                        }
                    },
                    {"text": "Also, is it safe?"},
                ],
            },
        ]
    native = gemini.encode_request(gemini.decode_request(GEM_A, path_model="gemini-3-pro"))
    assert native["contents"] == GEM_A["contents"]
    assert native["generationConfig"] == {
        "maxOutputTokens": 16000,
        "thinkingConfig": {"includeThoughts": True, "thinkingLevel": "MEDIUM"},
    }


def test_appendix_a_from_responses_and_gemini_to_anthropic_and_chat() -> None:
    for req in (responses.decode_request(RESP_A), gemini.decode_request(GEM_A, path_model="g")):
        ant = anthropic.encode_request(req.with_model("claude-sonnet-4-6"))
        assert [m["role"] for m in ant["messages"]] == ["user", "assistant", "user"]
        assistant = [b for b in ant["messages"][1]["content"] if b["type"] != "thinking"]
        assert [(b["type"], b["name"], b["input"]) for b in assistant] == [
            ("tool_use", "read_file", {"path": "a.py"})
        ]
        assert all(b["type"] != "thinking" for b in ant["messages"][1]["content"]), (
            "foreign reasoning dropped"
        )
        results = [b for b in ant["messages"][2]["content"] if b["type"] == "tool_result"]
        assert [r["tool_use_id"] for r in results] == [assistant[0]["id"]]
        oai = chat.encode_request(req.with_model("gpt-4o"))
        assert [m["role"] for m in oai["messages"]] == ["system", "user", "assistant", "tool", "user"]
        assert oai["messages"][3]["tool_call_id"] == oai["messages"][2]["tool_calls"][0]["id"]


def test_codex_namespace_tool_flattens_for_chat_and_splits_back() -> None:
    body = {
        "model": "gpt-5-codex",
        "input": [{"role": "user", "content": "spawn"}],
        "tools": [
            {
                "type": "namespace",
                "name": "multi_agent_v1",
                "description": "Sub-agents.",
                "tools": [
                    {
                        "type": "function",
                        "name": "spawn_agent",
                        "description": "Spawn",
                        "strict": False,
                        "parameters": READ_FILE_SCHEMA,
                    }
                ],
            },
            {"type": "web_search", "external_web_access": True},
            {"type": "custom", "name": "apply_patch", "description": "Patch", "format": {"type": "text"}},
        ],
    }
    oai = chat.encode_request(responses.decode_request(body).with_model("gpt-4o"))
    names = [t.get("function", t.get("custom", {})).get("name") for t in oai["tools"]]
    assert "multi_agent_v1--spawn_agent" in names and "web_search" not in names
    upstream = (
        b"".join(
            b"data: " + orjson.dumps(c) + b"\n\n"
            for c in (
                {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                {
                    "id": "c1",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": "call_9",
                                        "type": "function",
                                        "function": {
                                            "name": "multi_agent_v1--spawn_agent",
                                            "arguments": ARGS,
                                        },
                                    }
                                ]
                            },
                        }
                    ],
                },
                {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            )
        )
        + b"data: [DONE]\n\n"
    )
    encoder = responses.StreamEncoder(model="gpt-5-codex", response_id="x")
    events = run(chat.StreamDecoder(), [upstream])
    data = b"".join(encoder.encode(e) for e in events) + encoder.close()
    final = assert_resp_grammar(data)[-1]
    assert final["type"] == "response.completed"
    assert final["response"]["output"] == [
        {
            "type": "function_call",
            "id": "fc_x_0",
            "call_id": "call_9",
            "name": "spawn_agent",
            "namespace": "multi_agent_v1",
            "arguments": ARGS,
            "status": "completed",
        }
    ]


ANT_STREAM = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 5, "output_tokens": 1}},
        },
    ),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Plan."}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "EpYB"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Reading."}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"path":'},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '"a.py"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    (
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}},
    ),
    ("message_stop", {"type": "message_stop"}),
]
ANT_BYTES = b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for n, d in ANT_STREAM)


def test_anthropic_stream_to_codex_and_reasoning_round_trip() -> None:
    """Test cases 24/25: one terminal response.completed; the thinking comes back identical next turn."""
    encoder = responses.StreamEncoder(model="gpt-5-codex", response_id="r")
    events = run(anthropic.StreamDecoder(), [ANT_BYTES])
    data = b"".join(encoder.encode(e) for e in events) + encoder.close()
    final = assert_resp_grammar(data)[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["usage"]["output_tokens"] == 20 and final["usage"]["input_tokens"] == 5
    next_turn = {"model": "gpt-5-codex", "input": [{"role": "user", "content": "go"}, *final["output"]]}
    req = responses.decode_request(next_turn)
    assert req.messages[1].parts[0] == Reasoning(
        "Plan.", ReasoningState(Format.anthropic, "signature", "EpYB"), is_summary=True
    )
    ant = anthropic.encode_request(req.with_model("claude"))
    assert ant["messages"][1]["content"][0] == {"type": "thinking", "thinking": "Plan.", "signature": "EpYB"}


def test_anthropic_stream_to_gemini_client() -> None:
    encoder = gemini.StreamEncoder(model="gemini-3-pro", response_id="r")
    events = run(anthropic.StreamDecoder(), [ANT_BYTES])
    chunks = assert_gem_grammar(b"".join(encoder.encode(e) for e in events) + encoder.close())
    last = chunks[-1]["candidates"][0]
    assert last["finishReason"] == "STOP"
    assert last["content"]["parts"] == [
        {"functionCall": {"name": "read_file", "args": {"path": "a.py"}, "id": "toolu_1"}}
    ]


def test_gemini_stream_to_anthropic_and_chat_clients() -> None:
    """Test cases 33/35: signature rides a thinking block; ids identical on replay; tool_use / tool_calls."""
    upstream = b"".join(
        b"data: " + orjson.dumps(c) + b"\n\n"
        for c in (
            {
                "candidates": [{"content": {"role": "model", "parts": [{"text": "Hm", "thought": True}]}}],
                "responseId": "g1",
            },
            {
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [
                                {
                                    "functionCall": {"name": "read_file", "args": {"path": "a.py"}},
                                    "thoughtSignature": "EvwB",
                                },
                                {"functionCall": {"name": "read_file", "args": {"path": "b.py"}}},
                            ],
                        },
                        "finishReason": "STOP",
                    }
                ],
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 3},
            },
        )
    )

    def to_ant() -> bytes:
        encoder = anthropic.StreamEncoder(model="claude-x", response_id="m")
        return b"".join(encoder.encode(e) for e in run(gemini.StreamDecoder(), [upstream])) + encoder.close()

    ant_events = assert_ant_grammar(to_ant())
    assert to_ant() == to_ant()
    starts = [p["content_block"] for n, p in ant_events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "thinking", "tool_use", "tool_use"]
    assert ant_events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert ant_events[-2][1]["usage"]["output_tokens"] == 7

    encoder = chat.StreamEncoder(model="gpt", response_id="c")
    data = b"".join(encoder.encode(e) for e in run(gemini.StreamDecoder(), [upstream])) + encoder.close()
    chunks = assert_chat_grammar(data)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"]][-1] == "tool_calls"
