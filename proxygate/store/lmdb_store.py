"""The embedded store: one LMDB environment in the data dir.

Sub-databases: ``daily`` and ``hourly`` (bucket, account, model, client format, route, tenant
→ counters), ``requests`` (the bounded request log: one page a commit, the JSON list of its
records, keyed by commit time; entries of earlier versions, one a key, are read and trimmed
as they are, their ids in ``request_ids``), ``meta``, one per state namespace (cooldowns,
headroom, pins, settings, …) and ``changes``, the change feed.

Several processes on one data dir (``serve --workers N``, a CLI command beside the server)
share state through the environment: each commit with state writes appends (seq → origin,
namespace, key) to ``changes``, and every process polls it every ``CHANGES_POLL_S`` and tells
its listeners about the keys another process wrote (``Store.on_change``).

Writers only append to an in-memory queue; the committer commits it every
``COMMIT_INTERVAL_S`` or every ``COMMIT_BATCH`` operations, whichever comes first, so a crash
loses at most that window and the hot path never waits on an fsync. ``close`` commits the rest.

One bad operation never blocks the others (issue 10 §2): every key is bounded in bytes and
always encodable (``key_part``), an operation that cannot be prepared is dropped with one log
line, a batch that LMDB refuses is retried op by op, and a full map is doubled. When the disk
itself refuses a commit (full, I/O error) no operation is at fault: the writes are kept (at
most ``MAX_QUEUED``) and ``flush`` raises, so the supervised committer backs off and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb
import orjson

from proxygate.config import UsageSettings
from proxygate.errors import StoreError
from proxygate.store.base import (
    NAMESPACES,
    StateListener,
    StoreUnavailable,
    UsageRecord,
    UsageRow,
    UsageTotals,
)
from proxygate.store.files import ensure_private_dir
from proxygate.store.local import LocalLocks, SlidingWindows

log = logging.getLogger("proxygate.store")

COMMIT_INTERVAL_S = 0.1
COMMIT_BATCH = 500
# LMDB reserves address space, not disk: the file grows only as data is written. A full map
# is doubled (MDB_MAP_FULL) up to MAX_MAP_SIZE.
MAP_SIZE = 1 << 30
MAX_MAP_SIZE = 1 << 40
# LMDB's largest key is 511 bytes; a row key is a bucket and five parts of at most this many
# bytes each (13 + 5 × 72 + 5 separators = 378).
MAX_PART_BYTES = 72
HASHED_PREFIX_BYTES = 24
# Text kept in a request-log entry (model names, error classes): enough to recognise it.
MAX_LOG_TEXT_CHARS = 256
SWEEP_INTERVAL_S = 3600.0
SWEEP_MAX_DELETES = 5000
"Keys deleted by one sweep transaction: a long-unswept store is cleaned in steps, not one stall."
TRIM_MAX_PER_COMMIT = 1000
"Request-log entries trimmed per commit: more than a batch adds, so the log converges."
MAX_QUEUED = 50_000
"Writes kept while the disk refuses commits (full, I/O errors); beyond it the oldest are dropped."
CHANGES_POLL_S = 0.25
"How often each process reads the change feed (another worker's write reaches it within this)."
CHANGES_KEPT = 10_000
"Newest change-feed entries kept: far more than any process reads between two polls."

_NAMESPACES = NAMESPACES
_OUR_ID = re.compile(r"pg_([0-9a-f]{12})[0-9a-f]{12}")
"A request id of ``call.new_request_id``: its first 12 hex digits are its arrival in ms."
PAGE_PREFIX = b"~"
"""Request-log pages sort after the one-entry keys of earlier versions (time bytes, ``pg_…``).

