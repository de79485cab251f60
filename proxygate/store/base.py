"""The state interface everything above ``store/`` talks to.

A laptop runs the embedded LMDB store; a team would run a shared one (DESIGN.md, "Growing
past one machine"). Nothing above this package knows which: no LMDB handle leaves it.

Writes are queued and committed in small batches off the hot path (``record``/``put_state``
only append to a queue); the committer aggregates usage rows by hour and by day, appends to
the request log and applies state writes. ``flush`` commits what is queued; ``close`` flushes
and releases.

Usage is kept three ways (issue 11):

- daily rows and hourly rows, one per bucket × account × model × client format × route ×
  tenant (``usage_rows``), each with request/error/token counts and cost;
- a bounded request log, one entry per request with no bodies (``requests``).

Cost is never invented: a request with tokens and no known price adds to
``unpriced_requests``, not to ``cost_usd``, so a report can say "unknown" or "partial"
instead of showing 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxygate.errors import StoreError

# State namespaces (one LMDB sub-database each in the embedded store).
COOLDOWNS = "cooldowns"
HEADROOM = "headroom"
PINS = "pins"
SETTINGS = "settings"
TENANTS = "tenants"
GUARDRAILS = "guardrails"
CACHE_LOST = "cache_lost"
"Prompt cache lost by moving conversations: one key, the totals and the newest events."
OVERAGE = "overage"
"Answers served from overage, by account."
TOKENS = "tokens"
"OAuth tokens by account id (sealed by the Vault when secrets at rest are on)."
NAMESPACES = (COOLDOWNS, HEADROOM, PINS, SETTINGS, TENANTS, GUARDRAILS, CACHE_LOST, OVERAGE, TOKENS)

StateListener = Callable[[str, str, dict[str, Any] | None], None]
"``listener(namespace, key, value)``: a state write made by another instance (value None: deleted)."


class StoreUnavailable(StoreError):
    """The shared store cannot be reached now: a write-through write did not happen."""


@dataclass(slots=True)
class UsageRecord:
    """One proxied request, as recorded: ties the request id to account, model, tokens and cost.

    It is also the request log's entry: ``Store.requests`` returns these fields as a dict.
    Not frozen (nothing changes a record once queued): every request builds one, and a frozen
    dataclass of 21 fields takes ~6 µs to build, this ~1.5 µs.
    """

    request_id: str
    ts: float
    "Arrival, Unix seconds (UTC buckets are taken from it)."
    account_id: str
    "Empty for a request refused before an account was chosen: in the request log, in no usage row."
    model: str
    "The model served (after aliases and routing)."
    client_format: str
    upstream_format: str
    status: int
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms: float = 0.0
    "Arrival to the end of the answer."
    error_class: str = ""
    is_stream: bool = False
    tenant: str = ""
    model_asked: str = ""
    "The model the client asked for."
    route: str = ""
    "The routing config in use."
    attempts: int = 0
    "Accounts tried (more than 1: failovers)."
    first_byte_ms: float = 0.0
    "Arrival to the first body byte sent to the client (0: none was sent)."
    cost_usd: float | None = None
    "API-price cost of the usage; None when no price is known (never 0 for unknown)."
    guardrails: Mapping[str, int] = field(default_factory=dict)
    "Guardrail detector → values replaced in the request (counts only, never values)."

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def is_error(self) -> bool:
        return self.status >= 400 or bool(self.error_class)


_COUNTS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "unpriced_requests",
)


@dataclass(slots=True)
class UsageTotals:
    """Counters of one usage row (or a sum of rows).

    ``cost_usd`` sums the priced requests only; ``unpriced_requests`` counts requests that
    used tokens but had no price. A report shows the cost as unknown when every request with
    tokens was unpriced, and as partial (a lower bound) when some were.
    """

    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_requests: int = 0

    @property
    def tokens(self) -> int:
        """``total_tokens``: input, output, cache reads and writes (what budgets count)."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def add(self, other: Mapping[str, Any] | UsageTotals) -> None:
        """Add another row's counters (a ``UsageTotals`` or its ``as_dict``; missing keys are 0)."""
        if isinstance(other, UsageTotals):  # the commit thread's per-record path: spelled out, 6× faster
            self.requests += other.requests
            self.errors += other.errors
            self.input_tokens += other.input_tokens
            self.output_tokens += other.output_tokens
            self.cache_read_tokens += other.cache_read_tokens
            self.cache_write_tokens += other.cache_write_tokens
            self.unpriced_requests += other.unpriced_requests
            self.cost_usd += other.cost_usd
            return
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + int(other.get(name, 0) or 0))
        self.cost_usd += float(other.get("cost_usd", 0.0) or 0.0)

    def count(self, rec: UsageRecord) -> None:
        """Add one request."""
        self.requests += 1
        self.errors += 1 if rec.is_error else 0
        self.input_tokens += rec.input_tokens
        self.output_tokens += rec.output_tokens
        self.cache_read_tokens += rec.cache_read_tokens
        self.cache_write_tokens += rec.cache_write_tokens
        if rec.cost_usd is not None:
            self.cost_usd += rec.cost_usd
        elif rec.tokens:
            self.unpriced_requests += 1

    def as_dict(self) -> dict[str, Any]:
        """The counters by name (ints), plus ``cost_usd`` (a float)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _COUNTS}
        data["cost_usd"] = self.cost_usd
        return data


@dataclass(frozen=True, slots=True)
class UsageRow:
    """The totals of one bucket × account × model × client format × route × tenant.

    A value too long or odd to be a key (over 72 bytes, a NUL, invalid UTF-8) is stored as a
    readable prefix plus a hash (``claude-aaaa…~3f2a…``); rows written before formats and
    routes were kept have ``client_format`` and ``route`` empty (unknown).
    """

    bucket: str
    "A UTC day ``YYYY-MM-DD`` or hour ``YYYY-MM-DDTHH``."
    account_id: str
    model: str
    client_format: str = ""
    route: str = ""
    tenant: str = ""
    totals: UsageTotals = field(default_factory=UsageTotals)

    @property
    def day(self) -> str:
        return self.bucket[:10]


class Store(Protocol):
    def record(self, rec: UsageRecord) -> None:
        """Queue one usage record (never blocks; aggregated by the committer)."""

    def put_state(self, namespace: str, key: str, value: Mapping[str, Any] | None) -> None:
        """Queue a state write; ``None`` deletes the key."""

    def get_states(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every key of a namespace as committed (queued writes included after ``flush``)."""

    def usage(self, day: str) -> list[UsageRow]:
        """Per account and model totals of one UTC day (``YYYY-MM-DD``), formats/routes/tenants summed."""

    def usage_rows(self, since_ts: float, until_ts: float, *, hourly: bool = False) -> list[UsageRow]:
        """Daily (or hourly) rows of every bucket from the one holding ``since_ts`` to the one holding ``until_ts``.

        Sorted by bucket, then account, model, client format, route, tenant.
        """

    def requests(
        self, limit: int = 100, *, before: str = "", account: str = "", status: str = ""
    ) -> list[dict[str, Any]]:
        """Request-log entries (``UsageRecord`` fields), the last recorded first.

        With filters this may read the whole log (``request_log_max_rows``): call it off the loop.

        Args:
            before: a request id; only the entries listed after it (the next page). Unknown id: [].
            account: only this account's entries.
            status: ``"429"``, ``"5xx"``, ``"4xx"`` (``x`` matches any digit).

        Raises:
            ValueError: ``status`` is not three digits or ``x``.
        """

    def recent_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest request-log entries, newest first (``requests`` without filters)."""

    @property
    def queue_depth(self) -> int:
        """Writes queued and not yet committed."""

    @property
    def commit_failures(self) -> int:
        """Operations dropped or commits failed since start (each also logged once)."""

    def flush(self) -> None:
        """Commit everything queued so far."""

    def close(self) -> None:
        """Flush and release."""

    async def start(self) -> None:
        """On the event loop, before any ``get_states``: connect and load the local mirror."""

    def tasks(self, stop: asyncio.Event) -> dict[str, Callable[[], Awaitable[None]]]:
        """The store's background loops by name, each run under ``server.tasks.supervise`` until ``stop``."""

    def wake(self) -> None:
        """Wake the committer (to commit now, or to notice a stop)."""

    def on_change(self, listener: StateListener) -> None:
        """Call ``listener(namespace, key, value)`` on the loop for each state write of ANOTHER instance.

        It runs after ``get_states`` already shows the write; writes of this process are never
        echoed back. After a reconnect the store resyncs and calls it for every key that differs
        from its mirror.
        """

    @property
    def instance_id(self) -> str:
        """Unique per process (``hostname:pid:random``)."""

    @property
    def degraded(self) -> str:
        """Empty when shared state is reachable; otherwise why (``redis unreachable since …``)."""

    async def hit(self, key: str, limit: int, window_s: float) -> float:
        """Count one event in the sliding window ``key`` unless ``limit`` already fell in the last ``window_s``.

        Returns 0.0 when counted (admitted), else the seconds until one more fits. Shared across
        instances when the store is; per process otherwise. Never raises.
        """

    async def lock(self, name: str, ttl_s: float) -> str | None:
        """Take the lock ``name`` for at most ``ttl_s``: a fencing token, or None when someone holds it."""

    async def unlock(self, name: str, token: str) -> None:
        """Release ``name`` only if ``token`` still holds it."""

    async def read_state(self, namespace: str, key: str) -> dict[str, Any] | None:
        """One key read from the store itself (not the mirror); None when absent or unreachable."""

    async def write_state(self, namespace: str, key: str, value: Mapping[str, Any] | None) -> None:
        """Write through: committed and announced to other instances when it returns.

        Raises:
            StoreUnavailable: the write could not be committed.
        """

    async def agree(self, name: str, value: str) -> str:
        """The value every instance uses for ``name``: ``value``, unless another set it first.

        Redis: ``SET NX`` then ``GET`` (with Redis unreachable, ``value``). LMDB: ``value``
        (the processes of one machine share their data dir's files already).
        """

    def report_leases(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Register this process's in-flight count per account, published by the heartbeat."""

    def peer_leases(self) -> Mapping[str, int]:
        """In flight per account on the OTHER live instances (a snapshot refreshed by the heartbeat)."""
