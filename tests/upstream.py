"""A scripted upstream on 127.0.0.1 that can fail on purpose (aiohttp's fake_server idea).

Each test queues what the next requests get (``push``), in order; with nothing queued the
upstream answers a small valid response in the format the path implies. Every request is
recorded (method, path, query, headers, JSON body) so tests can assert what was sent.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

Script = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


def anthropic_message(
    text: str = "pong", *, model: str = "claude-test", usage: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "id": "msg_up_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 11,
            "output_tokens": 3,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 2,
        },
    }


def anthropic_sse(text: str = "pong", *, model: str = "claude-test", stop: bool = True) -> bytes:
    events = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **anthropic_message("", model=model),
                    "content": [],
                    "stop_reason": None,
                    "usage": {
                        "input_tokens": 11,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 5,
                        "cache_creation_input_tokens": 2,
                    },
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        *[
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}},
            )
            for c in text
        ],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 3},
            },
        ),
    ]
    if stop:
        events.append(("message_stop", {"type": "message_stop"}))
    return b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for n, d in events)


def chat_completion(text: str = "pong", *, model: str = "gpt-test") -> dict[str, Any]:
    return {
        "id": "chatcmpl-up1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 4,
            "total_tokens": 24,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
    }


def chat_sse(text: str = "pong", *, model: str = "gpt-test", usage: bool = True) -> bytes:
    base = {"id": "chatcmpl-up1", "object": "chat.completion.chunk", "created": 1, "model": model}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
    ]
    chunks += [
        {**base, "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}]} for c in text
    ]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 20,
                    "completion_tokens": 4,
                    "total_tokens": 24,
                    "prompt_tokens_details": {"cached_tokens": 8},
                },
            }
        )
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def responses_sse(text: str = "pong", *, model: str = "gpt-test") -> bytes:
    resp = {
        "id": "resp_up1",
        "object": "response",
        "status": "completed",
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": 30,
            "output_tokens": 5,
            "total_tokens": 35,
            "input_tokens_details": {"cached_tokens": 10},
        },
    }
    events = [
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": {**resp, "status": "in_progress", "output": []},
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": text,
        },
        {"type": "response.completed", "sequence_number": 2, "response": resp},
    ]
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


@dataclass
class ScriptedUpstream:
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)
    standing: dict[str, Script] = field(default_factory=dict)
    # How an account always answers once ``scripts`` ran out, by a piece of its credential (key or
    # bearer token): a banned account, one that is rate-limited, one that speaks from overage.

    def push(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw
        self.requests.append(
            Recorded(request.method, request.path, request.query_string, dict(request.headers), body)
        )
        if self.scripts:
            return await self.scripts.pop(0)(request)
        credential = request.headers.get("x-api-key", "") + request.headers.get("authorization", "")
        for piece, script in self.standing.items():
            if piece in credential:
                return await script(request)
        return await default_answer(request, body)


async def default_answer(request: web.Request, body: Any) -> web.StreamResponse:
    stream = isinstance(body, dict) and body.get("stream") is True
    path = request.path
    if path.endswith("/messages"):
        return sse(anthropic_sse())(request) if stream else json_reply(anthropic_message())(request)
    if path.endswith("/chat/completions"):
        return sse(chat_sse())(request) if stream else json_reply(chat_completion())(request)
    if path.endswith("/responses"):
        return sse(responses_sse())(request)
    return web.json_response({"error": "no route"}, status=404)


def json_reply(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Callable[[web.Request], web.Response]:
    def reply(request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
        )

    return reply


def sse(payload: bytes) -> Callable[[web.Request], web.Response]:
    def reply(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="text/event-stream")

    return reply


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Script:
    async def reply(request: web.Request) -> web.StreamResponse:
        return json_reply(
            body if body is not None else {"error": {"type": "x", "message": f"scripted {code}"}},
            code,
            headers,
        )(request)

    return reply


def ok_json(body: Any) -> Script:
    async def reply(request: web.Request) -> web.StreamResponse:
        return json_reply(body)(request)

    return reply


def ok_sse(payload: bytes) -> Script:
    async def reply(request: web.Request) -> web.StreamResponse:
        return sse(payload)(request)

    return reply


def cut_after(payload: bytes, n_bytes: int) -> Script:
    """Send the first ``n_bytes`` of an SSE payload, then reset the connection."""

    async def reply(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        await out.write(payload[:n_bytes])
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return out

    return reply


def reset_before_headers() -> Script:
    async def reply(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    return reply


def delayed(seconds: float, script: Script) -> Script:
    async def reply(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await script(request)

    return reply


def cut_json_after(body: bytes, n_bytes: int, *, chunked: bool = False) -> Script:
    """Announce the whole JSON body (its length, or chunked), send ``n_bytes`` of it, reset."""

    async def reply(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "application/json"})
        if chunked:
            out.enable_chunked_encoding()
        else:
            out.content_length = len(body)
        await out.prepare(request)
        await out.write(body[:n_bytes])
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return out

    return reply


def gzip_reply(body: bytes, content_type: str = "application/json", *, always: bool = True) -> Script:
    """Answer gzip-compressed: always (an upstream that ignores Accept-Encoding), or only when
    the request accepts gzip (as real providers do)."""

    async def reply(request: web.Request) -> web.StreamResponse:
        if not always and "gzip" not in request.headers.get("accept-encoding", ""):
            return web.Response(body=body, content_type=content_type)
        return web.Response(
            body=gzip.compress(body), headers={"content-encoding": "gzip", "content-type": content_type}
        )

    return reply


def pings_forever(head: bytes, ping: bytes = b"event: ping\ndata: {}\n\n", every_s: float = 0.05) -> Script:
    """Send ``head`` (e.g. message_start), then a keep-alive ping every ``every_s``, never ending."""

    async def reply(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        await out.write(head)
        while True:
            await asyncio.sleep(every_s)
            await out.write(ping)

    return reply


def hold_after(head: bytes, released: asyncio.Event | None = None) -> Script:
    """Send ``head``, then hold the stream open until cancelled (or ``released``)."""

    async def reply(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        await out.write(head)
        await (released.wait() if released is not None else asyncio.sleep(3600))
        return out

    return reply


def paced_events(payload: bytes, pause_s: float) -> Script:
    """Stream ``payload``'s SSE events one at a time, ``pause_s`` apart."""
    events = payload.split(b"\n\n")[:-1]

    async def reply(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        for event in events:
            await out.write(event + b"\n\n")
            await asyncio.sleep(pause_s)
        return out

    return reply


def streamed_body(
    parts: int, part: bytes, content_type: str = "application/json", head: bytes = b""
) -> Script:
    """``head`` then ``parts`` × ``part``, chunked: a body as large as wanted, never held whole."""

    async def reply(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": content_type})
        await out.prepare(request)
        if head:
            await out.write(head)
        for _ in range(parts):
            await out.write(part)
        await out.write_eof()
        return out

    return reply


def unified_headers(
    used_5h: float, *, status: str = "allowed", overage: str | None = None, claim: str = "five_hour"
) -> dict[str, str]:
    """A Claude subscription's rate-limit headers: the 5-hour window's utilisation (a fraction),
    its status, and optionally the overage state and representative claim."""
    headers = {
        "anthropic-ratelimit-unified-5h-utilization": f"{used_5h:.4f}",
        "anthropic-ratelimit-unified-5h-status": status,
        "anthropic-ratelimit-unified-5h-reset": "4102444800",
        "anthropic-ratelimit-unified-representative-claim": claim,
    }
    if overage is not None:
        headers["anthropic-ratelimit-unified-overage-status"] = overage
        headers["anthropic-ratelimit-unified-overage-in-use"] = "true" if status == "rejected" else "false"
    return headers


def answer_with_headers(
    headers: Callable[[], dict[str, str]], *, usage: dict[str, int] | None = None
) -> Script:
    """A Messages answer carrying ``headers()`` (called per request: a window that fills up)."""

    async def reply(request: web.Request) -> web.StreamResponse:
        return json_reply(anthropic_message(usage=usage), headers=headers())(request)

    return reply


def sdk_accounts(upstream_url: str) -> dict[str, dict[str, Any]]:
    """The SDK tests' pool: an Anthropic key and an OpenAI key, both served by the scripted upstream."""
    return {
        "ant": {"provider": "anthropic", "api_key": "sk-ant-upstream-0000", "base_url": upstream_url},
        # The mock stands in for api.openai.com, which speaks Responses and Chat.
        "oai": {
            "provider": "openai",
            "api_key": "sk-upstream-0000",
            "base_url": upstream_url + "/v1",
            "formats": ["responses", "chat"],
        },
    }
