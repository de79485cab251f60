"""Gemini codec: Gemini CLI requests, id synthesis and pairing, signatures, schemas, streams (protocols.md §4)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxygate.wire import envelope, gemini
from proxygate.wire.gemini_parts import SKIP_SIGNATURE, synth_call_id
from proxygate.wire.gemini_schema import lowercase_types, sanitize_schema
from proxygate.wire.ir import (
    Base64Source,
    BlockStart,
    BlockStop,
    Delta,
    Error,
    Finish,
    Format,
    Image,
    KeepAlive,
    Message,
    Reasoning,
    ReasoningConfig,
    ReasoningState,
    Request,
    Response,
    ResponseFormat,
    Sampling,
    Start,
    StopReason,
    StreamTruncated,
    Text,
    ToolCall,
    ToolChoice,
    ToolDef,
    ToolResult,
    Usage,
)

from .split import assert_split_invariant
from .stream_grammar import assert_gem_grammar

SHELL_SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}
CALL_ID = "run_shell_command_1795379442711_0"
GEM_SKIP = ReasoningState(Format.gemini, "thought_signature", SKIP_SIGNATURE)

# Gemini CLI 0.61's tool follow-up (CLIENTS.md): its own ids on call and response, placeholder signature.
CLI_BODY: dict[str, Any] = {
    "contents": [
        {"role": "user", "parts": [{"text": "<session_context/>"}, {"text": "TOOLTEST run"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "id": CALL_ID,
                        "args": {"command": "printf a"},
                        "name": "run_shell_command",
                    },
                    "thoughtSignature": SKIP_SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "run_shell_command",
                        "response": {"output": "a42"},
                        "id": CALL_ID,
                    }
                }
            ],
        },
    ],
    "systemInstruction": {"parts": [{"text": "You are a CLI agent."}], "role": "user"},
    "tools": [
        {
            "functionDeclarations": [
                {"name": "run_shell_command", "description": "Run", "parametersJsonSchema": SHELL_SCHEMA}
            ]
        }
    ],
    "generationConfig": {
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8192},
    },
}


def test_gemini_cli_request_decodes_ids_signature_and_config() -> None:
    assert gemini.decode_request(CLI_BODY, path_model="gemini-2.5-flash", stream=True) == Request(
        model="gemini-2.5-flash",
        system=(Text("You are a CLI agent."),),
        messages=(
            Message("user", (Text("<session_context/>"), Text("TOOLTEST run"))),
            Message(
                "assistant",
                (ToolCall(CALL_ID, "run_shell_command", '{"command":"printf a"}', state=GEM_SKIP),),
            ),
            Message("user", (ToolResult(CALL_ID, (Text("a42"),), name="run_shell_command"),)),
        ),
        tools=(ToolDef("run_shell_command", "Run", SHELL_SCHEMA),),
        sampling=Sampling(temperature=1.0, top_p=0.95, top_k=64),
        reasoning=ReasoningConfig(mode="budget", budget_tokens=8192, summary="auto"),
        stream=True,
        source=Format.gemini,
        passthrough={Format.gemini: {}},
    )


def test_gemini_cli_request_round_trips() -> None:
    body = gemini.encode_request(gemini.decode_request(CLI_BODY, path_model="gemini-2.5-flash"))
    assert body == {
        "contents": [
            {"role": "user", "parts": [{"text": "<session_context/>"}, {"text": "TOOLTEST run"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {
                            "name": "run_shell_command",
                            "args": {"command": "printf a"},
                            "id": CALL_ID,
                        },
                        "thoughtSignature": SKIP_SIGNATURE,
                    }
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "run_shell_command",
                            "id": CALL_ID,
                            "response": {"output": "a42"},
                        }
                    }
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "You are a CLI agent."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {"name": "run_shell_command", "description": "Run", "parametersJsonSchema": SHELL_SCHEMA}
                ]
            }
        ],
        "generationConfig": {
            "temperature": 1.0,
            "topP": 0.95,
            "topK": 64,
            "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8192},
        },
    }


def test_history_without_ids_gets_stable_ids_and_pairs_by_order_then_name() -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "REAL"},
                    {"functionCall": {"name": "b", "args": {"x": 1}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "b", "response": {"error": "nope"}}},
                    {"functionResponse": {"name": "a", "response": {"result": 1}}},
                ],
            },
        ]
    }
    first, second = synth_call_id("history", 0, "a"), synth_call_id("history", 1, "b")
    req = gemini.decode_request(body, path_model="models/gemini-3-pro")
    assert req.model == "gemini-3-pro"
    assert req.messages[1:] == (
        Message(
            "assistant",
            (
                ToolCall(first, "a", "{}", state=ReasoningState(Format.gemini, "thought_signature", "REAL")),
                ToolCall(second, "b", '{"x":1}'),
            ),
        ),
        Message(
            "user",
            (
                ToolResult(second, (Text("nope"),), is_error=True, name="b"),
                ToolResult(first, (Text('{"result":1}'),), name="a"),
            ),
        ),
    )
    assert gemini.decode_request(body) == gemini.decode_request(body), "same history, same ids"
    encoded = gemini.encode_request(req)["contents"]
    assert encoded[1:] == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "REAL"},
                {"functionCall": {"name": "b", "args": {"x": 1}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "a", "response": {"output": '{"result":1}'}}},
                {"functionResponse": {"name": "b", "response": {"error": "nope"}}},
            ],
        },
    ]


def test_foreign_history_to_gemini() -> None:
    """ANT history (test cases 31, 34): signatures never sent, placeholder on each step's first call."""
    anthropic_sig = ReasoningState(Format.anthropic, "signature", "EpYB")
    req = Request(
        model="gemini-3-pro",
        system=(Text("Be brief."), Text(" ")),
        messages=(
            Message("user", (Text("q1"),)),
            Message("user", (Text("q2"),)),
            Message(
                "assistant",
                (
                    Reasoning("Read it first.", anthropic_sig),
                    ToolCall("toolu_A", "read_file", '{"path":"a.py"}'),
                    ToolCall("toolu_B", "read_file", '{"path":"b.py"}'),
                ),
            ),
            Message(
                "user",
                (
                    ToolResult("toolu_A", (Text("print('hi')"), Image(Base64Source("image/png", "QQ")))),
                    ToolResult("toolu_B", (Text("missing"),), is_error=True),
                    Text("Also?"),
                ),
            ),
            Message("system", (Text("Be careful."),)),
        ),
        tools=(
            ToolDef(
                "read_file",
                "Read a file",
                {"$schema": "x", "type": "object", "properties": {"path": {"type": "string"}}},
            ),
            ToolDef("noop", "Nothing", {"type": "object", "properties": {}}),
            ToolDef("web_search", kind="hosted", origin=Format.responses, raw={"type": "web_search"}),
        ),
        tool_choice=ToolChoice("tool", name="read_file"),
        max_output_tokens=16000,
        sampling=Sampling(stop=("1", "2", "3", "4", "5", "6")),
        reasoning=ReasoningConfig(mode="effort", effort="medium"),
        response_format=ResponseFormat("json_schema", {"type": "object"}),
    )
    assert gemini.encode_request(req) == {
        "contents": [
            {"role": "user", "parts": [{"text": "q1"}, {"text": "q2"}]},
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "read_file", "args": {"path": "a.py"}, "id": "toolu_A"},
                        "thoughtSignature": SKIP_SIGNATURE,
                    },
                    {"functionCall": {"name": "read_file", "args": {"path": "b.py"}, "id": "toolu_B"}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "read_file",
                            "id": "toolu_A",
                            "response": {"output": "print('hi')"},
                        }
                    },
                    {
                        "functionResponse": {
                            "name": "read_file",
                            "id": "toolu_B",
                            "response": {"error": "missing"},
                        }
                    },
                    {"inlineData": {"mimeType": "image/png", "data": "QQ"}},
                    {"text": "Also?"},
                    {"text": "Be careful."},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "read_file",
                        "description": "Read a file",
                        "parametersJsonSchema": {
                            "type": "object",
                            "properties": {"path": {"type": "string"}},
                        },
                    },
                    {"name": "noop", "description": "Nothing"},
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["read_file"]}},
        "generationConfig": {
            "maxOutputTokens": 16000,
            "stopSequences": ["1", "2", "3", "4", "5"],
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object"},
            "thinkingConfig": {"includeThoughts": True, "thinkingLevel": "MEDIUM"},
        },
    }


