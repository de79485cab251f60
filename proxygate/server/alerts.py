"""Account alerts: quarantine, needs re-auth and spent windows, logged once and sent to ``[alerts] webhook_url``.

The broker raises an event only when an account's state changes (``Broker.on_event``), so each
is logged once, loudly. With a webhook configured, each event is POSTed as JSON
(``event``, ``account``, ``reason``, ``at``, and a ``text`` line chat webhooks show as is) by
one supervised background task from a bounded queue: a slow or dead webhook never holds up a
request, and when it falls ``QUEUE_MAX`` events behind, newer events are dropped (and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from proxygate.config import AlertSettings
from proxygate.server.keys import BROKER, SETTINGS
from proxygate.server.tasks import supervise

log = logging.getLogger("proxygate.alerts")

QUEUE_MAX = 256
SEND_TIMEOUT = aiohttp.ClientTimeout(total=10)
_WHAT = {
    "quarantined": "is quarantined (refused for good; `proxygate reset` lifts it)",
    "needs_reauth": "needs a new login",
    "window_spent": "ran out of a quota window",
}


class Alerts:
    """Turns broker events into log lines and webhook posts."""

    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self.dropped = 0
        self.sent = 0

    def notify(self, event: str, account_id: str, reason: str) -> None:
        """The broker's event sink: never blocks, never raises."""
        line = f"account {account_id} {_WHAT.get(event, event)}: {reason}"
        (log.error if event == "quarantined" else log.warning)("%s", line)
        if not self.settings.webhook_url:
            return
        body = {
            "event": event,
            "account": account_id,
            "reason": reason,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "text": f"proxygate: {line}",
        }
        try:
            self.queue.put_nowait(body)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Send queued events until ``stop``; a failed post is logged and not retried."""
        async with aiohttp.ClientSession(timeout=SEND_TIMEOUT) as session:
            while not stop.is_set():
                getting = asyncio.ensure_future(self.queue.get())
                stopping = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for waiter in (getting, stopping):
                    if waiter not in done:
                        waiter.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await waiter
                if getting not in done:
                    return
                await self._post(session, getting.result())

    async def _post(self, session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        try:
            async with session.post(self.settings.webhook_url, json=body) as resp:
                if resp.status >= 400:
                    log.info("alert webhook answered HTTP %d for %s", resp.status, body["event"])
                    return
            self.sent += 1
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("alert webhook unreachable (%s) for %s", type(exc).__name__, body["event"])


ALERTS = web.AppKey("alerts", Alerts)


async def alerting(app: web.Application) -> AsyncIterator[None]:
    """Connect the broker's events to the log and the webhook while the app runs (after the broker exists)."""
    alerts = app[ALERTS] = Alerts(app[SETTINGS].alerts)
    app[BROKER].on_event = alerts.notify
    if not alerts.settings.webhook_url:
        yield
        return
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(supervise("alert webhook", lambda: alerts.run(stop), stop=stop))
        try:
            yield
        finally:
            stop.set()
