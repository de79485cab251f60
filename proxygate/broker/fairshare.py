"""Fair shares of subscription windows between tenants (issue 14). Pure: time is an argument.

One idea first: a subscription's quota window (5 h, 7 d, …) is prepaid and lost at its reset,
shared by every tenant routed to the account. Nothing stops one teammate's runaway agent from
spending all of it — unless each tenant is admitted only while its use of the window is within
its weighted share of what the window offers proxygate, and only while someone else wants it.

The rule, per subscription account and quota window (``Headroom`` of kind ``quota`` with a
known amount; broker/headroom.py):

    period      the window from one reset to the next (a new ``resets_at``, or a window past
                its reset, starts a new period and a new ledger)
    start       the window's used fraction when proxygate first saw this period
    offered     max(0, 1 − reserve − start): what proxygate may spend of this period
                (``reserve_pct`` of the account is kept for use outside proxygate)
    growth      max(0, used − start): what the window has lost since, all of it put down to
                proxygate's traffic
    use(t)      growth × tokens(t) / Σ tokens: the growth split by each tenant's share of
                proxygate's tokens on the account this period
    active      tenants that wanted the account (asked for a model it serves) in the last
                ACTIVE_S seconds, the asking tenant included
    cap(t)      w(t) / Σ w(active) × offered

    admit t     while used < 1 − reserve (the reserve holds for everyone, alone or not), and
                either t is the only active tenant (work-conserving: an idle team's share is
                not wasted) or use(t) < cap(t)
    otherwise   the account is skipped for t; with nothing else left the answer is 429, and
                Retry-After the sooner of the window's reset and the moment the other active
                tenants would count as idle (then t is alone again and admitted)

Why these shapes:
- The provider reports only the window's fraction used, not who used it. Splitting its growth
  by tokens is the best attribution available: tokens are what the window meters, and the
  ratio is exact while proxygate is the only user. Use outside proxygate inflates every
  tenant's use in proportion, so it shrinks all shares alike instead of one tenant's.
- The share is of what the period offers from when proxygate first saw it, not of what is left
  now: of what is left now, the tenant over its share could always take half again, and the
  split would drift towards whoever asks most often.
- Measuring by activity, not by shares configured: a team of five with one member working
  gives that member the whole window; a second member starting work gets half from then on.
- Requests in flight are not counted until they finish (their tokens are unknown until then),
  so a tenant can pass its cap by what it has in flight: the reserve holds to within
  ``inflight × one request's share`` of the window, as the issue's measurable reserve allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxygate.broker.headroom import Headroom

ACTIVE_S = 300.0
"A tenant that wanted an account in the last 5 minutes competes for its windows."
PERIOD_TOLERANCE_S = 120.0
"Two observations of one window whose reset times differ by less than this are the same period."
DEFAULT_SHARE = 1.0


@dataclass(slots=True)
class Ledger:
    """One account window's period: where it started and each tenant's tokens since."""

    resets_at: float | None
    start_used: float
    tokens: dict[str, int] = field(default_factory=dict)

    def use(self, tenant: str, used: float) -> float:
        """``use(t)`` of the module docstring: the window's growth split by tokens."""
        total = sum(self.tokens.values())
        if not total:
            return 0.0
        return max(used - self.start_used, 0.0) * self.tokens.get(tenant, 0) / total


@dataclass(frozen=True, slots=True)
class Verdict:
    admits: bool
    retry_after_s: float = 0.0
    reason: str = ""


ADMITTED = Verdict(True)


