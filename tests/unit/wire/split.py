"""Feed a byte string to a fresh decoder split at every index and byte by byte (STYLE.md §8).

Every stream decoder (and the SSE parser itself) must give the same events whatever the TCP
reads look like: events split across reads, ``\\r\\n`` split in two, a UTF-8 character split
between reads (protocols.md §5.14.1, §6.11).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Decoder(Protocol):
    def feed(self, chunk: bytes) -> Sequence[Any]: ...

    def close(self) -> Sequence[Any]: ...


def run(decoder: Decoder, pieces: Sequence[bytes]) -> list[Any]:
    events: list[Any] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.close())
    return events


def _outcome(make_decoder: Callable[[], Decoder], pieces: Sequence[bytes]) -> tuple[str, Any]:
    try:
        return "events", run(make_decoder(), pieces)
    except Exception as exc:  # the same exception type and message for every split
        return "raised", (type(exc), str(exc))


def assert_split_invariant(make_decoder: Callable[[], Decoder], data: bytes) -> list[Any]:
    """The events of ``data`` fed whole; asserts every two-way split and byte-wise feed agree.

    If feeding ``data`` raises, every split must raise the same exception, which is re-raised.
    """
    whole = _outcome(make_decoder, [data])
    for i in range(1, len(data)):
        assert _outcome(make_decoder, [data[:i], data[i:]]) == whole, f"split at byte {i}"
    assert _outcome(make_decoder, [data[i : i + 1] for i in range(len(data))]) == whole, "byte by byte"
    if whole[0] == "raised":
        run(make_decoder(), [data])  # re-raise the original for pytest.raises
    return list(whole[1])
