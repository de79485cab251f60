"""Per-account health: outcomes of requests and the cooldowns they cause.

Cooldown maths (issue #3): a provider's ``Retry-After`` wins; otherwise the cooldown doubles
from ``cooldown_min_s`` per consecutive failure up to ``cooldown_max_s``, and the first
success clears it. Overload (529/503) is capacity, not quota: a short, separate cooldown.
401 (or a refresh token the provider no longer accepts) is not a cooldown at all but "needs
re-auth": a new login fixes it. A permanent refusal (403 ``permission_error``, a disabled
organisation, a deactivated account: ``refusal_reason``) is a *quarantine*: nothing proxygate
can do fixes it, so the account is never tried again until ``proxygate reset``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from proxygate.broker.headroom import Headroom

OutcomeKind = Literal[
    "ok", "rate_limited", "overloaded", "error", "auth_failed", "quarantined", "client_error"
]

# What providers say when an account is refused for good (peers' issue trackers: accounts that
# kept being tried for days after a ban). Matched case-insensitively in the error's type, code
# and message.
_PERMANENT = re.compile(
    r"permission_error|oauth authentication is currently not allowed for this organization"
    r"|organization has been disabled|account_deactivated|deactivated_workspace"
    r"|account has been deactivated|account (?:is|was) (?:suspended|banned)",
    re.IGNORECASE,
)


def refusal_reason(text: str) -> str:
    """The provider's reason (``permission_error``, ``account_deactivated``…) when ``text`` (an
    error body: type, code, message) refuses the account for good, else ``""``."""
    found = _PERMANENT.search(text)
    return "" if found is None else found.group(0).lower().replace(" ", "_")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a leased request ended, as the broker needs to know it."""

    kind: OutcomeKind
    retry_after_s: float | None = None
    model: str = ""
    "Set when only this model is limited on the account (a model-scoped window)."
    reason: str = ""

    @classmethod
    def ok(cls) -> Outcome:
        return cls("ok")

    @classmethod
    def rate_limited(
        cls, retry_after_s: float | None = None, *, model: str = "", reason: str = ""
    ) -> Outcome:
        return cls("rate_limited", retry_after_s, model, reason or "rate limited")

    @classmethod
    def overloaded(cls, retry_after_s: float | None = None, *, reason: str = "") -> Outcome:
        return cls("overloaded", retry_after_s, reason=reason or "overloaded")

    @classmethod
    def error(cls, reason: str, retry_after_s: float | None = None) -> Outcome:
        return cls("error", retry_after_s, reason=reason)

    @classmethod
    def auth_failed(cls, reason: str) -> Outcome:
        return cls("auth_failed", reason=reason)

    @classmethod
    def quarantined(cls, reason: str) -> Outcome:
        """Refused for good (banned, disabled, deactivated): never retried until ``reset``."""
        return cls("quarantined", reason=reason)

    @classmethod
    def client_error(cls) -> Outcome:
        """The request was wrong (4xx), not the account: no cooldown, no failover."""
        return cls("client_error")


