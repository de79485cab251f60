"""Hot reload: watch the pool dir and hand every new snapshot to a callback.

watchfiles batches a burst of file events (an editor's save is several) into one change set,
so a reload runs once per burst. Loading is cheap (a few small JSON files) and runs in a
thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import watchfiles

from proxygate.pool.files import PoolSnapshot, kind_dir, load_pool
from proxygate.pool.records import KINDS
from proxygate.store.files import ensure_private_dir

log = logging.getLogger("proxygate.pool")


def log_invalid(snapshot: PoolSnapshot) -> None:
    for bad in snapshot.invalid:
        log.warning("%s: %s; skipped", bad.path, bad.reason)


async def watch_pool(pool_dir: Path, on_change: Callable[[PoolSnapshot], None], stop: asyncio.Event) -> None:
    """Reload the pool on every change under ``pool_dir`` until ``stop`` is set."""
    ensure_private_dir(pool_dir)
    for kind in KINDS:
        ensure_private_dir(kind_dir(pool_dir, kind))
    # 50 ms debounce: a change is served well within the promised second.
    async for _ in watchfiles.awatch(pool_dir, stop_event=stop, debounce=50, step=20, recursive=True):
        snapshot = await asyncio.to_thread(load_pool, pool_dir)
        log_invalid(snapshot)
        log.info(
            "pool reloaded: %d accounts, %d invalid files", len(snapshot.accounts), len(snapshot.invalid)
        )
        on_change(snapshot)
