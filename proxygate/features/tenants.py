"""Tenants: teammates on one gateway, each with a key, limits and settings of their own (issue 14).

One idea first: a tenant key is a bearer credential like the proxy token, but it names *who*
asks. Ingress turns the key into a tenant name (``TenantBook.authenticate``); the stage
``TenantLimits`` then applies that tenant's limits before the broker and settles its tokens and
dollars after the answer. The owner (``proxy_token``, or no key while no tenant exists) is the
tenant ``""`` (shown as ``-``) and has no limits.

Keys are ``pgk_`` + 32 random bytes (base64url). Only their SHA-256 is stored, with the first
four characters after ``pgk_`` for recognising a key in a list: the keys are random, so a slow
KDF would only add latency (a lookup is one hash and one dict probe, bench/tenants.py).

Tenants are ``Store`` records in the ``tenants`` namespace (so a shared store shares them). A
write also bumps ``tenants_version`` in the ``settings`` namespace; the server polls that one
small key once a second, so a tenant added by the CLI with no server running, or into the
store beside a running one, applies within a second.

Limits (0 = none), each refused with 429 and a ``Retry-After`` that is enough when waited:

    rpm             at most N requests accepted in any 60 s (refused ones use nothing up);
                    with a shared store (``[store] backend = "redis"``) across all instances,
                    to ±1: one ``Store.hit`` per request of a tenant with an rpm
    tpm             at most N tokens (``total_tokens``, settled when the answer's usage is
                    known) in any 60 s; a request is admitted while the last 60 s are under N
    concurrency     requests in flight at once
    daily_tokens, monthly_tokens, daily_usd, monthly_usd
                    per UTC day / calendar month, restored from the usage rows at startup
                    (they carry the tenant), so they hold across a restart; a model without a
                    price adds no dollars, and the token limits still apply

Settings inherit from the global ones and override field by field: ``route`` (a routing config;
empty: the active one), ``models`` (globs the tenant may ask for; empty: all) and ``aliases``
(laid over ``[routing] aliases``).

Two switches, ``guardrails`` and ``capture``, are on, off or inherit (the global
``[guardrails] enabled`` / ``[capture] enabled``), decided per request from ``call.tenant``. Their
stages are in the pipeline when the global setting or any tenant turns them on at the server's
start; with both off everywhere there is no stage, tap or transform at all. A switch turned on
live whose stage is absent applies at the next start (``TenantBook.pending_start`` says which, and
``tenant add/set`` prints it); off, on where the stage is present, and inherit apply at once.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import logging
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from proxygate.call import Call
from proxygate.config import Settings
from proxygate.errors import ClientError, ModelNotAllowed, ProxyError, TenantLimitReached
from proxygate.features.metrics import REQUEST_SCOPE
from proxygate.store.base import SETTINGS, TENANTS, Store

log = logging.getLogger("proxygate.tenants")

Clock = Callable[[], float]

VERSION_KEY = "tenants_version"
"Key in the ``settings`` namespace bumped on every tenant write (what the server polls)."
KEY_PREFIX = "pgk_"
KEY_BYTES = 32
SHOWN_KEY_CHARS = 4
"Characters after ``pgk_`` kept for display: 24 bits, enough to tell keys apart, useless to guess one."
OWNER = ""
"The owner's tenant name (``proxy_token`` or no key); shown as ``-``."
WINDOW_S = 60.0
"Length of the rpm / tpm sliding windows."
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_INT_LIMITS = ("rpm", "tpm", "concurrency", "daily_tokens", "monthly_tokens")
_USD_LIMITS = ("daily_usd", "monthly_usd")
SWITCHES = ("guardrails", "capture")
"Per-tenant on/off/inherit switches of pipeline stages."
SETTABLE = (*_INT_LIMITS, *_USD_LIMITS, "route", "models", "aliases", "share", *SWITCHES)
"Fields ``tenant add`` / ``tenant set`` and the admin API accept."


def display_name(tenant: str) -> str:
    return tenant or "-"


def new_key() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode()


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_hint(key: str) -> str:
    """What a list shows of a key: ``pgk_AbCd…``."""
    return key[: len(KEY_PREFIX) + SHOWN_KEY_CHARS] + "…"


@dataclass(frozen=True, slots=True)
class Tenant:
    """One tenant as stored: its key's hash, limits (0 = none) and settings overrides."""

    name: str
    key_sha256: str
    key_hint: str
    rpm: int = 0
    tpm: int = 0
    concurrency: int = 0
    daily_tokens: int = 0
    monthly_tokens: int = 0
    daily_usd: float = 0.0
    monthly_usd: float = 0.0
    route: str = ""
    "Routing config for this tenant's requests (empty: the active one)."
    models: tuple[str, ...] = ()
    "Model globs the tenant may ask for (empty: every model)."
    aliases: Mapping[str, str] = field(default_factory=dict)
    "Model name → model name, laid over ``[routing] aliases``."
    share: float = 1.0
    "Weight in the fair shares of subscription windows (broker/fairshare.py)."
    guardrails: bool | None = None
    "Redact this tenant's requests (None: ``[guardrails] enabled``)."
    capture: bool | None = None
    "Capture this tenant's turns (None: ``[capture] enabled``)."
    created_at: float = 0.0

    def limits(self) -> dict[str, int | float]:
        return {name: getattr(self, name) for name in (*_INT_LIMITS, *_USD_LIMITS)}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key_sha256": self.key_sha256,
            "key_hint": self.key_hint,
            **self.limits(),
            "route": self.route,
            "models": list(self.models),
            "aliases": dict(self.aliases),
            "share": self.share,
            "guardrails": self.guardrails,
            "capture": self.capture,
            "created_at": self.created_at,
        }

    def view(self) -> dict[str, Any]:
        """What lists and the admin API show: everything but the key's hash; switches as on/off/inherit."""
        data = self.to_json()
        del data["key_sha256"]
        for name in SWITCHES:
            data[name] = switch_text(data[name])
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tenant:
        tenant = cls(
            str(data["name"]),
            str(data["key_sha256"]),
            str(data.get("key_hint", "")),
            created_at=float(data.get("created_at") or 0.0),
        )
        return changed(tenant, {k: v for k, v in data.items() if k in SETTABLE}, routes=None)


