"""Hot reload: watch the pool dir and hand every new snapshot to a callback.

watchfiles batches a burst of file events (an editor's save is several) into one change set,
so a reload runs once per burst. Loading is cheap (a few small JSON files) and runs in a
thread so the event loop never waits on the disk. An invalid file is warned about when it
appears or changes, not again on every later reload of the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import watchfiles

from proxygate.pool.files import InvalidFile, PoolSnapshot, kind_dir, load_pool
from proxygate.pool.records import KINDS
from proxygate.store.files import ensure_private_dir
from proxygate.store.secrets import Vault

log = logging.getLogger("proxygate.pool")


class _ChangeLinesToDebug(logging.Filter):
    """watchfiles says "1 change detected" at INFO on every save: that is debug detail here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return log.isEnabledFor(logging.DEBUG)
        return True


_WATCHFILES_FILTER = _ChangeLinesToDebug()
CATCH_UP_MS = 500
"How soon after start the pool is read once more, for files that came before the watch did."


def log_invalid(snapshot: PoolSnapshot) -> None:
    for bad in snapshot.invalid:
        _warn(bad)


def _warn(bad: InvalidFile) -> None:
    log.warning("%s: %s; skipped", bad.path, bad.reason)


def warn_new_invalid(before: PoolSnapshot, after: PoolSnapshot, changed: Iterable[Path]) -> list[InvalidFile]:
    """The invalid files of ``after`` worth a warning: new ones, new reasons, or files just changed."""
    known = {(bad.path, bad.reason) for bad in before.invalid}
    touched = {path.absolute() for path in changed}
    fresh = [
        bad for bad in after.invalid if (bad.path, bad.reason) not in known or bad.path.absolute() in touched
    ]
    for bad in fresh:
        _warn(bad)
    return fresh


async def watch_pool(
    pool_dir: Path,
    on_change: Callable[[PoolSnapshot], None],
    stop: asyncio.Event,
    vault: Vault | None = None,
) -> None:
    """Reload the pool on every change under ``pool_dir`` until ``stop`` is set (``vault`` opens sealed files)."""
    ensure_private_dir(pool_dir)
    for kind in KINDS:
        ensure_private_dir(kind_dir(pool_dir, kind))
    watch_log = logging.getLogger("watchfiles.main")
    if _WATCHFILES_FILTER not in watch_log.filters:
        watch_log.addFilter(_WATCHFILES_FILTER)
    # What the server loaded (and warned about) at start; later reloads warn about news only.
    previous = await asyncio.to_thread(load_pool, pool_dir, vault)
    # 50 ms debounce: a change is served well within the promised second. A file written after
    # the server's first load but before the watch was in place raises no event: the first
    # wake-up (a change, or CATCH_UP_MS of quiet, by which time the watch is set) reloads anyway.
    caught_up = False
    async for changes in watchfiles.awatch(
        pool_dir,
        stop_event=stop,
        debounce=50,
        step=20,
        recursive=True,
        yield_on_timeout=True,
        rust_timeout=CATCH_UP_MS,
    ):
        if not changes and caught_up:
            continue
        caught_up = True
        snapshot = await asyncio.to_thread(load_pool, pool_dir, vault)
        warn_new_invalid(previous, snapshot, (Path(path) for _, path in changes))
        log.info(
            "pool reloaded: %d accounts, %d invalid files", len(snapshot.accounts), len(snapshot.invalid)
        )
        previous = snapshot
        on_change(snapshot)
