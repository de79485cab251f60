"""The drain-aware score: which eligible account should serve the next request, and why.

Subscription quota is prepaid and lost at each window's reset, so the account whose headroom
expires soonest should be used first ("use it or lose it"); API-key rate windows refill every
minute and only say how close an account is to a 429. The score of account *a* for a request
at time *now* (a pure function of the accounts' state and *now*):

    W          = a's windows that apply to the model (account-wide, or scoped to its family)
    usable(a)  = min over W of fraction_left        (windows past their reset count as 1.0;
                                                     unknown amounts are skipped: unknown ≠ 0)
    near(a)    = usable(a) < NEAR_LIMIT_FRACTION, or some window in W is rejected and not
                 yet reset (the overage window excepted); while overage would serve a
                 rejected plan window, the account's ``overage`` policy decides: ``never``
                 holds it (no requests at all), ``last-resort`` keeps it near, ``allow``
                 clears near
    held(a)    = some quota window in W has no more than ``reserve_pct`` left: no requests
    urgency(a) = max over quota windows w in W of  min(left_w, usable(a)) / hours_to_reset_w
                 hours_to_reset_w = max(resets_at − now, MIN_HORIZON_S) in hours; for a window
                 past its reset or without a reset time: its length (default one week)
                 no quota window with a known amount: UNKNOWN_URGENCY (a fresh 5-hour window)
    score(a)   = urgency(a) × weight(a) × INFLIGHT_DECAY^inflight(a) × error_factor(a)
    error_factor(a) = 1 / (1 + ERROR_PENALTY × max(0, 1 − (now − last_error_at) / ERROR_MEMORY_S))

Order: accounts not near a limit first (one near a limit is skipped before it answers 429,
and used only when nothing else is left), then the highest score, then ``priority``.

Why these shapes:
- ``left / hours`` is the rate at which a window must be spent not to waste it: 40 % left
  resetting in 20 min scores 1.2/h, a fresh weekly window 0.006/h, so the 5-hour window
  drains first (better-ccflare's ``drain-soonest`` and codex-lb's ``prefer_earlier_reset``,
  peers.md §4, rank by one of these factors; the quotient ranks by both).
- Capping ``left_w`` by ``usable(a)``: spending a window also spends the account's scarcer
  windows; 80 % of a 5-hour window behind a weekly window with 4 % left is worth 4 %.
- ``MIN_HORIZON_S`` keeps a window a minute from reset from outranking everything forever.
- Each request in flight halves the attraction: equal accounts take turns, and a burst of new
  conversations spreads instead of piling onto the best one, yet a window about to expire
  still takes several concurrent streams (1.2/h vs 0.006/h survives ~7 halvings).
- A recent error quarters the score and is forgotten linearly over five minutes.
- Unknown is not zero: an account never heard from is most likely fresh, and valued like a
  fresh 5-hour window it gets tried (and its headers learned) as soon as the known accounts
  are less urgent; valued at zero it would never be tried while another had headroom.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxygate.broker.headroom import Headroom

NEAR_LIMIT_FRACTION = 0.03
"Below 3 % left (97 % used) the next long request would likely be refused: skip pre-emptively."
MIN_HORIZON_S = 15 * 60.0
"A window resetting sooner than this counts as resetting in 15 min (bounds the quotient)."
DEFAULT_WINDOW_S = 7 * 86400.0
"Length assumed for a window of unknown length (the longest subscription window, one week)."
UNKNOWN_URGENCY = 1.0 / 5.0
"Urgency of an account with no known quota: that of a fresh 5-hour window (see above)."
INFLIGHT_DECAY = 0.5
ERROR_PENALTY = 3.0
ERROR_MEMORY_S = 300.0
INFLIGHT_FACTORS = tuple(INFLIGHT_DECAY**n for n in range(64))
"``INFLIGHT_DECAY ** n`` precomputed: the hot loop indexes instead of calling pow."
# The broker memoises ``pressure`` per candidate this long (or until its windows change):
# urgency drifts with time-to-reset, and a second's drift reorders nothing that matters.
PRESSURE_MEMO_S = 1.0


@dataclass(frozen=True, slots=True)
class Pressure:
    """One account's windows for one model at one time, as the broker ranks and filters them."""

    urgency: float
    is_near: bool
    "Skipped while any account not near a limit is ready (used only as a last resort)."
    held: str = ""
    "Why the account must not be used at all now (its reserve, or overage it may not spend); empty: usable."


def pressure(
    windows: Iterable[Headroom],
    model: str,
    family: str,
    now: float,
    *,
    reserve: float = 0.0,
    overage: str = "allow",
) -> Pressure:
    """The urgency and limits of one account's windows for ``model`` (of ``family``) at ``now``.

    ``reserve``: the fraction of every quota window kept for the owner (``reserve_pct`` / 100):
    a window with no more than that left holds the account. ``overage``: the account's policy
    for extra usage once a plan window is rejected: ``never`` holds the account, ``last-resort``
    makes it near its limit, ``allow`` serves like any headroom.
    """
    usable = 1.0
    is_near = False
    plan_rejected = False
    overage_serves = False
    held = ""
    quota: list[tuple[float, float]] = []  # (left, hours to reset)
    for w in windows:
        if w.model and w.model != model and w.model != family:
            continue
        if w.window == "overage":
            overage_serves = not w.is_blocking(now)
            continue
        if w.is_blocking(now):
            is_near = plan_rejected = True
        left = w.left(now)
        if left is None:
            continue
        usable = min(usable, left)
        if w.kind == "quota":
            # At exactly the reserve the next request would eat into it; 1e-9: 1 - 0.85 > 0.15.
            if reserve > 0.0 and left <= reserve + 1e-9 and not held:
                held = f"reserve: window {w.key} has {left * 100:.0f}% left, {reserve * 100:.0f}% is kept"
            if w.resets_at is None or w.resets_at <= now:
                horizon_s = w.window_s or DEFAULT_WINDOW_S
            else:
                horizon_s = max(w.resets_at - now, MIN_HORIZON_S)
            quota.append((left, horizon_s / 3600.0))
    if overage_serves and plan_rejected:
        # The plan's window is spent but the provider would serve from billed extra usage.
        if overage == "never":
            held = held or "overage: the plan's windows are spent and overage is never used"
        elif overage == "allow":
            is_near = False
    elif usable < NEAR_LIMIT_FRACTION:
        is_near = True
    if not quota:
        return Pressure(UNKNOWN_URGENCY, is_near, held)
    return Pressure(max(min(left, usable) / hours for left, hours in quota), is_near, held)


def score(urgency: float, *, weight: float, inflight: int, last_error_at: float, now: float) -> float:
    """The drain-aware score (higher is better); see the module docstring."""
    value = urgency * weight * (INFLIGHT_FACTORS[inflight] if inflight < len(INFLIGHT_FACTORS) else 0.0)
    return value * error_factor(last_error_at, now) if last_error_at else value


def error_factor(last_error_at: float, now: float) -> float:
    """1.0 with no error in ``ERROR_MEMORY_S``; 1/4 right after one, back to 1.0 linearly."""
    recent = 1.0 - (now - last_error_at) / ERROR_MEMORY_S
    return 1.0 / (1.0 + ERROR_PENALTY * recent) if recent > 0.0 else 1.0