def switch_text(value: bool | None) -> str:
    return "inherit" if value is None else "on" if value else "off"


_SWITCH_VALUES: dict[Any, bool | None] = {"on": True, "off": False, "inherit": None}


def _switch(name: str, value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _SWITCH_VALUES:
        return _SWITCH_VALUES[value]
    raise ClientError(f'{name} must be true, false, "on", "off" or "inherit", got {value!r}')


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ClientError(
            f"tenant name {name!r}: use 1-64 characters a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def created(
    name: str, changes: Mapping[str, Any], *, now: float, routes: Iterable[str] | None
) -> tuple[Tenant, str]:
    """A new tenant and its key (shown once, never stored)."""
    key = new_key()
    tenant = Tenant(check_name(name), key_hash(key), key_hint(key), created_at=now)
    return changed(tenant, changes, routes=routes), key


def rotated(tenant: Tenant) -> tuple[Tenant, str]:
    key = new_key()
    return replace(tenant, key_sha256=key_hash(key), key_hint=key_hint(key)), key


def changed(tenant: Tenant, changes: Mapping[str, Any], *, routes: Iterable[str] | None) -> Tenant:
    """``tenant`` with ``changes`` (names in ``SETTABLE``) validated and applied.

    Raises:
        ClientError: an unknown field, a wrong type, a negative limit or an unknown route.
    """
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in SETTABLE:
            raise ClientError(f"unknown tenant setting {name!r} (settings: {', '.join(SETTABLE)})")
        if value is None:
            continue
        if name in SWITCHES:
            values[name] = _switch(name, value)
        elif name in _INT_LIMITS:
            values[name] = _number(name, value, int)
        elif name in _USD_LIMITS:
            values[name] = _number(name, value, float)
        elif name == "share":
            share = _number(name, value, float)
            if share <= 0:
                raise ClientError(f"share must be positive, got {value!r}")
            values[name] = share
        elif name == "route":
            if not isinstance(value, str):
                raise ClientError(f"route must be a string, got {value!r}")
            if value and routes is not None and value not in routes:
                raise ClientError(f"no routing config {value!r} (configs: {', '.join(sorted(routes))})")
            values[name] = value
        elif name == "models":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ClientError(f"models must be a list of globs, got {value!r}")
            values[name] = tuple(value)
        elif name == "aliases":
            if isinstance(value, str):  # "from=to,from2=to2" (the CLI)
                pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
                if not all(len(p) == 2 and p[0].strip() and p[1].strip() for p in pairs):
                    raise ClientError(f"aliases must be FROM=TO pairs separated by commas, got {value!r}")
                value = {p[0].strip(): p[1].strip() for p in pairs}
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ClientError(f"aliases must map model names to model names, got {value!r}")
            values[name] = dict(value)
    return replace(tenant, **values)


def _number(name: str, value: Any, kind: type[int] | type[float]) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ClientError(f"{name} must be a number, got {value!r}")
    try:
        number = kind(value)
    except ValueError:
        raise ClientError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ClientError(f"{name} must be 0 (no limit) or more, got {value!r}")
    return number


# -- the store ---------------------------------------------------------------------------------


def load_tenants(store: Store) -> dict[str, Tenant]:
    """Every stored tenant; a record that cannot be read is skipped with one log line."""
    found: dict[str, Tenant] = {}
    for name, data in store.get_states(TENANTS).items():
        try:
            found[name] = Tenant.from_json(data)
        except (KeyError, TypeError, ProxyError) as exc:
            log.warning("tenant record %r cannot be read (%s); skipped", name, exc)
    return found


def save_tenant(store: Store, tenant: Tenant) -> None:
    store.put_state(TENANTS, tenant.name, tenant.to_json())
    _bump(store)


def delete_tenant(store: Store, name: str) -> None:
    store.put_state(TENANTS, name, None)
    _bump(store)


def stored_version(store: Store) -> str:
    found = store.get_states(SETTINGS).get(VERSION_KEY) or {}
    return str(found.get("version", ""))


def _bump(store: Store) -> None:
    store.put_state(SETTINGS, VERSION_KEY, {"version": secrets.token_hex(8)})


# -- usage counters ----------------------------------------------------------------------------


def day_and_month(ts: float) -> tuple[str, str]:
    day = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
    return day, day[:7]


def seconds_to_next_day(ts: float) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() + 86400.0
    return midnight - ts


def seconds_to_next_month(ts: float) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return nxt.timestamp() - ts


@dataclass(slots=True)
class SettledSecond:
    """The tokens of the answers settled within one second of the clock."""

    second: int
    newest: float
    "When the last of them was settled: they leave the 60 s window together, then."
    tokens: int


@dataclass(slots=True)
class TenantUsage:
    """One tenant's live counters: sliding windows, requests in flight, today's and this month's totals."""

    accepted: deque[float] = field(default_factory=deque)
    "Times of the requests accepted in the last 60 s (rpm); refusals keep it within the rpm."
    settled: deque[SettledSecond] = field(default_factory=deque)
    """The answers settled in the last 60 s (tpm), one entry a second: at most ~61 entries
    whatever the request rate (one a request would be ~14 MB at 2,000 requests/s). Tokens leave the
    window with the newest of their second, so at most 1 s late, never early."""
    settled_tokens: int = 0
    "Sum of the tokens in ``settled``."
    inflight: int = 0
    day: str = ""
    month: str = ""
    day_requests: int = 0
    day_tokens: int = 0
    month_tokens: int = 0
    day_usd: float = 0.0
    month_usd: float = 0.0
    day_starts_at: float = 0.0
    day_ends_at: float = 0.0
    "The UTC day ``day`` names, as Unix seconds [start, end)."

    def roll(self, now: float) -> None:
        """Forget what left the 60 s windows, and start a new day or month."""
        cutoff = now - WINDOW_S
        accepted = self.accepted
        while accepted and accepted[0] <= cutoff:
            accepted.popleft()
        settled = self.settled
        while settled and settled[0].newest <= cutoff:
            self.settled_tokens -= settled.popleft().tokens
        if self.day_starts_at <= now < self.day_ends_at:
            return  # formatting the date costs more than all the rest: once a day
        day, month = day_and_month(now)
        if day != self.day:
            self.day, self.day_requests, self.day_tokens, self.day_usd = day, 0, 0, 0.0
        if month != self.month:
            self.month, self.month_tokens, self.month_usd = month, 0, 0.0
        self.day_starts_at = now - now % 86400.0  # Unix time has no leap seconds: UTC days are 86400 s
        self.day_ends_at = self.day_starts_at + 86400.0

    def settle(self, now: float, tokens: int) -> None:
        """Count an answer's tokens into the tpm window."""
        second, settled = int(now), self.settled
        last = settled[-1] if settled else None
        if last is not None and second <= last.second:  # the same second (or the clock stepped back)
            last.newest, last.tokens = max(last.newest, now), last.tokens + tokens
        else:
            settled.append(SettledSecond(second, now, tokens))
        self.settled_tokens += tokens


class TenantBook:
    """The tenants the server knows, by key hash, and their live usage (one per app)."""

    def __init__(self, settings: Settings, *, clock: Clock = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.tenants: dict[str, Tenant] = {}
        self._by_hash: dict[str, str] = {}
        self.usage: dict[str, TenantUsage] = {}
        self.version = ""
        self._listeners: list[Callable[[TenantBook], None]] = []
        self.present: frozenset[str] | None = None
        "Switchable stages in the running pipeline (``SWITCHES``); None: no pipeline (the CLI)."

    # -- the records ---------------------------------------------------------------------------

    def replace_all(self, tenants: Mapping[str, Tenant], version: str = "") -> None:
        """Swap in the stored set (after a poll or an admin call); live counters of kept tenants stay."""
        self.tenants = dict(tenants)
        self._by_hash = {t.key_sha256: t.name for t in tenants.values()}
        self.usage = {name: self.usage.get(name) or TenantUsage() for name in (OWNER, *tenants)}
        self.version = version
        for listener in self._listeners:
            listener(self)

    def on_change(self, listener: Callable[[TenantBook], None]) -> None:
        self._listeners.append(listener)
        listener(self)

    def shares(self) -> dict[str, float]:
        """Fair-share weights, the owner's included (``[tenants] owner_share``)."""
        return {OWNER: self.settings.tenants.owner_share, **{n: t.share for n, t in self.tenants.items()}}

    def authenticate(self, presented: str) -> str | None:
        """The tenant name for a presented credential: ``""`` for the owner, None for a refusal."""
        if presented.startswith(KEY_PREFIX):
            name = self._by_hash.get(hashlib.sha256(presented.encode("utf-8", "surrogatepass")).hexdigest())
            if name is not None:
                return name
        token = self.settings.proxy_token
        if token:
            return OWNER if secrets.compare_digest(presented.encode(), token.encode()) else None
        return None if self.tenants else OWNER  # a gateway that hands out keys must require them

    # -- limits ----------------------------------------------------------------------------------

    def counters(self, name: str, now: float | None = None) -> TenantUsage:
        found = self.usage.get(name)
        if found is None:
            found = self.usage[name] = TenantUsage()
        found.roll(self.clock() if now is None else now)
        return found

    def admit(self, name: str, *, is_rpm_shared: bool = False) -> None:
        """Count one request against the tenant's limits, or raise ``TenantLimitReached``.

        ``is_rpm_shared``: the rpm is counted in the shared store (``TenantLimits.on_admit``),
        not here.
        """
        now = self.clock()
        usage = self.counters(name, now)
        tenant = self.tenants.get(name)
        if tenant is not None:
            self._check(tenant, usage, now, is_rpm_shared=is_rpm_shared)
            if tenant.rpm and not is_rpm_shared:
                usage.accepted.append(now)
        usage.inflight += 1
        usage.day_requests += 1

    def withdraw(self, name: str) -> None:
        """Undo ``admit`` for a request refused afterwards (the shared rpm): it used nothing up."""
        usage = self.counters(name)
        usage.inflight = max(usage.inflight - 1, 0)
        usage.day_requests = max(usage.day_requests - 1, 0)

    def _check(self, t: Tenant, usage: TenantUsage, now: float, *, is_rpm_shared: bool) -> None:
        who = f"tenant {t.name!r}"
        if t.rpm and not is_rpm_shared and len(usage.accepted) >= t.rpm:
            # The oldest accepted request leaves the window first: then one more fits.
            wait = usage.accepted[len(usage.accepted) - t.rpm] + WINDOW_S - now
            raise TenantLimitReached(f"{who}: {t.rpm} requests per minute reached (rpm)", retry_after_s=wait)
        if t.tpm and usage.settled_tokens >= t.tpm:
            left = usage.settled_tokens
            wait = WINDOW_S
            for entry in usage.settled:
                left -= entry.tokens
                if left < t.tpm:
                    wait = entry.newest + WINDOW_S - now
                    break
            raise TenantLimitReached(f"{who}: {t.tpm} tokens per minute reached (tpm)", retry_after_s=wait)
        if t.concurrency and usage.inflight >= t.concurrency:
            # A request in flight ends in its own time; a second is a fair first try.
            raise TenantLimitReached(
                f"{who}: {t.concurrency} requests in flight at once (concurrency)", retry_after_s=1.0
            )
        for limit, used, kind, wait_for in (
            (t.daily_tokens, usage.day_tokens, "tokens per day (daily_tokens)", seconds_to_next_day),
            (
                t.monthly_tokens,
                usage.month_tokens,
                "tokens per month (monthly_tokens)",
                seconds_to_next_month,
            ),
            (t.daily_usd, usage.day_usd, "USD per day (daily_usd)", seconds_to_next_day),
            (t.monthly_usd, usage.month_usd, "USD per month (monthly_usd)", seconds_to_next_month),
        ):
            if limit and used >= limit:
                raise TenantLimitReached(f"{who}: {limit:g} {kind} reached", retry_after_s=wait_for(now))

    def settle(self, name: str, tokens: int, cost_usd: float | None, *, admitted: bool) -> None:
        """The answer's usage is known: count it (and end the request in flight when it was admitted)."""
        now = self.clock()
        usage = self.counters(name, now)
        if admitted:
            usage.inflight = max(usage.inflight - 1, 0)
        if tokens:
            usage.settle(now, tokens)
            usage.day_tokens += tokens
            usage.month_tokens += tokens
        if cost_usd:
            usage.day_usd += cost_usd
            usage.month_usd += cost_usd

    def restore(self, store: Store) -> None:
        """Seed today's and this month's totals per tenant from the usage rows (they survive a restart)."""
        now = self.clock()
        day, month = day_and_month(now)
        month_start = datetime.fromtimestamp(now, UTC).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        for usage in self.usage.values():
            usage.day, usage.month = day, month
            usage.day_ends_at = 0.0  # the next roll checks the date again
            usage.day_requests = usage.day_tokens = usage.month_tokens = 0
            usage.day_usd = usage.month_usd = 0.0
        for row in store.usage_rows(month_start.timestamp(), now):
            usage = self.usage.setdefault(row.tenant, TenantUsage(day=day, month=month))
            usage.month_tokens += row.totals.tokens
            usage.month_usd += row.totals.cost_usd
            if row.day == day:
                usage.day_requests += row.totals.requests
                usage.day_tokens += row.totals.tokens
                usage.day_usd += row.totals.cost_usd

    # -- settings ----------------------------------------------------------------------------------

    def any_on(self, switch: str) -> bool:
        """Some tenant turns ``switch`` on (its stage must be in the pipeline)."""
        return any(getattr(t, switch) for t in self.tenants.values())

    def switch(self, switch: str, default: bool) -> Callable[[Call], bool]:
        """Per request: the tenant's ``switch`` value, or ``default`` (the global setting) on inherit."""
        book = self  # book.tenants is read per call: replace_all swaps the dict

        def on(call: Call) -> bool:
            tenant = book.tenants.get(call.tenant)
            value = None if tenant is None else getattr(tenant, switch)
            return default if value is None else bool(value)

        return on

    def pending_start(self, name: str) -> list[str]:
        """Switches the tenant turns on whose stage the running pipeline lacks (on at the next start)."""
        tenant = self.tenants.get(name)
        if tenant is None or self.present is None:
            return []
        return [s for s in SWITCHES if getattr(tenant, s) and s not in self.present]

    def resolve_model(self, name: str, model: str) -> str:
        """The model after the tenant's aliases; ``ModelNotAllowed`` outside its ``models`` globs."""
        tenant = self.tenants.get(name)
        if tenant is None:
            return model
        target = tenant.aliases.get(model, model)
        if tenant.models:
            final = self.settings.routing.aliases.get(target, target)
            if not any(fnmatch.fnmatchcase(m, glob) for glob in tenant.models for m in (target, final)):
                raise ModelNotAllowed(
                    f"tenant {name!r} may not use model {model!r} (allowed: {', '.join(tenant.models)})"
                )
        return target

    def allows(self, name: str, model: str) -> bool:
        """Whether the tenant may ask for ``model`` (for the model list it is shown)."""
        try:
            self.resolve_model(name, model)
        except ModelNotAllowed:
            return False
        return True

    def report(self, name: str) -> dict[str, Any]:
        """A tenant's limits and usage now, for ``tenant list`` / ``show`` and the admin API."""
        usage = self.counters(name)
        tenant = self.tenants.get(name)
        data = (
            tenant.view()
            if tenant is not None
            else {"name": OWNER, "share": self.settings.tenants.owner_share}
        )
        data["display_name"] = display_name(name)
        if pending := self.pending_start(name):
            data["applies_at_next_start"] = pending
        data["usage"] = {
            "requests_today": usage.day_requests,
            "tokens_today": usage.day_tokens,
            "tokens_month": usage.month_tokens,
            "usd_today": round(usage.day_usd, 6),
            "usd_month": round(usage.month_usd, 6),
            "inflight": usage.inflight,
            "requests_last_minute": len(usage.accepted),
            "tokens_last_minute": usage.settled_tokens,
        }
        return data


class TenantLimits:
    """Stage: the tenant's model rules and limits before the broker; its usage settled after.

    With a shared store the rpm is counted there (``on_admit``, awaited after the other stages'
    ``on_request``), so it holds across instances; the other limits stay per instance.
    """

    def __init__(self, book: TenantBook, store: Store | None = None) -> None:
        """``store``: a shared store ([store] backend = "redis") counting every instance's rpm."""
        self.book = book
        self.store = store
        self._admitted: dict[str, str] = {}
        "Request id → tenant, for requests admitted and not yet settled."

    def on_request(self, call: Call) -> None:
        if (scope := REQUEST_SCOPE.get()) is not None:
            scope.tenant = display_name(call.tenant)  # json log lines name the tenant
        book = self.book
        tenant = book.tenants.get(call.tenant)
        if tenant is not None:
            model = book.resolve_model(call.tenant, call.model)
            if model != call.model:
                call.model = model
                if "model" in call.body:  # Gemini names the model in the path only
                    call.body = {**call.body, "model": model}
                    call.raw_body = orjson.dumps(call.body)  # the fast path sends these bytes
            if (
                tenant.route and tenant.route in book.settings.routing.configs
            ):  # a config since removed: the active one
                call.route = tenant.route
        book.admit(call.tenant, is_rpm_shared=self.store is not None)
        self._admitted[call.request_id] = call.tenant

    async def on_admit(self, call: Call) -> None:
        """The shared rpm: one request counted in the store's 60 s window, or refused with 429.

        The store answers per process while it is unreachable (store/local.py), so the limit
        then holds per instance.
        """
        tenant = self.book.tenants.get(call.tenant)
        if self.store is None or tenant is None or not tenant.rpm:
            return
        wait_s = await self.store.hit(f"tenant:{tenant.name}:rpm", tenant.rpm, WINDOW_S)
        if wait_s > 0:
            if self._admitted.pop(call.request_id, None) is not None:
                self.book.withdraw(call.tenant)
            raise TenantLimitReached(
                f"tenant {tenant.name!r}: {tenant.rpm} requests per minute reached (rpm)",
                retry_after_s=wait_s,
            )
        usage = self.book.counters(call.tenant)
        usage.accepted.append(self.book.clock())  # for the report's requests_last_minute

    def on_done(self, call: Call) -> None:
        admitted = self._admitted.pop(call.request_id, None) is not None
        self.book.settle(call.tenant, call.usage.total_tokens, call.cost_usd, admitted=admitted)


__all__ = [
    "KEY_PREFIX",
    "OWNER",
    "SWITCHES",
    "TENANTS",
    "Tenant",
    "TenantBook",
    "TenantLimits",
    "changed",
    "created",
    "delete_tenant",
    "display_name",
    "key_hash",
    "load_tenants",
    "rotated",
    "save_tenant",
    "stored_version",
]
