"""Fast-path usage sniffing: the same usage and completeness however the stream is split."""

from __future__ import annotations

import orjson
import pytest

from proxygate.wire import anthropic_blocks, chat_stream, gemini_parts, responses_items
from proxygate.wire.ir import Format, Usage
from proxygate.wire.usage import (
    MAX_TOKEN_COUNT,
    UsageSniffer,
    anthropic_usage,
    chat_usage,
    gemini_usage,
    responses_usage,
    token_count,
)
from tests.upstream import anthropic_message, anthropic_sse, chat_completion, chat_sse, responses_sse


def sniff(
    fmt: Format, pieces: list[bytes], *, is_stream: bool = True, needs_events: bool = True
) -> tuple[Usage, bool, str]:
    sniffer = UsageSniffer(fmt, is_stream=is_stream, needs_events=needs_events)
    for piece in pieces:
        sniffer.feed(piece)
    sniffer.close()
    return sniffer.usage, sniffer.is_complete, sniffer.error


def gemini_sse() -> bytes:
    chunks = [
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "po"}]}}],
            "usageMetadata": {"promptTokenCount": 40, "cachedContentTokenCount": 30},
        },
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "ng"}]}, "finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 40,
                "cachedContentTokenCount": 30,
                "candidatesTokenCount": 2,
                "thoughtsTokenCount": 7,
            },
        },
    ]
    return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)


CASES = [
    (Format.anthropic, anthropic_sse("héllo ✓"), Usage(11, 3, 5, 2)),
    (Format.chat, chat_sse("héllo"), Usage(12, 4, 8)),
    (Format.responses, responses_sse("hi"), Usage(20, 5, 10)),
    (Format.gemini, gemini_sse(), Usage(10, 9, 30, 0, 7)),
]


# needs_events=False is the byte relay's sparse mode: only marked events are parsed.
EVENTS = pytest.mark.parametrize("needs_events", [True, False], ids=["all-events", "sparse"])


@EVENTS
@pytest.mark.parametrize(("fmt", "payload", "usage"), CASES, ids=[c[0].value for c in CASES])
def test_usage_is_the_same_at_every_split(
    fmt: Format, payload: bytes, usage: Usage, needs_events: bool
) -> None:
    assert sniff(fmt, [payload], needs_events=needs_events) == (usage, True, "")
    for i in range(1, len(payload)):
        pieces = [payload[:i], payload[i:]]
        assert sniff(fmt, pieces, needs_events=needs_events) == (usage, True, ""), f"split at {i}"
    pieces = [payload[i : i + 1] for i in range(len(payload))]
    assert sniff(fmt, pieces, needs_events=needs_events) == (usage, True, "")


@EVENTS
def test_a_stream_cut_before_its_terminator_is_incomplete(needs_events: bool) -> None:
    cut = [anthropic_sse("x", stop=False)]
    assert sniff(Format.anthropic, cut, needs_events=needs_events) == (Usage(11, 3, 5, 2), False, "")
    cut = [chat_sse("x").replace(b"data: [DONE]\n\n", b"")]
    assert sniff(Format.chat, cut, needs_events=needs_events)[1] is False


@EVENTS
def test_in_stream_errors_are_noticed(needs_events: bool) -> None:
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert sniff(Format.anthropic, [error], needs_events=needs_events) == (Usage(), False, "Overloaded")


@EVENTS
def test_an_error_that_ends_a_stream_mid_answer_is_noticed(needs_events: bool) -> None:
    """Anthropic's ``error`` ends the stream: in one chunk after text that mentions errors, or
    alone in the next chunk, it is read (sparse mode looks at each chunk's last event only)."""
    error = b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"boom"}}\n\n'
    head = anthropic_sse("an error event: error here", stop=False).split(b"event: message_delta")[0]
    expected = (Usage(11, 1, 5, 2), False, "boom")
    assert sniff(Format.anthropic, [head + error], needs_events=needs_events) == expected
    assert sniff(Format.anthropic, [head, error], needs_events=needs_events) == expected
    assert sniff(Format.anthropic, [head + error[:20], error[20:]], needs_events=needs_events) == expected


def test_sparse_mode_ignores_markers_inside_text_deltas() -> None:
    payload = anthropic_sse("error [DONE] message_stop")
    assert sniff(Format.anthropic, [payload], needs_events=False) == sniff(Format.anthropic, [payload])


def test_json_bodies() -> None:
    assert sniff(Format.anthropic, [orjson.dumps(anthropic_message())], is_stream=False) == (
        Usage(11, 3, 5, 2),
        True,
        "",
    )
    body = orjson.dumps(chat_completion())
    assert sniff(Format.chat, [body[:10], body[10:]], is_stream=False) == (Usage(12, 4, 8), True, "")


@EVENTS
@pytest.mark.parametrize(("fmt", "payload", "usage"), CASES, ids=[c[0].value for c in CASES])
@pytest.mark.parametrize("size", [2, 3, 5, 7, 64])
def test_usage_is_the_same_in_reads_of_any_size(
    fmt: Format, payload: bytes, usage: Usage, needs_events: bool, size: int
) -> None:
    """An unfinished event held over many reads (sparse mode joins its parts once at its end)."""
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    assert sniff(fmt, pieces, needs_events=needs_events) == (usage, True, "")


@EVENTS
def test_an_event_over_16_mib_in_many_reads_is_refused(needs_events: bool) -> None:
    from proxygate.wire.sse import MAX_EVENT_BYTES, SSEError

    sniffer = UsageSniffer(Format.anthropic, is_stream=True, needs_events=needs_events)
    sniffer.feed(b'event: content_block_delta\ndata: {"text":"')
    with pytest.raises(SSEError, match=rf"^SSE event larger than {MAX_EVENT_BYTES} bytes$"):
        for _ in range(17 * 16):
            sniffer.feed(b"x" * 65536)


