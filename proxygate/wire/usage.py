"""Usage read on the side of the fast path, without re-encoding a single byte.

The relay forwards upstream bytes untouched and also feeds them here. Only the few events
that carry usage or end the stream are JSON-decoded (ANT ``message_start``/``message_delta``,
CHAT chunks mentioning ``usage``, RESP terminal events, GEM chunks with ``usageMetadata``);
every other event costs one line split. ``is_complete`` says whether the format's terminator
arrived: EOF before it is an upstream failure (protocols.md §5.14.1 rule 5).

The ``*_usage`` functions map each format's accounting onto ``ir.Usage`` (protocols.md §5.11):
ANT ``input_tokens`` already excludes cache reads/writes; OpenAI and Gemini prompt counts
include cached tokens, so those are subtracted.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxygate.wire.ir import Format, Usage
from proxygate.wire.sse import MAX_EVENT_BYTES, SSEError, SSEEvent, SSEParser

MAX_TOKEN_COUNT = 1_000_000_000
"""The most tokens one usage count may say (contexts hold ~10^6): beyond it, or below 0, the
count is a broken upstream's. Usage is summed into 64-bit integers in the store, where one
absurd count would poison its day's row and every later record that adds to it."""


def token_count(value: Any) -> int:
    """An upstream's usage count: a JSON integer within [0, MAX_TOKEN_COUNT], else 0 (absent,
    a string, a float, true/false, out of range)."""
    return value if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT else 0


def _int(d: Any, key: str) -> int:
    return token_count(d.get(key)) if isinstance(d, dict) else 0


def anthropic_usage(u: Any) -> Usage:
    if not isinstance(u, dict):
        return Usage()
    # On every stream's message_start and message_delta: one lookup each, token_count inlined.
    get, top = u.get, MAX_TOKEN_COUNT
    i, o = get("input_tokens"), get("output_tokens")
    r, w = get("cache_read_input_tokens"), get("cache_creation_input_tokens")
    creation = get("cache_creation")
    return Usage(
        i if type(i) is int and 0 <= i <= top else 0,
        o if type(o) is int and 0 <= o <= top else 0,
        r if type(r) is int and 0 <= r <= top else 0,
        w if type(w) is int and 0 <= w <= top else 0,
        0,
        # 1-hour cache writes cost more than 5-minute ones (proxygate/prices).
        _int(creation, "ephemeral_1h_input_tokens") if creation else 0,
    )