@pytest.mark.parametrize(
    ("model", "cfg", "expected"),
    [
        (
            "gemini-2.5-flash",
            ReasoningConfig(effort="high"),
            {"includeThoughts": True, "thinkingBudget": 24576},
        ),
        ("gemini-3-pro", ReasoningConfig(effort="high"), {"includeThoughts": True, "thinkingLevel": "HIGH"}),
        ("gemini-2.5-pro", ReasoningConfig(mode="off"), {"thinkingBudget": 128}),
        ("gemini-2.5-flash", ReasoningConfig(mode="off"), {"thinkingBudget": 0}),
        (
            "gemini-2.5-flash",
            ReasoningConfig(mode="adaptive"),
            {"includeThoughts": True, "thinkingBudget": -1},
        ),
        (
            "gemini-3-pro",
            ReasoningConfig(mode="budget", budget_tokens=4000),
            {"includeThoughts": True, "thinkingBudget": 4000},
        ),
    ],
)
def test_thinking_config_never_sends_both_fields(
    model: str, cfg: ReasoningConfig, expected: dict[str, Any]
) -> None:
    body = gemini.encode_request(
        Request(model=model, messages=(Message("user", (Text("hi"),)),), reasoning=cfg)
    )
    assert body["generationConfig"] == {"thinkingConfig": expected}


