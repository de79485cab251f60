"""Sending a request upstream and streaming the answer back: the I/O shell around the codecs.

``open_upstream`` sends and waits for the status line *and the first body chunk*, both under
the first-byte deadline: until that chunk exists nothing has reached the client, so any
failure is still a failover (DESIGN.md, "Failover"). After it, ``relay_*`` copy or convert
chunk by chunk; a failure there becomes a well-formed error event in the client's format.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import math
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from proxygate.call import Call
from proxygate.config import TimeoutSettings
from proxygate.errors import ConnectionLost, ResponseLimit, UpstreamError, UpstreamTimeout
from proxygate.wire.errors import stream_error_event
from proxygate.wire.sse import SSEError, encode_event
from proxygate.wire.usage import UsageSniffer

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


# An inflated piece is at most this big, so a small compressed chunk cannot balloon at once.
INFLATE_PIECE = 1024 * 1024


@dataclass(slots=True)
class Upstream:
    """An upstream response whose status, headers and first chunk have arrived.

    ``chunks`` yields the body decoded (an upstream that compresses although we asked for
    identity is inflated) and enforces two deadlines: ``idle_s`` between chunks, and
    ``deadline`` (``time.monotonic()``, from ``max_stream_s``) for the whole answer, which
    keep-alive pings cannot push back.
    """

    response: aiohttp.ClientResponse
    first_chunk: bytes
    inflater: zlib._Decompress | None = None
    deadline: float | None = None
    ran_past_deadline: bool = False
    "The answer was ended by ``max_stream_s``: our cap, not the account's fault."

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def has_ended(self) -> bool:
        """Every byte of the answer has been read: nothing more will come."""
        return not self.first_chunk and self.response.content.at_eof()

    async def chunks(self, idle_s: float) -> AsyncIterator[bytes]:
        first = self.first_chunk
        self.first_chunk = b""  # yielded once, even if a second reader starts over
        if first:
            if self.inflater is None:
                yield first
            else:
                for piece in self._inflate(first):
                    yield piece
        content = self.response.content
        deadline = self.deadline
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise self._too_long()
            # What is buffered already needs no idle deadline (a timer per chunk costs ~6 µs).
            chunk = content.read_nowait()
            if not chunk:
                if content.at_eof():
                    break
                wait_s = idle_s if deadline is None else min(idle_s, deadline - time.monotonic())
                try:
                    async with asyncio.timeout(wait_s):
                        chunk = await content.readany()
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise self._too_long() from None
                    raise
                if not chunk:
                    break
            if self.inflater is None:
                yield chunk
            else:
                for piece in self._inflate(chunk):
                    yield piece
        if self.inflater is not None:
            try:
                rest = self.inflater.flush()
            except zlib.error as exc:
                raise ConnectionLost(f"compressed upstream answer is corrupt: {exc}") from None
            if rest:
                yield rest

    def _inflate(self, data: bytes) -> list[bytes]:
        assert self.inflater is not None
        pieces: list[bytes] = []
        try:
            while data:
                pieces.append(self.inflater.decompress(data, INFLATE_PIECE))
                data = self.inflater.unconsumed_tail
        except zlib.error as exc:
            raise ConnectionLost(f"compressed upstream answer is corrupt: {exc}") from None
        return pieces

    def _too_long(self) -> ResponseLimit:
        self.ran_past_deadline = True
        return ResponseLimit("upstream answer ran past max_stream_s", status=504, error_class="timeout")

    async def read_all(self, idle_s: float, *, limit: int | None = None) -> bytes:
        """The whole body, or its first ``limit`` bytes (the rest is never buffered)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks(idle_s):
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        return b"".join(parts)[:limit]

    def close(self) -> None:
        self.response.close()


async def read_answer(upstream: Upstream, idle_s: float, max_bytes: int) -> bytes:
    """A whole non-streamed answer. Nothing has reached the client yet, so a cut or a silence
    is an ``UpstreamError`` to fail over on; passing ``max_bytes`` is a ``ResponseLimit``."""
    try:
        body = await upstream.read_all(idle_s, limit=max_bytes + 1)
    except TimeoutError:
        raise UpstreamTimeout(f"upstream silent for {idle_s:.0f}s mid-answer") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionLost(f"upstream answer cut: {type(exc).__name__}") from None
    if len(body) > max_bytes:
        raise ResponseLimit(f"upstream answer larger than {max_bytes // (1024 * 1024)} MB (max_response_mb)")
    return body


