"""Coordination within one process: sliding-window counters and leased locks in memory.

The embedded store uses these for ``Store.hit``/``lock``/``unlock`` (the flock in
providers/oauth.py already orders processes of one machine); the Redis store falls back to
them while Redis is unreachable, so a limit is then kept per process rather than not at all.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable

MAX_WINDOWS = 100_000
"Sliding windows kept; the least recently used is forgotten beyond it (memory stays bounded)."


class SlidingWindows:
    """Per key, the times of the events admitted in the last window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def hit(self, key: str, limit: int, window_s: float) -> float:
        """0.0 when one more event fits (and it is counted), else seconds until one does."""
        now = self._clock()
        events = self._events.pop(key, None) or deque()
        self._events[key] = events  # re-inserted: the dict's order is least recently used first
        while events and events[0] <= now - window_s:
            events.popleft()
        if len(events) < limit:
            events.append(now)
            if len(self._events) > MAX_WINDOWS:
                del self._events[next(iter(self._events))]
            return 0.0
        if limit <= 0:
            return window_s
        return max(events[len(events) - limit] + window_s - now, 1e-3)


class LocalLocks:
    """Named locks with a time to live, held by a token."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, tuple[str, float]] = {}

    def lock(self, name: str, ttl_s: float) -> str | None:
        now = self._clock()
        held = self._held.get(name)
        if held is not None and held[1] > now:
            return None
        token = secrets.token_hex(16)
        self._held[name] = (token, now + ttl_s)
        if len(self._held) > MAX_WINDOWS:  # expired ones only ever pile up here
            self._held = {n: h for n, h in self._held.items() if h[1] > now}
        return token

    def unlock(self, name: str, token: str) -> None:
        held = self._held.get(name)
        if held is not None and held[0] == token:
            del self._held[name]