class FairShare:
    """Ledgers per account window and who wants each account; ``shares`` are the tenants' weights."""

    def __init__(self, *, active_s: float = ACTIVE_S) -> None:
        self.active_s = active_s
        self.shares: dict[str, float] = {}
        self._ledgers: dict[tuple[str, str], Ledger] = {}
        self._wanted: dict[str, dict[str, float]] = {}
        "Account id → tenant → when it last wanted the account."

    def set_shares(self, shares: Mapping[str, float]) -> None:
        self.shares = dict(shares)

    @property
    def is_shared(self) -> bool:
        """More than one tenant (the owner counts): only then is there anything to share."""
        return len(self.shares) > 1

    def want(self, tenant: str, account_id: str, now: float) -> None:
        """``tenant`` asked for a model ``account_id`` serves."""
        self._wanted.setdefault(account_id, {})[tenant] = now

    def active(self, account_id: str, now: float) -> dict[str, float]:
        """Tenants that wanted the account within ``active_s``, and when."""
        wanted = self._wanted.get(account_id, {})
        for tenant in [t for t, at in wanted.items() if now - at >= self.active_s]:
            del wanted[tenant]
        return wanted

    def admits(
        self, tenant: str, account_id: str, windows: Iterable[Headroom], now: float, *, reserve: float = 0.0
    ) -> Verdict:
        """Whether ``tenant`` may use the account's windows now (the rule of the module docstring)."""
        active = self.active(account_id, now)
        others = [t for t in active if t != tenant]
        for w in _metered(windows):
            left = w.left(now)
            assert left is not None  # _metered keeps known amounts only
            used = 1.0 - left
            until_reset = max((w.resets_at or now) - now, 0.0) if w.resets_at is not None else self.active_s
            if used >= 1.0 - reserve:
                return Verdict(
                    False, until_reset, f"window {w.key} of {account_id} is down to its {reserve:.0%} reserve"
                )
            ledger = self._ledger(account_id, w, now)  # before its first request: the period's start
            if not others:
                continue
            weights = sum(self.shares.get(t, DEFAULT_SHARE) for t in (tenant, *others))
            cap = (
                self.shares.get(tenant, DEFAULT_SHARE) / weights * max(1.0 - reserve - ledger.start_used, 0.0)
            )
            use = ledger.use(tenant, used)
            if use >= cap:
                until_idle = max(active[t] for t in others) + self.active_s - now
                return Verdict(
                    False,
                    max(min(until_reset, until_idle), 1.0),
                    f"over its fair share of window {w.key} of {account_id} "
                    f"({use:.0%} used of a {cap:.0%} share while {len(others)} other tenant(s) want it)",
                )
        return ADMITTED

    def record(
        self, tenant: str, account_id: str, windows: Iterable[Headroom], tokens: int, now: float
    ) -> None:
        """A finished request's tokens on the account: they count in each of its windows' periods."""
        if tokens <= 0:
            return
        for w in _metered(windows):
            ledger = self._ledger(account_id, w, now)
            ledger.tokens[tenant] = ledger.tokens.get(tenant, 0) + tokens

    def report(
        self, account_id: str, windows: Iterable[Headroom], now: float, *, reserve: float = 0.0
    ) -> list[dict[str, Any]]:
        """Each tenant's use and share of each window this period (for `tenant list`, `status`)."""
        rows: list[dict[str, Any]] = []
        active = self.active(account_id, now)
        for w in _metered(windows):
            ledger = self._ledgers.get((account_id, w.key))
            if ledger is None:
                continue
            left = w.left(now)
            used = 1.0 - (left if left is not None else 1.0)
            offered = max(1.0 - reserve - ledger.start_used, 0.0)
            competing = set(active) | set(ledger.tokens)
            weights = sum(self.shares.get(t, DEFAULT_SHARE) for t in competing) or 1.0
            for tenant in sorted(competing):
                share = self.shares.get(tenant, DEFAULT_SHARE) / weights * offered
                rows.append(
                    {
                        "tenant": tenant,
                        "account": account_id,
                        "window": w.key,
                        "use_pct": round(ledger.use(tenant, used) * 100, 1),
                        "share_pct": round(share * 100, 1),
                        "tokens": ledger.tokens.get(tenant, 0),
                        "is_active": tenant in active,
                    }
                )
        return rows

    def _ledger(self, account_id: str, w: Headroom, now: float) -> Ledger:
        key = (account_id, w.key)
        ledger = self._ledgers.get(key)
        left = w.left(now)
        used = 1.0 - (left if left is not None else 1.0)
        if ledger is None or _new_period(ledger, w, now):
            ledger = self._ledgers[key] = Ledger(_next_reset(w, now), used)
        return ledger


def _metered(windows: Iterable[Headroom]) -> list[Headroom]:
    """The account-wide quota windows with a known amount: the ones a share can be measured in."""
    return [w for w in windows if w.kind == "quota" and not w.model and w.fraction_left is not None]


def _next_reset(w: Headroom, now: float) -> float | None:
    """The end of the period the window is in now (a window past its reset is in the next one)."""
    if w.resets_at is None or w.resets_at > now:
        return w.resets_at
    if w.window_s:
        periods = int((now - w.resets_at) // w.window_s) + 1
        return w.resets_at + periods * w.window_s
    return None


def _new_period(ledger: Ledger, w: Headroom, now: float) -> bool:
    if ledger.resets_at is not None and ledger.resets_at <= now:
        return True  # the period the ledger counted has ended
    current = _next_reset(w, now)
    if ledger.resets_at is None or current is None:
        return False
    return abs(current - ledger.resets_at) > PERIOD_TOLERANCE_S


__all__ = ["ACTIVE_S", "FairShare", "Ledger", "Verdict"]
