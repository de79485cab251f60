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
candidates per request; ``Budgets`` skips accounts over their token budget in every strategy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from proxygate.broker.headroom import model_family
from proxygate.broker.score import pressure, score
from proxygate.broker.state import AccountState
from proxygate.config import BudgetSettings, RoutingConfig, TierSettings
from proxygate.pool.records import Account
from proxygate.wire.ir import Format

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


@dataclass(slots=True)
class Route:
    """Precomputed candidates of one client model under one routing config."""

    model: str
    tier: str
    primary: tuple[Candidate, ...]
    fallback: tuple[Candidate, ...]
    by_id: dict[str, Candidate] = field(default_factory=dict)


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
        Candidate(a, states(a.id), model, family, rank, a.is_oauth != apikey_first, is_fallback)
        for rank, (_, a) in enumerate(ranked)
    )


# -- budgets ---------------------------------------------------------------------------------


def day_and_month(now: float) -> tuple[str, str]:
    day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    return day, day[:7]


class Budgets:
    """Tokens used per account this UTC day and month, against ``[budgets]``."""

    def __init__(self, budgets: Mapping[str, BudgetSettings]) -> None:
        self.budgets = dict(budgets)
        self._day: dict[str, tuple[str, int]] = {}
        self._month: dict[str, tuple[str, int]] = {}

    def record(self, account_id: str, tokens: int, now: float) -> None:
        day, month = day_and_month(now)
        self._day[account_id] = (day, self.used_today(account_id, day) + tokens)
        self._month[account_id] = (month, self.used_this_month(account_id, month) + tokens)

    def restore(self, account_id: str, *, day: str, day_tokens: int, month_tokens: int) -> None:
        """Seed from the usage store at startup (``day`` is the UTC day the totals run to)."""
        self._day[account_id] = (day, day_tokens)
        self._month[account_id] = (day[:7], month_tokens)

    def used_today(self, account_id: str, day: str) -> int:
        seen = self._day.get(account_id)
        return seen[1] if seen is not None and seen[0] == day else 0

    def used_this_month(self, account_id: str, month: str) -> int:
        seen = self._month.get(account_id)
        return seen[1] if seen is not None and seen[0] == month else 0

    def left_fraction(self, account_id: str, now: float) -> float:
        """The smaller of the daily and monthly fraction left (1.0 without a budget; 0.0 when over)."""
        budget = self.budgets.get(account_id)
        if budget is None:
            return 1.0
        day, month = day_and_month(now)
        left = 1.0
        if budget.daily_tokens:
            left = min(left, 1.0 - self.used_today(account_id, day) / budget.daily_tokens)
        if budget.monthly_tokens:
            left = min(left, 1.0 - self.used_this_month(account_id, month) / budget.monthly_tokens)
        return max(left, 0.0)

    def is_over(self, account_id: str, now: float) -> bool:
        return account_id in self.budgets and self.left_fraction(account_id, now) <= 0.0


# -- strategies ------------------------------------------------------------------------------

Choose = Callable[[Sequence[Candidate], Format, float, "StrategyContext"], Candidate]


@dataclass(slots=True)
class StrategyContext:
    """What a strategy may consult besides the candidates: rotation and budgets."""

    budgets: Budgets
    turn: int = 0

    def next_turn(self) -> int:
        self.turn += 1
        return self.turn


def _near(c: Candidate, now: float) -> bool:
    return pressure(c.state.windows.values(), c.model, c.family, now)[1] if c.state.windows else False


def _static(c: Candidate, fmt: Format, now: float) -> tuple[bool, bool, bool]:
    # Group first ([routing] priority), then: not near a limit, then the client's own format.
    return (not c.is_oauth_first, _near(c, now), not c.account.speaks(fmt))


def choose_priority(ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext) -> Candidate:
    """Fill first: the first ready account in the static order."""
    return min(ready, key=lambda c: (*_static(c, fmt, now), c.rank))


def choose_round_robin(
    ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext
) -> Candidate:
    """Take turns among the best static group."""
    keys = [_static(c, fmt, now) for c in ready]
    best = min(keys)
    group = [c for c, k in zip(ready, keys, strict=True) if k == best]
    return group[ctx.next_turn() % len(group)]


def choose_least_used(ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext) -> Candidate:
    """Fewest requests in flight, then the most headroom left, then the static order."""
    return min(ready, key=lambda c: (*_static(c, fmt, now), c.state.inflight, -_usable(c, now), c.rank))


def choose_budget_aware(
    ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext
) -> Candidate:
    """The most budget left (accounts without a budget count as untouched), then drain-aware."""
    return min(
        ready,
        key=lambda c: (
            *_static(c, fmt, now),
            -round(ctx.budgets.left_fraction(c.account.id, now), 2),
            -_drain(c, now),
            c.rank,
        ),
    )


def choose_drain_aware(
    ready: Sequence[Candidate], fmt: Format, now: float, ctx: StrategyContext
) -> Candidate:
    """The highest drain-aware score (broker/score.py), ties in turn."""
    best_key: tuple[bool, bool, bool, float, int] | None = None
    tied: list[Candidate] = []
    for c in ready:
        state = c.state
        if state.windows:
            urgency, is_near = pressure(state.windows.values(), c.model, c.family, now)
        else:
            urgency, is_near = _UNKNOWN, False
        value = score(
            urgency,
            weight=c.account.weight,
            inflight=state.inflight,
            last_error_at=state.last_error_at,
            now=now,
        )
        key = (not c.is_oauth_first, is_near, not c.account.speaks(fmt), -value, -c.account.priority)
        if best_key is None or key < best_key:
            best_key, tied = key, [c]
        elif key == best_key:
            tied.append(c)
    # Ties take turns, so equal accounts share sequential traffic too.
    return tied[0] if len(tied) == 1 else tied[ctx.next_turn() % len(tied)]


def _drain(c: Candidate, now: float) -> float:
    urgency = pressure(c.state.windows.values(), c.model, c.family, now)[0] if c.state.windows else _UNKNOWN
    return score(
        urgency,
        weight=c.account.weight,
        inflight=c.state.inflight,
        last_error_at=c.state.last_error_at,
        now=now,
    )


def _usable(c: Candidate, now: float) -> float:
    lefts = [w.left(now) for w in c.state.windows.values() if w.applies_to(c.model)]
    return min((x for x in lefts if x is not None), default=1.0)


_UNKNOWN = pressure((), "", "", 0.0)[0]

STRATEGIES: dict[str, Choose] = {
    "priority": choose_priority,
    "round-robin": choose_round_robin,
    "least-used": choose_least_used,
    "budget-aware": choose_budget_aware,
    "drain-aware": choose_drain_aware,
}
