"""Chat Completions codec: requests, responses and every streaming dialect (protocols.md §2, §5.14.2)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxygate.wire import chat
from proxygate.wire.ir import (
    Base64Source,
    BlockStart,
    BlockStop,
    Delta,
    Document,
    Error,
    Finish,
    Format,
    Image,
    KeepAlive,
    Message,
    Reasoning,
    ReasoningConfig,
    ReasoningState,
    Refusal,
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
    UrlSource,
    Usage,
)
from tests.unit.wire.appendix_a import CHAT_A, READ_FILE_SCHEMA
from tests.unit.wire.grammar import assert_chat_grammar, chat_chunks
from tests.unit.wire.split import assert_split_invariant

PLAIN = ReasoningState("chat", "plaintext")


def test_decode_appendix_a() -> None:
    assert chat.decode_request(CHAT_A) == Request(
        model="deepseek-v4-pro",
        system=(Text("Be brief."),),
        messages=(
            Message("user", (Text("What does a.py do?"),)),
            Message(
                "assistant",
                (Reasoning("Read it first.", PLAIN), ToolCall("toolu_01A", "read_file", '{"path":"a.py"}')),
            ),
            Message("user", (ToolResult("toolu_01A", (Text("print('hi')"),)), Text("Also, is it safe?"))),
        ),
        tools=(ToolDef("read_file", "Read a file", READ_FILE_SCHEMA),),
        max_output_tokens=16000,
        reasoning=ReasoningConfig("effort", effort="medium"),
        stream=True,
        source=Format.chat,
    )
    assert chat.include_usage(CHAT_A) is True


def test_native_round_trip_is_appendix_a_plus_cache_key() -> None:
    out = chat.encode_request(chat.decode_request(CHAT_A))
    assert orjson.dumps(out) == orjson.dumps(chat.encode_request(chat.decode_request(CHAT_A)))
    assert out == {
        "model": "deepseek-v4-pro",
        "messages": CHAT_A["messages"],
        "tools": CHAT_A["tools"],
        "max_tokens": 16000,
        "reasoning_effort": "medium",
        "prompt_cache_key": out["prompt_cache_key"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert out["prompt_cache_key"].startswith("pg-")


def test_system_and_developer_messages_leading_and_mid_conversation() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "A"}]},
            {"role": "system", "content": "B"},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "C"},
        ],
    }
    req = chat.decode_request(body)
    assert (req.system, req.messages) == (
        (Text("A"), Text("B")),
        (Message("user", (Text("hi"),)), Message("system", (Text("C"),))),
    )
    assert chat.encode_request(req)["messages"] == [
        {"role": "system", "content": "A\n\nB"},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "C"},
    ]


def test_user_parts_images_file_and_unknown_part() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                    },
                    {"type": "mystery"},
                ],
            }
        ],
    }
    req = chat.decode_request(body)
    assert req.messages[0].parts == (
        Text("look"),
        Image(Base64Source("image/png", "iVBO"), detail="low"),
        Image(UrlSource("https://x/y.png")),
        Document(Base64Source("application/pdf", "JVBE"), title="a.pdf", filename="a.pdf"),
    )
    assert chat.encode_request(req)["messages"] == [
        {"role": "user", "content": body["messages"][0]["content"][:4]}
    ]


def test_tool_results_media_go_to_a_user_message_after_the_tool_messages() -> None:
    """§7 case 4."""
    long_id = "toolu_" + "x" * 50
    req = Request(
        "m",
        (
            Message("user", (Text("go"),)),
            Message("assistant", (Text("Looking."), ToolCall(long_id, "shot", "{}"), ToolCall("b", "t", ""))),
            Message(
                "user",
                (
                    ToolResult(long_id, (Text("ok"), Image(Base64Source("image/png", "iVBO")))),
                    ToolResult("b", (Text("B"),), is_error=True),
                    Text("next"),
                ),
            ),
        ),
    )
    short = chat.encode_request(req)["messages"][1]["tool_calls"][0]["id"]
    assert len(short) == 40
    assert chat.encode_request(req)["messages"] == [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {"id": short, "type": "function", "function": {"name": "shot", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "t", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": short, "content": "ok"},
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"Output of tool call {short}:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "text", "text": "next"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (ToolChoice("auto"), "auto"),
        (ToolChoice("none"), "none"),
        (ToolChoice("required"), "required"),
        (ToolChoice("tool", name="t"), {"type": "function", "function": {"name": "t"}}),
        (
            ToolChoice("required", allowed=("t",)),
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "t"}}],
                },
            },
        ),
    ],
)
def test_tool_choice_mapping(choice: ToolChoice, wire: Any) -> None:
    req = Request(
        "m",
        (Message("user", (Text("hi"),)),),
        tools=(ToolDef("t"),),
        tool_choice=choice,
        parallel_tool_calls=False,
    )
    body = chat.encode_request(req)
    assert (body["tool_choice"], body["parallel_tool_calls"], body["tools"]) == (
        wire,
        False,
        [{"type": "function", "function": {"name": "t"}}],
    )
    assert chat.decode_request(body).tool_choice == choice


def test_sampling_format_effort_and_no_tool_choice_without_tools() -> None:
    req = Request(
        "m",
        (Message("user", (Text("hi"),)),),
        tool_choice=ToolChoice("required"),
        sampling=Sampling(temperature=0.2, top_p=0.9, top_k=5, seed=7, stop=("a", "b", "c", "d", "e")),
        reasoning=ReasoningConfig("budget", budget_tokens=4000),
        response_format=ResponseFormat("json_schema", schema={"type": "object"}),
        cache_key="k",
        user_id="not-forwarded",
        source=Format.anthropic,
    )
    assert chat.encode_request(req, max_tokens_field="max_completion_tokens") == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "low",
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["a", "b", "c", "d"],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": {"type": "object"}},
        },
        "prompt_cache_key": "k",
    }


def test_decode_response_with_reasoning_and_tool_calls_under_stop() -> None:
    body = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1,
        "model": "deepseek",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",  # compatible servers say stop with tool calls (§2.5)
                "message": {
                    "role": "assistant",
                    "content": "Sure.",
                    "reasoning_content": "think",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "t", "arguments": ""}}
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 9500,
            "completion_tokens": 180,
            "total_tokens": 9680,
            "prompt_tokens_details": {"cached_tokens": 9216, "cache_write_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 128},
        },
    }
    resp = chat.decode_response(body)
    assert resp == Response(
        id="chatcmpl-9",
        model="deepseek",
        parts=(
            Reasoning("think", ReasoningState("chat", "plaintext", model="deepseek")),
            Text("Sure."),
            ToolCall("call_1", "t", ""),
        ),
        stop_reason=StopReason.tool_use,
        usage=Usage(
            input_tokens=280,
            output_tokens=180,
            cache_read_tokens=9216,
            cache_write_tokens=4,
            reasoning_tokens=128,
        ),
    )
    assert chat.encode_response(resp, created=5) == {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 5,
        "model": "deepseek",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Sure.",
                    "refusal": None,
                    "reasoning_content": "think",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "t", "arguments": "{}"}}
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 9500,
            "completion_tokens": 180,
            "total_tokens": 9680,
            "prompt_tokens_details": {"cached_tokens": 9216, "cache_write_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 128},
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", StopReason.end_turn),
        ("length", StopReason.max_tokens),
        ("tool_calls", StopReason.tool_use),
        ("function_call", StopReason.tool_use),
        ("content_filter", StopReason.refusal),
    ],
)
def test_finish_reasons(finish: str, stop: StopReason) -> None:
    body = {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "finish_reason": finish, "message": {"content": "x"}}],
    }
    assert chat.decode_response(body).stop_reason is stop
    assert chat.encode_response(chat.decode_response(body))["choices"][0]["finish_reason"] == finish.replace(
        "function_call", "tool_calls"
    )


def test_refusal_response() -> None:
    resp = Response("r", "m", (Refusal("no"),), StopReason.refusal)
    message = chat.encode_response(resp)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": None, "refusal": "no"}


# ------------------------------------------------------------------ stream decoding dialects


def sse(*chunks: Any, done: bool = True) -> bytes:
    out = b"".join(
        b"data: " + orjson.dumps({"id": "chatcmpl-1", "model": "m", **c}) + b"\n\n" for c in chunks
    )
    return out + (b"data: [DONE]\n\n" if done else b"")


def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def call(
    index: int | None, *, id: str | None = None, name: str | None = None, args: str | None = None
) -> dict[str, Any]:
    fragment: dict[str, Any] = {} if index is None else {"index": index}
    if id is not None:
        fragment["id"] = id
        fragment["type"] = "function"
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    fragment["function"] = function
    return delta({"tool_calls": [fragment]})


USAGE = {
    "prompt_tokens": 900,
    "completion_tokens": 40,
    "total_tokens": 940,
    "prompt_tokens_details": {"cached_tokens": 768},
}
IR_USAGE = Usage(input_tokens=132, output_tokens=40, cache_read_tokens=768)


def tool_events(start: int, *calls: tuple[str, str, str]) -> list[Any]:
    events: list[Any] = []
    for i, (call_id, name, args) in enumerate(calls, start=start):
        events += [BlockStart(i, "tool_call", tool_id=call_id, tool_name=name)]
        events += [Delta(i, args=args)] if args else []
        events += [BlockStop(i)]
    return events


def test_text_stream_with_usage_chunk() -> None:
    data = sse(
        delta({"role": "assistant", "content": ""}),
        delta({"content": "Hel"}),
        delta({"content": "lo é🎉"}),
        delta({}, "stop"),
        {"choices": [], "usage": USAGE},
    )
    assert assert_split_invariant(chat.StreamDecoder, data) == [
        Start("chatcmpl-1", "m"),
        BlockStart(0, "text"),
        Delta(0, text="Hel"),
        Delta(0, text="lo é🎉"),
        BlockStop(0),
        Finish(StopReason.end_turn, None, IR_USAGE),
    ]


def test_openai_sequential_parallel_tools() -> None:
    data = sse(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "content": None,
                        **call(0, id="call_A", name="read_file", args="")["choices"][0]["delta"],
                    },
                }
            ]
        },
        call(0, args='{"path": '),
        call(0, args='"a.py"}'),
        call(1, id="call_B", name="read_file", args=""),
        call(1, args='{"path": "b.py"}'),
        delta({}, "tool_calls"),
        {"choices": [], "usage": USAGE},
    )
    assert assert_split_invariant(chat.StreamDecoder, data) == [
        Start("chatcmpl-1", "m"),
        BlockStart(0, "tool_call", tool_id="call_A", tool_name="read_file"),
        Delta(0, args='{"path": '),
        Delta(0, args='"a.py"}'),
        BlockStop(0),
        *tool_events(1, ("call_B", "read_file", '{"path": "b.py"}')),
        Finish(StopReason.tool_use, None, IR_USAGE),
    ]


def test_interleaved_indexes_with_repeated_ids_never_overlap() -> None:
    """§7 case 12."""
    data = sse(
        call(0, id="call_A", name="a", args='{"x":'),
        call(1, id="call_B", name="b", args='{"y":'),
        call(0, args="1}"),
        call(1, id="call_B", args="2}"),
        delta({}, "tool_calls"),
    )
    assert assert_split_invariant(chat.StreamDecoder, data) == [
        Start("chatcmpl-1", "m"),
        BlockStart(0, "tool_call", tool_id="call_A", tool_name="a"),
        Delta(0, args='{"x":'),
        Delta(0, args="1}"),
        BlockStop(0),
        *tool_events(1, ("call_B", "b", '{"y":2}')),
        Finish(StopReason.tool_use),
    ]


def test_whole_call_in_one_fragment_finish_stop_no_usage() -> None:
    """§7 case 13: stop with tool calls is tool_use; no usage chunk → zeros."""
    data = sse(call(0, id="call_A", name="a", args='{"x":1}'), delta({}, "stop"))
    assert assert_split_invariant(chat.StreamDecoder, data) == [
        Start("chatcmpl-1", "m"),
        *tool_events(0, ("call_A", "a", '{"x":1}')),
        Finish(StopReason.tool_use),
    ]


def test_index_always_zero_with_new_ids_and_missing_index() -> None:
    data = sse(
        call(0, id="call_A", name="a", args='{"x":1}'),
        call(0, id="call_B", name="b", args='{"y":'),
        call(None, args="2}"),
        call(None, id="call_C", name="c"),
        delta({}, "tool_calls"),
    )
    assert assert_split_invariant(chat.StreamDecoder, data) == [
        Start("chatcmpl-1", "m"),
        BlockStart(0, "tool_call", tool_id="call_A", tool_name="a"),
        Delta(0, args='{"x":1}'),
        BlockStop(0),
        BlockStart(1, "tool_call", tool_id="call_B", tool_name="b"),
        Delta(1, args='{"y":'),
        Delta(1, args="2}"),
        BlockStop(1),
        *tool_events(2, ("call_C", "c", "")),
        Finish(StopReason.tool_use),
    ]


def test_name_in_pieces_and_no_id_gets_a_deterministic_one() -> None:
    data = sse(call(0, name="read_"), call(0, name="file"), call(0, args='{"p":1}'), delta({}, "tool_calls"))
    assert assert_split_invariant(chat.StreamDecoder, data) == [
        Start("chatcmpl-1", "m"),
        *tool_events(0, ("call_chatcmpl-1_0", "read_file", '{"p":1}')),
        Finish(StopReason.tool_use),
    ]


def test_reasoning_content_then_text_then_tool_with_usage_on_finish_chunk() -> None:
    """§7 case 14 (upstream side): reasoning closes with a plaintext state for the envelope."""
    data = sse(
        delta({"role": "assistant", "reasoning_content": "Let me "}),
        delta({"reasoning_content": "think."}),
        delta({"content": "Reading."}),
        call(0, id="call_A", name="read", args='{"p":1}'),
        {**delta({}, "tool_calls"), "usage": USAGE},
    )
    assert assert_split_invariant(chat.StreamDecoder, data) == [
        Start("chatcmpl-1", "m"),
        BlockStart(0, "reasoning"),
        Delta(0, reasoning="Let me "),
        Delta(0, reasoning="think."),
        Delta(0, state=ReasoningState("chat", "plaintext", model="m")),
        BlockStop(0),
        BlockStart(1, "text"),
        Delta(1, text="Reading."),
        BlockStop(1),
        *tool_events(2, ("call_A", "read", '{"p":1}')),
        Finish(StopReason.tool_use, None, IR_USAGE),
    ]


def test_length_inside_a_tool_call_reports_max_tokens() -> None:
    """§6.6: a truncated call must not read as tool_use."""
    data = sse(call(0, id="call_A", name="a", args='{"x": "unfini'), delta({}, "length"))
    assert assert_split_invariant(chat.StreamDecoder, data)[-1] == Finish(StopReason.max_tokens)


def test_error_chunk_mid_stream() -> None:
    data = (
        sse(
            delta({"content": "Hi"}),
            done=False,
        )
        + b'data: {"error":{"message":"Rate limit","type":"rate_limit_exceeded","code":"rate_limit_exceeded"}}\n\n'
    )
    assert assert_split_invariant(chat.StreamDecoder, data) == [
        Start("chatcmpl-1", "m"),
        BlockStart(0, "text"),
        Delta(0, text="Hi"),
        Error("rate_limited", "Rate limit", 429),
    ]


def test_eof_before_finish_is_truncation() -> None:
    """§7 case 15 (decoder side)."""
    data = sse(delta({"content": "a"}), delta({"content": "b"}), done=False)
    with pytest.raises(StreamTruncated, match=r"^chat: stream ended before a finish_reason and \[DONE\]$"):
        assert_split_invariant(chat.StreamDecoder, data)


def test_eof_after_finish_without_done_is_truncation() -> None:
    """EOF before [DONE] is an upstream failure on both paths (protocols.md §5.14.1 rule 5)."""
    data = sse(delta({"content": "a"}), delta({}, "stop"), done=False) + b": comment\n\n"
    with pytest.raises(
        StreamTruncated, match=r"^chat: stream ended after its finish_reason but before \[DONE\]$"
    ):
        assert_split_invariant(chat.StreamDecoder, data)


# ------------------------------------------------------------------ stream encoding


def test_stream_encoder_full_grammar() -> None:
    events = [
        Start("x", "m", Usage(input_tokens=10, cache_read_tokens=5)),
        BlockStart(0, "reasoning"),
        Delta(0, reasoning="hmm"),
        Delta(0, state=ReasoningState("anthropic", "signature", "sig")),
        BlockStop(0),
        KeepAlive(),
        BlockStart(1, "text"),
        Delta(1, text="Hi"),
        BlockStop(1),
        BlockStart(2, "tool_call", tool_id="toolu_1", tool_name="a"),
        Delta(2, args='{"x":'),
        Delta(2, args="1}"),
        BlockStop(2),
        BlockStart(3, "tool_call", tool_id="toolu_2", tool_name="b"),
        BlockStop(3),
        Finish(StopReason.tool_use, None, Usage(output_tokens=7, reasoning_tokens=3)),
    ]
    encoder = chat.StreamEncoder(model="gpt", response_id="abc", created=42)
    out = b"".join(map(encoder.encode, events)) + encoder.close()
    assert b": keep-alive\n\n" in out
    base = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 42, "model": "gpt"}

    def chunk(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]}

    assert assert_chat_grammar(out) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "hmm"}),
        chunk({"content": "Hi"}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "a", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "b", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": 15,
                "completion_tokens": 7,
                "total_tokens": 22,
                "prompt_tokens_details": {"cached_tokens": 5},
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        },
        "[DONE]",
    ]


def test_stream_encoder_without_usage_and_error_ends_without_done() -> None:
    encoder = chat.StreamEncoder(model="gpt", response_id="chatcmpl-1", include_usage=False)
    out = b"".join(map(encoder.encode, [Start("x", "m"), Finish(StopReason.max_tokens)])) + encoder.close()
    assert [
        c if c == "[DONE]" else c["choices"][0]["finish_reason"]
        for c in assert_chat_grammar(out, include_usage=False)
    ] == [
        None,
        "length",
        "[DONE]",
    ]
    failing = chat.StreamEncoder(model="gpt", response_id="chatcmpl-1")
    out = b"".join(map(failing.encode, [Start("x", "m"), Error("overloaded", "busy", 529)])) + failing.close()
    assert chat_chunks(out)[-1] == {
        "error": {"message": "busy", "type": "server_error", "code": "server_error"}
    }