def test_router_request_json_schema_types_lowercased() -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "OBJECT", "properties": {"s": {"type": "INTEGER"}}},
            "thinkingConfig": {"includeThoughts": True, "thinkingLevel": "HIGH"},
            "candidateCount": 1,
        },
    }
    req = gemini.decode_request(body, path_model="gemini-3.5-flash-lite")
    assert req.response_format == ResponseFormat(
        "json_schema", {"type": "object", "properties": {"s": {"type": "integer"}}}, name="response"
    )
    assert req.reasoning == ReasoningConfig(effort="high", summary="auto")
    assert req.passthrough == {Format.gemini: {"generationConfig": {"candidateCount": 1}}}
    assert gemini.encode_request(req)["generationConfig"]["candidateCount"] == 1


def test_sanitize_schema_mcp_style() -> None:
    """Test case 32: only whitelisted keywords reach ``parameters``."""
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "$defs": {"Mode": {"type": "string", "enum": ["a", "b"], "title": "Mode"}},
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "name": {"type": ["string", "null"]},
            "kind": {"const": "fixed"},
            "mode": {"$ref": "#/$defs/Mode"},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "count": {"type": "integer", "exclusiveMinimum": 0, "enum": [1, 2]},
            "tags": {"type": "array"},
            "maybe": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        },
        "required": ["url", "ghost"],
    }
    assert sanitize_schema(schema) == {
        "type": "object",
        "properties": {
            "url": {"type": "string"},
            "name": {"nullable": True, "type": "string"},
            "kind": {"enum": ["fixed"], "type": "string"},
            "mode": {"type": "string", "title": "Mode", "enum": ["a", "b"]},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "count": {"type": "integer", "description": "Allowed values: 1, 2.", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
            "maybe": {"type": "number", "nullable": True},
        },
        "required": ["url"],
    }
    openapi = gemini.use_openapi_parameters(
        {
            "tools": [
                {
                    "functionDeclarations": [
                        {
                            "name": "f",
                            "parametersJsonSchema": {
                                "type": "object",
                                "properties": {"u": {"const": 1, "type": "integer"}},
                            },
                        }
                    ]
                }
            ]
        }
    )
    assert openapi["tools"][0]["functionDeclarations"] == [
        {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {"u": {"type": "integer", "description": "Allowed values: 1."}},
            },
        }
    ]


def test_recursive_ref_is_cut() -> None:
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    assert sanitize_schema(schema) == {
        "type": "object",
        "properties": {
            "next": {
                "type": "object",
                "properties": {
                    "next": {
                        "type": "object",
                        "properties": {"next": {"type": "object", "description": "See #/$defs/Node."}},
                    }
                },
            }
        },
    }
    assert lowercase_types({"type": ["STRING", "NULL"], "items": {"type": "OBJECT"}}) == {
        "type": ["string", "null"],
        "items": {"type": "object"},
    }


# --------------------------------------------------------------------------- responses

