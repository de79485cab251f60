"""A fast loopback mock of the Anthropic and Chat Completions APIs, for the benchmark only.

It is a bare ``asyncio.Protocol`` speaking just enough HTTP/1.1 (Content-Length bodies,
keep-alive, chunked answers) to answer in a few microseconds: the mock sits behind all
three targets (direct, baseline, proxygate), so the slower it is the more it hides the
difference between them. The path picks the format; the body picks the behaviour:

    "stream":true absent           canned JSON message (Anthropic or Chat) with usage
    "stream":true                  canned SSE of 200 text deltas, one write, Content-Length
    model contains "bench-paced"   20 chunks, one every 25 ms (chunked)
    model contains "bench-slow"    20 chunks, one every 250 ms (chunked)

    python bench/mock_upstream.py --port 18001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from workloads import (
    MODEL_ANTHROPIC,
    MODEL_CHAT,
    PACED_CHUNKS,
    PACED_INTERVAL_S,
    SLOW_CHUNKS,
    SLOW_INTERVAL_S,
    SSE_DELTAS,
    anthropic_message,
    anthropic_stream_events,
    chat_completion,
    chat_stream_events,
)

# Headers a real provider sends besides the body's own; proxygate copies them back.
_COMMON = (
    b"request-id: req_bench_0001\r\n"
    b"anthropic-ratelimit-requests-remaining: 3999\r\n"
    b"anthropic-ratelimit-tokens-remaining: 1999000\r\n"
    b"x-ratelimit-remaining-requests: 9999\r\n"
)


def _fixed(content_type: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\n" + _COMMON
    return head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


_CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    + _COMMON
    + b"transfer-encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _paced(events: list[bytes], chunks: int, *, head: int) -> list[bytes]:
    """Group a stream's events into ``chunks`` pieces: the ``head`` prelude events ride with the
    first delta, the three closing events with the last."""
    prelude, deltas, tail = events[:head], events[head:-3], events[-3:]
    assert len(deltas) == chunks, (len(deltas), chunks)
    pieces = list(deltas)
    pieces[0] = b"".join(prelude) + pieces[0]
    pieces[-1] = pieces[-1] + b"".join(tail)
    return pieces


class Answers:
    """Every response the mock can give, rendered once at start."""

    def __init__(self) -> None:
        self.json = {
            "anthropic": _fixed(b"application/json", anthropic_message(MODEL_ANTHROPIC)),
            "chat": _fixed(b"application/json", chat_completion(MODEL_CHAT)),
        }
        self.sse = {
            "anthropic": _fixed(
                b"text/event-stream", b"".join(anthropic_stream_events(MODEL_ANTHROPIC, SSE_DELTAS))
            ),
            "chat": _fixed(b"text/event-stream", b"".join(chat_stream_events(MODEL_CHAT, SSE_DELTAS))),
        }
        self.paced = {
            "anthropic": _paced(anthropic_stream_events(MODEL_ANTHROPIC, PACED_CHUNKS), PACED_CHUNKS, head=2),
            "chat": _paced(chat_stream_events(MODEL_CHAT, PACED_CHUNKS), PACED_CHUNKS, head=1),
        }
        self.slow = {
            "anthropic": _paced(anthropic_stream_events(MODEL_ANTHROPIC, SLOW_CHUNKS), SLOW_CHUNKS, head=2),
            "chat": _paced(chat_stream_events(MODEL_CHAT, SLOW_CHUNKS), SLOW_CHUNKS, head=1),
        }


class MockProtocol(asyncio.Protocol):
    def __init__(self, answers: Answers, tasks: set[asyncio.Task[None]]) -> None:
        self.answers = answers
        self.tasks = tasks
        self.buf = bytearray()
        self.head: tuple[bytes, int, int] | None = None  # (path, body start, body length)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = self._parse_head(bytes(self.buf[:end]), end + 4)
            path, start, length = self.head
            if len(self.buf) < start + length:
                return
            body = bytes(self.buf[start : start + length])
            del self.buf[: start + length]
            self.head = None
            self._respond(path, body)

    @staticmethod
    def _parse_head(head: bytes, start: int) -> tuple[bytes, int, int]:
        lines = head.split(b"\r\n")
        path = lines[0].split(b" ", 2)[1]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return path, start, length

    def _respond(self, path: bytes, body: bytes) -> None:
        assert self.transport is not None
        fmt = "chat" if b"/chat/completions" in path else "anthropic"
        if not body:  # GET: a liveness probe
            self.transport.write(_fixed(b"text/plain", b"ok"))
            return
        if b'"stream":true' not in body:
            self.transport.write(self.answers.json[fmt])
        elif b"bench-paced" in body:
            self._start(self.answers.paced[fmt], PACED_INTERVAL_S)
        elif b"bench-slow" in body:
            self._start(self.answers.slow[fmt], SLOW_INTERVAL_S)
        else:
            self.transport.write(self.answers.sse[fmt])

    def _start(self, pieces: list[bytes], interval_s: float) -> None:
        task = asyncio.get_running_loop().create_task(self._pace(pieces, interval_s))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _pace(self, pieces: list[bytes], interval_s: float) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(_CHUNKED_HEAD)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i, piece in enumerate(pieces, 1):
            await asyncio.sleep(max(t0 + i * interval_s - loop.time(), 0))  # no drift over 20 chunks
            if transport.is_closing():
                return
            transport.write(_chunk(piece))
        transport.write(b"0\r\n\r\n")


async def serve(host: str, port: int) -> None:
    answers = Answers()
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(answers, tasks), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