def _inflater(encoding: str) -> zlib._Decompress | None:
    """A decoder for a body we did not ask to be compressed (we send identity)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # zlib-wrapped, as RFC 9110 says
    raise ConnectionLost(f"upstream answered with content-encoding {encoding!r} although asked for identity")


@functools.cache
def _send_timeout(connect_s: float) -> aiohttp.ClientTimeout:
    """The upstream request's aiohttp timeout: connecting only. Reading is bounded by our own
    deadlines (first byte here, ``idle_s`` in ``Upstream.chunks``, which every read goes
    through), so aiohttp's ``sock_read`` would only re-arm a timer on every chunk received."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_s)


async def open_upstream(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    timeouts: TimeoutSettings,
) -> Upstream:
    """Send; return once the first body byte is in hand. Raises ``UpstreamError`` subclasses."""
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(timeouts.first_byte_s):
            response = await session.post(
                url, data=body, headers=headers, timeout=_send_timeout(timeouts.connect_s)
            )
            first = await response.content.readany()
        return Upstream(response, first, _inflater(response.headers.get("content-encoding", "")))
    except ConnectionLost:
        if response is not None:
            response.close()
        raise
    except TimeoutError:
        if response is not None:
            response.close()
        raise UpstreamTimeout(f"no answer within {timeouts.first_byte_s:.0f}s") from None
    except aiohttp.ClientConnectorError as exc:
        raise ConnectionLost(f"cannot connect: {exc.os_error or exc}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        if response is not None:
            response.close()
        raise ConnectionLost(f"connection failed: {type(exc).__name__}: {exc}") from exc


def retry_after_s(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """``retry-after-ms``, else ``retry-after`` as seconds or an HTTP date (RFC 9110 §10.2.3).

    Zero, negative, non-finite and past values count as absent (None): taken literally they
    would give no cooldown at all and keep the limited account first in line, so the broker's
    exponential cooldown applies instead.
    """
    ms = _positive(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _positive(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    left = when.timestamp() - now()
    return left if left > 0 else None


def _positive(value: str | None) -> float | None:
    try:
        number = float(value) if value else 0.0
    except ValueError:
        return None
    return number if 0 < number < math.inf else None


class StreamAnswer(web.StreamResponse):
    """A streamed answer whose status line and headers leave with its first bytes, in one
    write: aiohttp's StreamResponse sends them alone at ``prepare``, a syscall (and a wake-up
    of the client) more per stream. It is started only once the upstream's first chunk is in
    hand, so they wait for nothing; ``send_head`` sends them if that chunk gave nothing to send.

    Likewise its last bytes leave with the end of the stream: once the upstream has ended,
    ``hold_to_end`` keeps what is written until ``write_eof``, which nothing waits on then."""

    _send_headers_immediately = False
    _tail: list[bytes] | None = None

    def hold_to_end(self) -> None:
        if self._tail is None:
            self._tail = []

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._tail is not None:
            self._tail.append(bytes(data))
            return
        await super().write(data)

    async def write_eof(self, data: bytes = b"") -> None:
        if self._tail:
            data = b"".join((*self._tail, data))
        self._tail = None
        await super().write_eof(data)


async def start_response(
    request: web.Request, status: int, headers: dict[str, str], *, is_stream: bool
) -> StreamAnswer:
    if is_stream:  # the header itself: aiohttp's content_type setter parses and rebuilds it
        headers = {**headers, **SSE_HEADERS, "content-type": "text/event-stream"}
    out = StreamAnswer(status=status, headers=headers)
    await out.prepare(request)
    return out


async def send_head(out: web.StreamResponse, call: Call) -> None:
    """After the upstream's first chunk: the headers go now if no bytes took them along
    (a first event not complete yet, or held back by the output transform)."""
    if not call.first_byte_ms:
        await out.write(b"")  # with headers buffered, an empty write sends just them


async def send(out: web.StreamResponse, call: Call, data: bytes) -> None:
    """Write to the client: the first write stamps ``first_byte_ms``; the tap sees every chunk
    as the upstream's side wrote it, then the output transform (guardrails) rewrites it."""
    if call.output_tap is not None:
        call.output_tap(data)
    if call.output_transform is not None:
        data = call.output_transform.feed(data)
        if not data:
            return
    if not call.first_byte_ms:
        call.first_byte_ms = call.elapsed_ms
    await out.write(data)


async def end_output(out: web.StreamResponse, call: Call) -> None:
    """The stream's end: send what the output transform still holds back."""
    if call.output_transform is not None and (rest := call.output_transform.close()):
        await out.write(rest)


def answered(call: Call, body: bytes) -> bytes:
    """A whole (non-streamed) answer body about to be sent: stamp, tap and transform it."""
    call.first_byte_ms = call.elapsed_ms
    if call.output_tap is not None:
        call.output_tap(body)
    if call.output_transform is not None:
        body = call.output_transform.whole(body)
    return body


async def relay_bytes(
    upstream: Upstream,
    out: StreamAnswer,
    call: Call,
    sniffer: UsageSniffer,
    idle_s: float,
    *,
    strip_usage_chunk: bool = False,
) -> None:
    """The fast path: copy upstream bytes untouched, sniffing usage on the side.

    Bytes go out up to the last complete event; an unfinished event waits for its end, so a
    stream cut mid-event ends with the error event after a whole one, never glued to half
    of one (which would make the client's parser fail on broken JSON instead).

    ``strip_usage_chunk``: we added ``stream_options.include_usage`` to a Chat request whose
    client did not ask for it (issue #3, documented exception), so the usage-only chunk
    (``choices: []``) is kept from the client; every other event is re-framed verbatim.
    """
    held: list[bytes] = []  # the unfinished last event, joined once its end arrives
    held_tail = b""  # its last bytes: a blank line may begin there
    head_sent = False
    try:
        async for chunk in upstream.chunks(idle_s):
            if upstream.has_ended:  # what is left to write leaves with the stream's end
                out.hold_to_end()
            events = sniffer.feed(chunk)
            if strip_usage_chunk:
                for event in events:
                    if not _is_usage_only_chunk(event.data):
                        await send(out, call, encode_event(event.data.encode()))
            elif held and not event_boundary(held_tail + chunk):
                held.append(chunk)
                held_tail = (held_tail + chunk[-3:])[-3:]
            else:
                data = b"".join((*held, chunk)) if held else chunk
                end = event_boundary(data)
                if end < len(data):
                    rest = data[end:]
                    held, held_tail = [rest], rest[-3:]
                else:
                    held, held_tail = [], b""
                if end:
                    await send(out, call, data[:end] if end < len(data) else data)
            if not head_sent:
                head_sent = True
                await send_head(out, call)
        for event in sniffer.close():
            if strip_usage_chunk:
                await send(out, call, encode_event(event.data.encode()))
        if held and (sniffer.is_complete or not sniffer.is_stream):
            await send(out, call, b"".join(held))  # a last event without its blank line
        await end_output(out, call)
    except aiohttp.ClientConnectionResetError:
        client_gone(call)
        return
    except UpstreamError as exc:  # max_stream_s, a corrupt compressed body
        await fail_stream(out, call, exc)
        return
    except SSEError as exc:  # an event over the 16 MiB cap: the stream cannot go on
        await fail_stream(out, call, ConnectionLost(f"upstream stream broken: {exc}"))
        return
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        await fail_stream(out, call, _broken(exc, idle_s))
        return
    finally:
        # Also when the client left (cancelled): message_start already told the input tokens.
        call.usage = sniffer.usage
    if sniffer.is_stream and not sniffer.is_complete:
        await fail_stream(out, call, ConnectionLost("upstream stream ended before its final event"))
    elif sniffer.error:
        call.error_class, call.error = "server", f"upstream: {sniffer.error}"


def event_boundary(data: bytes) -> int:
    """Where the last complete SSE event in ``data`` ends (0: none): after a blank line, i.e.
    two line ends in a row, each ``\r\n``, ``\n`` or ``\r`` (protocols.md §5.14.1)."""
    if data.endswith(b"\n\n"):  # nearly every chunk: upstreams write whole events
        return len(data)
    end = 0
    for blank in (b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r"):
        at = data.rfind(blank)
        if at >= 0:
            end = max(end, at + len(blank))
    return end


def client_gone(call: Call) -> None:
    """The client left while we wrote to it (aiohttp raises ClientConnectionResetError only for
    writes to a closing transport): its doing, not the provider's, so no cooldown follows."""
    call.status, call.error_class, call.error = 499, "cancelled", "client disconnected"


def _is_usage_only_chunk(data: str) -> bool:
    if '"usage"' not in data:
        return False
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(chunk, dict) and chunk.get("choices") == [] and bool(chunk.get("usage"))


def _broken(exc: BaseException, idle_s: float) -> UpstreamError:
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"upstream silent for {idle_s:.0f}s mid-stream")
    return ConnectionLost(f"upstream connection lost mid-stream: {type(exc).__name__}")


async def fail_stream(out: web.StreamResponse, call: Call, error: UpstreamError) -> None:
    """End a started stream with the client format's error event (protocols.md §5.12)."""
    call.error_class, call.error = error.error_class, error.message
    text = error.message
    held = b""
    if call.output_transform is not None:
        # The text held back in case it starts a replacement goes out first, restored, and so
        # does any replacement the upstream's words in the message quote.
        held, text = call.output_transform.close(), call.output_transform.text(text)
    message = f"proxygate: {text} (request {call.request_id})"
    event = stream_error_event(call.fmt, error.error_class, message, status=error.status)
    with contextlib.suppress(ConnectionResetError, RuntimeError):  # the client may be gone too
        await out.write(held + event)
