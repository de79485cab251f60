"""``GET /admin/api/traffic/stream``: the live request feed as server-sent events.

Each finished request is one ``data:`` event holding features/live.py's ``live_entry``; a
comment line every ``KEEPALIVE_S`` keeps proxies and the browser from timing the stream out.
On shutdown the feed closes every subscription, so these streams end at once and never hold
the drain (server/lifecycle.py).
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from proxygate.features.live import LiveFeed
from proxygate.server.admin import guard
from proxygate.server.keys import PIPELINE

KEEPALIVE_S = 15.0
BATCH_S = 0.2
"Events are sent at most this late, together: a busy server writes ~5 times a second, not per request."


def live_feed(app: web.Application) -> LiveFeed:
    """The pipeline's LiveFeed stage (server/pipeline.py ``default_stages``)."""
    return next(s for s in app[PIPELINE].stages if isinstance(s, LiveFeed))


async def traffic_stream(request: web.Request) -> web.StreamResponse:
    feed = live_feed(request.app)
    subscription = feed.subscribe()
    response = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}
    )
    queue = subscription.queue
    try:
        await response.prepare(request)
        await response.write(b": live traffic\n\n")  # the browser's EventSource opens now
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    first = await queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            # Busy traffic: what arrives within BATCH_S goes out in one write, not one per request.
            await asyncio.sleep(BATCH_S)
            entries = [first, *(queue.get_nowait() for _ in range(queue.qsize()))]
            events = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in entries if e is not None)
            if events:
                await response.write(events)
            if None in entries:  # the feed ended: shutdown
                break
    finally:
        feed.unsubscribe(subscription)
    return response


async def _close_feed(app: web.Application) -> None:
    live_feed(app).end_all()


def add_routes(app: web.Application) -> None:
    app.on_shutdown.append(_close_feed)  # before aiohttp waits for handlers: streams end now
    app.router.add_get("/admin/api/traffic/stream", guard(traffic_stream))
