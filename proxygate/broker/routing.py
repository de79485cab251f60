"""Routing configs: which accounts may serve a model (tiers, aliases, fallback) and in what order.

A ``Route`` is computed once per (routing config, client model) when the pool or the active
config changes, never per request (issue #4's speed budget): the client's model goes through
``[routing.aliases]``, its tier (``opus`` / ``sonnet`` / ``haiku`` by name, else ``default``)
picks the config's tier entry, the entry's account globs and optional model remap give the
primary candidates, and its ``fallback`` globs the candidates tried only when every primary
one is unavailable. A config without tiers routes every model to every account serving it.

Static order inside a layer: the ``[routing] priority`` group (subscriptions or API keys
first, it still applies within a tier), then the position of the first matching glob in the
tier's list, then the account's ``priority``. Strategies (``STRATEGIES``) reorder the ready
candidates per request; ``Budgets`` skips accounts over their token or dollar budget in every strategy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from proxygate.broker.headroom import model_family
from proxygate.broker.score import (
    INFLIGHT_FACTORS,
    PRESSURE_MEMO_S,
    UNKNOWN_URGENCY,
    error_factor,
    pressure,
    score,
)
from proxygate.broker.state import AccountState
from proxygate.config import BudgetSettings, RoutingConfig, TierSettings
from proxygate.pool.records import Account
from proxygate.prices import PriceTable
from proxygate.wire.ir import Format, Usage

TIERS = ("opus", "sonnet", "haiku")


def tier_of(model: str) -> str:
    """``opus`` / ``sonnet`` / ``haiku`` from the model's name (``claude-3-5-haiku-latest``), else ``default``."""
    family = model_family(model)
    return family if family in TIERS else "default"


@dataclass(slots=True)
class Candidate:
    """An account that may serve a route, with the model to send it and its static rank."""

    account: Account
    state: AccountState
    model: str
    "Upstream model (after alias and tier remap)."
    family: str
    rank: int
    "Position in the static order (lower first)."
    is_oauth_first: bool
    "Whether this account is in the preferred ``[routing] priority`` group."
    is_fallback: bool = False
    "From the tier's ``fallback`` list: tried only when no primary candidate is ready."
    static_class: dict[Format, int] = field(default_factory=dict)
    "Per client format: 4 × (not in the preferred priority group) + (needs conversion); lower first."
    # Memo of broker/score.py's ``pressure`` (refreshed by the broker, PRESSURE_MEMO_S):
    urgency: float = 0.0
    "Drain urgency × the account's weight."
    is_near: bool = False
    held: str = ""
    "Why the account takes no request now (reserve reached, overage it may not use); empty: usable."
    memo_until: float = float("-inf")
    memo_version: int = -1

    @property
    def id(self) -> str:
        return self.account.id

    def refresh(self, now: float) -> None:
        """Recompute the memoised pressure of this account's windows for this route's model."""
        state = self.state
        if state.windows:
            account = self.account
            found = pressure(
                state.windows.values(),
                self.model,
                self.family,
                now,
                reserve=account.reserve_pct / 100.0,
                overage=account.overage,
            )
            urgency, self.is_near, self.held = found.urgency, found.is_near, found.held
        else:
            urgency, self.is_near, self.held = UNKNOWN_URGENCY, False, ""
        self.urgency = urgency * self.account.weight
        self.memo_until = now + PRESSURE_MEMO_S
        self.memo_version = state.version


@dataclass(slots=True)
class Route:
    """Precomputed candidates of one client model under one routing config."""

    model: str
    tier: str
    primary: tuple[Candidate, ...]
    fallback: tuple[Candidate, ...]
    by_id: dict[str, Candidate] = field(default_factory=dict)


MAX_CACHED_ROUTES = 1024
"Client model names whose route is kept: pools serve dozens, but a glob lets clients invent more."


class RouteCache:
    """Routes by the client's model name: only routable ones, at most ``max_entries`` (oldest out).

    The key is client-chosen: caching every name asked once let junk names grow memory without
    bound (40 requests with 4 MB names: RSS 57 → 395 MB).
    """

    def __init__(self, max_entries: int = MAX_CACHED_ROUTES) -> None:
        self.max_entries = max_entries
        self._routes: dict[str, Route] = {}

    def get(self, model: str) -> Route | None:
        return self._routes.get(model)

    def put(self, route: Route) -> None:
        if not route.primary and not route.fallback:
            return
        if route.model not in self._routes and len(self._routes) >= self.max_entries:
            del self._routes[next(iter(self._routes))]
        self._routes[route.model] = route

    def clear(self) -> None:
        self._routes.clear()

    def __len__(self) -> int:
        return len(self._routes)


