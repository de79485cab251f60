"""ANT ↔ CHAT conversion end to end through the IR (protocols.md §5, §7 cases 1-17, 45, Appendix A)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxygate.wire import anthropic, chat, envelope
from proxygate.wire.codecs import CODECS, convert_request
from proxygate.wire.ir import Error, Format, InvalidRequest, ReasoningState, StreamTruncated
from tests.unit.wire import test_anthropic as ant_fixtures
from tests.unit.wire import test_chat as chat_fixtures
from tests.unit.wire.appendix_a import ANT_A, CHAT_A, READ_FILE_SCHEMA
from tests.unit.wire.grammar import ant_events, assert_ant_grammar, assert_chat_grammar, chat_chunks
from tests.unit.wire.split import run


def ant_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    return convert_request(body, Format.anthropic, Format.chat, model="deepseek-v4-pro")


def chat_to_ant(body: dict[str, Any]) -> dict[str, Any]:
    return convert_request(body, Format.chat, Format.anthropic, model="claude-sonnet-4-6")


def test_registry_exposes_both_codecs() -> None:
    assert (CODECS[Format.anthropic].decode_request, CODECS[Format.chat].StreamEncoder) == (
        anthropic.decode_request,
        chat.StreamEncoder,
    )


def test_appendix_a_ant_to_chat() -> None:
    """Anthropic thinking is not plaintext reasoning: it never reaches a CHAT upstream (§5.7.2)."""
    out = ant_to_chat(ANT_A)
    assert out == {
        "model": "deepseek-v4-pro",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What does a.py do?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_01A",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path":"a.py"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "print('hi')"},
            {"role": "user", "content": "Also, is it safe?"},
        ],
        "tools": CHAT_A["tools"],
        "max_tokens": 16000,
        "reasoning_effort": "low",
        "prompt_cache_key": out["prompt_cache_key"],
    }


def test_appendix_a_chat_to_ant() -> None:
    """DeepSeek reasoning has no Anthropic signature: dropped, and thinking off for the open cycle."""
    assert chat_to_ant(CHAT_A) == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16000,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What does a.py do?", "cache_control": {"type": "ephemeral"}}
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {"path": "a.py"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "print('hi')"},
                    {"type": "text", "text": "Also, is it safe?", "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
        "tools": [
            {
                "name": "read_file",
                "description": "Read a file",
                "input_schema": READ_FILE_SCHEMA,
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "stream": True,
    }


def test_case_1_and_2_system_blocks_to_one_message_with_stable_cache_key() -> None:
    body = {
        "model": "claude",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Notes."},
        ],
        "messages": [{"role": "user", "content": "hi"}],
    }
    first, second = ant_to_chat(body), ant_to_chat(body)
    assert first == second
    assert first == {
        "model": "deepseek-v4-pro",
        "messages": [
            {"role": "system", "content": "You are Claude Code.\n\nNotes."},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 100,
        "prompt_cache_key": first["prompt_cache_key"],
    }


def test_case_3_tool_cycle_to_chat() -> None:
    body = {
        "model": "claude",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Reading both."},
                    {"type": "tool_use", "id": "toolu_A", "name": "Read", "input": {"file_path": "a.py"}},
                    {"type": "tool_use", "id": "toolu_B", "name": "Read", "input": {"file_path": "b.py"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_A", "content": "A"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_B",
                        "content": [{"type": "text", "text": "missing"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
    }
    assert ant_to_chat(body)["messages"] == [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "Reading both.",
            "tool_calls": [
                {
                    "id": "toolu_A",
                    "type": "function",
                    "function": {"name": "Read", "arguments": '{"file_path":"a.py"}'},
                },
                {
                    "id": "toolu_B",
                    "type": "function",
                    "function": {"name": "Read", "arguments": '{"file_path":"b.py"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_A", "content": "A"},
        {"role": "tool", "tool_call_id": "toolu_B", "content": "missing"},
        {"role": "user", "content": "and?"},
    ]


def test_case_5_6_8_chat_tool_cycle_bad_arguments_and_empty_text_to_ant() -> None:
    body = {
        "model": "gpt",
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": ""}},
                    {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{bad"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": ""},
            {"role": "tool", "tool_call_id": "call_2", "content": "two"},
            {"role": "user", "content": "thanks"},
        ],
    }
    out = chat_to_ant(body)
    assert "system" not in out
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "a", "input": {}},
                {"type": "tool_use", "id": "call_2", "name": "b", "input": {"_raw_arguments": "{bad"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "two"},
                {"type": "text", "text": "thanks", "cache_control": {"type": "ephemeral"}},
            ],
        },
    ]


def test_case_7_orphans_repaired_both_ways() -> None:
    body = {
        "model": "gpt",
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}}
                ],
            },
            {"role": "user", "content": "never mind"},
            {"role": "tool", "tool_call_id": "call_zz", "content": "stray"},
        ],
    }
    assert chat_to_ant(body)["messages"][2:] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_1",
                    "content": "Tool call was interrupted; no result.",
                    "is_error": True,
                },
                {"type": "text", "text": "never mind", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "[tool result for call_zz]: stray",
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        },
    ]
    round_trip = ant_to_chat(anthropic.encode_request(chat.decode_request(body)))
    assert round_trip["messages"][2:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "Tool call was interrupted; no result."},
        {"role": "user", "content": "never mind\n\n[tool result for call_zz]: stray"},
    ]


def test_case_9_empty_last_user_turn_is_a_client_error() -> None:
    body = {
        "model": "gpt",
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": ""},
        ],
    }
    with pytest.raises(InvalidRequest, match=r"^messages: the last user turn is empty$"):
        chat_to_ant(body)


def test_case_45_cache_prefix_determinism() -> None:
    """Turn N+1's upstream bytes start with turn N's history, modulo the moving marker."""
    turn_n = [*CHAT_A["messages"]]
    turn_n1 = [*turn_n, {"role": "assistant", "content": "Yes."}, {"role": "user", "content": "Thanks."}]

    def history(messages: list[dict[str, Any]]) -> list[bytes]:
        out = chat_to_ant({**CHAT_A, "messages": messages})
        for msg in out["messages"]:
            for block in msg["content"]:
                block.pop("cache_control", None)
        return [orjson.dumps(m) for m in out["messages"]]

    n, n1 = history(turn_n), history(turn_n1)
    assert n1[: len(n)] == n
    assert orjson.dumps(ant_to_chat(ANT_A)) == orjson.dumps(ant_to_chat(ANT_A))


# ------------------------------------------------------------------ streams


def relay(upstream: type, client: type, data: bytes, **kwargs: Any) -> bytes:
    """The relay's loop, fed byte by byte: upstream decoder → IR → client encoder."""
    decoder = upstream()
    encoder = client(model="client-model", response_id="r1", **kwargs)
    out = b""
    for i in range(len(data)):
        out += b"".join(map(encoder.encode, decoder.feed(data[i : i + 1])))
    out += b"".join(map(encoder.encode, decoder.close())) + encoder.close()
    return out


