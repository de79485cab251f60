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


def live_feed(app: web.Application) -> LiveFeed:
    """The pipeline's LiveFeed stage (server/pipeline.py ``default_stages``)."""
    return next(s for s in app[PIPELINE].stages if isinstance(s, LiveFeed))


async def traffic_stream(request: web.Request) -> web.StreamResponse:
    feed = live_feed(request.app)
    subscription = feed.subscribe()
    response = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}
    )
    try:
        await response.prepare(request)
        await response.write(b": live traffic\n\n")  # the browser's EventSource opens now
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    entry = await subscription.queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if entry is None:  # the feed ended: shutdown
                break
            await response.write(b"data: " + orjson.dumps(entry) + b"\n\n")
    finally:
        feed.unsubscribe(subscription)
    return response


async def _close_feed(app: web.Application) -> None:
    live_feed(app).end_all()


def add_routes(app: web.Application) -> None:
    app.on_shutdown.append(_close_feed)  # before aiohttp waits for handlers: streams end now
    app.router.add_get("/admin/api/traffic/stream", guard(traffic_stream))
