"""Background tasks that outlive their faults: ``supervise`` restarts a task after a crash.

Every background task of the server (the store's committer, the pool watcher, the quota
poller) runs under ``supervise``: an exception is logged with its traceback and the task
starts again after a backoff (1 s doubling to 60 s, back to 1 s once a run lasted a healthy
minute). Only cancellation, or the task returning, ends it; the server stops only on a
signal. Before, one committer error (a non-UTF-8 session header reaching an LMDB key, issue 10
§2) ended its TaskGroup, and with it the whole process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("proxygate.tasks")

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
HEALTHY_S = 60.0
"A run this long counts as healthy: the next failure starts the backoff from the minimum again."


async def supervise(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    stop: asyncio.Event | None = None,
    backoff_min_s: float = BACKOFF_MIN_S,
    backoff_max_s: float = BACKOFF_MAX_S,
    healthy_s: float = HEALTHY_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``factory()`` until it returns; after an exception, log it and run it again after a backoff.

    Args:
        stop: the task's own stop event: once set, a backoff in progress ends and no restart
            follows (a clean shutdown never waits out a 60 s backoff).
    """
    delay_s = backoff_min_s
    while True:
        started = clock()
        try:
            await factory()
            return
        except Exception:
            if clock() - started >= healthy_s:
                delay_s = backoff_min_s
            log.exception("background task %r failed; restarting in %.0f s", name, delay_s)
        if stop is None:
            await sleep(delay_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
            if stop.is_set():
                return
        delay_s = min(delay_s * 2, backoff_max_s)
