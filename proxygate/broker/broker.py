"""The broker: which account serves a request, and what the request's outcome teaches it.

``Broker.acquire(ask)`` returns a ``Lease`` on the best eligible account; the caller must
``release`` it exactly once with an ``Outcome``. Eligible = enabled, serves the model, not
needing re-auth, not cooling down for this model. Among those: the ``[routing] priority``
group first (OAuth accounts or API keys), then higher ``priority``, then fewer requests in
flight, then round-robin. Pure: no I/O, time from the injected clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from proxygate.broker.headroom import Headroom, merge, parse_body, parse_headers
from proxygate.broker.state import AccountState, Outcome, apply_outcome
from proxygate.config import RoutingSettings
from proxygate.errors import AllAccountsBusy, NoAccountForModel
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.wire.ir import Format

Clock = Callable[[], float]
StateSink = Callable[[str, AccountState], None]


@dataclass(frozen=True, slots=True)
class Ask:
    """What the broker needs to know about a request to choose an account."""

    model: str
    fmt: Format
    "The client's wire format: accounts speaking it need no conversion."


@dataclass(slots=True)
class Lease:
    """One request's claim on an account; ``release`` exactly once."""

    account: Account
    model: str
    "The model to send upstream (after aliases / remaps)."
    upstream_format: Format
    broker: Broker = field(repr=False)
    released: bool = False

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
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._on_state = on_state
        self._states: dict[str, AccountState] = {}
        self._rotation = itertools.count()
        self._candidates: dict[str, tuple[Account, ...]] = {}
        self.snapshot = snapshot
        self.update_pool(snapshot)

    # -- pool ----------------------------------------------------------------------------

    def update_pool(self, snapshot: PoolSnapshot) -> None:
        """Swap in a new pool; state of accounts that stay is kept, in-flight leases finish."""
        self.snapshot = snapshot
        self._candidates.clear()  # candidates per model are recomputed lazily, once per pool
        for account in snapshot.accounts:
            self._states.setdefault(account.id, AccountState())

    def restore(self, states: dict[str, AccountState]) -> None:
        """Load persisted health (cooldowns, re-auth) after a restart."""
        for account_id, state in states.items():
            self._states[account_id] = state

    def state(self, account_id: str) -> AccountState:
        return self._states.setdefault(account_id, AccountState())

    def candidates(self, model: str) -> tuple[Account, ...]:
        """Enabled accounts serving ``model``, in the static preference order."""
        found = self._candidates.get(model)
        if found is None:
            apikey_first = self.settings.priority == "apikey-first"
            found = tuple(
                sorted(
                    (a for a in self.snapshot.accounts if not a.disabled and a.serves(model)),
                    key=lambda a: (a.is_oauth == apikey_first, -a.priority),
                )
            )
            self._candidates[model] = found
        return found

    @property
    def strategy_name(self) -> str:
        return self.settings.configs[self.settings.active].strategy

    def describe(self, account: Account, now: float) -> dict[str, object]:
        """An account's id, kind and health for status displays; never a secret."""
        state = self.state(account.id)
        cooling = state.cooling(now)
        return {
            "id": account.id,
            "email": account.email,
            "kind": account.kind,
            "provider": account.provider,
            "enabled": not account.disabled,
            "state": "disabled"
            if account.disabled
            else "needs re-auth"
            if state.needs_reauth
            else "cooling down"
            if cooling > 0
            else "ready",
            "cooldown_s": round(cooling, 1),
            "reason": state.needs_reauth or (state.cooldown_reason if cooling > 0 else ""),
        }

    def served_models(self) -> list[str]:
        return sorted({m for a in self.snapshot.accounts if not a.disabled for m in a.models})

    # -- choosing --------------------------------------------------------------------------

    def acquire(self, ask: Ask, *, exclude: Iterable[str] = ()) -> Lease:
        model = self.settings.aliases.get(ask.model, ask.model)
        candidates = self.candidates(model)
        if not candidates:
            served = ", ".join(self.served_models()) or "nothing: the pool is empty"
            raise NoAccountForModel(
                f"no account in the pool serves model {ask.model!r} (the pool serves: {served})"
            )
        now = self.clock()
        excluded = set(exclude)
        ready: list[Account] = []
        soonest = float("inf")
        for account in candidates:
            state = self.state(account.id)
            if state.needs_reauth:
                continue
            left = state.cooling(now, model)
            if left > 0:
                soonest = min(soonest, left)
            elif account.id not in excluded:
                ready.append(account)
        if not ready:
            if soonest == float("inf"):
                raise AllAccountsBusy(
                    f"every account serving {ask.model!r} failed or needs re-authentication",
                    retry_after_s=60.0,
                )
            raise AllAccountsBusy(
                f"every account serving {ask.model!r} is cooling down; the first is free in {soonest:.0f}s",
                retry_after_s=soonest,
            )
        account = self._choose(ready, ask)
        state = self.state(account.id)
        state.inflight += 1
        state.requests += 1
        fmt = ask.fmt if account.speaks(ask.fmt) else account.formats[0]
        return Lease(account, model, fmt, self)

    def _choose(self, ready: list[Account], ask: Ask) -> Account:
        # Prefer the client's own format (no conversion), then the static order's first group,
        # then the fewest requests in flight; rotate among ties so load spreads.
        best_format = [a for a in ready if a.speaks(ask.fmt)] or ready
        top = best_format[0]
        group = [a for a in best_format if (a.is_oauth, a.priority) == (top.is_oauth, top.priority)]
        least = min(self.state(a.id).inflight for a in group)
        tied = [a for a in group if self.state(a.id).inflight == least]
        return tied[next(self._rotation) % len(tied)]

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
        windows = parse_headers(headers, now, model=model) + parse_body(status, body, now)
        if windows:
            self.update_headroom(account_id, windows)

    def update_headroom(self, account_id: str, windows: list[Headroom]) -> None:
        """Replace known windows of the same name; clear a quota cooldown whose window has reset."""
        state = self.state(account_id)
        state.windows = merge(state.windows, windows)
        now = self.clock()
        if state.cooldown_window and state.cooling(now) > 0:
            window = state.windows.get(state.cooldown_window)
            if window is not None and not window.is_blocking(now) and (window.left(now) or 0.0) > 0.0:
                state.cooldown_until = 0.0
                state.cooldown_reason = ""
                state.cooldown_window = ""
                state.failures = 0
                if self._on_state is not None:
                    self._on_state(account_id, state)

    # -- outcomes ----------------------------------------------------------------------------

    def _release(self, lease: Lease, outcome: Outcome) -> None:
        state = self.state(lease.account.id)
        state.inflight = max(state.inflight - 1, 0)
        s = self.settings
        changed = apply_outcome(
            state,
            outcome,
            self.clock(),
            min_s=s.cooldown_min_s,
            max_s=s.cooldown_max_s,
            overload_s=s.overload_cooldown_s,
        )
        if changed and self._on_state is not None:
            self._on_state(lease.account.id, state)

    def reset(self, account_id: str) -> None:
        """Clear cooldown and error state (``proxygate reset``)."""
        state = self.state(account_id)
        inflight = state.inflight
        self._states[account_id] = AccountState(inflight=inflight)
        if self._on_state is not None:
            self._on_state(account_id, self._states[account_id])
