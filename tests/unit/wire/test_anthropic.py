"""Anthropic Messages codec: requests, responses and streams (protocols.md §1, §5)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxygate.wire import anthropic, envelope
from proxygate.wire.ir import (
    Base64Source,
    BlockStart,
    BlockStop,
    CacheMark,
    Delta,
    Error,
    Finish,
    Format,
    Image,
    InvalidRequest,
    KeepAlive,
    Message,
    Opaque,
    Reasoning,
    ReasoningConfig,
    ReasoningState,
    Request,
    Response,
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
from tests.unit.wire.appendix_a import ANT_A, READ_FILE_SCHEMA
from tests.unit.wire.grammar import assert_ant_grammar
from tests.unit.wire.split import assert_split_invariant

SIGNATURE = ReasoningState(origin="anthropic", kind="signature", payload="EpYB")


def test_decode_appendix_a() -> None:
    assert anthropic.decode_request(ANT_A) == Request(
        model="claude-sonnet-4-6",
        system=(Text("Be brief."),),
        messages=(
            Message("user", (Text("What does a.py do?"),)),
            Message(
                "assistant",
                (
                    Reasoning("Read it first.", SIGNATURE),
                    ToolCall("toolu_01A", "read_file", '{"path":"a.py"}'),
                ),
            ),
            Message("user", (ToolResult("toolu_01A", (Text("print('hi')"),)), Text("Also, is it safe?"))),
        ),
        tools=(ToolDef("read_file", "Read a file", READ_FILE_SCHEMA),),
        max_output_tokens=16000,
        reasoning=ReasoningConfig("budget", budget_tokens=4000),
        source=Format.anthropic,
    )


def test_native_round_trip_keeps_thinking_and_is_deterministic() -> None:
    req = anthropic.decode_request(ANT_A)
    first = orjson.dumps(anthropic.encode_request(req))
    assert first == orjson.dumps(anthropic.encode_request(anthropic.decode_request(ANT_A)))
    assert orjson.loads(first) == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16000,
        "thinking": {"type": "enabled", "budget_tokens": 4000},
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What does a.py do?"}]},
            ANT_A["messages"][1],
            ANT_A["messages"][2],
        ],
        "tools": ANT_A["tools"],
    }


def test_system_blocks_keep_cache_control_and_unknown_fields_pass_through_natively() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "system": [
            {"type": "text", "text": "A", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "text", "text": "  "},
            {"type": "text", "text": "B"},
        ],
        "messages": [{"role": "user", "content": "hi"}],
        "service_tier": "auto",
        "temperature": 0.3,
        "metadata": {"user_id": "u1"},
    }
    assert anthropic.encode_request(anthropic.decode_request(body)) == {
        "model": "m",
        "max_tokens": 10,
        "system": [
            {"type": "text", "text": "A", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "text", "text": "B"},
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "temperature": 0.3,
        "metadata": {"user_id": "u1"},
        "service_tier": "auto",
    }


def test_mid_conversation_system_is_kept_for_native_clients_even_last() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Be terse now."},
        ],
    }
    assert anthropic.encode_request(anthropic.decode_request(body))["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "system", "content": [{"type": "text", "text": "Be terse now."}]},
    ]


def test_mid_conversation_system_from_another_format_folds_into_user_turns() -> None:
    req = Request(
        model="m",
        messages=(
            Message("system", (Text("Lead."),)),
            Message("user", (Text("one"),)),
            Message("assistant", (Text("ok"),)),
            Message("system", (Text("Mid."),)),
            Message("user", (Text("two"),)),
            Message("system", (Text("Last."),)),
        ),
        source=Format.chat,
    )
    body = anthropic.encode_request(req)
    assert body["system"] == [{"type": "text", "text": "Lead.", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>\nMid.\n</system-reminder>"},
                {"type": "text", "text": "two"},
                {
                    "type": "text",
                    "text": "<system-reminder>\nLast.\n</system-reminder>",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        },
    ]


def test_images_base64_url_and_rejected_media_type() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    {"type": "text", "text": "what?"},
                ],
            }
        ],
    }
    req = anthropic.decode_request(body)
    assert req.messages[0].parts[:2] == (
        Image(Base64Source("image/png", "iVBO")),
        Image(UrlSource("https://x/y.png")),
    )
    assert anthropic.encode_request(req)["messages"] == body["messages"]
    svg = Request("m", (Message("user", (Image(Base64Source("image/svg+xml", "PHN2")),)),))
    with pytest.raises(InvalidRequest, match=r"^image type 'image/svg\+xml' is not accepted by Anthropic"):
        anthropic.encode_request(svg)


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("none"), None, {"type": "none"}),
        (ToolChoice("required"), None, {"type": "any"}),
        (
            ToolChoice("tool", name="t"),
            False,
            {"type": "tool", "name": "t", "disable_parallel_tool_use": True},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice_mapping(
    choice: ToolChoice | None, parallel: bool | None, expected: dict[str, Any]
) -> None:
    req = Request(
        "m",
        (Message("user", (Text("hi"),)),),
        tools=(ToolDef("t"),),
        tool_choice=choice,
        parallel_tool_calls=parallel,
        source=Format.anthropic,
    )
    body = anthropic.encode_request(req)
    assert body["tool_choice"] == expected
    assert body["tools"] == [{"name": "t", "input_schema": {"type": "object", "properties": {}}}]
    assert anthropic.decode_request(body).tool_choice == (choice or ToolChoice("auto"))


def test_effort_maps_to_budget_and_forced_tool_is_downgraded_with_thinking() -> None:
    req = Request(
        "m",
        (Message("user", (Text("hi"),)),),
        tools=(ToolDef("t"),),
        tool_choice=ToolChoice("required"),
        reasoning=ReasoningConfig("effort", effort="high"),
        sampling=Sampling(temperature=0.2, top_p=0.9),
        source=Format.chat,
    )
    body = anthropic.encode_request(req)
    assert (body["max_tokens"], body["thinking"], body["tool_choice"]) == (
        32000,
        {"type": "enabled", "budget_tokens": 16384},
        {"type": "auto"},
    )
    assert "temperature" not in body and "top_p" not in body  # never with 2026-10-21 (§1.3)


def test_budget_not_below_max_tokens() -> None:
    req = Request("m", (Message("user", (Text("hi"),)),), reasoning=ReasoningConfig("effort", effort="xhigh"))
    assert (anthropic.encode_request(req)["max_tokens"], anthropic.encode_request(req)["thinking"]) == (
        32000 + 4096,
        {"type": "enabled", "budget_tokens": 32000},
    )
    capped = Request(
        "m",
        (Message("user", (Text("hi"),)),),
        max_output_tokens=5000,
        reasoning=ReasoningConfig("budget", 8000),
    )
    assert anthropic.encode_request(capped)["thinking"] == {"type": "enabled", "budget_tokens": 4999}
    tiny = Request(
        "m",
        (Message("user", (Text("hi"),)),),
        max_output_tokens=500,
        reasoning=ReasoningConfig("budget", 8000),
    )
    assert "thinking" not in anthropic.encode_request(tiny)


def test_foreign_thinking_is_stripped_and_thinking_disabled_for_the_open_tool_cycle() -> None:
    """§7 case 19/20: no fabricated signature; the documented escape hatch instead."""
    gemini = envelope.seal(ReasoningState("gemini", "thought_signature", "EvwB", "gemini-3-pro"))
    body = {
        **ANT_A,
        "messages": [
            ANT_A["messages"][0],
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Read it first.", "signature": gemini},
                    {"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {"path": "a.py"}},
                ],
            },
            ANT_A["messages"][2],
        ],
    }
    out = anthropic.encode_request(anthropic.decode_request(body))
    assert "thinking" not in out
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {"path": "a.py"}}],
    }


def test_repair_pairs_results_and_drops_empty_text() -> None:
    """§6.1, §6.3: interrupted call answered first; orphan result becomes text; no empty blocks."""
    req = Request(
        "m",
        (
            Message("user", (Text(""), Text("go"))),
            Message("assistant", (Text(""), ToolCall("a", "t", ""), ToolCall("b", "t", "{bad"))),
            Message("user", (Text("stop"), ToolResult("b", (Text("B"),)), ToolResult("zzz", (Text("?"),)))),
        ),
        source=Format.anthropic,
    )
    assert anthropic.encode_request(req)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "go"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "a", "name": "t", "input": {}},
                {"type": "tool_use", "id": "b", "name": "t", "input": {"_raw_arguments": "{bad"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "a",
                    "content": "Tool call was interrupted; no result.",
                    "is_error": True,
                },
                {"type": "tool_result", "tool_use_id": "b", "content": "B"},
                {"type": "text", "text": "stop"},
                {"type": "text", "text": "[tool result for zzz]: ?"},
            ],
        },
    ]


def test_empty_last_user_turn_is_a_named_client_error() -> None:
    req = Request(
        "m",
        (Message("user", (Text("hi"),)), Message("assistant", (Text("yo"),)), Message("user", (Text(" "),))),
    )
    with pytest.raises(InvalidRequest, match=r"^messages: the last user turn is empty$"):
        anthropic.encode_request(req)


def test_cache_breakpoints_injected_for_other_clients_at_most_four() -> None:
    req = Request(
        "m",
        (
            Message("user", (Text("one"),)),
            Message("assistant", (Text("a"),)),
            Message("user", (Text("two"),)),
            Message("assistant", (Text("b"),)),
            Message("user", (Text("three"), Text("four"))),
        ),
        system=(Text("sys"),),
        tools=(ToolDef("t1"), ToolDef("t2")),
        source=Format.chat,
    )
    body = anthropic.encode_request(req)
    marked = [
        b.get("text") or b.get("name")
        for b in [*body["tools"], *body["system"], *(c for m in body["messages"] for c in m["content"])]
        if "cache_control" in b
    ]
    assert marked == ["t2", "sys", "two", "four"]


def test_decode_and_encode_response() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "text", "text": "Hi", "citations": None},
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"p": 1}},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 9,
            "output_tokens": 7,
        },
    }
    resp = anthropic.decode_response(body)
    assert resp == Response(
        id="msg_1",
        model="claude",
        parts=(
            Reasoning("hmm", ReasoningState("anthropic", "signature", "sig")),
            Reasoning("", ReasoningState("anthropic", "redacted", "xyz")),
            Text("Hi"),
            ToolCall("toolu_1", "Read", '{"p":1}'),
            Opaque(Format.anthropic, body["content"][4]),
        ),
        stop_reason=StopReason.tool_use,
        usage=Usage(input_tokens=5, output_tokens=7, cache_read_tokens=9, cache_write_tokens=2),
    )
    expected = {
        **body,
        "content": [*body["content"][:2], {"type": "text", "text": "Hi"}, *body["content"][3:]],
    }
    assert anthropic.encode_response(resp) == expected


@pytest.mark.parametrize(
    ("wire", "ir"),
    [
        ("end_turn", StopReason.end_turn),
        ("max_tokens", StopReason.max_tokens),
        ("stop_sequence", StopReason.stop_sequence),
        ("tool_use", StopReason.tool_use),
        ("pause_turn", StopReason.pause_turn),
        ("refusal", StopReason.refusal),
        ("model_context_window_exceeded", StopReason.context_exceeded),
    ],
)
def test_stop_reasons_round_trip(wire: str, ir: StopReason) -> None:
    body = {"id": "msg_1", "model": "m", "content": [], "stop_reason": wire, "usage": {}}
    assert anthropic.decode_response(body).stop_reason is ir
    assert anthropic.encode_response(anthropic.decode_response(body))["stop_reason"] == wire


# protocols.md §1.14 complete example
STREAM = b"".join(
    b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
    for name, payload in [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-6",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 25,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 9000,
                        "output_tokens": 1,
                    },
                },
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
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Need a.py."},
            },
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
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "text_delta", "text": "Reading é🎉."},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_01A", "name": "Read", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": '{"file_path": "a.'},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": 'py"}'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("future_event", {"type": "future_event"}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 61},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
)

STREAM_EVENTS = [
    Start("msg_01", "claude-sonnet-4-6", Usage(input_tokens=25, output_tokens=1, cache_read_tokens=9000)),
    BlockStart(0, "reasoning"),
    Delta(0, reasoning="Need a.py."),
    Delta(0, state=ReasoningState("anthropic", "signature", "EpYB")),
    BlockStop(0),
    BlockStart(1, "text"),
    KeepAlive(),
    Delta(1, text="Reading é🎉."),
    BlockStop(1),
    BlockStart(2, "tool_call", tool_id="toolu_01A", tool_name="Read"),
    Delta(2, args='{"file_path": "a.'),
    Delta(2, args='py"}'),
    BlockStop(2),
    Finish(StopReason.tool_use, None, Usage(input_tokens=25, output_tokens=61, cache_read_tokens=9000)),
]


def test_stream_decoder_at_every_split() -> None:
    assert assert_split_invariant(anthropic.StreamDecoder, STREAM) == STREAM_EVENTS


def test_stream_decoder_sets_finish() -> None:
    decoder = anthropic.StreamDecoder()
    decoder.feed(STREAM)
    assert decoder.finish == STREAM_EVENTS[-1]


def test_stream_truncated_before_message_stop_raises() -> None:
    cut = STREAM[: STREAM.index(b"event: message_delta")]
    with pytest.raises(StreamTruncated, match=r"^anthropic: stream ended before message_stop$"):
        assert_split_invariant(anthropic.StreamDecoder, cut)


def test_stream_error_event_ends_the_stream() -> None:
    data = STREAM[: STREAM.index(b"event: content_block_start")] + (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert assert_split_invariant(anthropic.StreamDecoder, data) == [
        STREAM_EVENTS[0],
        Error("overloaded", "Overloaded", 529),
    ]


def test_native_stream_re_encodes_to_the_same_grammar_and_content() -> None:
    encoder = anthropic.StreamEncoder(model="claude-sonnet-4-6", response_id="msg_01")
    out = b"".join(map(encoder.encode, STREAM_EVENTS)) + encoder.close()
    events = assert_ant_grammar(out)
    upstream = [(n, p) for n, p in assert_ant_grammar_source()]
    assert [p for _, p in events] == [p for _, p in upstream]


def assert_ant_grammar_source() -> list[tuple[str | None, dict[str, Any]]]:
    """The upstream example minus what the IR drops: the empty first fragment and the unknown event,
    with message_delta usage made cumulative, and the ping in between blocks."""
    from tests.unit.wire.grammar import ant_events

    events = [
        e
        for e in ant_events(STREAM)
        if e[0] != "future_event" and e[1].get("delta", {}).get("partial_json", None) != ""
    ]
    events[-2][1]["usage"] = {
        "input_tokens": 25,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 9000,
        "output_tokens": 61,
    }
    ping = events.pop(6)
    events.insert(5, ping)  # the encoder opens text lazily, so the ping precedes the block start
    return events


def test_stream_encoder_never_opens_empty_text_and_seals_foreign_state() -> None:
    state = ReasoningState("chat", "plaintext", model="deepseek")
    events = [
        Start("x", "m"),
        BlockStart(0, "text"),
        BlockStop(0),
        BlockStart(1, "reasoning"),
        Delta(1, reasoning="think"),
        Delta(1, state=state),
        BlockStop(1),
        Finish(StopReason.end_turn),
    ]
    encoder = anthropic.StreamEncoder(model="claude", response_id="abc")
    out = assert_ant_grammar(b"".join(map(encoder.encode, events)))
    assert [p for _, p in out] == [
        {
            "type": "message_start",
            "message": {
                "id": "msg_abc",
                "type": "message",
                "role": "assistant",
                "model": "claude",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 0,
                },
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "think"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": envelope.seal(state)},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        },
        {"type": "message_stop"},
    ]


def test_stream_encoder_error_mid_stream_has_no_message_stop() -> None:
    encoder = anthropic.StreamEncoder(model="claude", response_id="msg_1")
    out = b"".join(
        map(
            encoder.encode,
            [Start("x", "m"), BlockStart(0, "text"), Delta(0, text="hi"), Error("server", "boom", 502)],
        )
    )
    out += encoder.encode(Finish(StopReason.end_turn)) + encoder.close()
    names = [n for n, _ in assert_ant_grammar(out)]
    assert names == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert out.endswith(
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"boom"}}\n\n'
    )


def test_custom_tool_input_is_wrapped_as_json_string() -> None:
    encoder = anthropic.StreamEncoder(model="c", response_id="msg_1")
    events = [
        Start("x", "m"),
        BlockStart(0, "tool_call", tool_id="call_1", tool_name="apply_patch", tool_kind="custom"),
        Delta(0, args='*** Begin "Patch"\n'),
        Delta(0, args="*** End Patch"),
        BlockStop(0),
        Finish(StopReason.tool_use),
    ]
    out = assert_ant_grammar(b"".join(map(encoder.encode, events)))
    parts = "".join(p["delta"]["partial_json"] for _, p in out if p["type"] == "content_block_delta")
    assert orjson.loads(parts) == {"input": '*** Begin "Patch"\n*** End Patch'}


def test_cache_mark_decoded_on_tools_and_results() -> None:
    body = {
        "model": "m",
        "max_tokens": 1,
        "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        "cache_control": {"type": "ephemeral"},
    }
    req = anthropic.decode_request(body)
    assert (req.tools[0].cache, req.messages[0].parts[0], req.cache) == (
        CacheMark(),
        Text("x", CacheMark()),
        CacheMark(),
    )
