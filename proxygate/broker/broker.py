"""The broker: which account serves a request, and what the request's outcome teaches it.

``Broker.acquire(ask)`` returns a ``Lease`` on an account; the caller must ``release`` it
exactly once with an ``Outcome``. The way of one choice (DESIGN.md, "broker"):

    1. route       the active routing config's precomputed candidates for the model
                   (aliases, tier, remap, fallback; broker/routing.py)
    2. eligible    enabled, not needing re-auth, not quarantined, not cooling down
                   (account-wide or for the model), not over budget, not held (its
                   ``reserve_pct`` reached, or only overage left with ``overage = "never"``;
                   broker/score.py), not already tried by this request
    3. pin         the conversation's pinned account, while it is eligible and not near a
                   limit (broker/pins.py); a pinned account cooling down for at most
                   ``[routing] max_wait_s`` is waited for (``pin_wait_s``: the caller sleeps)
                   rather than moving, which would rewrite the prompt cache (broker/cache.py);
                   otherwise
    4. strategy    the active config's strategy over the primary candidates, then the
                   fallback ones (drain-aware by default; broker/score.py); the conversation
                   is (re-)pinned to the choice

Every response teaches it quota windows (``observe`` → broker/headroom.py); a 429 turns the
windows it rejected into the cooldown's length and scope (account-wide, or one model family
when only a model-scoped window was refused). Pure: no I/O, time from the injected clock;
persistence goes out through the ``on_*`` callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxygate.broker.cache import CacheBook, CacheLost
from proxygate.broker.headroom import (
    Headroom,
    merge,
    model_family,
    parse_body,
    parse_quota,
    quota_headers,
    served_from_overage,
)
from proxygate.broker.pins import Pin, PinTable
from proxygate.broker.routing import (
    STRATEGIES,
    Budgets,
    Candidate,
    Route,
    RouteCache,
    StrategyContext,
    build_route,
    day_and_month,
)
from proxygate.broker.score import NEAR_LIMIT_FRACTION, pressure
from proxygate.broker.state import AccountState, Outcome, apply_outcome
from proxygate.config import BudgetSettings, RoutingSettings
from proxygate.errors import AllAccountsBusy, ConfigError, NoAccountForModel
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.prices import PriceTable
from proxygate.wire.ir import Format, Usage

Clock = Callable[[], float]
StateSink = Callable[[str, AccountState], None]
HeadroomSink = Callable[[str, list[Headroom]], None]
PinSink = Callable[[str, Pin | None], None]
EventSink = Callable[[str, str, str], None]
CacheLostSink = Callable[[dict[str, Any]], None]
"Gets ``CacheBook.lost_json()`` after each conversation moved off its cache."
OverageSink = Callable[[str, int], None]
"Gets an account and its count of answers served from overage, after each one."
"``(event, account_id, reason)``: ``quarantined``, ``needs_reauth``, ``window_spent`` (alerts)."

FRESH_S = 5.0
"A window observed this recently belongs to the response being released (429 scoping)."
QUOTA_REPARSE_S = 1.0
"""A success's quota headers equal to the last ones parsed are parsed again after this long
only (their windows' ``observed_at`` is that old at most): a subscription's windows change
a few times an hour, and parsing them cost ~20 µs a response."""
HEADROOM_PERSIST_S = 60.0
"Unchanged-looking windows are re-persisted at most this often (observe runs per response)."
STALE_COOLDOWN_S = 300.0
"A cooldown with more than this left is a hypothesis the usage endpoint can refute (issue 16 §2)."


@dataclass(frozen=True, slots=True)
class Ask:
    """What the broker needs to know about a request to choose an account."""

    model: str
    fmt: Format
    "The client's wire format: accounts speaking it need no conversion."
    pin_key: str = ""
    "The conversation key (broker/pins.py); empty: no pinning."
    follows_pin: bool = True
    "False for a conversation's first request: pin the choice, but do not follow an old pin."
    route: str = ""
    "A routing config other than the active one (a tenant's ``route``); empty: the active one."


@dataclass(slots=True)
class Lease:
    """One request's claim on an account; ``release`` exactly once."""

    account: Account
    model: str
    "The model to send upstream (after aliases / remaps)."
    upstream_format: Format
    broker: Broker = field(repr=False)
    released: bool = False
    is_fallback: bool = False
    "Chosen from the tier's fallback accounts."
    cache_lost: CacheLost | None = None
    "Set when this lease moved a conversation away from the account holding its prompt cache."

    def release(self, outcome: Outcome) -> None:
        if self.released:
            raise RuntimeError(f"lease on {self.account.id} released twice")
        self.released = True
        self.broker._release(self, outcome)


class Broker:
    def __init__(
        self,
        snapshot: PoolSnapshot,
        settings: RoutingSettings,
        *,
        clock: Clock,
        on_state: StateSink | None = None,
        on_headroom: HeadroomSink | None = None,
        on_pin: PinSink | None = None,
        budgets: Mapping[str, BudgetSettings] | None = None,
        prices: PriceTable | None = None,
        on_event: EventSink | None = None,
        on_cache_lost: CacheLostSink | None = None,
        on_overage: OverageSink | None = None,
    ) -> None:
        self.settings = settings
        self._on_cache_lost = on_cache_lost
        self._on_overage = on_overage
        self.on_event = on_event
        self.clock = clock
        self._on_state = on_state
        self._on_headroom = on_headroom
        self._on_pin = on_pin
        self._states: dict[str, AccountState] = {}
        self._routes = RouteCache()
        self._other_routes: dict[str, RouteCache] = {}
        "Routes of the configs tenants use besides the active one, by config name."
        self._headroom_persisted: dict[str, float] = {}
        self.pins = PinTable(settings.pin_ttl_s)
        self.budgets = Budgets(budgets or {}, prices)  # prices: for [budgets] in dollars
        self.cache = CacheBook(prices)  # prices: what a move's cache rewrite costs
        self._ctx = StrategyContext(self.budgets)
        self.route_name = settings.active
        self._choose = STRATEGIES[settings.configs[self.route_name].strategy]
        self.snapshot = snapshot
        self.update_pool(snapshot)

    # -- pool and routes ---------------------------------------------------------------------

    def update_pool(self, snapshot: PoolSnapshot) -> None:
        """Swap in a new pool; state of accounts that stay is kept, in-flight leases finish."""
        before = self.snapshot.by_id
        self.snapshot = snapshot
        self._routes.clear()  # candidates per model are recomputed lazily, once per pool
        self._other_routes.clear()
        for account in snapshot.accounts:
            state = self._states.setdefault(account.id, AccountState())
            old = before.get(account.id)
            if old is None:
                continue
            lifted = False
            if state.needs_reauth and _login_of(old) != _login_of(account):
                # A new key or login was put in the file: the old refusal no longer applies.
                state.needs_reauth, lifted = "", True
            if state.quarantined and _identity_of(old) != _identity_of(account):
                # Another key or another login's identity: the ban was on the old one. A refreshed
                # token of the same banned login lifts nothing (only `reset` does).
                state.quarantined, lifted = "", True
            if lifted and self._on_state is not None:
                self._on_state(account.id, state)

    def restore(self, states: dict[str, AccountState]) -> None:
        """Load persisted health (cooldowns, re-auth) after a restart."""
        for account_id, restored in states.items():
            state = self.state(account_id)
            state.cooldown_until, state.cooldown_reason = restored.cooldown_until, restored.cooldown_reason
            state.failures, state.model_cooldowns = restored.failures, restored.model_cooldowns
            state.needs_reauth, state.last_error_at = restored.needs_reauth, restored.last_error_at
            state.cooldown_window = restored.cooldown_window
            state.quarantined = restored.quarantined

    def restore_overage(self, counts: Mapping[str, int]) -> None:
        """Load persisted counts of answers served from overage after a restart."""
        for account_id, count in counts.items():
            self.state(account_id).overage_requests = count

    def restore_headroom(self, windows: Mapping[str, Iterable[Headroom]]) -> None:
        """Load persisted quota windows after a restart: a spent window stays spent."""
        for account_id, known in windows.items():
            state = self.state(account_id)
            state.windows = merge(state.windows, known)
            state.version += 1

    def leases(self) -> dict[str, int]:
        """Requests in flight per account in this process (what the shared store publishes)."""
        return {account_id: s.inflight for account_id, s in self._states.items() if s.inflight}

    def set_peer_leases(self, counts: Mapping[str, int]) -> None:
        """The other instances' requests in flight per account; scoring counts them with ours."""
        for account_id, state in self._states.items():
            state.peer_inflight = counts.get(account_id, 0)

    def restore_pins(self, pins: Mapping[str, Mapping[str, Any]]) -> None:
        self.pins.restore(pins, self.clock())
        self._forget_expired_pins()

    def _forget_expired_pins(self) -> None:
        """Tell the store to delete pins that expired, so it does not grow without bound."""
        expired, self.pins.expired = self.pins.expired, []
        if self._on_pin is not None:
            for key in expired:
                self._on_pin(key, None)

    def state(self, account_id: str) -> AccountState:
        found = self._states.get(account_id)
        if found is None:
            found = self._states[account_id] = AccountState()
        return found

    def route(self, model: str) -> Route:
        """The active config's candidates for ``model``, computed once per pool and config (when routable)."""
        found = self._routes.get(model)
        if found is None:
            found = build_route(
                model,
                self.snapshot.accounts,
                self.state,
                self.settings.configs[self.route_name],
                aliases=self.settings.aliases,
                apikey_first=self.settings.priority == "apikey-first",
            )
            self._routes.put(found)
        return found

    def use_route(self, name: str) -> None:
        """Switch the active routing config (``proxygate route use NAME``); takes effect at once."""
        if name not in self.settings.configs:
            raise ConfigError(
                f"no routing config {name!r} (configs: {', '.join(sorted(self.settings.configs))})"
            )
        self.route_name = name
        self._choose = STRATEGIES[self.settings.configs[name].strategy]
        self._routes.clear()

    @property
    def strategy_name(self) -> str:
        return self.settings.configs[self.route_name].strategy

    def route_label(self, *, failover: bool = False, name: str = "") -> str:
        """``<config>/<strategy>`` (+``+failover``) for the ``x-proxygate-route`` header.

        ``name``: the config a request used (a tenant's), when not the active one."""
        name = name if name in self.settings.configs else self.route_name
        strategy = self.settings.configs[name].strategy
        return f"{name}/{strategy}" + ("+failover" if failover else "")

    def routes(self) -> list[dict[str, Any]]:
        """Every routing config, for ``proxygate route list``."""
        return [
            {
                "name": name,
                "strategy": config.strategy,
                "active": name == self.route_name,
                "tiers": {
                    tier: {"accounts": list(t.accounts), "model": t.model, "fallback": list(t.fallback)}
                    for tier, t in config.tiers.items()
                },
            }
            for name, config in sorted(self.settings.configs.items())
        ]

    def served_models(self) -> list[str]:
        return sorted({m for a in self.snapshot.accounts if not a.disabled for m in a.models})

    # -- choosing ----------------------------------------------------------------------------

    def acquire(self, ask: Ask, *, exclude: Iterable[str] = ()) -> Lease:
        other = ask.route if ask.route and ask.route != self.route_name else ""
        route = (
            self.route_in(other, ask.model) if other else self._routes.get(ask.model) or self.route(ask.model)
        )
        if not route.primary and not route.fallback:
            served = ", ".join(self.served_models())
            if not served:
                raise NoAccountForModel(
                    f"no account serves model {ask.model!r}: the pool is empty (add one with "
                    "`proxygate add-key`, `proxygate add-account` or `proxygate add-claude-account`)"
                )
            raise NoAccountForModel(
                f"no account in the pool serves model {ask.model!r} (the pool serves: {served})"
            )
        now = self.clock()
        excluded = exclude if isinstance(exclude, list | tuple | set | frozenset) else set(exclude)
        if ask.pin_key and ask.follows_pin and (pin := self.pins.get(ask.pin_key, now)) is not None:
            pinned = route.by_id.get(pin.account_id)
            if pinned is not None and pinned.account.id not in excluded and self._is_healthy(pinned, now):
                return self._lease(pinned, ask, now)
        ready = self._ready(route.primary, excluded, now) or self._ready(route.fallback, excluded, now)
        if not ready:
            raise self._busy(ask.model, route, now)
        self._ctx.rotation = (other or self.route_name, route.tier, route.model)
        choose = STRATEGIES[self.settings.configs[other].strategy] if other else self._choose
        return self._lease(choose(ready, ask.fmt, now, self._ctx), ask, now)

    def route_in(self, name: str, model: str) -> Route:
        """The candidates for ``model`` under the routing config ``name`` (a tenant's), cached per pool."""
        cache = self._other_routes.get(name)
        if cache is None:
            cache = self._other_routes[name] = RouteCache()
        found = cache.get(model)
        if found is None:
            found = build_route(
                model,
                self.snapshot.accounts,
                self.state,
                self.settings.configs[name],
                aliases=self.settings.aliases,
                apikey_first=self.settings.priority == "apikey-first",
            )
            cache.put(found)
        return found

    def _ready(self, layer: tuple[Candidate, ...], excluded: Collection[str], now: float) -> list[Candidate]:
        """The layer's eligible candidates, their memoised pressure fresh (the hot loop: inlined)."""
        ready = []
        over_budget = self.budgets.is_over if self.budgets.budgets else None
        for c in layer:
            state = c.state
            if state.cooldown_until > now or state.needs_reauth or state.quarantined:
                continue
            cooling = state.model_cooldowns
            if cooling and (cooling.get(c.model, 0.0) > now or cooling.get(c.family, 0.0) > now):
                continue
            if excluded and c.account.id in excluded:
                continue
            if over_budget is not None and over_budget(c.account.id, now):
                continue
            if c.memo_version != state.version or c.memo_until <= now:
                c.refresh(now)
            if c.held:
                continue
            ready.append(c)
        return ready

    def _is_ready(self, c: Candidate, now: float) -> bool:
        state = c.state
        if state.needs_reauth or state.quarantined or state.cooldown_until > now:
            return False
        if state.model_cooldowns and (
            state.model_cooldowns.get(c.model, 0.0) > now or state.model_cooldowns.get(c.family, 0.0) > now
        ):
            return False
        if self.budgets.budgets and self.budgets.is_over(c.account.id, now):
            return False
        if c.memo_version != state.version or c.memo_until <= now:
            c.refresh(now)
        return not c.held

    def _is_healthy(self, c: Candidate, now: float) -> bool:
        """Ready and not near a limit: a pinned conversation stays only on a healthy account."""
        return self._is_ready(c, now) and not c.is_near

    def pin_wait_s(self, ask: Ask) -> float:
        """Seconds to wait for the conversation's pinned account rather than move it (0: do not wait).

        Waiting keeps the prompt cache; moving writes it again elsewhere (broker/cache.py). The
        rule is ``[routing] max_wait_s``: wait if and only if the pinned account's remaining
        cooldown is at most that long (and the account has no other reason to be skipped)."""
        limit = self.settings.max_wait_s
        if limit <= 0 or not ask.pin_key or not ask.follows_pin:
            return 0.0
        now = self.clock()
        pin = self.pins.get(ask.pin_key, now)
        route = self._routes.get(ask.model) or self.route(ask.model)
        c = None if pin is None else route.by_id.get(pin.account_id)
        if c is None:
            return 0.0
        state = c.state
        if state.quarantined or state.needs_reauth:
            return 0.0
        left = max(state.cooling(now, c.model), state.cooling(now, c.family))
        return left if 0.0 < left <= limit else 0.0

    def _lease(self, c: Candidate, ask: Ask, now: float) -> Lease:
        state = c.state
        state.inflight += 1
        state.requests += 1
        account = c.account
        cache_lost = None
        if ask.pin_key:
            previous = self.pins.get(ask.pin_key, now)
            moved = previous is None or previous.account_id != account.id
            if previous is not None and moved:
                cache_lost = self.cache.moved(
                    ask.pin_key, account.id, now, self._why_moved(previous.account_id, now)
                )
                if cache_lost is not None and self._on_cache_lost is not None:
                    self._on_cache_lost(self.cache.lost_json())
            pin = self.pins.put(ask.pin_key, account.id, now)
            if self.pins.expired:  # before persisting: the key just re-pinned may be among them
                self._forget_expired_pins()
            if self._on_pin is not None and self.pins.needs_persist(pin, moved=moved):
                pin.persisted_expires_at = pin.expires_at
                self._on_pin(ask.pin_key, pin)
        fmt = ask.fmt if account.speaks(ask.fmt) else account.formats[0]
        return Lease(account, c.model, fmt, self, is_fallback=c.is_fallback, cache_lost=cache_lost)

    def _why_moved(self, account_id: str, now: float) -> str:
        state = self.state(account_id)
        if state.quarantined:
            return f"{account_id} quarantined"
        if state.needs_reauth:
            return f"{account_id} needs re-auth"
        if (left := state.cooling(now)) > 0:
            return f"{account_id} cooling down {left:.0f}s"
        return f"{account_id} unavailable (near a limit, failed or over budget)"

    def last_resort(
        self, ask: Ask, *, exclude: Collection[str], tried: Collection[str] = (), within_s: float
    ) -> tuple[Lease, float] | None:
        """A cooling account to try once more when every other one failed for this request, and
        how long to wait first (its known reset; 0 when the cooldown is only our backoff's guess).

        Soonest reset first; an account whose provider-given reset is more than ``within_s``
        away, or that needs re-auth, is quarantined or over budget, is skipped. A cooldown may
        outlast the limit (a guessed 15 s after an earlier 429): better one more try than a
        failure. An account this request already ``tried`` comes back only for a known reset
        (a 429 with ``Retry-After: 1``), never on a guess (its 500 a moment ago says nothing new).
        """
        if within_s <= 0:
            return None
        route = self._routes.get(ask.model) or self.route(ask.model)
        now = self.clock()
        options: list[tuple[float, float, Candidate]] = []
        for c in (*route.primary, *route.fallback):
            state = c.state
            if c.account.id in exclude or state.needs_reauth or state.quarantined:
                continue
            if self.budgets.budgets and self.budgets.is_over(c.account.id, now):
                continue
            if c.memo_version != state.version or c.memo_until <= now:
                c.refresh(now)
            if c.held:  # its reserve, or overage it may not use: not even as a last resort
                continue
            account_left = state.cooling(now)
            model_left = max(state.cooling(now, c.model), state.cooling(now, c.family)) - account_left
            left = account_left + max(model_left, 0.0)
            if left <= 0:
                continue  # not cooling: acquire passed it over for a reason (held, excluded)
            # A model cooldown comes from the provider's own window; ours is only a guess.
            known = state.cooldown_is_known or model_left > 0
            wait = left if known else 0.0
            if wait > within_s or (not known and c.account.id in tried):
                continue
            options.append((wait, left, c))
        if not options:
            return None
        wait, _, chosen = min(options, key=lambda o: (o[0], o[1]))
        return self._lease(chosen, ask, now), wait

    def _busy(self, model: str, route: Route, now: float) -> AllAccountsBusy:
        soonest = min(
            (
                left
                for c in (*route.primary, *route.fallback)
                if not c.state.needs_reauth
                and not c.state.quarantined
                and (left := max(c.state.cooling(now, c.model), c.state.cooling(now, c.family))) > 0
            ),
            default=None,
        )
        if soonest is None:
            return AllAccountsBusy(
                f"every account serving {model!r} failed, is over budget, keeps its reserve, is "
                "quarantined or needs re-authentication",
                retry_after_s=60.0,
            )
        return AllAccountsBusy(
            f"every account serving {model!r} is cooling down; the first is free in {soonest:.0f}s",
            retry_after_s=soonest,
        )

    def held(self, account: Account, now: float, model: str = "") -> str:
        """Why ``account`` takes no request for ``model`` now (reserve, overage policy), or ``""``.

        Without a model: its account-wide windows only."""
        state = self.state(account.id)
        if not state.windows:
            return ""
        family = model_family(model) if model else ""
        return pressure(
            state.windows.values() if model else [w for w in state.windows.values() if not w.model],
            model,
            family,
            now,
            reserve=account.reserve_pct / 100.0,
            overage=account.overage,
        ).held

    def eligible(self, model: str) -> list[str]:
        """Ids of the accounts that could serve ``model`` now, primary then fallback (for tests, status)."""
        route = self.route(model)
        now = self.clock()
        return [c.account.id for c in (*route.primary, *route.fallback) if self._is_ready(c, now)]

    # -- learning ----------------------------------------------------------------------------

    def observe(
        self,
        account_id: str,
        headers: Mapping[str, str],
        *,
        status: int,
        body: bytes | None = None,
        model: str = "",
    ) -> None:
        """Learn from a response's quota headers (and a 429's body); see broker/headroom.py."""
        now = self.clock()
        relevant = quota_headers(headers)
        state = self.state(account_id)
        seen = (model, relevant)
        if (
            status >= 400
            or seen != state.quota_seen
            or now - state.quota_seen_at >= QUOTA_REPARSE_S
            or state.cooldown_window
        ):
            windows = parse_quota(relevant, now, model=model) + parse_body(status, body, now)
            if windows:
                self.update_headroom(account_id, windows)
            state.quota_seen, state.quota_seen_at = seen, now
        if status < 400 and relevant and served_from_overage(relevant):
            state.overage_requests += 1
            if self._on_overage is not None:
                self._on_overage(account_id, state.overage_requests)

    def update_headroom(self, account_id: str, windows: list[Headroom]) -> None:
        """Replace known windows of the same name; clear a quota cooldown whose window has reset."""
        state = self.state(account_id)
        before = state.windows
        state.windows = merge(before, windows)
        state.version += 1
        now = self.clock()
        if self.on_event is not None:
            for w in windows:
                old = before.get(w.key)
                if w.kind == "quota" and w.is_blocking(now) and (old is None or not old.is_blocking(now)):
                    self.on_event("window_spent", account_id, f"window {w.key} is spent")
        if state.cooldown_window and state.cooldown_until > now:
            window = state.windows.get(state.cooldown_window)
            if window is not None and not window.is_blocking(now) and (window.left(now) or 0.0) > 0.0:
                state.cooldown_until, state.cooldown_reason, state.cooldown_window = 0.0, "", ""
                state.failures = 0
                if self._on_state is not None:
                    self._on_state(account_id, state)
        if self._on_headroom is not None and (
            now - self._headroom_persisted.get(account_id, 0.0) >= HEADROOM_PERSIST_S
            or any(_differs(before.get(w.key), w) for w in windows)
        ):
            self._headroom_persisted[account_id] = now
            self._on_headroom(account_id, list(state.windows.values()))

    def lift_stale_cooldown(self, account_id: str, polled: list[Headroom]) -> str:
        """After a usage poll: lift a cooldown (> ``STALE_COOLDOWN_S`` left) that the provider's own
        numbers refute; returns what was lifted (``""``: nothing).

        Providers reset windows early (reset credits) and Retry-After can outlive the limit by
        days: when every account-wide quota window the poll reported serves with headroom, the
        account-wide cooldown goes; a model's cooldown goes when its model-scoped windows do too.
        """
        state = self.state(account_id)
        now = self.clock()

        def serves(windows: list[Headroom]) -> bool:
            return bool(windows) and all(
                not w.is_blocking(now) and (w.left(now) or 0.0) >= NEAR_LIMIT_FRACTION for w in windows
            )

        wide = [w for w in polled if not w.model and w.kind == "quota"]
        if not serves(wide):
            return ""
        lifted = []
        if state.cooling(now) > STALE_COOLDOWN_S:
            lifted.append(
                f"cooldown ({state.cooldown_reason or 'no reason'}, {state.cooling(now):.0f}s left)"
            )
            state.cooldown_until, state.cooldown_reason, state.cooldown_window = 0.0, "", ""
            state.failures = 0
        for model, until in list(state.model_cooldowns.items()):
            scoped = [w for w in polled if w.model and w.model in (model, model_family(model))]
            if until - now > STALE_COOLDOWN_S and serves(scoped):
                lifted.append(f"{model} cooldown ({until - now:.0f}s left)")
                del state.model_cooldowns[model]
        if lifted:
            state.version += 1
            if self._on_state is not None:
                self._on_state(account_id, state)
        return ", ".join(lifted)

    def record_usage(
        self, account_id: str, usage: Usage | int, model: str = "", *, conversation: str = ""
    ) -> None:
        """Count a finished request against the account's budget: its tokens (``total_tokens``)
        and, when a budget is in dollars, its price for ``model``; and its prompt-cache use
        (broker/cache.py) for the account and ``conversation``."""
        if isinstance(usage, Usage) and usage.total_tokens:
            self.cache.record(account_id, conversation, model, usage)
        if not self.budgets.budgets:
            return
        if isinstance(usage, int):
            if usage:
                self.budgets.record(account_id, usage, self.clock())
        elif usage.total_tokens:
            self.budgets.record_usage(account_id, usage, model, self.clock())

    def restore_usage(
        self,
        account_id: str,
        *,
        day_tokens: int,
        month_tokens: int,
        day_usd: float = 0.0,
        month_usd: float = 0.0,
    ) -> None:
        """Seed today's and this month's token and dollar totals from the usage store."""
        day, _ = day_and_month(self.clock())
        self.budgets.restore(
            account_id,
            day=day,
            day_tokens=day_tokens,
            month_tokens=month_tokens,
            day_usd=day_usd,
            month_usd=month_usd,
        )

    # -- outcomes ----------------------------------------------------------------------------

    def _release(self, lease: Lease, outcome: Outcome) -> None:
        state = self.state(lease.account.id)
        state.inflight = max(state.inflight - 1, 0)
        now = self.clock()
        window_key = ""
        if outcome.kind == "rate_limited" and not outcome.model:
            outcome, window_key = _scope_rate_limit(outcome, state, lease.model, now)
        s = self.settings
        changed = apply_outcome(
            state,
            outcome,
            now,
            min_s=s.cooldown_min_s,
            max_s=s.cooldown_max_s,
            overload_s=s.overload_cooldown_s,
        )
        if outcome.kind == "rate_limited" and not outcome.model:
            state.cooldown_window = window_key
        elif outcome.kind == "ok":
            state.cooldown_window = ""
        if changed and self._on_state is not None:
            self._on_state(lease.account.id, state)
        if changed and self.on_event is not None and outcome.kind in ("quarantined", "auth_failed"):
            event = "quarantined" if outcome.kind == "quarantined" else "needs_reauth"
            self.on_event(event, lease.account.id, state.quarantined or state.needs_reauth)

    def reset(self, account_id: str) -> None:
        """Clear cooldown, error state and quarantine (``proxygate reset``); quota windows stay
        (they are facts)."""
        state = self.state(account_id)
        state.cooldown_until, state.cooldown_reason, state.cooldown_window = 0.0, "", ""
        state.failures, state.model_cooldowns, state.needs_reauth, state.last_error_at = 0, {}, "", 0.0
        state.quarantined = ""
        if self._on_state is not None:
            self._on_state(account_id, state)

    # -- display -----------------------------------------------------------------------------

    def describe(self, account: Account, now: float) -> dict[str, Any]:
        """An account's id, kind, health, windows, leases and pins for status displays; never a secret."""
        state = self.state(account.id)
        cooling = state.cooling(now)
        held = self.held(account, now)
        models = {m: round(until - now, 1) for m, until in state.model_cooldowns.items() if until > now}
        return {
            "id": account.id,
            "email": account.email,
            "kind": account.kind,
            "provider": account.provider,
            "enabled": not account.disabled,
            "state": "disabled"
            if account.disabled
            else "quarantined"
            if state.quarantined
            else "needs re-auth"
            if state.needs_reauth
            else "cooling down"
            if cooling > 0
            else "held"
            if held
            else "ready",
            "cooldown_s": round(cooling, 1),
            "cooldown_until": state.cooldown_until if cooling > 0 else None,
            "reason": (f"quarantined: {state.quarantined}" if state.quarantined else "")
            or state.needs_reauth
            or (state.cooldown_reason if cooling > 0 or models else "")
            or held,
            "reserve_pct": account.reserve_pct,
            "overage": account.overage,
            "overage_requests": state.overage_requests,
            "model_cooldowns": models,
            "inflight": state.inflight,
            "peer_inflight": state.peer_inflight,
            "pins": self.pins.count_by_account(now).get(account.id, 0),
            "windows": [_window_view(w, now) for w in sorted(state.windows.values(), key=lambda w: w.key)],
            "cache_hit_rate": self.cache.report_account(account.id),
            "budget_left": round(self.budgets.left_fraction(account.id, now), 4)
            if account.id in self.budgets.budgets
            else None,
        }


def _scope_rate_limit(outcome: Outcome, state: AccountState, model: str, now: float) -> tuple[Outcome, str]:
    """A 429's scope and length from the windows its response rejected (peers.md §4, §6 item 3).

    Account-wide when an account-wide window was refused (cooldown until its reset, or the
    Retry-After when later); one model family when only model-scoped windows were; unchanged
    when the response named no window (a burst 429: the usual backoff).
    """
    rejected = [w for w in state.windows.values() if w.observed_at >= now - FRESH_S and w.is_blocking(now)]
    rejected = [w for w in rejected if w.window != "overage"]
    if not rejected:
        return outcome, ""
    wide = [w for w in rejected if not w.model]
    binding = wide or rejected
    resets = [w for w in binding if w.resets_at is not None]
    latest = max(resets, key=lambda w: w.resets_at or 0.0) if resets else binding[0]
    wait = outcome.retry_after_s
    if latest.resets_at is not None:
        wait = max(wait or 0.0, latest.resets_at - now)
    names = ", ".join(sorted(w.key for w in binding))
    if wide:
        return Outcome.rate_limited(wait, reason=f"{outcome.reason} (window {names})"[:240]), latest.key
    scope = latest.model or model
    return Outcome.rate_limited(
        wait, model=scope, reason=f"{outcome.reason} (window {names}, {scope} only)"[:240]
    ), ""


def _differs(old: Headroom | None, new: Headroom) -> bool:
    """Whether a window changed enough to be worth writing again."""
    if old is None or old.is_rejected != new.is_rejected:
        return True
    if (old.fraction_left is None) != (new.fraction_left is None):
        return True
    if (
        old.fraction_left is not None
        and new.fraction_left is not None
        and abs(old.fraction_left - new.fraction_left) >= 0.01
    ):
        return True
    if (old.resets_at is None) != (new.resets_at is None):
        return True
    return (
        old.resets_at is not None and new.resets_at is not None and abs(old.resets_at - new.resets_at) > 60.0
    )


def _window_view(w: Headroom, now: float) -> dict[str, Any]:
    left = w.left(now)
    return {
        "window": w.window,
        "model": w.model,
        "kind": w.kind,
        "left_pct": None if left is None else round(left * 100, 1),
        "resets_at": w.resets_at,
        "resets_in_s": None if w.resets_at is None else round(max(w.resets_at - now, 0.0), 0),
        "rejected": w.is_blocking(now),
        "source": w.source,
        "age_s": round(w.age_s(now), 0),
    }


def _identity_of(account: Account) -> str:
    """Who a quarantine is about: the API key, or the subscription's login (email and account)."""
    return account.api_key if account.kind == "apikey" else f"{account.email}\0{account.account_id}"


def _login_of(account: Account) -> str:
    """What a user replaces to fix a refused account: the API key, or the OAuth refresh token."""
    return account.api_key or account.refresh_token
