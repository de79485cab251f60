"""The embedded store: one LMDB environment in the data dir.

Sub-databases: ``usage`` (day, account, model → counters), ``requests`` (a bounded log keyed
by time), and one per state namespace (cooldowns, headroom, pins, settings). Writers only
append to an in-memory queue; a committer commits it every ``COMMIT_INTERVAL_S`` or every
``COMMIT_BATCH`` operations, whichever comes first, so a crash loses at most that window and
the hot path never waits on an fsync. ``close`` commits the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb
import orjson

from proxygate.errors import StoreError
from proxygate.store.base import COOLDOWNS, HEADROOM, PINS, SETTINGS, UsageRecord, UsageRow, UsageTotals
from proxygate.store.files import ensure_private_dir

log = logging.getLogger("proxygate.store")

COMMIT_INTERVAL_S = 0.1
COMMIT_BATCH = 100
# The request log is for "what just happened" in status and the dashboard, not an archive.
REQUEST_LOG_MAX = 10_000
# LMDB reserves address space, not disk: the file grows only as data is written.
MAP_SIZE = 1 << 30

_NAMESPACES = (COOLDOWNS, HEADROOM, PINS, SETTINGS)
_Op = tuple[str, Any, Any]


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class LMDBStore:
    def __init__(self, data_dir: Path) -> None:
        try:
            ensure_private_dir(data_dir)
            self._env = lmdb.open(str(data_dir / "proxygate.lmdb"), map_size=MAP_SIZE, max_dbs=16, mode=0o600)
        except (lmdb.Error, OSError) as exc:
            reason = " ".join(str(exc).split())  # lmdb's messages carry line breaks
            raise StoreError(f"cannot open the usage store in {data_dir}: {reason}") from None
        self._dbs = {
            name: self._env.open_db(name.encode()) for name in ("usage", "requests", "meta", *_NAMESPACES)
        }
        self._queue: list[_Op] = []
        self._lock = threading.Lock()  # the queue is filled on the loop and drained in a thread
        self._wake = asyncio.Event()

    # -- writes (queued) ---------------------------------------------------------------

    def record(self, rec: UsageRecord) -> None:
        self._enqueue(("usage", rec, None))

    def put_state(self, namespace: str, key: str, value: Mapping[str, Any] | None) -> None:
        self._enqueue(("state", (namespace, key), None if value is None else dict(value)))

    def _enqueue(self, op: _Op) -> None:
        with self._lock:
            self._queue.append(op)
            if len(self._queue) >= COMMIT_BATCH:
                self._wake.set()

    # -- commits -------------------------------------------------------------------------

    async def run_committer(self, stop: asyncio.Event) -> None:
        """Commit the queue every COMMIT_INTERVAL_S (or sooner when COMMIT_BATCH is reached)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):  # the interval passed: commit what is queued
                await asyncio.wait_for(self._wake.wait(), COMMIT_INTERVAL_S)
            self._wake.clear()
            if self._queue:
                await asyncio.to_thread(self.flush)

    def flush(self) -> None:
        with self._lock:
            ops, self._queue = self._queue, []
        if not ops:
            return
        try:
            with self._env.begin(write=True) as txn:
                for kind, a, b in ops:
                    if kind == "usage":
                        self._commit_usage(txn, a)
                    else:
                        namespace, key = a
                        db = self._dbs[namespace]
                        if b is None:
                            txn.delete(key.encode(), db=db)
                        else:
                            txn.put(key.encode(), orjson.dumps(b), db=db)
                self._trim_request_log(txn)
        except lmdb.Error as exc:
            # Never lose the batch silently: put it back and say so once per failure.
            with self._lock:
                self._queue[:0] = ops
            log.error("usage store commit failed (%d queued writes kept): %s", len(ops), exc)

    def _commit_usage(self, txn: Any, rec: UsageRecord) -> None:
        key = "\0".join((utc_day(rec.ts), rec.account_id, rec.model)).encode()
        db = self._dbs["usage"]
        current = txn.get(key, db=db)
        totals = orjson.loads(current) if current else {}
        for name, value in (
            ("requests", 1),
            ("errors", 1 if rec.status >= 400 or rec.error_class else 0),
            ("input_tokens", rec.input_tokens),
            ("output_tokens", rec.output_tokens),
            ("cache_read_tokens", rec.cache_read_tokens),
            ("cache_write_tokens", rec.cache_write_tokens),
        ):
            totals[name] = totals.get(name, 0) + value
        txn.put(key, orjson.dumps(totals), db=db)
        log_key = int(rec.ts * 1e9).to_bytes(8, "big") + rec.request_id.encode()
        txn.put(log_key, orjson.dumps(rec), db=self._dbs["requests"])

    def _trim_request_log(self, txn: Any) -> None:
        db = self._dbs["requests"]
        excess = txn.stat(db)["entries"] - REQUEST_LOG_MAX
        if excess <= 0:
            return
        cursor = txn.cursor(db=db)
        cursor.first()
        for _ in range(excess):
            if not cursor.delete():
                break

    # -- reads ---------------------------------------------------------------------------

    def get_states(self, namespace: str) -> dict[str, dict[str, Any]]:
        with self._env.begin(db=self._dbs[namespace]) as txn:
            return {k.decode(): orjson.loads(v) for k, v in txn.cursor()}

    def usage(self, day: str) -> list[UsageRow]:
        prefix = day.encode() + b"\0"
        rows: list[UsageRow] = []
        with self._env.begin(db=self._dbs["usage"]) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    _, account_id, model = key.decode().split("\0", 2)
                    totals = UsageTotals()
                    totals.add(orjson.loads(value))
                    rows.append(UsageRow(day, account_id, model, totals))
        return rows

    def recent_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        with self._env.begin(db=self._dbs["requests"]) as txn:
            cursor = txn.cursor()
            if cursor.last():
                for _, value in cursor.iterprev():
                    entries.append(orjson.loads(value))
                    if len(entries) >= limit:
                        break
        return entries

    def close(self) -> None:
        self.flush()
        self._env.sync(True)
        self._env.close()


def today() -> str:
    return utc_day(time.time())
