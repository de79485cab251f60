"""A byte-level Server-Sent Events parser (protocols.md §5.14.1).

Lines split only at ``\\r\\n``, ``\\n`` or ``\\r`` on the byte level — never ``str.splitlines()``,
which also breaks at U+2028 inside JSON strings. A trailing ``\\r`` at the end of a chunk may be
half of ``\\r\\n``, so it is held back until the next byte decides. Lines are decoded as UTF-8
only once complete, so a character split across reads is never torn. Comments (``:``) are
keep-alives and are dropped. Feeding needs no more than the bytes at hand: an incomplete event
simply yields nothing yet (like h11's ``NEED_DATA``).
"""

from __future__ import annotations

from typing import NamedTuple

# Some single events are megabytes (an inline image, a RESP response.completed echoing a long
# history); 16 MiB bounds a runaway upstream without cutting real traffic (protocols.md §5.14.1).
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEError(Exception):
    """The upstream broke the SSE grammar (an event over MAX_EVENT_BYTES)."""


class SSEEvent(NamedTuple):
    """One event. A named tuple: a stream builds one per event (~0.2 µs, a frozen dataclass ~1 µs)."""

    event: str | None
    data: str
    id: str | None = None


class SSEParser:
    """Feed bytes, get complete events; ``close()`` at EOF flushes a pending event that has data."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_size")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None
        self._size = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        events: list[SSEEvent] = []
        start = 0
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, nl if nl >= 0 else n)
            if cr >= 0:
                if cr == n - 1:  # maybe half of \r\n: wait for the next byte
                    break
                end, nxt = cr, cr + 2 if buf[cr + 1] == 0x0A else cr + 1
            elif nl >= 0:
                end, nxt = nl, nl + 1
            else:
                break
            self._line(buf[start:end], events)
            start = nxt
        self._buf = buf[start:]
        if len(self._buf) + self._size > MAX_EVENT_BYTES:
            raise SSEError(f"SSE event larger than {MAX_EVENT_BYTES} bytes")
        return events

    def close(self) -> list[SSEEvent]:
        """Flush at EOF; an unterminated last line counts as a line."""
        events: list[SSEEvent] = []
        if self._buf:
            line, self._buf = self._buf.rstrip(b"\r"), b""
            self._line(line, events)
        if self._data:
            events.append(self._dispatch())
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if not raw:
            if self._data:
                events.append(self._dispatch())
            else:
                self._event = None
            return
        if raw[0] == 0x3A:  # ':' comment / keep-alive
            return
        line = raw.decode("utf-8", errors="replace")
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._size += len(raw)
        elif field == "event":
            self._event = value
        elif field == "id":
            self._id = value
        # "retry" and unknown fields are ignored (WHATWG SSE §9.2.6)

    def _dispatch(self) -> SSEEvent:
        event = SSEEvent(self._event, "\n".join(self._data), self._id)
        self._event, self._data, self._size = None, [], 0
        return event


def encode_event(data: bytes, event: str | None = None) -> bytes:
    """One SSE event; ``data`` must be a single line (JSON from orjson always is)."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
