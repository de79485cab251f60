"""The shell every format's ``StreamDecoder`` shares: SSE framing in, IR stream events out.

All four upstream streams arrive as SSE (protocols.md §5.14.1); what differs is only how one
event's ``data`` reads and what end of stream means. A format subclasses ``SSEStreamDecoder``
and writes those two: ``_data`` for one event, ``_end`` for EOF before the stream was done.
Once ``_is_done`` is set (a terminal event or an error), later events are ignored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from proxygate.wire.ir import Finish, StreamEvent
from proxygate.wire.sse import SSEParser


class SSEStreamDecoder(ABC):
    """Feed upstream bytes, get IR events; ``close()`` at EOF finishes or raises ``StreamTruncated``."""

    def __init__(self, *, fallback_id: str = "") -> None:
        self.fallback_id = fallback_id
        "Names what the upstream leaves unnamed (tool calls without an id), unique per answer."
        self._sse = SSEParser()
        self._is_done = False
        self.finish: Finish | None = None

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for sse in self._sse.feed(chunk):
            if not self._is_done:
                self._data(sse.data, out)
        return out

    def close(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for sse in self._sse.close():
            if not self._is_done:
                self._data(sse.data, out)
        if not self._is_done:
            self._end(out)
        return out

    @abstractmethod
    def _data(self, data: str, out: list[StreamEvent]) -> None:
        """Append the IR events of one SSE event's ``data`` to ``out``."""

    @abstractmethod
    def _end(self, out: list[StreamEvent]) -> None:
        """EOF before the stream was done: finish into ``out``, or raise ``StreamTruncated``."""
