"""relay.event_boundary: where the fast path may stop writing so a cut never leaves half an event."""

from __future__ import annotations

import pytest

from proxygate.server.relay import event_boundary


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"", 0),
        (b"data: {", 0),
        (b"data: 1\n", 0),
        (b"data: 1\n\n", 9),
        (b"data: 1\n\ndata: {", 9),
        (b"data: 1\r\n\r\ndata: {", 11),
        (b"data: 1\r\rdata: {", 9),
        (b"data: 1\n\r\ndata: {", 9),  # \n then a blank line ended by \r\n: cut inside the CRLF is fine
        (b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n", 36),
        (b"event: a\ndata: 1\n\nevent: b\ndata: 2\r\n\r\n:", 38),
    ],
)
def test_event_boundary(data: bytes, end: int) -> None:
    assert event_boundary(data) == end