def build_route(
    model: str,
    accounts: Iterable[Account],
    states: Callable[[str], AccountState],
    config: RoutingConfig,
    *,
    aliases: Mapping[str, str],
    apikey_first: bool,
) -> Route:
    """The candidates for ``model`` under ``config`` (see the module docstring)."""
    aliased = aliases.get(model, model)
    tier = tier_of(aliased)
    entry = config.tiers.get(tier) or config.tiers.get("default")
    if entry is None:
        entry = TierSettings()
    upstream = entry.model or aliased
    enabled = [a for a in accounts if not a.disabled and a.serves(upstream)]
    primary = _layer(enabled, entry.accounts, upstream, states, apikey_first, skip=set())
    fallback = _layer(
        enabled,
        entry.fallback,
        upstream,
        states,
        apikey_first,
        skip={c.account.id for c in primary},
        is_fallback=True,
    )
    route = Route(model, tier, primary, fallback)
    route.by_id = {c.account.id: c for c in (*fallback, *primary)}
    return route


def _layer(
    accounts: Sequence[Account],
    globs: Sequence[str],
    model: str,
    states: Callable[[str], AccountState],
    apikey_first: bool,
    *,
    skip: set[str],
    is_fallback: bool = False,
) -> tuple[Candidate, ...]:
    ranked: list[tuple[tuple[bool, int, int, int], Account]] = []
    for index, account in enumerate(accounts):
        if account.id in skip:
            continue
        position = next((i for i, g in enumerate(globs) if fnmatch.fnmatchcase(account.id, g)), None)
        if position is None:
            continue
        ranked.append(((account.is_oauth == apikey_first, position, -account.priority, index), account))
    ranked.sort(key=lambda item: item[0])
    family = model_family(model)
    return tuple(
        Candidate(
            a,
            states(a.id),
            model,
            family,
            rank,
            a.is_oauth != apikey_first,
            is_fallback,
            {f: 4 * (a.is_oauth == apikey_first) + (not a.speaks(f)) for f in Format},
        )
        for rank, (_, a) in enumerate(ranked)
    )


# -- budgets ---------------------------------------------------------------------------------


def day_and_month(now: float) -> tuple[str, str]:
    day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    return day, day[:7]


class Budgets:
    """Tokens and dollars used per account this UTC day and month, against ``[budgets]``.

    Dollars are the API price of the usage (a subscription's API-equivalent value), priced
    with the same table as the usage reports (proxygate/prices); a model with no price adds
    tokens and no dollars.
    """

    def __init__(self, budgets: Mapping[str, BudgetSettings], prices: PriceTable | None = None) -> None:
        self.budgets = dict(budgets)
        self.prices = prices
        self.counts_usd = prices is not None and any(b.daily_usd or b.monthly_usd for b in budgets.values())
        "Some budget is in dollars: each request is priced (otherwise pricing is skipped)."
        self._day: dict[str, tuple[str, int, float]] = {}
        self._month: dict[str, tuple[str, int, float]] = {}

    def record(self, account_id: str, tokens: int, now: float, *, cost_usd: float = 0.0) -> None:
        day, month = day_and_month(now)
        self._day[account_id] = (
            day,
            self.used_today(account_id, day) + tokens,
            self.spent_today_usd(account_id, day) + cost_usd,
        )
        self._month[account_id] = (
            month,
            self.used_this_month(account_id, month) + tokens,
            self.spent_this_month_usd(account_id, month) + cost_usd,
        )

    def record_usage(self, account_id: str, usage: Usage, model: str, now: float) -> None:
        """Count a finished request: its ``total_tokens``, and its price when a budget is in dollars."""
        cost = self.prices.cost_usd(model, usage) if self.counts_usd and self.prices is not None else None
        self.record(account_id, usage.total_tokens, now, cost_usd=cost or 0.0)

    def restore(
        self,
        account_id: str,
        *,
        day: str,
        day_tokens: int,
        month_tokens: int,
        day_usd: float = 0.0,
        month_usd: float = 0.0,
    ) -> None:
        """Seed from the usage store at startup (``day`` is the UTC day the totals run to)."""
        self._day[account_id] = (day, day_tokens, day_usd)
        self._month[account_id] = (day[:7], month_tokens, month_usd)

    def used_today(self, account_id: str, day: str) -> int:
        seen = self._day.get(account_id)
        return seen[1] if seen is not None and seen[0] == day else 0

    def used_this_month(self, account_id: str, month: str) -> int:
        seen = self._month.get(account_id)
        return seen[1] if seen is not None and seen[0] == month else 0

    def spent_today_usd(self, account_id: str, day: str) -> float:
        seen = self._day.get(account_id)
        return seen[2] if seen is not None and seen[0] == day else 0.0

    def spent_this_month_usd(self, account_id: str, month: str) -> float:
        seen = self._month.get(account_id)
        return seen[2] if seen is not None and seen[0] == month else 0.0

    def left_fraction(self, account_id: str, now: float) -> float:
        """The smallest fraction left of the account's limits (1.0 without a budget; 0.0 when over)."""
        budget = self.budgets.get(account_id)
        if budget is None:
            return 1.0
        day, month = day_and_month(now)
        left = 1.0
        if budget.daily_tokens:
            left = min(left, 1.0 - self.used_today(account_id, day) / budget.daily_tokens)
        if budget.monthly_tokens:
            left = min(left, 1.0 - self.used_this_month(account_id, month) / budget.monthly_tokens)
        if budget.daily_usd:
            left = min(left, 1.0 - self.spent_today_usd(account_id, day) / budget.daily_usd)
        if budget.monthly_usd:
            left = min(left, 1.0 - self.spent_this_month_usd(account_id, month) / budget.monthly_usd)
        return max(left, 0.0)

    def is_over(self, account_id: str, now: float) -> bool:
        return account_id in self.budgets and self.left_fraction(account_id, now) <= 0.0