@EVENTS
def test_event_names_without_the_space_and_events_of_other_shapes_are_read(needs_events: bool) -> None:
    # "event:name" (no space), an id line and a comment inside marked events: the sparse mode's
    # plain reading does not fit them and hands them to the parser.
    payload = (
        anthropic_sse("a message_ about an error")
        .replace(b"event: ", b"event:")
        .replace(b"event:message_delta\n", b"event:message_delta\nid: 7\n: keep-alive\n")
    )
    assert sniff(Format.anthropic, [payload], needs_events=needs_events) == (Usage(11, 3, 5, 2), True, "")
    # JSON over two data lines (joined with a newline): not the plain shape read from bytes.
    two_lines = anthropic_sse("x").replace(b'data: {"type":"message_', b'data: {"type":\ndata: "message_')
    assert two_lines.count(b'data: "message_') == 3
    assert sniff(Format.anthropic, [two_lines], needs_events=needs_events) == (Usage(11, 3, 5, 2), True, "")
    error = b'event:error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Busy"}}\n\n'
    assert sniff(Format.anthropic, [error], needs_events=needs_events) == (Usage(), False, "Busy")


def _event(name: str, data: dict[str, object]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _delta(output_tokens: int, **usage: int) -> bytes:
    return _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": output_tokens, **usage},
        },
    )


@EVENTS
def test_a_whole_answer_in_one_read_in_another_order(needs_events: bool) -> None:
    """A buffered upstream's answer in one read, as third-party Anthropic-compatible APIs send
    it: a ping first, message_delta before the block ends, two deltas (cumulative usage: the
    last one counts, and it may carry the input tokens that message_start left at 0)."""
    start, *middle = anthropic_sse("héllo", stop=False).split(b"event: message_delta")[0].split(b"\n\n")[:-1]
    payload = (
        _event("ping", {"type": "ping"})
        + start.replace(b'"input_tokens":11', b'"input_tokens":0')
        + b"\n\n"
        + b"".join(m + b"\n\n" for m in middle[:-1])
        + _delta(2)
        + _delta(9, input_tokens=40)
        + middle[-1]  # content_block_stop
        + b"\n\n"
        + _event("message_stop", {"type": "message_stop"})
    )
    assert b"content_block_stop" in middle[-1]
    assert sniff(Format.anthropic, [payload], needs_events=needs_events) == (Usage(40, 9, 5, 2), True, "")
    half = len(payload) // 2
    assert sniff(Format.anthropic, [payload[:half], payload[half:]], needs_events=needs_events) == (
        Usage(40, 9, 5, 2),
        True,
        "",
    )


@EVENTS
def test_event_lines_quoted_in_text_are_not_events(needs_events: bool) -> None:
    """Model text quoting an SSE stream (a coding agent writing SSE code) is JSON: its line
    ends are escaped, so no "event: message_delta" in it starts a line."""
    quoted = "event: message_delta\ndata: {}\n\nevent: message_stop\n"
    payload = anthropic_sse(quoted, stop=False).replace(
        b"event: message_delta\n", b"event: content_block_delta\n", 1
    )
    payload = payload.replace(
        b'"text":"e"', b'"text":' + orjson.dumps("see event: message_delta " + quoted), 1
    )
    assert b"event: message_delta" in payload.split(b"\n\n")[3]
    # No message_delta nor message_stop event: those in the text do not count.
    assert sniff(Format.anthropic, [payload], needs_events=needs_events) == (Usage(11, 1, 5, 2), False, "")


ABSURD_COUNTS = [-1, 2**64 - 1, MAX_TOKEN_COUNT + 1, "12", 1.5, True, [3]]


@pytest.mark.parametrize("value", ABSURD_COUNTS, ids=repr)
def test_an_absurd_count_reads_as_zero_in_every_decoder(value: object) -> None:
    """Usage is summed into 64-bit integers in the store: a count out of range, negative or not
    an integer must not reach it, from the byte relay's sniffer or from a converting codec."""
    ant = {
        "input_tokens": value,
        "output_tokens": 3,
        "cache_read_input_tokens": value,
        "cache_creation_input_tokens": value,
        "cache_creation": {"ephemeral_1h_input_tokens": value},
        "output_tokens_details": {"thinking_tokens": value},
    }
    chat = {
        "prompt_tokens": value,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": value, "cache_write_tokens": value},
        "completion_tokens_details": {"reasoning_tokens": value},
    }
    resp = {
        "input_tokens": value,
        "output_tokens": 3,
        "input_tokens_details": {"cached_tokens": value, "cache_write_tokens": value},
        "output_tokens_details": {"reasoning_tokens": value},
    }
    gem = {
        "promptTokenCount": value,
        "candidatesTokenCount": 3,
        "cachedContentTokenCount": value,
        "thoughtsTokenCount": value,
        "toolUsePromptTokenCount": value,
    }
    three_out = Usage(0, 3)
    assert [anthropic_usage(ant), anthropic_blocks.decode_usage(ant)] == [three_out] * 2
    assert [chat_usage(chat), chat_stream.decode_usage(chat)] == [three_out] * 2
    assert [responses_usage(resp), responses_items.decode_usage(resp)] == [three_out] * 2
    assert [gemini_usage(gem), gemini_parts.decode_usage(gem)] == [three_out] * 2


def test_the_largest_count_still_reads() -> None:
    assert token_count(MAX_TOKEN_COUNT) == MAX_TOKEN_COUNT
    assert anthropic_usage({"input_tokens": MAX_TOKEN_COUNT}) == Usage(MAX_TOKEN_COUNT)
