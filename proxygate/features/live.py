"""Stage: the live traffic feed the dashboard's Traffic page subscribes to.

``on_done`` runs on every request, so with no subscriber it is one truth test. With
subscribers it builds one small dict (never a body) and offers it to each subscriber's
bounded queue; a subscriber that does not keep up loses entries (counted in ``dropped``)
rather than slowing the proxy or growing memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from proxygate.call import Call

QUEUE_SIZE = 2048
"""Entries a subscriber may fall behind by before newer ones are dropped for it (the stream
sends every 0.2 s: room for ~10,000 requests a second)."""


class Subscription:
    """One live-feed reader: a bounded queue; ``None`` in it means the feed ended."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0

    def offer(self, entry: dict[str, Any] | None) -> None:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1


class LiveFeed:
    def __init__(self) -> None:
        self.subscribers: set[Subscription] = set()
        self.is_ended = False

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        if self.is_ended:
            subscription.offer(None)
        else:
            self.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)

    def end_all(self) -> None:
        """End every subscription at once (shutdown: live streams must not hold the drain)."""
        self.is_ended = True
        for subscription in self.subscribers:
            if subscription.queue.full():  # the end mark must get in: drop the oldest entry
                subscription.queue.get_nowait()
            subscription.offer(None)
        self.subscribers.clear()

    def on_done(self, call: Call) -> None:
        if not self.subscribers:
            return
        entry = live_entry(call)
        for subscription in self.subscribers:
            subscription.offer(entry)


def live_entry(call: Call) -> dict[str, Any]:
    """What the Traffic page shows of a request: who, what, how long, how much; never a body."""
    u = call.usage
    return {
        "request_id": call.request_id,
        "ts": call.wall_started,
        "client_format": call.fmt.value,
        "upstream_format": (call.upstream_format or call.fmt).value,
        "model_asked": call.model,
        "model": call.upstream_model or call.model,
        "account_id": call.account_id,
        "route": call.route,
        "attempts": call.attempts,
        "failovers": [{"account_id": a, "status": status, "error": e} for a, status, e in call.failovers],
        "status": call.status,
        "is_stream": call.is_stream,
        "first_byte_ms": round(call.first_byte_ms, 1),
        "latency_ms": round(call.elapsed_ms, 1),
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cost_usd": call.cost_usd,
        "error_class": call.error_class,
        "error": call.error[:300],
    }