def test_case_10_text_stream_chat_to_ant_exact_bytes() -> None:
    data = chat_fixtures.sse(
        chat_fixtures.delta({"role": "assistant", "content": ""}),
        chat_fixtures.delta({"content": "Hello"}),
        chat_fixtures.delta({"content": ", world"}),
        chat_fixtures.delta({"content": "!"}),
        chat_fixtures.delta({}, "stop"),
        {"choices": [], "usage": chat_fixtures.USAGE},
    )
    out = relay(chat.StreamDecoder, anthropic.StreamEncoder, data)
    zero = {
        "input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
    }
    assert [p for _, p in assert_ant_grammar(out)] == [
        {
            "type": "message_start",
            "message": {
                "id": "msg_r1",
                "type": "message",
                "role": "assistant",
                "model": "client-model",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": zero,
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ", world"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 132,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 768,
                "output_tokens": 40,
            },
        },
        {"type": "message_stop"},
    ]


@pytest.mark.parametrize(
    "fragments",
    [
        pytest.param(
            [
                chat_fixtures.call(0, id="call_A", name="Read", args=""),
                chat_fixtures.call(0, args='{"file_path":'),
                chat_fixtures.call(0, args='"a.py"}'),
                chat_fixtures.call(1, id="call_B", name="Read", args=""),
                chat_fixtures.call(1, args='{"file_path":"b.py"}'),
            ],
            id="case-11-sequential",
        ),
        pytest.param(
            [
                chat_fixtures.call(0, id="call_A", name="Read", args='{"file_path":'),
                chat_fixtures.call(1, id="call_B", name="Read", args='{"file_path":'),
                chat_fixtures.call(0, id="call_A", args='"a.py"}'),
                chat_fixtures.call(1, id="call_B", args='"b.py"}'),
            ],
            id="case-12-interleaved",
        ),
    ],
)
def test_parallel_tool_streams_chat_to_ant(fragments: list[dict[str, Any]]) -> None:
    data = chat_fixtures.sse(*fragments, chat_fixtures.delta({}, "tool_calls"))
    events = assert_ant_grammar(relay(chat.StreamDecoder, anthropic.StreamEncoder, data))
    blocks: dict[int, dict[str, Any]] = {}
    for name, payload in events:
        if name == "content_block_start":
            blocks[payload["index"]] = {**payload["content_block"], "json": ""}
        elif name == "content_block_delta":
            blocks[payload["index"]]["json"] += payload["delta"]["partial_json"]
    assert [(b["id"], orjson.loads(b["json"])) for b in blocks.values()] == [
        ("call_A", {"file_path": "a.py"}),
        ("call_B", {"file_path": "b.py"}),
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_case_14_deepseek_reasoning_round_trips_through_an_anthropic_client() -> None:
    data = chat_fixtures.sse(
        chat_fixtures.delta({"role": "assistant", "reasoning_content": "Need the file."}),
        chat_fixtures.delta({"content": "Reading."}),
        chat_fixtures.call(0, id="call_A", name="read_file", args='{"path":"a.py"}'),
        chat_fixtures.delta({}, "tool_calls"),
    )
    events = assert_ant_grammar(relay(chat.StreamDecoder, anthropic.StreamEncoder, data))
    signature = next(
        p["delta"]["signature"] for _, p in events if p.get("delta", {}).get("type") == "signature_delta"
    )
    assert envelope.unseal(signature) == ReasoningState("chat", "plaintext", model="m")
    next_turn = {
        "model": "claude",
        "max_tokens": 1000,
        "messages": [
            {"role": "user", "content": "What does a.py do?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Need the file.", "signature": signature},
                    {"type": "text", "text": "Reading."},
                    {"type": "tool_use", "id": "call_A", "name": "read_file", "input": {"path": "a.py"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_A", "content": "print(1)"}],
            },
        ],
    }
    assert ant_to_chat(next_turn)["messages"][1] == {
        "role": "assistant",
        "content": "Reading.",
        "reasoning_content": "Need the file.",
        "tool_calls": [
            {
                "id": "call_A",
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path":"a.py"}'},
            }
        ],
    }
    # toward Anthropic the envelope is foreign: stripped, never sent as a signature
    assert chat_to_ant(ant_to_chat(next_turn))["messages"][1]["content"][0] == {
        "type": "text",
        "text": "Reading.",
    }


def test_case_15_eof_before_finish_becomes_an_error_event_via_the_relay_loop() -> None:
    data = chat_fixtures.sse(
        chat_fixtures.delta({"content": "a"}), chat_fixtures.delta({"content": "b"}), done=False
    )
    decoder, encoder = chat.StreamDecoder(), anthropic.StreamEncoder(model="c", response_id="msg_1")
    out = b"".join(map(encoder.encode, decoder.feed(data)))
    with pytest.raises(StreamTruncated) as info:
        decoder.close()
    exc = info.value
    out += encoder.encode(Error(exc.error_class, exc.message, exc.status))
    names = [n for n, _ in assert_ant_grammar(out)]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "error",
    ]


def test_case_16_ant_stream_to_chat_client() -> None:
    out = relay(anthropic.StreamDecoder, chat.StreamEncoder, ant_fixtures.STREAM)
    chunks = assert_chat_grammar(out)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-2]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Need a.py."},
        {"content": "Reading é🎉."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "Read", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"file_path": "a.'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'py"}'}}]},
        {},
    ]
    assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-2]["usage"] == {
        "prompt_tokens": 9025,
        "completion_tokens": 61,
        "total_tokens": 9086,
        "prompt_tokens_details": {"cached_tokens": 9000},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_case_17_ant_pings_then_error_to_chat() -> None:
    start = ant_fixtures.STREAM[: ant_fixtures.STREAM.index(b"event: content_block_start")]
    data = (
        start
        + b'event: ping\ndata: {"type":"ping"}\n\n'
        + (
            b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
        )
    )
    out = relay(anthropic.StreamDecoder, chat.StreamEncoder, data)
    assert out.split(b"\n\n")[1:] == [
        b": keep-alive",
        b'data: {"error":{"message":"Overloaded","type":"server_error","code":"server_error"}}',
        b"",
    ]


def test_stream_conversion_is_independent_of_read_sizes() -> None:
    whole_decoder = chat.StreamDecoder()
    data = chat_fixtures.sse(
        chat_fixtures.delta({"reasoning_content": "x"}),
        chat_fixtures.call(0, id="call_A", name="a", args='{"k":"é"}'),
        chat_fixtures.delta({}, "tool_calls"),
    )
    encoder = anthropic.StreamEncoder(model="client-model", response_id="r1")
    whole = b"".join(map(encoder.encode, run(whole_decoder, [data]))) + encoder.close()
    assert relay(chat.StreamDecoder, anthropic.StreamEncoder, data) == whole


def test_official_sdk_accumulators_read_converted_streams() -> None:
    """§7 cases 11/16 (SDK): the anthropic and openai stream accumulators judge our bytes."""
    from anthropic.lib.streaming._messages import accumulate_event
    from anthropic.types import RawMessageStreamEvent
    from openai.lib.streaming.chat._completions import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk
    from pydantic import TypeAdapter

    data = chat_fixtures.sse(
        chat_fixtures.delta({"role": "assistant", "reasoning_content": "Need the file."}),
        chat_fixtures.delta({"content": "Reading."}),
        chat_fixtures.call(0, id="call_A", name="read_file", args='{"path":'),
        chat_fixtures.call(1, id="call_B", name="read_file", args='{"path":"b"}'),
        chat_fixtures.call(0, args='"a"}'),
        chat_fixtures.delta({}, "tool_calls"),
        {"choices": [], "usage": chat_fixtures.USAGE},
    )
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    snapshot: Any = None
    buffers: dict[int, bytes] = {}
    for _, payload in ant_events(relay(chat.StreamDecoder, anthropic.StreamEncoder, data)):
        snapshot = accumulate_event(
            event=adapter.validate_python(payload), current_snapshot=snapshot, json_bufs=buffers
        )
    message = snapshot.model_dump(exclude_none=True)
    assert [
        (b["type"], b.get("input") or b.get("text") or b.get("thinking")) for b in message["content"]
    ] == [
        ("thinking", "Need the file."),
        ("text", "Reading."),
        ("tool_use", {"path": "a"}),
        ("tool_use", {"path": "b"}),
    ]
    assert (
        message["stop_reason"],
        message["usage"]["input_tokens"],
        message["usage"]["cache_read_input_tokens"],
    ) == (
        "tool_use",
        132,
        768,
    )

    state = ChatCompletionStreamState()
    for chunk in chat_chunks(relay(anthropic.StreamDecoder, chat.StreamEncoder, ant_fixtures.STREAM))[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    choice = state.get_final_completion().choices[0]
    assert (
        choice.finish_reason,
        choice.message.content,
        [(c.id, c.function.arguments) for c in choice.message.tool_calls or ()],
    ) == (
        "tool_calls",
        "Reading é🎉.",
        [("toolu_01A", '{"file_path": "a.py"}')],
    )
