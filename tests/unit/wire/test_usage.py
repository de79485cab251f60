"""Fast-path usage sniffing: the same usage and completeness however the stream is split."""

from __future__ import annotations

import orjson
import pytest

from proxygate.wire.ir import Format, Usage
from proxygate.wire.usage import UsageSniffer
from tests.upstream import anthropic_message, anthropic_sse, chat_completion, chat_sse, responses_sse


def sniff(fmt: Format, pieces: list[bytes], *, is_stream: bool = True) -> tuple[Usage, bool, str]:
    sniffer = UsageSniffer(fmt, is_stream=is_stream)
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


@pytest.mark.parametrize(("fmt", "payload", "usage"), CASES, ids=[c[0].value for c in CASES])
def test_usage_is_the_same_at_every_split(fmt: Format, payload: bytes, usage: Usage) -> None:
    assert sniff(fmt, [payload]) == (usage, True, "")
    for i in range(1, len(payload)):
        assert sniff(fmt, [payload[:i], payload[i:]]) == (usage, True, ""), f"split at {i}"
    assert sniff(fmt, [payload[i : i + 1] for i in range(len(payload))]) == (usage, True, "")


def test_a_stream_cut_before_its_terminator_is_incomplete() -> None:
    assert sniff(Format.anthropic, [anthropic_sse("x", stop=False)]) == (Usage(11, 3, 5, 2), False, "")
    assert sniff(Format.chat, [chat_sse("x").replace(b"data: [DONE]\n\n", b"")])[1] is False


def test_in_stream_errors_are_noticed() -> None:
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert sniff(Format.anthropic, [error]) == (Usage(), False, "Overloaded")


def test_json_bodies() -> None:
    assert sniff(Format.anthropic, [orjson.dumps(anthropic_message())], is_stream=False) == (
        Usage(11, 3, 5, 2),
        True,
        "",
    )
    body = orjson.dumps(chat_completion())
    assert sniff(Format.chat, [body[:10], body[10:]], is_stream=False) == (Usage(12, 4, 8), True, "")