# -- strategies ------------------------------------------------------------------------------

Choose = Callable[[Sequence[Candidate], Format, float, "StrategyContext"], Candidate]


MAX_ROTATIONS = 4096
"Rotations kept (routing config × tier × model); past it they restart, bounding client-made names."

Rotation = tuple[str, str, str]


@dataclass(slots=True)
class StrategyContext:
    """What a strategy may consult besides the candidates: rotation and budgets."""

    budgets: Budgets
    rotation: Rotation = ("", "", "")
    "Routing config × tier × model of the current choice, set by the broker before each one."
    turns: dict[Rotation, int] = field(default_factory=dict)
    """One turn counter per rotation: with a single global one, a client alternating two models
    (Claude Code's main model and its haiku requests) lands every main-model request on one account."""

    def next_turn(self) -> int:
        turn = self.turns.get(self.rotation, 0) + 1
        if turn == 1 and len(self.turns) >= MAX_ROTATIONS:
            self.turns.clear()
        self.turns[self.rotation] = turn
        return turn


def _class(c: Candidate, fmt: Format) -> int:
    # Group first ([routing] priority), then: not near a limit, then the client's own format.
    return c.static_class[fmt] + (2 if c.is_near else 0)


def choose_priority(ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext) -> Candidate:
    """Fill first: the first ready account in the static order."""
    return min(ready, key=lambda c: (_class(c, fmt), c.rank))


def choose_round_robin(
    ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext
) -> Candidate:
    """Take turns among the best class."""
    best = min(_class(c, fmt) for c in ready)
    group = [c for c in ready if _class(c, fmt) == best]
    return group[ctx.next_turn() % len(group)]


def choose_least_used(ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext) -> Candidate:
    """Fewest requests in flight, then the most headroom left, then the static order."""
    return min(ready, key=lambda c: (_class(c, fmt), _load(c), -_usable(c, now), c.rank))


def choose_budget_aware(
    ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext
) -> Candidate:
    """The most budget left (accounts without a budget count as untouched), then drain-aware."""
    left = ctx.budgets.left_fraction
    return min(
        ready,
        key=lambda c: (_class(c, fmt), -round(left(c.account.id, now), 2), -_drain(c, now), c.rank),
    )


def choose_drain_aware(
    ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext
) -> Candidate:
    """The highest drain-aware score (broker/score.py); equal scores take turns.

    The hot path of every request (issue #4: ≤ 10 µs for 10 accounts), so ``score`` is
    inlined over the memoised urgency; the scan starts at a rotating offset and keeps the
    first strict best, which is round-robin among ties.
    """
    n = len(ready)
    if n == 1:
        return ready[0]
    start = ctx.next_turn() % n
    best = ready[start]
    best_class = 1 << 30
    best_value = -1.0
    for c in (*ready[start:], *ready[:start]):
        cls = c.static_class[fmt] + (2 if c.is_near else 0)
        if cls > best_class:
            continue
        state = c.state
        inflight = state.inflight + state.peer_inflight  # this instance's leases and the others'
        value = c.urgency * INFLIGHT_FACTORS[inflight] if inflight < 64 else 0.0
        if state.last_error_at:
            value *= error_factor(state.last_error_at, now)
        if (
            cls < best_class
            or value > best_value
            or (value == best_value and c.account.priority > best.account.priority)
        ):
            best, best_class, best_value = c, cls, value
    return best


def _load(c: Candidate) -> int:
    """Requests in flight on the account: here and on the other instances (shared store leases)."""
    return c.state.inflight + c.state.peer_inflight


def _drain(c: Candidate, now: float) -> float:
    state = c.state
    return score(c.urgency, weight=1.0, inflight=_load(c), last_error_at=state.last_error_at, now=now)


def _usable(c: Candidate, now: float) -> float:
    lefts = [w.left(now) for w in c.state.windows.values() if w.applies_to(c.model)]
    return min((x for x in lefts if x is not None), default=1.0)


STRATEGIES: dict[str, Choose] = {
    "priority": choose_priority,
    "round-robin": choose_round_robin,
    "least-used": choose_least_used,
    "budget-aware": choose_budget_aware,
    "drain-aware": choose_drain_aware,
}