@dataclass(slots=True)
class AccountState:
    """What the broker knows about one account's health (persisted across restarts)."""

    cooldown_until: float = 0.0
    cooldown_reason: str = ""
    failures: int = 0
    "Consecutive failures; drives the exponential cooldown."
    model_cooldowns: dict[str, float] = field(default_factory=dict)
    needs_reauth: str = ""
    "Why the account needs a new login; empty when it does not."
    quarantined: str = ""
    "The provider's permanent refusal (``permission_error: …``); empty when not quarantined."
    overage_requests: int = 0
    "Requests the provider answered from extra usage beyond the plan (persisted, store namespace OVERAGE)."
    inflight: int = 0
    "Leases this process holds on the account."
    peer_inflight: int = 0
    "Leases the other instances hold (the shared store's heartbeat view, ≤ 1-3 s old; not persisted)."
    last_error_at: float = 0.0
    requests: int = 0
    windows: dict[str, Headroom] = field(default_factory=dict)
    "Latest quota windows by ``Headroom.key`` (persisted separately, store namespace HEADROOM)."
    version: int = 0
    "Bumped whenever ``windows`` change, so memoised pressure knows it is stale."
    cooldown_window: str = ""
    "The quota window (``Headroom.key``) whose rejection caused the cooldown; cleared when it resets."
    cooldown_is_known: bool = False
    "``cooldown_until`` is the provider's own reset (Retry-After), not the backoff's guess."
    quota_seen: tuple[str, dict[str, str]] = ("", {})
    "The model and quota headers of the last response parsed into ``windows`` (not persisted)."
    quota_seen_at: float = 0.0

    def cooling(self, now: float, model: str = "") -> float:
        """Seconds of cooldown left for ``model`` (0 when usable)."""
        left = self.cooldown_until - now
        if model:
            left = max(left, self.model_cooldowns.get(model, 0.0) - now)
        return max(left, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "cooldown_until": self.cooldown_until,
            "cooldown_reason": self.cooldown_reason,
            "failures": self.failures,
            "model_cooldowns": self.model_cooldowns,
            "needs_reauth": self.needs_reauth,
            "quarantined": self.quarantined,
            "last_error_at": self.last_error_at,
            "cooldown_window": self.cooldown_window,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountState:
        return cls(
            cooldown_until=float(data.get("cooldown_until", 0.0)),
            cooldown_reason=str(data.get("cooldown_reason", "")),
            failures=int(data.get("failures", 0)),
            model_cooldowns={str(k): float(v) for k, v in dict(data.get("model_cooldowns", {})).items()},
            needs_reauth=str(data.get("needs_reauth", "")),
            quarantined=str(data.get("quarantined", "")),
            last_error_at=float(data.get("last_error_at", 0.0)),
            cooldown_window=str(data.get("cooldown_window", "")),
        )


def backoff_s(failures: int, min_s: float, max_s: float) -> float:
    """15 s, 30 s, 60 s … capped: the cooldown after ``failures`` consecutive failures (≥ 1)."""
    # The exponent is capped: an account failing for days reaches 1,000+ failures, and
    # 2 ** 1024 does not fit a float (OverflowError on every later release).
    return float(min(min_s * 2 ** min(max(failures - 1, 0), 64), max_s))


def apply_outcome(
    state: AccountState, outcome: Outcome, now: float, *, min_s: float, max_s: float, overload_s: float
) -> bool:
    """Fold ``outcome`` into ``state``; returns whether anything worth persisting changed."""
    match outcome.kind:
        case "ok":
            changed = bool(state.failures or state.cooldown_until or state.needs_reauth)
            state.failures = 0
            state.cooldown_until = 0.0
            state.cooldown_is_known = False
            state.cooldown_reason = ""
            state.needs_reauth = ""
            return changed
        case "client_error":
            return False
        case "quarantined":
            changed = not state.quarantined
            state.quarantined = outcome.reason or "refused by the provider"
            state.last_error_at = now
            return changed
        case "auth_failed":
            state.needs_reauth = outcome.reason or "authentication failed"
            state.last_error_at = now
            return True
        case "overloaded":
            wait = outcome.retry_after_s if outcome.retry_after_s is not None else overload_s
            if now + wait >= state.cooldown_until:
                state.cooldown_is_known = outcome.retry_after_s is not None
            state.cooldown_until = max(state.cooldown_until, now + wait)
            state.cooldown_reason = outcome.reason
            state.last_error_at = now
            return True
        case _:  # rate_limited, error
            state.failures += 1
            state.last_error_at = now
            given = outcome.retry_after_s
            wait = backoff_s(state.failures, min_s, max_s) if given is None else given
            if outcome.model:
                state.model_cooldowns[outcome.model] = now + wait
            else:
                if now + wait >= state.cooldown_until:
                    state.cooldown_is_known = given is not None
                state.cooldown_until = max(state.cooldown_until, now + wait)
            state.cooldown_reason = outcome.reason
            return True
