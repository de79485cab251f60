"""OpenAI Responses codec: Codex requests, stateless encoding, every stream dialect (protocols.md §3, §5.14)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from proxygate.wire import envelope, responses
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
    Opaque,
    Reasoning,
    ReasoningConfig,
    ReasoningState,
    Request,
    Response,
    ResponseFormat,
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
from proxygate.wire.responses_items import native_state

from .split import assert_split_invariant
from .stream_grammar import assert_resp_grammar, resp_events

SHELL_PARAMS = {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}
SPAWN = {
    "type": "function",
    "name": "spawn_agent",
    "description": "Spawn",
    "strict": False,
    "parameters": SHELL_PARAMS,
}
NAMESPACE = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [SPAWN]}
EXEC = {
    "type": "function",
    "name": "exec_command",
    "description": "Run",
    "strict": False,
    "parameters": SHELL_PARAMS,
}
WEB = {"type": "web_search", "external_web_access": True}

# The shape Codex 0.169 sends on its second turn (CLIENTS.md): no instructions, developer messages.
CODEX_BODY: dict[str, Any] = {
    "model": "gpt-5-codex",
    "stream": True,
    "input": [
        {
            "type": "message",
            "id": "msg_a",
            "role": "developer",
            "content": [{"type": "input_text", "text": "Base"}],
        },
        {
            "type": "message",
            "id": "msg_b",
            "role": "developer",
            "content": [{"type": "input_text", "text": "Skills"}, {"type": "input_text", "text": "Perms"}],
        },
        {
            "type": "message",
            "id": "msg_c",
            "role": "user",
            "content": [{"type": "input_text", "text": "<env/>"}],
        },
        {
            "type": "message",
            "id": "msg_d",
            "role": "user",
            "content": [{"type": "input_text", "text": "TOOLTEST"}],
        },
        {
            "type": "function_call",
            "status": "completed",
            "id": "fc_mock_1",
            "name": "exec_command",
            "arguments": '{"cmd": "printf acceptance-"}',
            "call_id": "call_mock_1",
        },
        {
            "type": "function_call_output",
            "id": "fco_1",
            "call_id": "call_mock_1",
            "output": "acceptance-42\n",
        },
    ],
    "tools": [EXEC, NAMESPACE, WEB],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"summary": "auto"},
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "sess-1",
    "client_metadata": {"session_id": "sess-1"},
}


def test_codex_request_decodes_developer_messages_namespace_and_tool_cycle() -> None:
    assert responses.decode_request(CODEX_BODY) == Request(
        model="gpt-5-codex",
        system=(Text("Base"), Text("Skills"), Text("Perms")),
        messages=(
            Message("user", (Text("<env/>"),)),
            Message("user", (Text("TOOLTEST"),)),
            Message("assistant", (ToolCall("call_mock_1", "exec_command", '{"cmd": "printf acceptance-"}'),)),
            Message("user", (ToolResult("call_mock_1", (Text("acceptance-42\n"),), name="exec_command"),)),
        ),
        tools=(
            ToolDef("exec_command", "Run", SHELL_PARAMS, strict=False),
            ToolDef(
                "multi_agent_v1--spawn_agent",
                "Spawn",
                SHELL_PARAMS,
                strict=False,
                origin=Format.responses,
                raw={"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents."},
            ),
            ToolDef("web_search", kind="hosted", origin=Format.responses, raw=WEB),
        ),
        tool_choice=ToolChoice("auto"),
        parallel_tool_calls=True,
        reasoning=ReasoningConfig(summary="auto", include_encrypted=True),
        cache_key="sess-1",
        stream=True,
        source=Format.responses,
        passthrough={
            Format.responses: {
                "store": False,
                "include": ["reasoning.encrypted_content"],
                "client_metadata": {"session_id": "sess-1"},
            }
        },
    )


def test_codex_request_reencodes_to_responses_with_namespace_regrouped() -> None:
    body = responses.encode_request(responses.decode_request(CODEX_BODY))
    assert body == {
        "model": "gpt-5-codex",
        "instructions": "Base\n\nSkills\n\nPerms",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<env/>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "TOOLTEST"}]},
            {
                "type": "function_call",
                "call_id": "call_mock_1",
                "name": "exec_command",
                "arguments": '{"cmd": "printf acceptance-"}',
            },
            {"type": "function_call_output", "call_id": "call_mock_1", "output": "acceptance-42\n"},
        ],
        "tools": [EXEC, NAMESPACE, WEB],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "store": False,
        "prompt_cache_key": "sess-1",
        "stream": True,
        "client_metadata": {"session_id": "sess-1"},
    }
    assert responses.instructions_as_developer(body)["input"][0] == {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": "Base\n\nSkills\n\nPerms"}],
    }


def test_reasoning_items_native_sealed_and_id_only() -> None:
    """Native encrypted_content keeps its item id; our envelope unseals; an id alone is dropped (§3.3)."""
    foreign = ReasoningState("anthropic", "signature", "SIG")
    body = {
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": "hi"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "A"}],
                "encrypted_content": "gAAA",
            },
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": envelope.seal(foreign)},
            {"type": "reasoning", "id": "rs_3", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "mystery_item", "x": 1},
        ],
    }
    req = responses.decode_request(body)
    assert req.messages == (
        Message("user", (Text("hi"),)),
        Message(
            "assistant",
            (
                Reasoning("A", native_state("rs_1", "gAAA"), is_summary=True),
                Reasoning("", foreign),
                Text("ok"),
                Opaque(Format.responses, {"type": "web_search_call", "id": "ws_1", "status": "completed"}),
            ),
        ),
    )
    assert responses.encode_request(req)["input"][1:] == [
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "A"}],
            "encrypted_content": "gAAA",
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "ok", "annotations": []}],
        },
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ]


def test_foreign_request_encodes_stateless_and_flat() -> None:
    """ANT-shaped IR → RESP: output_text for assistant, input_image detail auto, strict:false (test case 28)."""
    req = Request(
        model="gpt-5.2",
        system=(Text("Be brief."),),
        messages=(
            Message("user", (Text("look"), Image(Base64Source("image/png", "AAAA")))),
            Message(
                "assistant",
                (
                    Reasoning("hmm", ReasoningState("anthropic", "signature", "S")),
                    Text("Reading."),
                    ToolCall("toolu_1", "read_file", '{"path":"a.py"}'),
                    ToolCall("toolu_2", "apply_patch", "*** Begin Patch", kind="custom"),
                ),
            ),
            Message(
                "user",
                (
                    ToolResult("toolu_1", (Text("print('hi')"), Image(Base64Source("image/png", "BB")))),
                    ToolResult("toolu_2", (Text("Done"),)),
                    Text("safe?"),
                ),
            ),
        ),
        tools=(
            ToolDef("read_file", "Read", {"type": "object", "properties": {"path": {"type": "string"}}}),
            ToolDef("noargs"),
            ToolDef(
                "apply_patch",
                "Patch",
                kind="custom",
                grammar={"type": "grammar", "syntax": "lark", "definition": "start"},
            ),
            ToolDef(
                "web_search_20250305",
                kind="hosted",
                origin=Format.anthropic,
                raw={"type": "web_search_20250305"},
            ),
        ),
        tool_choice=ToolChoice("tool", name="read_file"),
        max_output_tokens=8,
        reasoning=ReasoningConfig(mode="budget", budget_tokens=4000),
        response_format=ResponseFormat("json_schema", {"type": "object"}, name="out", strict=True),
        user_id="u" * 80,
        stream=True,
    )
    assert responses.encode_request(req) == {
        "model": "gpt-5.2",
        "instructions": "Be brief.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Reading.", "annotations": []}],
            },
            {
                "type": "function_call",
                "call_id": "toolu_1",
                "name": "read_file",
                "arguments": '{"path":"a.py"}',
            },
            {
                "type": "custom_tool_call",
                "call_id": "toolu_2",
                "name": "apply_patch",
                "input": "*** Begin Patch",
            },
            {
                "type": "function_call_output",
                "call_id": "toolu_1",
                "output": [
                    {"type": "input_text", "text": "print('hi')"},
                    {"type": "input_image", "image_url": "data:image/png;base64,BB", "detail": "auto"},
                ],
            },
            {"type": "custom_tool_call_output", "call_id": "toolu_2", "output": "Done"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "safe?"}]},
        ],
        "tools": [
            {
                "type": "function",
                "name": "read_file",
                "description": "Read",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
                "strict": False,
            },
            {
                "type": "function",
                "name": "noargs",
                "description": "",
                "parameters": {"type": "object", "properties": {}},
                "strict": False,
            },
            {
                "type": "custom",
                "name": "apply_patch",
                "description": "Patch",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start"},
            },
        ],
        "tool_choice": {"type": "function", "name": "read_file"},
        "max_output_tokens": 16,
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "store": False,
        "text": {
            "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
        },
        "safety_identifier": hashlib.sha256(b"u" * 80).hexdigest(),  # > 64 chars: hashed (§6.23)
        "stream": True,
    }


def test_encode_request_is_deterministic() -> None:
    req = responses.decode_request(CODEX_BODY)
    assert orjson.dumps(responses.encode_request(req)) == orjson.dumps(responses.encode_request(req))


def test_string_input_and_mid_conversation_developer() -> None:
    req = responses.decode_request({"model": "m", "instructions": "I", "input": "hello"})
    assert (req.system, req.messages) == ((Text("I"),), (Message("user", (Text("hello"),)),))
    later = responses.decode_request(
        {"model": "m", "input": [{"role": "user", "content": "a"}, {"role": "developer", "content": "late"}]}
    )
    assert later.messages == (Message("user", (Text("a"),)), Message("system", (Text("late"),)))


# --------------------------------------------------------------------------- responses

RESPONSE_BODY: dict[str, Any] = {
    "id": "resp_9",
    "object": "response",
    "status": "completed",
    "model": "gpt-5.2",
    "output": [
        {
            "type": "reasoning",
            "id": "rs_2",
            "summary": [{"type": "summary_text", "text": "Plan"}],
            "encrypted_content": "gB",
        },
        {
            "type": "message",
            "id": "msg_3",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Run."}],
        },
        {
            "type": "function_call",
            "id": "fc_4",
            "call_id": "call_4",
            "name": "spawn_agent",
            "namespace": "multi_agent_v1",
            "arguments": "{}",
        },
    ],
    "usage": {
        "input_tokens": 12000,
        "input_tokens_details": {"cached_tokens": 11520},
        "output_tokens": 310,
        "output_tokens_details": {"reasoning_tokens": 192},
        "total_tokens": 12310,
    },
}


def test_decode_response_usage_excludes_cached_and_calls_mean_tool_use() -> None:
    assert responses.decode_response(RESPONSE_BODY) == Response(
        id="resp_9",
        model="gpt-5.2",
        parts=(
            Reasoning("Plan", native_state("rs_2", "gB"), is_summary=True),
            Text("Run."),
            ToolCall("call_4", "multi_agent_v1--spawn_agent", "{}"),
        ),
        stop_reason=StopReason.tool_use,
        usage=Usage(input_tokens=480, output_tokens=310, cache_read_tokens=11520, reasoning_tokens=192),
    )


def test_encode_response_round_trips_items_and_usage() -> None:
    body = responses.encode_response(responses.decode_response(RESPONSE_BODY))
    assert body["output"] == [
        {
            "type": "reasoning",
            "id": "rs_2",
            "summary": [{"type": "summary_text", "text": "Plan"}],
            "encrypted_content": "gB",
        },
        {
            "type": "message",
            "id": "msg_9_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Run.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_9_2",
            "call_id": "call_4",
            "name": "spawn_agent",
            "namespace": "multi_agent_v1",
            "arguments": "{}",
            "status": "completed",
        },
    ]
    assert (body["id"], body["status"], body["incomplete_details"]) == ("resp_9", "completed", None)
    assert body["usage"] == RESPONSE_BODY["usage"]


def test_length_stop_is_incomplete_with_reason() -> None:
    body = responses.encode_response(Response("x", "m", (Text("cut"),), StopReason.max_tokens))
    assert (body["id"], body["status"], body["incomplete_details"]) == (
        "resp_x",
        "incomplete",
        {"reason": "max_output_tokens"},
    )
    assert responses.decode_response(body).stop_reason is StopReason.max_tokens


# --------------------------------------------------------------------------- stream decoding


def sse(*events: dict[str, Any]) -> bytes:
    out = b""
    for n, event in enumerate(events):
        data = orjson.dumps({**event, "sequence_number": n})
        out += b"event: " + event["type"].encode() + b"\r\ndata: " + data + b"\r\n\r\n"
    return out


CREATED = {
    "type": "response.created",
    "response": {"id": "resp_1", "model": "gpt-5", "status": "in_progress", "output": []},
}
USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 3,
    "output_tokens_details": {"reasoning_tokens": 1},
}
COMPLETED = {
    "type": "response.completed",
    "response": {"id": "resp_1", "status": "completed", "output": [], "usage": USAGE},
}
FINAL_USAGE = Usage(input_tokens=6, output_tokens=3, cache_read_tokens=4, reasoning_tokens=1)
FC = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "shell",
    "arguments": "",
    "status": "in_progress",
}


def decode_all(data: bytes) -> list[Any]:
    return assert_split_invariant(responses.StreamDecoder, data)


def test_stream_canonical_reasoning_text_call() -> None:
    data = sse(
        CREATED,
        {"type": "response.in_progress", "response": {}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "reasoning", "id": "rs_1", "summary": []},
        },
        {
            "type": "response.reasoning_summary_part.added",
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 0,
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 0,
            "delta": "Check",
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "item_id": "rs_1",
            "output_index": 0,
            "summary_index": 1,
            "delta": "Then",
        },
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {"type": "reasoning", "id": "rs_1", "encrypted_content": "gA"},
        },
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {"type": "message", "id": "msg_1", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": "msg_1",
            "output_index": 1,
            "content_index": 0,
            "part": {"type": "output_text"},
        },
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 1,
            "content_index": 0,
            "delta": "Hé ✓",
        },
        {
            "type": "response.output_text.done",
            "item_id": "msg_1",
            "output_index": 1,
            "content_index": 0,
            "text": "Hé ✓",
        },
        {"type": "response.content_part.done", "item_id": "msg_1", "output_index": 1, "content_index": 0},
        {"type": "response.output_item.added", "output_index": 2, "item": FC},
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_1",
            "output_index": 2,
            "delta": '{"a":',
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_1",
            "output_index": 2,
            "delta": "1}",
        },
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "output_index": 2,
            "arguments": '{"a":1}',
        },
        {"type": "response.output_item.done", "output_index": 2, "item": {**FC, "arguments": '{"a":1}'}},
        COMPLETED,
    )
    assert decode_all(data) == [
        Start("resp_1", "gpt-5"),
        BlockStart(0, "reasoning"),
        Delta(0, reasoning="Check"),
        Delta(0, reasoning="\n\nThen"),
        Delta(0, state=native_state("rs_1", "gA")),
        BlockStop(0),
        BlockStart(1, "text"),
        Delta(1, text="Hé ✓"),
        BlockStop(1),
        BlockStart(2, "tool_call", tool_id="call_1", tool_name="shell"),
        Delta(2, args='{"a":'),
        Delta(2, args="1}"),
        BlockStop(2),
        Finish(StopReason.tool_use, usage=FINAL_USAGE),
    ]


def test_stream_args_only_in_done_and_empty_deltas() -> None:
    """Test case 26: no deltas, or "" deltas, still deliver the whole arguments once."""
    data = sse(
        CREATED,
        {"type": "response.output_item.added", "output_index": 0, "item": FC},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": ""},
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "output_index": 0,
            "arguments": '{"a":1}',
        },
        {"type": "response.output_item.done", "output_index": 0, "item": {**FC, "arguments": '{"a":1}'}},
        COMPLETED,
    )
    assert decode_all(data) == [
        Start("resp_1", "gpt-5"),
        BlockStart(0, "tool_call", tool_id="call_1", tool_name="shell"),
        Delta(0, args='{"a":1}'),
        BlockStop(0),
        Finish(StopReason.tool_use, usage=FINAL_USAGE),
    ]


def test_stream_items_only_in_output_item_done() -> None:
    """No added events and an empty terminal output: content comes from the done items (case 27)."""
    data = sse(
        CREATED,
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]},
        },
        {"type": "response.output_item.done", "output_index": 1, "item": {**FC, "arguments": "{}"}},
        COMPLETED,
    )
    assert decode_all(data) == [
        Start("resp_1", "gpt-5"),
        BlockStart(0, "text"),
        Delta(0, text="Hi"),
        BlockStop(0),
        BlockStart(1, "tool_call", tool_id="call_1", tool_name="shell"),
        Delta(1, args="{}"),
        BlockStop(1),
        Finish(StopReason.tool_use, usage=FINAL_USAGE),
    ]


def test_stream_only_terminal_output() -> None:
    completed = {
        **COMPLETED,
        "response": {
            **COMPLETED["response"],
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "All"}]}],
        },
    }
    assert decode_all(sse(CREATED, completed)) == [
        Start("resp_1", "gpt-5"),
        BlockStart(0, "text"),
        Delta(0, text="All"),
        BlockStop(0),
        Finish(StopReason.end_turn, usage=FINAL_USAGE),
    ]


def test_stream_incomplete_failed_and_error() -> None:
    incomplete = {
        "type": "response.incomplete",
        "response": {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
    }
    assert decode_all(sse(CREATED, incomplete))[-1] == Finish(StopReason.max_tokens)
    failed = {
        "type": "response.failed",
        "response": {"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow"}},
    }
    assert decode_all(sse(CREATED, failed)) == [Start("resp_1", "gpt-5"), Error("rate_limited", "slow", 429)]
    error = {"type": "error", "code": "server_error", "message": "boom"}
    assert decode_all(sse(CREATED, error)) == [Start("resp_1", "gpt-5"), Error("server", "boom", 500)]


def test_stream_without_terminal_event_is_truncated() -> None:
    data = sse(CREATED, {"type": "response.output_text.delta", "output_index": 0, "delta": "par"})
    with pytest.raises(StreamTruncated, match=r"^responses stream ended before a terminal event"):
        decode_all(data)


# --------------------------------------------------------------------------- stream encoding

EVENTS = [
    Start("up", "claude", Usage(input_tokens=5, cache_read_tokens=100)),
    KeepAlive(),
    BlockStart(0, "reasoning"),
    Delta(0, reasoning="Think"),
    Delta(0, state=ReasoningState("anthropic", "signature", "SIG")),
    BlockStop(0),
    BlockStart(1, "text"),
    Delta(1, text="Hi"),
    BlockStop(1),
    BlockStart(2, "tool_call", tool_id="toolu_1", tool_name="exec_command"),
    Delta(2, args='{"cmd":'),
    Delta(2, args='"ls"}'),
    BlockStop(2),
    BlockStart(3, "tool_call", tool_id="toolu_2", tool_name="apply_patch", tool_kind="custom"),
    Delta(3, args="*** Begin"),
    BlockStop(3),
    Finish(StopReason.tool_use, usage=Usage(output_tokens=7, reasoning_tokens=2)),
]


def encode(events: list[Any], **kwargs: Any) -> bytes:
    encoder = responses.StreamEncoder(model="gpt-5-codex", response_id="abc", **kwargs)
    return b"".join(encoder.encode(e) for e in events) + encoder.close()


def test_stream_encoder_grammar_and_whole_event_list() -> None:
    data = encode(EVENTS)
    assert data.count(b": keep-alive\n\n") == 1
    events = assert_resp_grammar(data)
    sealed = envelope.seal(ReasoningState("anthropic", "signature", "SIG"))
    where0 = {"item_id": "rs_abc_0", "output_index": 0}
    where1 = {"item_id": "msg_abc_1", "output_index": 1, "content_index": 0}
    text_part = {"type": "output_text", "text": "Hi", "annotations": []}
    fc = {"type": "function_call", "id": "fc_abc_2", "call_id": "toolu_1", "name": "exec_command"}
    ctc = {"type": "custom_tool_call", "id": "ctc_abc_3", "call_id": "toolu_2", "name": "apply_patch"}
    items = [
        {
            "type": "reasoning",
            "id": "rs_abc_0",
            "summary": [{"type": "summary_text", "text": "Think"}],
            "encrypted_content": sealed,
        },
        {
            "type": "message",
            "id": "msg_abc_1",
            "status": "completed",
            "role": "assistant",
            "content": [text_part],
        },
        {**fc, "arguments": '{"cmd":"ls"}', "status": "completed"},
        {**ctc, "input": "*** Begin"},
    ]
    stripped = [{k: v for k, v in e.items() if k not in ("sequence_number", "response")} for e in events]
    assert stripped == [
        {"type": "response.created"},
        {"type": "response.in_progress"},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "reasoning", "id": "rs_abc_0", "summary": []},
        },
        {
            "type": "response.reasoning_summary_part.added",
            **where0,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": ""},
        },
        {"type": "response.reasoning_summary_text.delta", **where0, "summary_index": 0, "delta": "Think"},
        {"type": "response.reasoning_summary_text.done", **where0, "summary_index": 0, "text": "Think"},
        {
            "type": "response.reasoning_summary_part.done",
            **where0,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": "Think"},
        },
        {"type": "response.output_item.done", "output_index": 0, "item": items[0]},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {
                "type": "message",
                "id": "msg_abc_1",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        },
        {
            "type": "response.content_part.added",
            **where1,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
        {"type": "response.output_text.delta", **where1, "delta": "Hi", "logprobs": []},
        {"type": "response.output_text.done", **where1, "text": "Hi", "logprobs": []},
        {"type": "response.content_part.done", **where1, "part": text_part},
        {"type": "response.output_item.done", "output_index": 1, "item": items[1]},
        {
            "type": "response.output_item.added",
            "output_index": 2,
            "item": {**fc, "arguments": "", "status": "in_progress"},
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_abc_2",
            "output_index": 2,
            "delta": '{"cmd":',
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_abc_2",
            "output_index": 2,
            "delta": '"ls"}',
        },
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_abc_2",
            "output_index": 2,
            "arguments": '{"cmd":"ls"}',
        },
        {"type": "response.output_item.done", "output_index": 2, "item": items[2]},
        {"type": "response.output_item.added", "output_index": 3, "item": {**ctc, "input": ""}},
        {
            "type": "response.custom_tool_call_input.delta",
            "item_id": "ctc_abc_3",
            "output_index": 3,
            "delta": "*** Begin",
        },
        {
            "type": "response.custom_tool_call_input.done",
            "item_id": "ctc_abc_3",
            "output_index": 3,
            "input": "*** Begin",
        },
        {"type": "response.output_item.done", "output_index": 3, "item": items[3]},
        {"type": "response.completed"},
    ]
    final = events[-1]["response"]
    assert (final["id"], final["status"], final["model"], final["output"]) == (
        "resp_abc",
        "completed",
        "gpt-5-codex",
        items,
    )
    assert final["usage"] == {
        "input_tokens": 105,
        "input_tokens_details": {"cached_tokens": 100},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 112,
    }


def test_stream_encoder_is_deterministic_and_decodes_back() -> None:
    assert encode(EVENTS) == encode(EVENTS)
    decoded = decode_all(encode(EVENTS))
    assert decoded[1:4] == [
        BlockStart(0, "reasoning"),
        Delta(0, reasoning="Think"),
        Delta(0, state=ReasoningState("anthropic", "signature", "SIG")),
    ]
    assert decoded[-1] == Finish(
        StopReason.tool_use,
        usage=Usage(input_tokens=5, output_tokens=7, cache_read_tokens=100, reasoning_tokens=2),
    )


def test_length_limit_still_ends_with_response_completed() -> None:
    """Codex needs response.completed (§3.7); the truth goes into status/incomplete_details."""
    events = assert_resp_grammar(
        encode([Start("u", "m"), BlockStart(0, "text"), Delta(0, text="cu"), Finish(StopReason.max_tokens)])
    )
    final = events[-1]
    assert (final["type"], final["response"]["status"], final["response"]["incomplete_details"]) == (
        "response.completed",
        "incomplete",
        {"reason": "max_output_tokens"},
    )


def test_error_and_early_close_end_with_response_failed() -> None:
    failed = assert_resp_grammar(
        encode(
            [Start("u", "m"), BlockStart(0, "text"), Delta(0, text="x"), Error("rate_limited", "slow", 429)]
        )
    )
    assert [e["type"] for e in failed][-2:] == ["response.output_item.done", "response.failed"]
    assert failed[-1]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "slow"}
    cut = assert_resp_grammar(encode([Start("u", "m"), BlockStart(0, "text"), Delta(0, text="x")]))
    assert (cut[-1]["type"], cut[-1]["response"]["error"]) == (
        "response.failed",
        {"code": "server_error", "message": "upstream stream ended early"},
    )


def test_empty_blocks_leave_no_items() -> None:
    events = resp_events(
        encode([Start("u", "m"), BlockStart(0, "text"), BlockStop(0), Finish(StopReason.end_turn)])
    )
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]