def chat_usage(u: Any) -> Usage:
    cached = _int(u.get("prompt_tokens_details"), "cached_tokens") if isinstance(u, dict) else 0
    reasoning = _int(u.get("completion_tokens_details"), "reasoning_tokens") if isinstance(u, dict) else 0
    # DeepSeek reports cache hits as prompt_cache_hit_tokens.
    cached = cached or _int(u, "prompt_cache_hit_tokens")
    return Usage(
        input_tokens=max(_int(u, "prompt_tokens") - cached, 0),
        output_tokens=_int(u, "completion_tokens"),
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


def responses_usage(u: Any) -> Usage:
    cached = _int(u.get("input_tokens_details"), "cached_tokens") if isinstance(u, dict) else 0
    reasoning = _int(u.get("output_tokens_details"), "reasoning_tokens") if isinstance(u, dict) else 0
    return Usage(
        input_tokens=max(_int(u, "input_tokens") - cached, 0),
        output_tokens=_int(u, "output_tokens"),
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


def gemini_usage(u: Any) -> Usage:
    cached = _int(u, "cachedContentTokenCount")
    thoughts = _int(u, "thoughtsTokenCount")
    return Usage(
        input_tokens=max(_int(u, "promptTokenCount") - cached, 0),
        # Gemini counts thoughts outside candidatesTokenCount; they are billed as output.
        output_tokens=_int(u, "candidatesTokenCount") + thoughts,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
    )


def usage_of_body(fmt: Format, body: Any) -> Usage:
    """Usage of a non-streaming response body (already parsed)."""
    if not isinstance(body, dict):
        return Usage()
    match fmt:
        case Format.anthropic:
            return anthropic_usage(body.get("usage"))
        case Format.chat:
            return chat_usage(body.get("usage"))
        case Format.responses:
            return responses_usage(body.get("usage"))
        case Format.gemini:
            return gemini_usage(body.get("usageMetadata"))


_RESP_TERMINAL = ("response.completed", "response.incomplete", "response.failed")

# Every event ``_event`` acts on holds one of these in its raw bytes (its ``event:`` line or its
# data), so with ``needs_events=False`` the others (the text deltas: nearly all of a stream) go
# unparsed. Where a marker may be:
_IN_DATA = 0
"anywhere in the event."
_NAME = 1
"""the event's name: right after ``event:`` or ``event: ``, so that model text saying "error"
(common in a coding agent's output) is not a hit; one search finds both spellings."""
_LAST_NAME = 2
"""the name of the last whole event of a chunk only: an event that ends the stream, so nothing
follows it. No pass over the chunk is spent on it (each pass costs ~0.5 µs a KB)."""
# A false hit only costs parsing that one event. Anthropic's ``message_*`` events are found
# by ``_scan_anthropic`` instead.
_MARKERS: dict[Format, tuple[tuple[bytes, int], ...]] = {
    # An Anthropic ``error`` event ends the stream (the messages API sends nothing after it).
    Format.anthropic: ((b"error", _LAST_NAME),),
    Format.chat: ((b"[DONE]", _IN_DATA), (b'"usage"', _IN_DATA), (b'{"error"', _IN_DATA)),
    Format.responses: (
        *((t.encode(), _IN_DATA) for t in _RESP_TERMINAL),
        (b"error", _NAME),
        (b'{"type":"error"', _IN_DATA),
    ),
    Format.gemini: ((b"usageMetadata", _IN_DATA), (b'{"error"', _IN_DATA)),
}


_ANT_START = b"event: message_start\ndata: "
_ANT_DELTA = b"event: message_delta\ndata: "
_ANT_DATA_AT = len(_ANT_START)  # == len(_ANT_DELTA)
_ANT_USAGE_EVENTS = ("message_start", "message_delta")


def _plain_event(span: bytes) -> SSEEvent | None:
    """A span of the usual shape, ``event: NAME\ndata: JSON\n\n`` or ``data: JSON\n\n``, read
    without the parser (a third of the sniffer's time went to it); None for any other shape."""
    lines = span.split(b"\n")
    if len(lines) == 4 and lines[0].startswith(b"event:") and lines[1].startswith(b"data:"):
        return SSEEvent(_field_value(lines[0], 6), _field_value(lines[1], 5))
    if len(lines) == 3 and lines[0].startswith(b"data:"):
        return SSEEvent(None, _field_value(lines[0], 5))
    return None


def _field_value(line: bytes, at: int) -> str:
    """What follows the field's colon, less one leading space (as ``SSEParser`` reads it)."""
    return (line[at + 1 :] if line[at : at + 1] == b" " else line[at:]).decode("utf-8", errors="replace")


class UsageSniffer:
    """Feed a response's bytes as they pass; read ``usage``, ``is_complete`` and ``error`` after."""

    __slots__ = (
        "_body",
        "_held",
        "_held_size",
        "_markers",
        "_parser",
        "_seen_message",
        "error",
        "fmt",
        "is_complete",
        "is_stream",
        "usage",
    )

    def __init__(self, fmt: Format, *, is_stream: bool, needs_events: bool = True) -> None:
        """``needs_events=False``: the caller ignores ``feed``'s events, so events that cannot
        carry usage or end the stream are skipped unparsed (the fast path's byte relay)."""
        self.fmt = fmt
        self.is_stream = is_stream
        self.usage = Usage()
        self.is_complete = False
        self.error = ""
        self._parser = SSEParser() if is_stream else None
        self._body: list[bytes] = []
        self._markers = _MARKERS[fmt] if is_stream and not needs_events else None
        self._held: list[bytes] = []
        self._held_size = 0
        self._seen_message = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Returns the complete SSE events seen in ``chunk`` (empty for JSON bodies and when
        constructed with ``needs_events=False``)."""
        if self._parser is None:
            self._body.append(chunk)
            return []
        if self._markers is not None:
            self._feed_sparse(chunk)
            return []
        events = self._parser.feed(chunk)
        for event in events:
            self._event(event)
        return events

    def close(self) -> list[SSEEvent]:
        if self._parser is None:
            try:
                body = orjson.loads(b"".join(self._body))
            except orjson.JSONDecodeError:
                return []
            self.usage = usage_of_body(self.fmt, body)
            self.is_complete = True
            return []
        tail = b"".join(self._held)
        self._held, self._held_size = [], 0
        events = self._parser.feed(tail) + self._parser.close() if tail else self._parser.close()
        for event in events:
            self._event(event)
        if self.fmt is Format.gemini and not self.error:
            self.is_complete = True  # GEM streams end at EOF (protocols.md §5.14.1 rule 5)
        return events

    def _feed_sparse(self, chunk: bytes) -> None:
        """Parse only the events holding a marker; ``_held`` keeps the unfinished last event.

        Events end at a blank line; while the stream uses bare ``\\n`` line ends that is
        ``\\n\\n``, found in C. The parts of an unfinished event are joined once its end
        arrives, so a megabyte event read 64 KiB at a time costs linear, not quadratic, time.
        At the first ``\\r`` the full parser takes over for good, starting clean at the event
        boundary kept in ``_held``.
        """
        assert self._parser is not None and self._markers is not None
        held = self._held
        if held:
            # Still unfinished unless a blank line is in the chunk or begins at the last held byte.
            if b"\r" not in chunk and b"\n\n" not in chunk and held[-1][-1:] + chunk[:1] != b"\n\n":
                held.append(chunk)
                self._held_size += len(chunk)
                if self._held_size > MAX_EVENT_BYTES:
                    raise SSEError(f"SSE event larger than {MAX_EVENT_BYTES} bytes")
                return
            held.append(chunk)
            buf = b"".join(held)
            self._held, self._held_size = [], 0
        else:
            buf = chunk
        if b"\r" in chunk:
            self._markers = None
            for event in self._parser.feed(buf):
                self._event(event)
            return
        end = buf.rfind(b"\n\n") + 2
        if end < 2:
            if len(buf) > MAX_EVENT_BYTES:
                raise SSEError(f"SSE event larger than {MAX_EVENT_BYTES} bytes")
            self._held, self._held_size = [buf], len(buf)
            return
        if end < len(buf):
            self._held, self._held_size = [buf[end:]], len(buf) - end
        if self.fmt is Format.anthropic:
            self._scan_anthropic(buf, end)
        # A whole pass over the chunk per marker is the cost here (~0.5 µs a KB each), so the
        # loop's own steps are kept few: an event-name test is two ``startswith`` in line.
        find, startswith = buf.find, buf.startswith
        spans: list[tuple[int, int]] = []
        for marker, where in self._markers:
            # The last whole event begins after the blank line before its own.
            pos = find(marker, buf.rfind(b"\n\n", 0, end - 2) + 2 if where == _LAST_NAME else 0, end)
            while pos >= 0:
                if where and not (
                    (pos >= 7 and startswith(b"event: ", pos - 7))
                    or (pos >= 6 and startswith(b"event:", pos - 6))
                ):
                    pos = find(marker, pos + 1, end)
                    continue
                prev = buf.rfind(b"\n\n", 0, pos)
                start = prev + 2 if prev >= 0 else 0
                stop = find(b"\n\n", pos, end) + 2
                spans.append((start, stop))
                pos = find(marker, stop, end)
        if len(spans) > 1:  # two markers in one event (a usage chunk that also says "error")
            spans = sorted(set(spans))
        for start, stop in spans:
            self._read_span(buf[start:stop])

    def _read_span(self, span: bytes) -> str:
        """Act on one whole event; returns its name ("" for none)."""
        plain = _plain_event(span)
        name = ""
        for event in [plain] if plain is not None else SSEParser().feed(span):
            self._event(event)
            name = event.event or ""
        return name

    def _scan_anthropic(self, buf: bytes, end: int) -> None:
        """The ``message_*`` events among the whole events ``buf[:end]``, without a pass over
        the text deltas between them when they share a chunk (a buffered upstream's whole
        answer): the stream's first one (``message_start``) searched from the front, the
        chunk's last ``message_stop`` and ``message_delta`` from the back. Earlier deltas in
        the same chunk add nothing: a delta's usage is cumulative (protocols.md §5.11)."""
        find, rfind = buf.find, buf.rfind
        floor = 0  # the back search stops where the front one ended
        if not self._seen_message:
            pos = find(b"message_", 0, end)
            while pos >= 0 and not _is_event_name(buf, pos):
                pos = find(b"message_", pos + 1, end)
            if pos < 0:
                return
            self._seen_message = True
            floor = find(b"\n\n", pos, end) + 2
            self._anthropic_event(buf, _event_start(buf, 0, pos), floor)
        pos = rfind(b"message_", floor, end)
        while pos >= 0:
            if _is_event_name(buf, pos):
                start = _event_start(buf, floor, pos)
                if self._anthropic_event(buf, start, find(b"\n\n", pos, end) + 2) in _ANT_USAGE_EVENTS:
                    return
                pos = rfind(b"message_", floor, start)
            else:
                pos = rfind(b"message_", floor, pos)

    def _anthropic_event(self, buf: bytes, start: int, stop: int) -> str:
        """The Anthropic event ``buf[start:stop]``; returns its name. The usual shape of a
        ``message_*`` event (``event: NAME\\ndata: JSON\\n\\n``) is read straight from the bytes,
        a third of the cost of the general path."""
        if buf.startswith(b"event: message_stop\n", start):
            self.is_complete = True
            return "message_stop"
        is_start = buf.startswith(_ANT_START, start)
        data_at = start + _ANT_DATA_AT
        if (is_start or buf.startswith(_ANT_DELTA, start)) and buf.find(b"\n", data_at, stop) == stop - 2:
            self._anthropic_usage(_load(buf[data_at : stop - 2]), is_start=is_start)
            return "message_start" if is_start else "message_delta"
        return self._read_span(buf[start:stop])

    def _anthropic_usage(self, payload: dict[str, Any], *, is_start: bool) -> None:
        """``message_start`` tells the input tokens, ``message_delta`` the output so far."""
        if is_start:
            message = payload.get("message")
            payload = message if isinstance(message, dict) else {}
        self.usage = self.usage.merge(anthropic_usage(payload.get("usage")))

    def _event(self, event: SSEEvent) -> None:
        data = event.data
        match self.fmt:
            case Format.anthropic:
                name = event.event or ""
                if name in ("message_start", "message_delta"):
                    self._anthropic_usage(_load(data), is_start=name == "message_start")
                elif name == "message_stop":
                    self.is_complete = True
                elif name == "error":
                    self.error = _error_message(_load(data))
            case Format.chat:
                if data == "[DONE]":
                    self.is_complete = True
                elif '"usage"' in data or data.startswith('{"error"'):
                    chunk = _load(data)
                    if chunk.get("usage"):
                        self.usage = chat_usage(chunk["usage"])
                    if "error" in chunk:
                        self.error = _error_message(chunk)
            case Format.responses:
                name = event.event or ""
                if name in _RESP_TERMINAL or (not name and any(t in data for t in _RESP_TERMINAL)):
                    payload = _load(data)
                    response = payload.get("response", {})
                    self.usage = responses_usage(response.get("usage"))
                    self.is_complete = True
                    if payload.get("type") == "response.failed":
                        self.error = _error_message(response) or "response failed"
                elif name == "error" or data.startswith('{"type":"error"'):
                    self.error = _error_message(_load(data)) or "error"
                    self.is_complete = True
            case Format.gemini:
                if "usageMetadata" in data:
                    self.usage = gemini_usage(_load(data).get("usageMetadata"))
                elif data.startswith('{"error"'):
                    self.error = _error_message(_load(data))


def _is_event_name(buf: bytes, pos: int) -> bool:
    """Whether ``buf[pos:]`` is an ``event:`` line's value (written with or without the space),
    in ``buf`` that begins with an event. Only a line starts after a newline: JSON data has none."""
    if pos >= 7 and buf.startswith(b"event: ", pos - 7):
        line = pos - 7
    elif pos >= 6 and buf.startswith(b"event:", pos - 6):
        line = pos - 6
    else:
        return False
    return line == 0 or buf[line - 1] == 0x0A


def _event_start(buf: bytes, floor: int, pos: int) -> int:
    """Where the event holding ``pos`` begins: after the blank line before it, else at ``floor``."""
    blank = buf.rfind(b"\n\n", floor, pos)
    return blank + 2 if blank >= 0 else floor


def _load(data: str | bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_message(payload: dict[str, Any]) -> str:
    err = payload.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or "error")
    return str(payload.get("message") or "") if err is None else str(err)