RESPONSE_BODY: dict[str, Any] = {
    "candidates": [
        {
            "index": 0,
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Thinking…", "thought": True},
                    {"text": "I'll read it."},
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
    "usageMetadata": {
        "promptTokenCount": 9000,
        "cachedContentTokenCount": 8192,
        "candidatesTokenCount": 40,
        "thoughtsTokenCount": 120,
        "totalTokenCount": 9160,
    },
    "modelVersion": "gemini-2.5-pro",
    "responseId": "mPz2",
}
SIG = ReasoningState(Format.gemini, "thought_signature", "EvwB")
ID0, ID1 = synth_call_id("mPz2", 0, "read_file"), synth_call_id("mPz2", 1, "read_file")


def test_decode_response_stop_with_calls_is_tool_use() -> None:
    """Test cases 35/36: STOP + functionCall → tool_use; ids stable on replay; usage per §5.11."""
    assert gemini.decode_response(RESPONSE_BODY) == Response(
        id="mPz2",
        model="gemini-2.5-pro",
        parts=(
            Reasoning("Thinking…", is_summary=True),
            Text("I'll read it."),
            Reasoning("", SIG),
            ToolCall(ID0, "read_file", '{"path":"a.py"}'),
            ToolCall(ID1, "read_file", '{"path":"b.py"}'),
        ),
        stop_reason=StopReason.tool_use,
        usage=Usage(input_tokens=808, output_tokens=160, cache_read_tokens=8192, reasoning_tokens=120),
    )


@pytest.mark.parametrize(
    ("finish", "feedback", "stop"),
    [
        ("MAX_TOKENS", None, StopReason.max_tokens),
        ("SAFETY", None, StopReason.refusal),
        (None, {"blockReason": "SAFETY"}, StopReason.refusal),
        ("MALFORMED_FUNCTION_CALL", None, StopReason.end_turn),
    ],
)
def test_finish_reason_mapping(finish: str | None, feedback: Any, stop: StopReason) -> None:
    body: dict[str, Any] = {
        "candidates": [{"content": {"parts": []}, "finishReason": finish}] if finish else []
    }
    if feedback:
        body["promptFeedback"] = feedback
    assert gemini.decode_response(body).stop_reason is stop


def test_encode_response_signatures_back_on_their_parts() -> None:
    body = gemini.encode_response(gemini.decode_response(RESPONSE_BODY))
    assert body == {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Thinking…", "thought": True},
                        {"text": "I'll read it."},
                        {
                            "functionCall": {"name": "read_file", "args": {"path": "a.py"}, "id": ID0},
                            "thoughtSignature": "EvwB",
                        },
                        {"functionCall": {"name": "read_file", "args": {"path": "b.py"}, "id": ID1}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": RESPONSE_BODY["usageMetadata"],
        "modelVersion": "gemini-2.5-pro",
        "responseId": "mPz2",
    }


def test_foreign_thinking_is_sealed_for_gemini_clients_and_unsealed_back() -> None:
    state = ReasoningState(Format.anthropic, "signature", "EpYB")
    body = gemini.encode_response(Response("r", "m", (Reasoning("hmm", state), Text("ok"))))
    parts = body["candidates"][0]["content"]["parts"]
    assert parts == [
        {"text": "hmm", "thought": True, "thoughtSignature": envelope.seal(state)},
        {"text": "ok"},
    ]
    echoed = gemini.decode_request(
        {"contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": parts}]}
    )
    assert echoed.messages[1] == Message("assistant", (Reasoning("hmm", state, is_summary=True), Text("ok")))
    assert gemini.encode_request(echoed)["contents"][1] == {"role": "model", "parts": [{"text": "ok"}]}


# --------------------------------------------------------------------------- streams


def chunks(*objs: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(o) + b"\r\n\r\n" for o in objs)


def cand(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        c["finishReason"] = finish
    return c


def test_stream_decoder_thoughts_text_whole_call_and_last_usage() -> None:
    data = chunks(
        {
            "candidates": [cand([{"text": "**Plan**", "thought": True}])],
            "usageMetadata": {"promptTokenCount": 9},
            "modelVersion": "g",
            "responseId": "r1",
        },
        {"candidates": [cand([{"text": "I'll ✓ "}])], "usageMetadata": {"promptTokenCount": 9}},
        {
            "candidates": [
                cand(
                    [
                        {"text": "it."},
                        {
                            "functionCall": {"name": "read_file", "args": {"path": "a.py"}},
                            "thoughtSignature": "EvwB",
                        },
                    ],
                    "STOP",
                )
            ],
            "usageMetadata": {"promptTokenCount": 900, "candidatesTokenCount": 12, "thoughtsTokenCount": 80},
        },
    )
    assert assert_split_invariant(gemini.StreamDecoder, data) == [
        Start("r1", "g"),
        BlockStart(0, "reasoning"),
        Delta(0, reasoning="**Plan**"),
        BlockStop(0),
        BlockStart(1, "text"),
        Delta(1, text="I'll ✓ "),
        Delta(1, text="it."),
        BlockStop(1),
        BlockStart(2, "reasoning"),
        Delta(2, state=SIG),
        BlockStop(2),
        BlockStart(3, "tool_call", tool_id=synth_call_id("r1", 0, "read_file"), tool_name="read_file"),
        Delta(3, args='{"path":"a.py"}'),
        BlockStop(3),
        Finish(StopReason.tool_use, usage=Usage(input_tokens=900, output_tokens=92, reasoning_tokens=80)),
    ]


def test_stream_decoder_error_chunk_and_truncation() -> None:
    error = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    data = chunks({"candidates": [cand([{"text": "a"}])], "responseId": "r"}, error)
    assert assert_split_invariant(gemini.StreamDecoder, data) == [
        Start("r", ""),
        BlockStart(0, "text"),
        Delta(0, text="a"),
        BlockStop(0),
        Error("rate_limited", "quota", 429),
    ]
    with pytest.raises(StreamTruncated, match=r"^gemini stream ended without a finishReason$"):
        assert_split_invariant(gemini.StreamDecoder, chunks({"candidates": [cand([{"text": "a"}])]}))


def test_stream_decoder_max_tokens_and_prompt_block() -> None:
    cut = chunks({"candidates": [cand([{"text": "a"}], "MAX_TOKENS")]})
    assert assert_split_invariant(gemini.StreamDecoder, cut)[-1] == Finish(StopReason.max_tokens)
    blocked = chunks({"promptFeedback": {"blockReason": "SAFETY"}})
    assert assert_split_invariant(gemini.StreamDecoder, blocked) == [
        Start("", ""),
        Finish(StopReason.refusal),
    ]


STREAM = [
    Start("up", "claude", Usage(input_tokens=7)),
    KeepAlive(),
    BlockStart(0, "reasoning"),
    Delta(0, reasoning="Hmm"),
    BlockStop(0),
    BlockStart(1, "text"),
    Delta(1, text="Hi"),
    Delta(1, text=" there"),
    BlockStop(1),
    BlockStart(2, "reasoning"),
    Delta(2, state=SIG),
    BlockStop(2),
    BlockStart(3, "tool_call", tool_id="toolu_1", tool_name="run_shell_command"),
    Delta(3, args='{"command":'),
    Delta(3, args='"ls"}'),
    BlockStop(3),
    Finish(StopReason.tool_use, usage=Usage(output_tokens=5, reasoning_tokens=2)),
]


def encode(events: list[Any]) -> bytes:
    encoder = gemini.StreamEncoder(model="gemini-2.5-flash", response_id="r9")
    return b"".join(encoder.encode(e) for e in events) + encoder.close()


def test_stream_encoder_whole_chunks_no_comments() -> None:
    """Test case 37: data lines only; the call once with an args object; finish + usage on the last chunk."""
    data = encode(STREAM)
    got = assert_gem_grammar(data)
    tail = {"modelVersion": "gemini-2.5-flash", "responseId": "r9"}

    def chunk(part: dict[str, Any]) -> dict[str, Any]:
        return {"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}], **tail}

    call = {
        "functionCall": {"name": "run_shell_command", "args": {"command": "ls"}, "id": "toolu_1"},
        "thoughtSignature": "EvwB",
    }
    assert got == [
        chunk({"text": "Hmm", "thought": True}),
        chunk({"text": "Hi"}),
        chunk({"text": " there"}),
        {
            "candidates": [
                {"content": {"role": "model", "parts": [call]}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": 7,
                "candidatesTokenCount": 3,
                "thoughtsTokenCount": 2,
                "totalTokenCount": 12,
            },
            **tail,
        },
    ]
    assert encode(STREAM) == data


def test_stream_encoder_error_and_early_end() -> None:
    failed = encode(
        [Start("u", "m"), BlockStart(0, "text"), Delta(0, text="a"), Error("overloaded", "busy", 503)]
    )
    assert assert_gem_grammar(failed)[-1] == {"error": {"code": 503, "message": "busy"}}
    cut = encode([Start("u", "m"), BlockStart(0, "text"), Delta(0, text="a")])
    assert assert_gem_grammar(cut)[-1] == {"error": {"code": 502, "message": "upstream stream ended early"}}
