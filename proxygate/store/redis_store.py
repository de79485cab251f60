"""The shared store: one Redis for several proxygate instances (issue 17, DESIGN.md "Growing past one machine").

The idea to grasp first: every instance keeps a local mirror of the state namespaces, and the
request path only ever reads that mirror and appends to a queue. Nothing on the hot path waits
on Redis, and Redis going away only makes the mirror stale, never the server fail.

Layout (``p`` = ``[store] key_prefix``):

- ``{p}:state:{namespace}`` hash, key → JSON value; changes are announced on the channel
  ``{p}:changes`` as ``{"i": instance, "n": namespace, "k": key, "v": value or null}``. A
  subscriber applies other instances' messages to the mirror and calls the listeners; its own
  come back as markers: until one has, a remote write of the same key is older than ours in
  Redis's order (messages arrive in the order Redis executed them) and is not applied.
- ``{p}:usage:day:{YYYY-MM-DD}`` and ``{p}:usage:hour:{YYYY-MM-DDTHH}`` hashes, field = account,
  model, client format, route, tenant and counter joined by ``\\x1f`` → HINCRBY(FLOAT), each
  expiring by the ``[usage]`` retention; ``{p}:usage:days`` / ``{p}:usage:hours`` index the
  buckets by start time, so a range read touches only buckets that exist.
- ``{p}:requests`` list, newest first (LPUSH + LTRIM to ``request_log_max_rows``).
- ``{p}:leases:{instance}`` hash (in flight per account, 3 s TTL, refreshed every second) and
  ``{p}:instances`` zset (who heartbeats); ``{p}:lock:{name}``; ``{p}:rate:{key}`` zset.

The committer sends the queue every ``COMMIT_INTERVAL_S`` in one MULTI/EXEC (usage aggregated
per row between sends). While Redis is unreachable the queue is kept, bounded; the change feed
tries to reconnect with a backoff of at most ``RECONNECT_MAX_S``, and on success pushes the
queue, reloads the mirror and tells the listeners about every key that changed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from proxygate.config import StoreSettings, UsageSettings
from proxygate.store.base import (
    _COUNTS,
    NAMESPACES,
    StateListener,
    Store,
    StoreUnavailable,
    UsageRecord,
    UsageRow,
    UsageTotals,
)
from proxygate.store.lmdb_store import (
    _LAST_TS,
    _RECORD_DEFAULTS,
    _buckets,
    _clamped,
    _status_matcher,
    key_part,
    log_entry,
    utc_day,
    utc_hour,
)
from proxygate.store.local import LocalLocks, SlidingWindows

log = logging.getLogger("proxygate.store")

COMMIT_INTERVAL_S = 0.05
"Longest a state write waits before other instances can see it (plus one network hop)."
COMMIT_BATCH = 100
"Queued writes that wake the committer early."
HEARTBEAT_S = 1.0
LEASE_TTL_S = 3.0
"A dead instance's in-flight counts vanish this long after its last heartbeat."
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 5.0
"Reconnect attempts at least this often (an outage ends for us within seconds of Redis's return)."
FEED_POLL_S = 0.25
ECHO_WAIT_S = 5.0
"Longest a write of ours holds back other instances' writes of the same key while its echo is due."
"How often the change feed also checks whether another task found Redis gone."
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0
MAX_QUEUED_STATES = 50_000
MAX_QUEUED_ROWS = 50_000
MAX_QUEUED_LOG = 10_000
MAX_UNFOLDED = 20_000
"Records queued before ``record`` folds them itself (the committer normally does, every tick)."
"Kept while Redis is unreachable; beyond these the oldest are dropped (counted): memory stays bounded."
LOG_READ_CHUNK = 1000
SEP = "\x1f"
"Between the parts of a usage field: a control character no key part keeps (``_part``)."

# One sliding-window hit, atomic in Redis: the window, its count and the new event in one step,
# so a limit holds across instances (to ±1 when the window is trimmed at its edge).
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
if limit <= 0 then
  return window
end
local oldest = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return math.max(tonumber(oldest[2]) + window - now, 1)
"""
# Compare-and-delete: a lock whose TTL ran out and that someone else took is not released.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_Key = tuple[str, str]
_Parts = tuple[str, str, str, str, str]


@functools.lru_cache(maxsize=1024)
def _field_prefix(parts: _Parts) -> str:
    """A usage row's field prefix: its parts bounded like LMDB keys (so rows read the same), then SEP."""
    return "".join(key_part(p).decode().replace(SEP, "?") + SEP for p in parts)