A page is written in one ``put`` for a whole commit: py-lmdb releases and takes back the GIL
around every call, and a call per request made the committer thread and the event loop
trade the GIL hundreds of times a second."""
_LOG_ROWS = b"request_log_rows"
"``meta`` key: entries in the request log (pages and single entries), kept by every commit."
_DAY = 86400.0
_RECORD_DEFAULTS = asdict(UsageRecord("", 0.0, "", "", "", "", 0))


_LAST_TS = 253_402_300_799.0
"9999-12-31T23:59:59Z: the last second a bucket can name."


def _clamped(ts: float) -> float:
    """``ts`` within what a bucket can name (a range "since forever", a million days' retention)."""
    return min(ts, _LAST_TS) if ts >= 0 else 0.0


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(_clamped(ts), UTC).strftime("%Y-%m-%d")


def utc_hour(ts: float) -> str:
    return datetime.fromtimestamp(_clamped(ts), UTC).strftime("%Y-%m-%dT%H")


def today() -> str:
    return utc_day(time.time())


def key_part(value: str) -> bytes:
    """``value`` as key bytes: itself when short, NUL-free UTF-8, else a readable prefix + a hash.

    A client's model name or session id may be huge or carry undecodable bytes (aiohttp
    gives ``'\\udcff'`` for a non-UTF-8 header byte), which LMDB or the encoder would refuse.
    """
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        raw = None
    if raw is not None and len(raw) <= MAX_PART_BYTES and b"\0" not in raw:
        return raw
    exact = value.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(exact).hexdigest()[:32]
    prefix = value.encode("utf-8", "replace").replace(b"\0", b"?")[:HASHED_PREFIX_BYTES]
    return prefix.decode("utf-8", "ignore").encode() + b"~" + digest.encode()


def state_key(key: str) -> bytes:
    """A state key as LMDB bytes: kept whole when it fits, else bounded like ``key_part``."""
    try:
        raw = key.encode()
    except UnicodeEncodeError:
        raw = None
    if raw is not None and 0 < len(raw) <= 400:
        return raw
    return key_part(key)


@functools.lru_cache(maxsize=64)
def _buckets(hour_index: int) -> tuple[str, str]:
    """The UTC day and hour buckets of the hour ``hour_index`` (Unix seconds // 3600)."""
    return utc_day(hour_index * 3600), utc_hour(hour_index * 3600)


def _text(value: str, limit: int = MAX_LOG_TEXT_CHARS) -> str:
    """Text safe to serialise: undecodable characters replaced, bounded in length."""
    value = value[:limit]
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode()
    return value


def log_entry(rec: UsageRecord) -> bytes:
    """A request-log entry: the record as JSON (a lone surrogate from a client's bytes replaced)."""
    try:
        return orjson.dumps(rec)
    except orjson.JSONEncodeError:
        return orjson.dumps(
            {name: _text(value) if isinstance(value, str) else value for name, value in asdict(rec).items()}
        )


@functools.lru_cache(maxsize=1024)  # a few accounts × models × routes: each key built once
def _row_key(bucket: str, rec_parts: tuple[str, str, str, str, str]) -> bytes:
    return b"\0".join((bucket.encode(), *(key_part(p) for p in rec_parts)))


def _split_row_key(key: bytes) -> tuple[str, ...]:
    parts = [p.decode("utf-8", "replace") for p in key.split(b"\0")]
    return tuple(parts + [""] * (6 - len(parts)))[:6]


class _CommitRefused(Exception):
    """LMDB could not write a transaction's pages (disk full, I/O error): no operation is at fault."""


@dataclass(slots=True)
class _Usage:
    """A usage record ready to apply: its keys and bytes computed before any transaction."""

    day_key: bytes
    hour_key: bytes
    record: UsageRecord
    "Counted into its day and hour rows, and written into the commit's request-log page."


@dataclass(frozen=True, slots=True)
class _State:
    namespace: str
    key: bytes
    value: bytes | None


_Prepared = _Usage | _State


class LMDBStore:
    def __init__(
        self, data_dir: Path, usage: UsageSettings | None = None, *, map_size: int = MAP_SIZE
    ) -> None:
        self.settings = usage or UsageSettings()
        path = data_dir / "proxygate.lmdb"
        try:
            ensure_private_dir(data_dir)
            # lmdb.open(mode=0o600) would make the directory 0600 too (no search bit): only
            # root could then open it (issue 10 §1). The directory is ours, 0700; files 0600.
            ensure_private_dir(path)
            self._env = lmdb.open(str(path), map_size=map_size, max_dbs=32, mode=0o600)
        except (lmdb.Error, OSError) as exc:
            reason = " ".join(str(exc).split())  # lmdb's messages carry line breaks
            raise StoreError(f"cannot open the usage store in {data_dir}: {reason}") from None
        self._dbs = {
            name: self._env.open_db(name.encode())
            for name in ("daily", "hourly", "requests", "request_ids", "meta", "changes", *_NAMESPACES)
        }
        self._queue: list[tuple[str, Any, Any]] = []
        self._lock = threading.Lock()  # the queue is filled on the loop and drained in a thread
        # One transaction at a time in this process: set_mapsize needs none active, and the
        # committer thread, the sweeper and readers on the loop share the environment.
        self._env_lock = threading.Lock()
        self._wake = asyncio.Event()
        self._commit_failures = 0
        self._is_shedding = False
        self._instance_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._listeners: list[StateListener] = []
        self._windows = SlidingWindows()
        self._locks = LocalLocks()
        self._migrate_legacy_usage()
        self._change_seq = self._last_change_seq()
        self._page_ns = 0
        self._page_count = 0
        self._page_tag = secrets.token_bytes(4)
        "Tells this store's request-log pages from another process's written in the same nanosecond."

    # -- writes (queued) ---------------------------------------------------------------

    def record(self, rec: UsageRecord) -> None:
        self._enqueue(("usage", rec, None))

    def put_state(self, namespace: str, key: str, value: Mapping[str, Any] | None) -> None:
        self._enqueue(("state", (namespace, key), None if value is None else dict(value)))

    def _enqueue(self, op: tuple[str, Any, Any]) -> None:
        with self._lock:
            if len(self._queue) >= MAX_QUEUED:  # commits have failed for a while: memory stays bounded
                del self._queue[:COMMIT_BATCH]
                self._commit_failures += COMMIT_BATCH
                if not self._is_shedding:
                    self._is_shedding = True
                    log.error(
                        "usage store: %d writes queued and none committed; dropping the oldest", MAX_QUEUED
                    )
            self._queue.append(op)
            if len(self._queue) >= COMMIT_BATCH:
                self._wake.set()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def commit_failures(self) -> int:
        return self._commit_failures

    # -- commits -------------------------------------------------------------------------

    async def run_committer(self, stop: asyncio.Event, *, clock: Callable[[], float] = time.time) -> None:
        """Commit the queue every COMMIT_INTERVAL_S (sooner at COMMIT_BATCH); sweep old usage.

        Sweeps at start and then every SWEEP_INTERVAL_S, off the loop; a sweep that hit its
        bound runs again at the next tick. Returns once ``stop`` is set (the queue is left to
        ``close``).
        """
        next_sweep = 0.0
        while not stop.is_set():
            if clock() >= next_sweep:
                done = await asyncio.to_thread(self.sweep, clock())
                next_sweep = clock() + (SWEEP_INTERVAL_S if done else 0.0)
            with contextlib.suppress(TimeoutError):  # the interval passed: commit what is queued
                await asyncio.wait_for(self._wake.wait(), COMMIT_INTERVAL_S)
            self._wake.clear()
            if self._queue:
                await asyncio.to_thread(self.flush)

    def wake(self) -> None:
        """Make the committer commit now (and notice a stop)."""
        self._wake.set()

    def flush(self) -> None:
        """Commit the queue; a write LMDB refuses is dropped alone (logged, counted).

        Raises:
            StoreError: the disk refused the commit itself (full, I/O error): the writes are
                queued again for the next try, and the committer backs off (server/tasks.py).
        """
        with self._lock:
            ops, self._queue = self._queue, []
        if not ops:
            return
        pairs = [(op, p) for op, p in ((op, self._prepare(op)) for op in ops) if p is not None]
        with self._env_lock:
            try:
                self._commit([p for _, p in pairs])
            except _CommitRefused as exc:
                self._requeue([op for op, _ in pairs], exc)
            except Exception as exc:  # find the bad write; never lose the batch
                # Each alone: the ones LMDB refuses (or that meet a corrupt row) are dropped.
                log.warning(
                    "usage store: a batch of %d writes failed (%s); retrying one by one", len(ops), exc
                )
                for n, (_, p) in enumerate(pairs):
                    try:
                        self._commit([p])
                    except _CommitRefused as refused:
                        self._requeue([op for op, _ in pairs[n:]], refused)
                    except Exception as op_exc:
                        self._drop(p, op_exc)
        self._is_shedding = False

    def _requeue(self, ops: list[tuple[str, Any, Any]], exc: _CommitRefused) -> None:
        with self._lock:
            self._queue[:0] = ops[-MAX_QUEUED:]
        self._commit_failures += 1
        raise StoreError(f"usage store: the disk refused a commit ({len(ops)} writes kept): {exc}") from exc

    def _prepare(self, op: tuple[str, Any, Any]) -> _Prepared | None:
        """Keys and bytes of one queued write, or None (logged, counted) when it has none."""
        kind, a, b = op
        try:
            if kind == "usage":
                return self._prepare_usage(a)
            namespace, key = a
            if namespace not in self._dbs:
                raise KeyError(f"no state namespace {namespace!r}")
            return _State(namespace, state_key(key), None if b is None else orjson.dumps(b))
        except Exception as exc:
            self._drop(op, exc)
            return None

    def _prepare_usage(self, rec: UsageRecord) -> _Usage:
        if not rec.account_id:  # refused before an account was chosen: in the log only
            return _Usage(b"", b"", rec)
        parts = (rec.account_id, rec.model, rec.client_format, rec.route, rec.tenant)
        day, hour = _buckets(int(_clamped(rec.ts) // 3600))
        return _Usage(_row_key(day, parts), _row_key(hour, parts), rec)

    def _commit(self, ops: list[_Prepared]) -> None:
        """Apply ``ops`` in one transaction; a full map is doubled and the transaction retried."""
        while True:
            try:
                with self._begin(write=True) as txn:
                    rows: dict[tuple[str, bytes], UsageTotals] = {}
                    for op in ops:
                        self._apply(txn, op, rows)
                    self._append_page(txn, [op.record for op in ops if isinstance(op, _Usage)])
                    self._append_changes(txn, [op for op in ops if isinstance(op, _State)])
                    for (db_name, key), totals in rows.items():  # one read-modify-write per row
                        db = self._dbs[db_name]
                        if current := txn.get(key, db=db):
                            totals.add(orjson.loads(current))
                        txn.put(key, orjson.dumps(totals.as_dict()), db=db)
                    self._trim_request_log(txn, TRIM_MAX_PER_COMMIT)
                    try:
                        txn.commit()
                    except lmdb.MapFullError:
                        raise
                    except lmdb.Error as exc:  # writing the pages failed, not one operation
                        raise _CommitRefused(" ".join(str(exc).split())) from exc
                return
            except lmdb.MapFullError:
                size = self._env.info()["map_size"]
                if size >= MAX_MAP_SIZE:
                    raise
                log.info("usage store: map full at %d MiB; growing to %d MiB", size >> 20, size >> 19)
                self._env.set_mapsize(size * 2)

    def _begin(self, *, write: bool = False, db: Any = None) -> Any:
        """A transaction; when another process (a CLI command) grew the map, adopt its size first."""
        try:
            return self._env.begin(write=write, db=db)
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)  # 0: the size the file now has
            return self._env.begin(write=write, db=db)

    def _apply(self, txn: Any, op: _Prepared, rows: dict[tuple[str, bytes], UsageTotals]) -> None:
        """Write one operation; usage counters are summed into ``rows`` (written once per batch)."""
        if isinstance(op, _State):
            db = self._dbs[op.namespace]
            if op.value is None:
                txn.delete(op.key, db=db)
            else:
                txn.put(op.key, op.value, db=db)
            return
        if op.day_key:
            for row in (("daily", op.day_key), ("hourly", op.hour_key)):
                if (totals := rows.get(row)) is None:
                    totals = rows[row] = UsageTotals()
                totals.count(op.record)

    def _append_page(self, txn: Any, records: list[UsageRecord]) -> None:
        """The commit's records as one request-log page, after every earlier one."""
        if not records:
            return
        # Monotonic within the process (a wall clock stepped back must not file it earlier);
        # the tag and a count keep two processes' pages of the same nanosecond apart.
        self._page_ns = max(time.time_ns(), self._page_ns + 1)
        self._page_count += 1
        key = (
            PAGE_PREFIX
            + self._page_ns.to_bytes(8, "big")
            + self._page_tag
            + self._page_count.to_bytes(8, "big")
        )
        rows = self._log_rows(txn)  # before the page is in: a first count must not see it
        txn.put(key, log_page(records), db=self._dbs["requests"])
        self._set_log_rows(txn, rows + len(records))

    def _log_rows(self, txn: Any) -> int:
        """Entries in the request log; counted once from the log itself when not kept yet."""
        if (raw := txn.get(_LOG_ROWS, db=self._dbs["meta"])) is not None:
            return int(raw)
        return sum(
            len(_page_entries(raw)) if key[:1] == PAGE_PREFIX else 1
            for key, raw in txn.cursor(db=self._dbs["requests"])
        )

    def _set_log_rows(self, txn: Any, rows: int) -> None:
        txn.put(_LOG_ROWS, str(max(rows, 0)).encode(), db=self._dbs["meta"])

    def _append_changes(self, txn: Any, states: list[_State]) -> None:
        """Announce state writes to the other processes on this data dir (one writer at a time: LMDB's lock)."""
        if not states:
            return
        db = self._dbs["changes"]
        cursor = txn.cursor(db=db)
        seq = int.from_bytes(cursor.key(), "big") if cursor.last() else 0
        origin = self._instance_id.encode()
        for op in states:
            seq += 1
            txn.put(seq.to_bytes(8, "big"), b"\0".join((origin, op.namespace.encode(), op.key)), db=db)
        excess = txn.stat(db)["entries"] - CHANGES_KEPT
        if excess > CHANGES_KEPT // 10:  # trimmed in steps, not on every commit
            cursor.first()
            for _ in range(excess):
                if not cursor.delete():
                    break

    def _drop(self, op: object, exc: BaseException) -> None:
        self._commit_failures += 1
        what = (
            "usage record"
            if isinstance(op, _Usage) or (isinstance(op, tuple) and op[0] == "usage")
            else "state write"
        )
        log.error("usage store: dropped one %s that cannot be stored: %s: %s", what, type(exc).__name__, exc)

    def _trim_request_log(self, txn: Any, max_deletes: int) -> int:
        """Delete the oldest entries over ``request_log_max_rows`` (about ``max_deletes`` at most:
        a page goes whole, or is written again with its newest entries)."""
        db, ids = self._dbs["requests"], self._dbs["request_ids"]
        rows = self._log_rows(txn)
        excess = min(rows - self.settings.request_log_max_rows, max_deletes)
        if excess <= 0:
            return 0
        cursor = txn.cursor(db=db)
        deleted = 0
        while deleted < excess and cursor.first():
            key = cursor.key()
            if key[:1] != PAGE_PREFIX:  # one entry of an earlier version, and its id's index entry
                cursor.delete()
                txn.delete(key[8:], db=ids)
                deleted += 1
                continue
            entries = _page_entries(cursor.value())
            keep = len(entries) - (excess - deleted)
            if keep > 0:
                txn.put(key, orjson.dumps(entries[-keep:]), db=db)
                deleted += len(entries) - keep
            else:
                cursor.delete()
                deleted += max(len(entries), 1)
        self._set_log_rows(txn, rows - deleted)
        return deleted

    # -- retention ---------------------------------------------------------------------

    def sweep(self, now: float, *, max_deletes: int = SWEEP_MAX_DELETES) -> bool:
        """Delete rows past retention and request-log entries past the bound.

        At most ``max_deletes`` keys per call; returns True when nothing is left to delete.
        """
        settings = self.settings
        cutoffs = []
        if settings.retention_days > 0:
            cutoffs.append(("daily", utc_day(now - settings.retention_days * _DAY).encode()))
        if settings.hourly_retention_days > 0:
            cutoffs.append(("hourly", utc_hour(now - settings.hourly_retention_days * _DAY).encode()))
        deleted = 0
        with self._env_lock, self._begin(write=True) as txn:
            for name, cutoff in cutoffs:
                cursor = txn.cursor(db=self._dbs[name])
                if not cursor.first():
                    continue
                while deleted < max_deletes and cursor.key() and cursor.key() < cutoff:
                    if not cursor.delete():
                        break
                    deleted += 1
            deleted += self._trim_request_log(txn, max_deletes - deleted)
        if deleted:
            log.info("usage store: %d old usage rows and log entries deleted", deleted)
        return deleted < max_deletes

    # -- change feed ---------------------------------------------------------------------

    def on_change(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def _last_change_seq(self) -> int:
        with self._env_lock, self._begin(db=self._dbs["changes"]) as txn:
            cursor = txn.cursor()
            return int.from_bytes(cursor.key(), "big") if cursor.last() else 0

    def read_changes(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        """State writes other processes committed since the last call: (namespace, key, current value)."""
        found: dict[tuple[str, bytes], str] = {}
        with self._env_lock, self._begin() as txn:
            cursor = txn.cursor(db=self._dbs["changes"])
            if not cursor.set_range((self._change_seq + 1).to_bytes(8, "big")):
                return []
            first = int.from_bytes(cursor.key(), "big")
            if self._change_seq and first > self._change_seq + 1:
                log.warning(
                    "usage store: %d state changes of other processes missed", first - self._change_seq - 1
                )
            origin = self._instance_id.encode()
            for seq_key, entry in cursor:
                self._change_seq = int.from_bytes(seq_key, "big")
                writer, namespace, key = entry.split(b"\0", 2)
                if writer != origin and namespace.decode() in _NAMESPACES:
                    found[(namespace.decode(), key)] = key.decode("utf-8", "replace")
            changes: list[tuple[str, str, dict[str, Any] | None]] = []
            for (namespace, key), name in found.items():
                raw = txn.get(key, db=self._dbs[namespace])
                changes.append((namespace, name, None if raw is None else orjson.loads(raw)))
        return changes

    async def follow_changes(self, stop: asyncio.Event) -> None:
        """Tell the listeners about other processes' state writes, every CHANGES_POLL_S until ``stop``."""
        while not stop.is_set():
            for namespace, key, value in await asyncio.to_thread(self.read_changes):
                for listener in self._listeners:
                    try:
                        listener(namespace, key, value)
                    except Exception:  # one listener's bug must not stop the feed for the others
                        log.exception("state listener failed on %s/%s", namespace, key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHANGES_POLL_S)

    # -- the rest of the Store interface (one process: coordination in memory) ----------

    async def start(self) -> None:
        """Nothing to connect: the environment is open and ``get_states`` reads it."""

    def tasks(self, stop: asyncio.Event) -> dict[str, Callable[[], Awaitable[None]]]:
        return {
            "store committer": lambda: self.run_committer(stop),
            "store change feed": lambda: self.follow_changes(stop),
        }

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def degraded(self) -> str:
        return ""

    async def hit(self, key: str, limit: int, window_s: float) -> float:
        return self._windows.hit(key, limit, window_s)

    async def lock(self, name: str, ttl_s: float) -> str | None:
        return self._locks.lock(name, ttl_s)

    async def unlock(self, name: str, token: str) -> None:
        self._locks.unlock(name, token)

    def _read_state(self, namespace: str, key: str) -> dict[str, Any] | None:
        with contextlib.suppress(StoreError):  # what is committed still answers
            self.flush()
        with self._env_lock, self._begin(db=self._dbs[namespace]) as txn:
            raw = txn.get(state_key(key))
        return None if raw is None else dict(orjson.loads(raw))

    async def read_state(self, namespace: str, key: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._read_state, namespace, key)

    async def write_state(self, namespace: str, key: str, value: Mapping[str, Any] | None) -> None:
        self.put_state(namespace, key, value)
        try:
            await asyncio.to_thread(self.flush)
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def agree(self, name: str, value: str) -> str:
        return value

    def report_leases(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Nothing to publish: with LMDB, in-flight counts stay per process (documented as approximate)."""

    def peer_leases(self) -> Mapping[str, int]:
        return {}

    # -- reads ---------------------------------------------------------------------------

    def get_states(self, namespace: str) -> dict[str, dict[str, Any]]:
        with self._env_lock, self._begin(db=self._dbs[namespace]) as txn:
            return {k.decode("utf-8", "replace"): orjson.loads(v) for k, v in txn.cursor()}

    def usage(self, day: str) -> list[UsageRow]:
        merged: dict[tuple[str, str], UsageTotals] = {}
        for row in self._rows("daily", day, day):
            merged.setdefault((row.account_id, row.model), UsageTotals()).add(row.totals)
        return [UsageRow(day, account, model, totals=totals) for (account, model), totals in merged.items()]

    def usage_rows(self, since_ts: float, until_ts: float, *, hourly: bool = False) -> list[UsageRow]:
        bucket = utc_hour if hourly else utc_day
        return list(self._rows("hourly" if hourly else "daily", bucket(since_ts), bucket(until_ts)))

    def _rows(self, db_name: str, first: str, last: str) -> Iterator[UsageRow]:
        start, stop = first.encode(), last.encode()
        with self._env_lock, self._begin(db=self._dbs[db_name]) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(start):
                return
            for key, value in cursor:
                bucket, account, model, client_format, route, tenant = _split_row_key(key)
                if bucket.encode() > stop:
                    break
                totals = UsageTotals()
                totals.add(orjson.loads(value))
                yield UsageRow(bucket, account, model, client_format, route, tenant, totals)

    def requests(
        self, limit: int = 100, *, before: str = "", account: str = "", status: str = ""
    ) -> list[dict[str, Any]]:
        matches = _status_matcher(status)
        # Cheap tests on the stored bytes first: a filter that matches little need not parse
        # 100,000 entries (0.86 s → 0.1-0.3 s). A quote inside a string value is escaped, so
        # these bytes only ever match the top-level fields.
        account_field = b'"account_id":' + orjson.dumps(account) if account else b""
        entries: list[dict[str, Any]] = []

        def take(entry: Any) -> None:
            if isinstance(entry, dict):
                entry = {**_RECORD_DEFAULTS, **entry}
                if (not account or entry["account_id"] == account) and matches(_int_status(entry)):
                    entries.append(entry)

        with self._env_lock, self._begin() as txn:
            cursor = txn.cursor(db=self._dbs["requests"])
            if before:
                older = self._position_before(txn, cursor, before)
                if older is None:
                    return []
                for entry in reversed(older):  # those before it in its page
                    if len(entries) >= limit:
                        return entries
                    take(entry)
                if not cursor.prev():
                    return entries[:limit]
            elif not cursor.last():
                return []
            while len(entries) < limit:
                raw = cursor.value()
                if account_field and account_field not in raw:
                    pass  # neither a page nor an entry of that account
                elif cursor.key()[:1] == PAGE_PREFIX:
                    for entry in reversed(_page_entries(raw)):
                        take(entry)
                        if len(entries) >= limit:
                            break
                elif not status or matches(_status_of(raw)):
                    take(orjson.loads(raw))
                if not cursor.prev():
                    break
        return entries[:limit]

    def _position_before(self, txn: Any, cursor: Any, before: str) -> list[Any] | None:
        """Put ``cursor`` on the page or entry holding request ``before`` and return the entries
        before it in that page (``[]`` for an entry of an earlier version); None: not in the log."""
        index_key = txn.get(key_part(before), db=self._dbs["request_ids"])  # an earlier version's entry
        if index_key is not None and cursor.set_key(index_key):
            return []
        try:
            field = b'"request_id":' + orjson.dumps(before)
        except orjson.JSONEncodeError:  # a lone surrogate: no stored id has one
            return None
        # A page is written after its requests arrived: none older than ``before``'s arrival
        # (its id says when, for ours) can hold it.
        arrived_ns = int(ours.group(1), 16) * 1_000_000 if (ours := _OUR_ID.fullmatch(before)) else 0
        more = cursor.last()
        while more:
            key = cursor.key()
            if key[:1] != PAGE_PREFIX or int.from_bytes(key[1:9], "big") < arrived_ns:
                return None
            if field in (raw := cursor.value()):
                page = _page_entries(raw)
                for index, entry in enumerate(page):
                    if isinstance(entry, dict) and entry.get("request_id") == before:
                        return page[:index]
            more = cursor.prev()
        return None

    def recent_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.requests(limit)

    # -- lifetime ------------------------------------------------------------------------

    def _migrate_legacy_usage(self) -> None:
        """Move rows of the first layout (``usage``: day, account, model) into ``daily``, once.

        Their client format, route and tenant are unknown (empty).
        """
        with self._env_lock, self._begin(write=True) as txn:
            try:
                legacy = self._env.open_db(b"usage", txn=txn, create=False)
            except lmdb.NotFoundError:
                return
            daily = self._dbs["daily"]
            moved = 0
            for key, value in txn.cursor(db=legacy):
                day, account, model = (*key.decode("utf-8", "replace").split("\0", 2), "", "")[:3]
                new_key = _row_key(day, (account, model, "", "", ""))
                totals = UsageTotals()
                with contextlib.suppress(orjson.JSONDecodeError):
                    totals.add(orjson.loads(value))
                if current := txn.get(new_key, db=daily):
                    totals.add(orjson.loads(current))
                txn.put(new_key, orjson.dumps(totals.as_dict()), db=daily)
                moved += 1
            txn.drop(legacy, delete=True)
        if moved:
            log.info("usage store: %d daily rows moved to the new layout", moved)

    def close(self) -> None:
        try:
            self.flush()
        except StoreError as exc:
            log.error("%s; lost at stop", exc)
        with self._env_lock:
            with contextlib.suppress(lmdb.Error):
                self._env.sync(True)
            self._env.close()


def _int_status(entry: Mapping[str, Any]) -> int:
    status = entry.get("status")
    return status if isinstance(status, int) else 0


def _page_entries(raw: bytes) -> list[Any]:
    """A request-log page's entries; a page that is not a JSON list (damaged) has none."""
    try:
        entries = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return entries if isinstance(entries, list) else []


def log_page(records: list[UsageRecord]) -> bytes:
    """Records as a request-log page: a JSON list, built in one call (each alone if one has a
    lone surrogate from a client's bytes, which ``log_entry`` replaces)."""
    try:
        return orjson.dumps(records)
    except orjson.JSONEncodeError:
        return b"[" + b",".join(log_entry(rec) for rec in records) + b"]"


def _status_of(entry: bytes) -> int:
    """The ``status`` of a stored request-log entry, read without parsing it (0 if absent)."""
    start = entry.find(b'"status":') + 9
    if start < 9:
        return 0
    end = entry.find(b",", start)  # orjson writes no spaces; fields follow status
    digits = entry[start : end if end >= 0 else None]
    return int(digits) if digits.isdigit() else 0


def _status_matcher(pattern: str) -> Callable[[int], bool]:
    if not pattern:
        return lambda _: True
    pattern = pattern.lower()
    if len(pattern) != 3 or any(c not in "0123456789x" for c in pattern):
        raise ValueError(f"status filter {pattern!r}: expected three digits or x, like 429 or 5xx")
    statuses = frozenset(
        n for n in range(1000) if all(p in ("x", c) for p, c in zip(pattern, f"{n:03d}", strict=True))
    )
    return statuses.__contains__
