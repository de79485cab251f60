"""The byte-level SSE parser, split at every byte (protocols.md §5.14.1, §6.11, §7 case 41)."""

from __future__ import annotations

from proxygate.wire.sse import SSEEvent, SSEParser, encode_event
from tests.unit.wire.split import assert_split_invariant


def test_crlf_comments_multiline_and_missing_space() -> None:
    data = (
        b": keep-alive\r\n\r\n"
        b'event: message_start\r\ndata: {"a":1}\r\n\r\n'
        b'data:{"no":"space"}\n\n'
        b"data: line one\ndata: line two\n\n"
        b": OPENROUTER PROCESSING\n\n"
        b"event: ping\rdata: {}\r\r"
    )
    assert assert_split_invariant(SSEParser, data) == [
        SSEEvent("message_start", '{"a":1}'),
        SSEEvent(None, '{"no":"space"}'),
        SSEEvent(None, "line one\nline two"),
        SSEEvent("ping", "{}"),
    ]


def test_unicode_line_separators_and_split_emoji_stay_inside_the_event() -> None:
    data = 'data: {"t":"a\u2028b\u2029c 🎉 é"}\n\n'.encode()
    assert assert_split_invariant(SSEParser, data) == [SSEEvent(None, '{"t":"a\u2028b\u2029c 🎉 é"}')]


def test_pending_event_with_data_is_flushed_at_eof_but_a_bare_event_line_is_not() -> None:
    assert assert_split_invariant(SSEParser, b"data: [DONE]") == [SSEEvent(None, "[DONE]")]
    assert assert_split_invariant(SSEParser, b"event: ping\n") == []


def test_encode_event_round_trips() -> None:
    data = encode_event(b'{"type":"ping"}', "ping") + encode_event(b'{"x":1}')
    assert data == b'event: ping\ndata: {"type":"ping"}\n\ndata: {"x":1}\n\n'
    assert assert_split_invariant(SSEParser, data) == [
        SSEEvent("ping", '{"type":"ping"}'),
        SSEEvent(None, '{"x":1}'),
    ]