def _bucket_start(bucket: str) -> float:
    fmt = "%Y-%m-%dT%H" if "T" in bucket else "%Y-%m-%d"
    return datetime.strptime(bucket, fmt).replace(tzinfo=UTC).timestamp()


@dataclass(slots=True)
class _Batch:
    """Writes taken from the queue for one send."""

    states: dict[_Key, dict[str, Any] | None] = field(default_factory=dict)
    rows: dict[tuple[int, _Parts], UsageTotals] = field(default_factory=dict)
    log: list[bytes] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.states or self.rows or self.log)


class RedisStore:
    """The ``Store`` on Redis: a local mirror for reads, a queue for writes, pub/sub for changes."""

    def __init__(self, settings: StoreSettings, usage: UsageSettings | None = None) -> None:
        self.settings = usage or UsageSettings()
        self._url = settings.redis_url
        self._p = settings.key_prefix
        self._channel = f"{self._p}:changes"
        self._instance_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._mirror: dict[str, dict[str, dict[str, Any]]] = {ns: {} for ns in NAMESPACES}
        self._lock = threading.Lock()  # the queue is filled on the loop and taken by flush in a thread
        self._states: dict[_Key, dict[str, Any] | None] = {}
        self._rows: dict[tuple[int, _Parts], UsageTotals] = {}
        self._log: deque[bytes] = deque()
        self._records: list[UsageRecord] = []  # not yet folded into rows and log entries
        # Our sent writes whose message has not come back yet: (count, monotonic time of the last).
        self._unechoed: dict[_Key, tuple[int, float]] = {}
        self._listeners: list[StateListener] = []
        self._wake = asyncio.Event()
        self._degraded = ""
        self._down_since = 0.0
        self._is_broken = False  # a task saw Redis fail: the change feed reconnects and resyncs
        self._commit_failures = 0
        self._is_shedding = False
        self._windows = SlidingWindows()
        self._locks = LocalLocks()
        self._hits = itertools.count()
        self._lease_source: Callable[[], Mapping[str, int]] | None = None
        self._peers: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._aio: Any = None
        self._hit_script: Any = None
        self._unlock_script: Any = None
        self._sync: Any = redis.Redis.from_url(self._url, **_client_options())
        self._is_loaded = False
        self._has_synced = False  # the mirror was loaded from Redis once: a restart of Redis can be told

    # -- writes (queued) ---------------------------------------------------------------

    def record(self, rec: UsageRecord) -> None:
        with self._lock:
            self._records.append(rec)  # summed and encoded later, off the request path
            if len(self._records) >= MAX_UNFOLDED:  # the committer has not folded for a while
                self._fold()
            elif len(self._records) >= COMMIT_BATCH:
                self._wake.set()

    def _fold(self) -> None:
        """Sum the queued records into usage rows and encode their log entries (holding the lock).

        Rows and entries are what stays queued while Redis is away, both bounded.
        """
        records, self._records = self._records, []
        for rec in records:
            if rec.account_id:  # refused before an account was chosen: the request log only
                self._count(rec)
            if len(self._log) >= MAX_QUEUED_LOG:
                self._log.popleft()
                self._shed("request-log entry")
            self._log.append(log_entry(rec))

    def _count(self, rec: UsageRecord) -> None:
        row = (
            int(_clamped(rec.ts) // 3600),
            (rec.account_id, rec.model, rec.client_format, rec.route, rec.tenant),
        )
        if (totals := self._rows.get(row)) is None:
            if len(self._rows) >= MAX_QUEUED_ROWS:
                del self._rows[next(iter(self._rows))]
                self._shed("usage row")
            totals = self._rows[row] = UsageTotals()
        totals.count(rec)

    def fold(self) -> None:
        """Fold the queued records (see ``_fold``); the committer calls it in a thread."""
        with self._lock:
            self._fold()

    def put_state(self, namespace: str, key: str, value: Mapping[str, Any] | None) -> None:
        if namespace not in self._mirror:
            self._commit_failures += 1
            log.error("shared store: dropped one state write: no state namespace %r", namespace)
            return
        data = None if value is None else dict(value)
        if data is None:
            self._mirror[namespace].pop(key, None)
        else:
            self._mirror[namespace][key] = data
        with self._lock:
            self._states.pop((namespace, key), None)  # re-inserted last: the newest write wins
            self._states[(namespace, key)] = data
            if len(self._states) > MAX_QUEUED_STATES:
                del self._states[next(iter(self._states))]
                self._shed("state write")
            if len(self._states) >= COMMIT_BATCH:
                self._wake.set()

    def _shed(self, what: str) -> None:
        self._commit_failures += 1
        if not self._is_shedding:
            self._is_shedding = True
            log.error(
                "shared store: too many writes queued while redis is unreachable; dropping the oldest %s",
                what,
            )

    @property
    def queue_depth(self) -> int:
        return len(self._states) + len(self._rows) + len(self._log) + len(self._records)

    @property
    def commit_failures(self) -> int:
        return self._commit_failures

    # -- sending the queue -------------------------------------------------------------

    def _take(self) -> _Batch:
        with self._lock:
            self._fold()
            batch = _Batch(self._states, self._rows, list(self._log))
            self._states, self._rows = {}, {}
            self._log.clear()
            for key in batch.states:
                self._sent(key)
        return batch

    def _give_back(self, batch: _Batch) -> None:
        """A send failed: its writes go back in front of the queue (newer writes of a key win)."""
        with self._lock:
            for key in batch.states:
                self._echoed(key)
            self._states = {**batch.states, **self._states}
            for row, totals in batch.rows.items():
                if row in self._rows:
                    totals.add(self._rows[row])
            self._rows = {**self._rows, **batch.rows}
            self._log.extendleft(reversed(batch.log[-MAX_QUEUED_LOG:]))
            while len(self._log) > MAX_QUEUED_LOG:
                self._log.popleft()

    def _sent(self, key: _Key) -> None:
        count, _ = self._unechoed.get(key, (0, 0.0))
        self._unechoed[key] = (count + 1, time.monotonic())

    def _echoed(self, key: _Key) -> None:
        count, sent_at = self._unechoed.pop(key, (0, 0.0))
        if count > 1:
            self._unechoed[key] = (count - 1, sent_at)

    def _is_ours_newer(self, key: _Key) -> bool:
        """Our write of ``key`` is queued, or sent and not yet echoed: Redis will end with ours.

        An echo lost with a connection is waited for at most ECHO_WAIT_S.
        """
        if key in self._states:
            return True
        count, sent_at = self._unechoed.get(key, (0, 0.0))
        return count > 0 and time.monotonic() - sent_at < ECHO_WAIT_S

    def _fill(self, pipe: Any, batch: _Batch) -> None:
        """Queue ``batch``'s commands on ``pipe`` (sync or asyncio: the command API is the same)."""
        for (namespace, key), value in batch.states.items():
            try:
                message = orjson.dumps({"i": self._instance_id, "n": namespace, "k": key, "v": value})
                encoded = None if value is None else orjson.dumps(value)
            except (TypeError, orjson.JSONEncodeError) as exc:
                self._commit_failures += 1
                log.error("shared store: dropped one state write that cannot be stored: %s", exc)
                continue
            if encoded is None:
                pipe.hdel(f"{self._p}:state:{namespace}", key)
            else:
                pipe.hset(f"{self._p}:state:{namespace}", key, encoded)
            pipe.publish(self._channel, message)
        now = time.time()
        touched: dict[str, float] = {}
        for (hour_index, parts), totals in batch.rows.items():
            prefix = _field_prefix(parts)
            for kind, bucket in zip(("day", "hour"), _buckets(hour_index), strict=True):
                key = f"{self._p}:usage:{kind}:{bucket}"
                for name in _COUNTS:
                    if count := getattr(totals, name):
                        pipe.hincrby(key, prefix + name, count)
                if totals.cost_usd:
                    pipe.hincrbyfloat(key, prefix + "cost_usd", totals.cost_usd)
                touched[key] = _bucket_start(bucket)
        for key, start in touched.items():
            self._keep_bucket(pipe, key, start, now)
        if batch.log:
            pipe.lpush(f"{self._p}:requests", *batch.log)
            pipe.ltrim(f"{self._p}:requests", 0, max(self.settings.request_log_max_rows, 1) - 1)

    def _keep_bucket(self, pipe: Any, key: str, start: float, now: float) -> None:
        """Index a usage bucket and let it expire by the ``[usage]`` retention."""
        kind, bucket = key.rsplit(":", 2)[-2:]
        days = self.settings.retention_days if kind == "day" else self.settings.hourly_retention_days
        pipe.zadd(f"{self._p}:usage:{kind}s", {bucket: start})
        if days > 0:  # as LMDB's sweep: a bucket goes once all of it is past retention
            pipe.expireat(key, int(start + (86400 if kind == "day" else 3600) + days * 86400))
            pipe.zremrangebyscore(f"{self._p}:usage:{kind}s", "-inf", now - (days + 1) * 86400)

    async def _send(self) -> None:
        """Send the queue in one MULTI/EXEC.

        Raises:
            RedisError, OSError: the queue was given back.
        """
        batch = await asyncio.to_thread(self._take)  # folding encodes log entries: off the loop
        if not batch:
            return
        try:
            async with self._aio.pipeline(transaction=True) as pipe:
                self._fill(pipe, batch)
                await pipe.execute()
        except (RedisError, OSError):
            self._give_back(batch)
            raise
        self._is_shedding = False

    def flush(self) -> None:
        """Send everything queued now (with the blocking client: callable from any thread).

        Raises:
            StoreUnavailable: Redis is unreachable; the writes stay queued.
        """
        batch = self._take()
        if not batch:
            return
        try:
            with self._sync.pipeline(transaction=True) as pipe:
                self._fill(pipe, batch)
                pipe.execute()
        except (RedisError, OSError) as exc:
            self._give_back(batch)
            self._went_down(exc)
            raise StoreUnavailable(
                f"shared store: redis unreachable ({self.queue_depth} writes kept): {exc}"
            ) from None

    def wake(self) -> None:
        """Make the committer send now (and notice a stop)."""
        self._wake.set()

    async def run_committer(self, stop: asyncio.Event) -> None:
        """Send the queue every COMMIT_INTERVAL_S (sooner at COMMIT_BATCH) until ``stop``.

        While Redis is unreachable it waits: the change feed pushes the queue when it reconnects.
        """
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), COMMIT_INTERVAL_S)
            self._wake.clear()
            if self._degraded and self._records:  # sums stay bounded until the feed sends them
                await asyncio.to_thread(self.fold)
            if self._degraded or not self.queue_depth:
                continue
            try:
                await self._send()
            except (RedisError, OSError) as exc:
                self._went_down(exc)

    # -- reachability --------------------------------------------------------------------

    def _went_down(self, exc: BaseException) -> None:
        """Note that Redis failed (logged once per outage); the change feed reconnects."""
        self._is_broken = True
        if self._degraded:
            return
        self._down_since = time.time()
        reason = " ".join(str(exc).split()) or type(exc).__name__
        since = datetime.fromtimestamp(self._down_since).strftime("%H:%M:%S")
        self._degraded = f"redis unreachable since {since}: {reason}"
        log.error("shared store: %s; serving from the local mirror, writes queued", self._degraded)

    def _came_back(self, pushed: int) -> None:
        self._is_broken = False
        if self._degraded:
            log.warning(
                "shared store: redis reachable again after %.0f s; %d queued writes sent",
                time.time() - self._down_since,
                pushed,
            )
        self._degraded = ""

    @property
    def degraded(self) -> str:
        return self._degraded

    @property
    def instance_id(self) -> str:
        return self._instance_id

    # -- lifetime, mirror and change feed ----------------------------------------------------

    async def start(self) -> None:
        """Connect and load the mirror; with Redis unreachable, start degraded (the feed reconnects)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._aio = aioredis.Redis.from_url(self._url, **_client_options(is_async=True))
        self._hit_script = self._aio.register_script(_HIT)
        self._unlock_script = self._aio.register_script(_UNLOCK)
        try:
            await self._resync(notify=False)
        except (RedisError, OSError) as exc:
            self._went_down(exc)

    def tasks(self, stop: asyncio.Event) -> dict[str, Callable[[], Awaitable[None]]]:
        return {
            "store committer": lambda: self.run_committer(stop),
            "store change feed": lambda: self.follow_changes(stop),
            "store heartbeat": lambda: self.heartbeat(stop),
        }

    def on_change(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def _notify(self, namespace: str, key: str, value: dict[str, Any] | None) -> None:
        for listener in self._listeners:
            try:
                listener(namespace, key, value)
            except Exception:  # one listener's bug must not stop the feed for the others
                log.exception("state listener failed on %s/%s", namespace, key)

    async def _resync(self, *, notify: bool) -> None:
        """Send the queue, reload the mirror from Redis, and (``notify``) report what changed.

        The epoch key tells a Redis that came back empty (restarted without persistence, or
        flushed) from one whose keys were deleted: the first instance to see it missing puts
        its mirror back, so cooldowns, pins and routes are not forgotten by every instance.
        """
        is_new_epoch = await self._aio.set(f"{self._p}:epoch", self._instance_id, nx=True)
        if is_new_epoch and self._has_synced:
            await self._reseed()
        pushed = self.queue_depth
        await self._send()
        async with self._aio.pipeline(transaction=False) as pipe:
            for namespace in NAMESPACES:
                pipe.hgetall(f"{self._p}:state:{namespace}")
            loaded = await pipe.execute()
        changed: list[tuple[str, str, dict[str, Any] | None]] = []
        with self._lock:
            pending = set(self._states)
        for namespace, raw in zip(NAMESPACES, loaded, strict=True):
            fresh: dict[str, dict[str, Any]] = {}
            for key, value in raw.items():
                if (data := _object(value)) is not None:
                    fresh[key.decode("utf-8", "replace")] = data
            old = self._mirror[namespace]
            for key in old.keys() | fresh.keys():
                if (namespace, key) in pending:  # ours, queued after the send: it will win
                    if key in old:
                        fresh[key] = old[key]
                    else:
                        fresh.pop(key, None)
                elif old.get(key) != fresh.get(key):
                    changed.append((namespace, key, fresh.get(key)))
            self._mirror[namespace] = fresh
        self._has_synced = True
        self._came_back(pushed)
        if notify:
            for namespace, key, value in changed:
                self._notify(namespace, key, value)

    async def _reseed(self) -> None:
        """Give an emptied Redis this instance's mirror (keys another instance put back first win)."""
        async with self._aio.pipeline(transaction=False) as pipe:
            count = 0
            for namespace, values in self._mirror.items():
                for key, value in values.items():
                    pipe.hsetnx(f"{self._p}:state:{namespace}", key, orjson.dumps(value))
                    count += 1
            await pipe.execute()
        log.warning(
            "shared store: redis came back empty (restarted without persistence?); %d state keys put back "
            "from this instance",
            count,
        )

    def _apply(self, data: bytes) -> None:
        """One message of the change feed: another instance's write into the mirror, then the listeners."""
        try:
            message = orjson.loads(data)
            origin, namespace, key, value = message["i"], message["n"], message["k"], message["v"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if namespace not in self._mirror or not isinstance(key, str) or not isinstance(value, dict | None):
            return  # not a write we make: never let it into the mirror
        if origin == self._instance_id:
            with self._lock:
                self._echoed((namespace, key))
            return
        with self._lock:
            if self._is_ours_newer((namespace, key)):
                return  # our own write of this key comes later in Redis's order: it wins
        if self._mirror[namespace].get(key) == value:
            return  # already seen (the resync after subscribing read it)
        if value is None:
            self._mirror[namespace].pop(key, None)
        else:
            self._mirror[namespace][key] = value
        self._notify(namespace, key, value)

    async def follow_changes(self, stop: asyncio.Event) -> None:
        """Subscribe to the change feed; on any failure, reconnect with a backoff and resync."""
        delay_s = RECONNECT_MIN_S
        while not stop.is_set():
            pubsub = self._aio.pubsub(ignore_subscribe_messages=True)
            with self._lock:  # echoes of what was sent before subscribing never come
                self._unechoed.clear()
            try:
                await pubsub.subscribe(self._channel)
                await self._resync(notify=True)  # after subscribing: nothing falls between
                delay_s = RECONNECT_MIN_S
                while not stop.is_set() and not self._is_broken:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=FEED_POLL_S)
                    if message is not None and message.get("type") == "message":
                        self._apply(message["data"])
            except (RedisError, OSError) as exc:
                self._went_down(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            if not stop.is_set() and self._is_broken:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay_s)
                delay_s = min(delay_s * 2, RECONNECT_MAX_S)

    def get_states(self, namespace: str) -> dict[str, dict[str, Any]]:
        if self._aio is None and not self._is_loaded:  # not started (a CLI command): load once now
            self._is_loaded = True
            with contextlib.suppress(StoreUnavailable):  # degraded says why; the mirror is empty
                self._read(self._load_now)
        return dict(self._mirror[namespace])

    def _load_now(self) -> None:
        with self._sync.pipeline(transaction=False) as pipe:
            for namespace in NAMESPACES:
                pipe.hgetall(f"{self._p}:state:{namespace}")
            loaded = pipe.execute()
        for namespace, raw in zip(NAMESPACES, loaded, strict=True):
            fresh = {k.decode("utf-8", "replace"): d for k, v in raw.items() if (d := _object(v)) is not None}
            self._mirror[namespace] = {**fresh, **self._mirror[namespace]}  # writes made before: newer

    async def read_state(self, namespace: str, key: str) -> dict[str, Any] | None:
        state = f"{self._p}:state:{namespace}"
        try:
            if self._aio is None:  # not started (a CLI command): the blocking client, off the loop
                raw = await asyncio.to_thread(self._sync.hget, state, key)
            else:
                raw = await self._aio.hget(state, key)
        except (RedisError, OSError) as exc:
            self._went_down(exc)
            return None
        return None if raw is None else _object(raw)

    async def write_state(self, namespace: str, key: str, value: Mapping[str, Any] | None) -> None:
        data = None if value is None else dict(value)
        with self._lock:
            self._states.pop((namespace, key), None)  # this newer write replaces a queued one
            self._sent((namespace, key))
        try:
            if self._aio is None:  # not started (a CLI command): the blocking client, off the loop
                await asyncio.to_thread(self._write_now, namespace, key, data)
            else:
                async with self._aio.pipeline(transaction=True) as pipe:
                    self._fill(pipe, _Batch(states={(namespace, key): data}))
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            with self._lock:
                self._echoed((namespace, key))
            self._went_down(exc)
            raise StoreUnavailable(f"shared store: cannot write {namespace}/{key}: {exc}") from None
        if data is None:
            self._mirror[namespace].pop(key, None)
        else:
            self._mirror[namespace][key] = data

    async def agree(self, name: str, value: str) -> str:
        key = f"{self._p}:agreed:{name}"
        try:
            await self._aio.set(key, value, nx=True)
            found = await self._aio.get(key)
        except (RedisError, OSError) as exc:
            self._went_down(exc)
            log.warning(
                "shared store: could not agree on %s with the other instances; using this one's", name
            )
            return value
        return value if found is None else bytes(found).decode("utf-8", "replace")

    def _write_now(self, namespace: str, key: str, data: dict[str, Any] | None) -> None:
        with self._sync.pipeline(transaction=True) as pipe:
            self._fill(pipe, _Batch(states={(namespace, key): data}))
            pipe.execute()

    def close(self) -> None:
        """Send the queue and close the connections (from any thread but the loop's)."""
        try:
            self.flush()
        except StoreUnavailable as exc:
            log.error("%s; lost at stop", exc)
        loop = self._loop
        is_other_thread = threading.get_ident() != self._loop_thread  # the loop's own would deadlock
        if self._aio is not None and loop is not None and loop.is_running() and is_other_thread:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._aio.aclose(), loop).result(CONNECT_TIMEOUT_S)
        self._sync.close()

    # -- coordination (shared; per process while Redis is unreachable) -----------------------

    async def hit(self, key: str, limit: int, window_s: float) -> float:
        if self._degraded or self._aio is None:
            return self._windows.hit(key, limit, window_s)
        try:
            wait_ms = await self._hit_script(
                keys=[f"{self._p}:rate:{key}"],
                args=[max(int(window_s * 1000), 1), limit, f"{self._instance_id}:{next(self._hits)}"],
            )
        except (RedisError, OSError) as exc:
            self._went_down(exc)
            return self._windows.hit(key, limit, window_s)
        return int(wait_ms) / 1000

    async def lock(self, name: str, ttl_s: float) -> str | None:
        if self._degraded or self._aio is None:
            return self._locks.lock(name, ttl_s)
        token = secrets.token_hex(16)
        try:
            taken = await self._aio.set(
                f"{self._p}:lock:{name}", token, nx=True, px=max(int(ttl_s * 1000), 1)
            )
        except (RedisError, OSError) as exc:
            self._went_down(exc)
            return self._locks.lock(name, ttl_s)
        return token if taken else None

    async def unlock(self, name: str, token: str) -> None:
        self._locks.unlock(name, token)  # a lock taken while Redis was away
        if self._aio is None:
            return
        try:
            await self._unlock_script(keys=[f"{self._p}:lock:{name}"], args=[token])
        except (RedisError, OSError) as exc:
            self._went_down(exc)  # its TTL frees it

    def report_leases(self, source: Callable[[], Mapping[str, int]]) -> None:
        self._lease_source = source

    def peer_leases(self) -> Mapping[str, int]:
        return self._peers

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Every HEARTBEAT_S: publish this instance's leases (TTL LEASE_TTL_S) and read the others'."""
        try:
            while not stop.is_set():
                if self._degraded:
                    self._peers = {}
                else:
                    try:
                        await self._beat()
                    except (RedisError, OSError) as exc:
                        self._peers = {}
                        self._went_down(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
        finally:
            if not self._degraded:  # leave at once rather than after the TTL
                with contextlib.suppress(RedisError, OSError):
                    await self._aio.delete(f"{self._p}:leases:{self._instance_id}")

    async def _beat(self) -> None:
        counts = {k: int(v) for k, v in (self._lease_source or dict)().items() if v > 0}
        mine, instances = f"{self._p}:leases:{self._instance_id}", f"{self._p}:instances"
        now = time.time()
        async with self._aio.pipeline(transaction=True) as pipe:
            pipe.delete(mine)
            if counts:
                pipe.hset(mine, mapping=counts)
                pipe.pexpire(mine, int(LEASE_TTL_S * 1000))
            pipe.zadd(instances, {self._instance_id: now})
            pipe.zremrangebyscore(instances, "-inf", now - 60)  # gone for a minute: forgotten
            pipe.zrange(instances, 0, -1)
            members = (await pipe.execute())[-1]
        others = [m.decode() for m in members if m.decode() != self._instance_id]
        peers: dict[str, int] = {}
        if others:
            async with self._aio.pipeline(transaction=False) as pipe:
                for other in others:
                    pipe.hgetall(f"{self._p}:leases:{other}")
                for leases in await pipe.execute():
                    for account, count in leases.items():
                        name = account.decode("utf-8", "replace")
                        peers[name] = peers.get(name, 0) + int(count)
        self._peers = peers

    # -- reads (blocking: call them off the loop) ----------------------------------------------

    def _read(self, what: Callable[[], Any]) -> Any:
        try:
            return what()
        except (RedisError, OSError) as exc:
            self._went_down(exc)
            raise StoreUnavailable(f"shared store: redis unreachable: {exc}") from None

    def usage(self, day: str) -> list[UsageRow]:
        merged: dict[tuple[str, str], UsageTotals] = {}
        for row in self._rows_between("day", day, day):
            merged.setdefault((row.account_id, row.model), UsageTotals()).add(row.totals)
        return [UsageRow(day, account, model, totals=totals) for (account, model), totals in merged.items()]

    def usage_rows(self, since_ts: float, until_ts: float, *, hourly: bool = False) -> list[UsageRow]:
        bucket = utc_hour if hourly else utc_day
        return self._rows_between("hour" if hourly else "day", bucket(since_ts), bucket(until_ts))

    def _rows_between(self, kind: str, first: str, last: str) -> list[UsageRow]:
        def read() -> list[Any]:
            buckets = self._sync.zrangebyscore(
                f"{self._p}:usage:{kind}s", _bucket_start(first), _bucket_start(last)
            )
            with self._sync.pipeline(transaction=False) as pipe:
                for bucket in buckets:
                    pipe.hgetall(f"{self._p}:usage:{kind}:{bucket.decode()}")
                return list(zip((b.decode() for b in buckets), pipe.execute(), strict=True))

        rows: dict[tuple[str, _Parts], dict[str, Any]] = {}
        for bucket, fields in self._read(read):
            for name, value in fields.items():
                parts = name.decode("utf-8", "replace").split(SEP)
                if len(parts) == 6:
                    account, model, client_format, route, tenant, counter = parts
                    row = (bucket, (account, model, client_format, route, tenant))
                    rows.setdefault(row, {})[counter] = value.decode()
        found = []
        for (bucket, parts), counters in sorted(rows.items()):
            totals = UsageTotals()
            totals.add(counters)
            found.append(UsageRow(bucket, *parts, totals=totals))
        return found

    def requests(
        self, limit: int = 100, *, before: str = "", account: str = "", status: str = ""
    ) -> list[dict[str, Any]]:
        matches = _status_matcher(status)
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()  # entries pushed while reading shift the list: read them once
        is_past_before = not before
        start = 0
        while len(entries) < limit:
            chunk = self._read(
                functools.partial(self._sync.lrange, f"{self._p}:requests", start, start + LOG_READ_CHUNK - 1)
            )
            if not chunk:
                break
            start += len(chunk)
            for raw in chunk:
                if (found := _object(raw)) is None:
                    continue
                entry = {**_RECORD_DEFAULTS, **found}
                request_id = entry["request_id"]
                if not is_past_before:
                    is_past_before = request_id == before
                    seen.add(request_id)
                    continue
                if request_id in seen:
                    continue
                seen.add(request_id)
                if (not account or entry["account_id"] == account) and matches(int(entry["status"])):
                    entries.append(entry)
                    if len(entries) == limit:
                        break
        return entries if is_past_before else []

    def recent_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.requests(limit)

    # -- migration ---------------------------------------------------------------------------

    def copy_from(self, source: Store) -> dict[str, int]:
        """Copy another store's state, usage rows and request log into Redis; running it again adds nothing.

        State keys Redis already has are kept (they are newer: an OAuth token refreshed since
        must not go back). Usage rows are added as the difference to what an earlier copy added
        (``{p}:migrated``), so counts instances already made in Redis stay and a second run is
        a no-op. Request-log entries whose id Redis has are skipped. Returns what was copied.

        Raises:
            StoreUnavailable: Redis is unreachable.
        """
        copied = {"state": 0, "state_kept": 0, "daily_rows": 0, "hourly_rows": 0, "requests": 0}
        self._read(functools.partial(self._copy_state, source, copied))
        self._read(functools.partial(self._copy_usage, source, copied))
        self._read(functools.partial(self._copy_request_log, source, copied))
        return copied

    def _copy_state(self, source: Store, copied: dict[str, int]) -> None:
        items = [(ns, key, value) for ns in NAMESPACES for key, value in source.get_states(ns).items()]
        with self._sync.pipeline(transaction=False) as pipe:
            for namespace, key, value in items:
                pipe.hsetnx(f"{self._p}:state:{namespace}", key, orjson.dumps(value))
            results = pipe.execute()
        origin = f"migrate-store:{self._instance_id}"
        with self._sync.pipeline(transaction=False) as pipe:
            for (namespace, key, value), is_set in zip(items, results, strict=True):
                copied["state" if is_set else "state_kept"] += 1
                if is_set:  # instances already on Redis see it at once
                    pipe.publish(
                        self._channel, orjson.dumps({"i": origin, "n": namespace, "k": key, "v": value})
                    )
            pipe.execute()

    def _copy_usage(self, source: Store, copied: dict[str, int]) -> None:
        marker = f"{self._p}:migrated"
        done = {k.decode(): v.decode() for k, v in self._sync.hgetall(marker).items()}
        now = time.time()
        with self._sync.pipeline(transaction=True) as pipe:
            for kind, hourly in (("day", False), ("hour", True)):
                for row in source.usage_rows(0, _LAST_TS, hourly=hourly):
                    copied["daily_rows" if kind == "day" else "hourly_rows"] += 1
                    key = f"{self._p}:usage:{kind}:{row.bucket}"
                    prefix = _field_prefix(
                        (row.account_id, row.model, row.client_format, row.route, row.tenant)
                    )
                    for name, value in row.totals.as_dict().items():
                        field, mark = prefix + name, f"{kind}:{row.bucket}{SEP}{prefix}{name}"
                        if name == "cost_usd":
                            delta: float = value - float(done.get(mark, 0.0))
                            if delta:
                                pipe.hincrbyfloat(key, field, delta)
                        elif delta := value - int(done.get(mark, 0)):
                            pipe.hincrby(key, field, delta)
                        if value or mark in done:
                            pipe.hset(marker, mark, value)
                    self._keep_bucket(pipe, key, _bucket_start(row.bucket), now)
            pipe.execute()

    def _copy_request_log(self, source: Store, copied: dict[str, int]) -> None:
        key = f"{self._p}:requests"
        present = {(_object(raw) or {}).get("request_id") for raw in self._sync.lrange(key, 0, -1)}
        missing = [
            orjson.dumps(e)
            for e in source.requests(self.settings.request_log_max_rows)
            if e["request_id"] not in present
        ]
        with self._sync.pipeline(transaction=True) as pipe:
            for start in range(0, len(missing), LOG_READ_CHUNK):  # older than what Redis has: at the tail
                pipe.rpush(key, *missing[start : start + LOG_READ_CHUNK])
            pipe.ltrim(key, 0, max(self.settings.request_log_max_rows, 1) - 1)
            pipe.execute()
        copied["requests"] = len(missing)


def _object(raw: bytes) -> dict[str, Any] | None:
    """A JSON object read from Redis; None for anything else (Redis is a peer: what another
    program wrote there must not reach the broker or stop a report)."""
    try:
        found = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def _client_options(*, is_async: bool = False) -> dict[str, Any]:
    """Fail fast instead of retrying inside a call: the store has its own reconnect and queue."""
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": COMMAND_TIMEOUT_S,
        "retry": (AsyncRetry if is_async else Retry)(NoBackoff(), 0),
        "health_check_interval": 0,
    }
