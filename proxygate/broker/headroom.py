"""Quota signals, normalised: every provider's rate-limit headers and 429 bodies → ``Headroom``.

One idea first: a ``Headroom`` is one quota window of one account as last seen — the fraction
left, when it resets, who said so and when. Providers speak four dialects (peers.md §4):

    Anthropic subscription  anthropic-ratelimit-unified-{status,reset}, per window
                            -unified-{5h,7d,7d_oi,…}-{status,reset,utilization}
                            (utilization is a fraction; 1.01 = over), -representative-claim,
                            -overage-{status,reset}
    Anthropic API key       anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
                            {limit,remaining,reset}  (reset is RFC 3339)
    OpenAI API key          x-ratelimit-{limit,remaining,reset}-{requests,tokens}
                            (reset is a duration such as ``6m0s`` or ``20ms``)
    Codex subscription      x-codex-{primary,secondary}-{used-percent,window-minutes,
                            reset-at,reset-after-seconds} (named by length, not position:
                            ``codex_window``); 429 body ``usage_limit_reached``
                            with ``resets_at`` / ``resets_in_seconds`` (peers.md §3.2)

The subscriptions also publish their windows at free usage endpoints (peers.md §3.1, §3.2),
polled by the server: Anthropic ``/api/oauth/usage`` (``five_hour``, ``seven_day``, … as
``{utilization (percent), resets_at}``) and ChatGPT ``/backend-api/wham/usage``
(``rate_limit.{primary,secondary}_window`` with ``used_percent``, ``reset_at``). Their windows
take the names the headers use, so a polled window and an observed one replace each other.

Every parser reads whatever is there, from any account: a missing signal is *unknown*
headroom (no ``Headroom`` at all, or ``fraction_left=None``), never zero. Quota windows
(subscription 5 h / 7 d / primary / secondary) are prepaid and lost at reset, so they drive
the drain-aware score; rate windows (API-key requests/tokens per minute) only guard against
running into a 429. Pure: ``now`` is an argument.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

WindowKind = Literal["quota", "rate"]

# Statuses of the unified headers that mean "this request would be refused"; better-ccflare
# treats the same set as hard (peers.md §4). ``allowed_warning`` still serves.
HARD_STATUSES = frozenset({"rejected", "rate_limited", "blocked", "queueing_hard", "payment_required"})

# Window lengths the unified headers imply by name, so a window that has reset can be
# treated as fresh until the next response says otherwise.
_UNIFIED_WINDOW_S = {"5h": 5 * 3600.0, "7d": 7 * 86400.0}
_FAMILIES = ("opus", "sonnet", "haiku")


MAX_RESET_AHEAD_S = 400 * 86400.0
"""No provider's window is longer than a year: a reset time further from the observation, or
a window length outside 1 s .. this, is a broken upstream's and reads as unknown."""


@dataclass(frozen=True, slots=True)
class Headroom:
    """One quota window of one account, as last observed."""

    window: str
    "Window name: ``5h``, ``7d``, ``7d_oi``, ``primary``, ``requests``, ``tokens``, …"
    fraction_left: float | None
    "0.0 (spent) … 1.0 (untouched); None when the provider gave a status but no amount."
    resets_at: float | None
    "Epoch seconds when the window refills; None when unknown."
    source: str
    "Who said so: ``anthropic-unified``, ``anthropic-api``, ``openai-api``, ``codex``, a poller name."
    observed_at: float
    model: str = ""
    "Model family the window is limited to (``opus``, a model id); empty: the whole account."
    is_rejected: bool = False
    "The provider said requests in this window are refused now."
    kind: WindowKind = "quota"
    "``quota``: prepaid, lost at reset (drives draining); ``rate``: a per-minute guard."
    window_s: float | None = None
    "The window's length, when known (5 h = 18000)."

    def __post_init__(self) -> None:
        # The upstream's numbers, bounded once here: every use (scores, waits, Retry-After,
        # fair shares) does arithmetic and int() on them.
        if self.resets_at is not None and not abs(self.resets_at - self.observed_at) <= MAX_RESET_AHEAD_S:
            object.__setattr__(self, "resets_at", None)
        if self.window_s is not None and not 1.0 <= self.window_s <= MAX_RESET_AHEAD_S:
            object.__setattr__(self, "window_s", None)

    @property
    def key(self) -> str:
        """Identity within an account: a newer observation of the same key replaces this one."""
        return f"{self.window}@{self.model}" if self.model else self.window

    def age_s(self, now: float) -> float:
        return max(now - self.observed_at, 0.0)

    def has_reset(self, now: float) -> bool:
        return self.resets_at is not None and self.resets_at <= now

    def left(self, now: float) -> float | None:
        """The fraction left at ``now``: a window past its reset is full again."""
        if self.has_reset(now):
            return 1.0
        return self.fraction_left

    def is_blocking(self, now: float) -> bool:
        """Refused now, and not yet reset (a rejected window without a reset time stays refused)."""
        return self.is_rejected and not self.has_reset(now)

    def applies_to(self, model: str) -> bool:
        return not self.model or self.model == model or self.model == model_family(model)

    def to_json(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "fraction_left": self.fraction_left,
            "resets_at": self.resets_at,
            "source": self.source,
            "observed_at": self.observed_at,
            "model": self.model,
            "is_rejected": self.is_rejected,
            "kind": self.kind,
            "window_s": self.window_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Headroom:
        kind = data.get("kind", "quota")
        return cls(
            window=str(data["window"]),
            fraction_left=_opt_float(data.get("fraction_left")),
            resets_at=_opt_float(data.get("resets_at")),
            source=str(data.get("source", "")),
            observed_at=float(data.get("observed_at", 0.0)),
            model=str(data.get("model", "")),
            is_rejected=bool(data.get("is_rejected", False)),
            kind="rate" if kind == "rate" else "quota",
            window_s=_opt_float(data.get("window_s")),
        )


def model_family(model: str) -> str:
    """``opus`` / ``sonnet`` / ``haiku`` for Claude models (any spelling), else the model itself."""
    lowered = model.lower()
    for family in _FAMILIES:
        if family in lowered:
            return family
    return model


# -- headers ---------------------------------------------------------------------------------


def quota_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers that speak of quota, named in lower case: what ``parse_quota`` and
    ``served_from_overage`` read (one pass over a response's headers for both)."""
    relevant: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(("anthropic-ratelimit-", "x-ratelimit-", "x-codex-")):
            relevant[lowered] = value.strip()
    return relevant


def parse_headers(headers: Mapping[str, str], now: float, *, model: str = "") -> list[Headroom]:
    """Every window the response's headers describe (any dialect); ``model`` scopes model-only windows."""
    return parse_quota(quota_headers(headers), now, model=model)


def parse_quota(relevant: dict[str, str], now: float, *, model: str = "") -> list[Headroom]:
    """``parse_headers`` of what ``quota_headers`` kept."""
    if not relevant:
        return []
    # A response speaks one dialect or two: only their parsers run (each looks up a dozen
    # names and would find nothing in the others'; ~15 µs a response).
    names = " ".join(relevant)
    found: list[Headroom] = []
    if _UNIFIED in names:
        found += _anthropic_unified(relevant, now, model)
    if any(f"anthropic-ratelimit-{window}-" in names for window in _ANTHROPIC_API_WINDOWS):
        found += _anthropic_api(relevant, now)
    if "x-ratelimit-" in names:
        found += _openai_api(relevant, now)
    if "x-codex-" in names:
        found += _codex(relevant, now)
    return found


def representative_claim(headers: Mapping[str, str]) -> str:
    """Which unified window binds (``five_hour``, ``seven_day``, ``seven_day_opus``…), or ``""``."""
    for name, value in headers.items():
        if name.lower() == "anthropic-ratelimit-unified-representative-claim":
            return value.strip()
    return ""


def served_from_overage(relevant: Mapping[str, str]) -> bool:
    """Whether a Claude subscription answered from billed extra usage beyond the plan:
    ``-overage-in-use: true``, or a representative claim such as ``seven_day_overage_included``.

    ``relevant``: ``quota_headers`` of the response."""
    if relevant.get("anthropic-ratelimit-unified-overage-in-use", "").lower() == "true":
        return True
    return "overage" in relevant.get("anthropic-ratelimit-unified-representative-claim", "").lower()


_UNIFIED = "anthropic-ratelimit-unified-"
# Model-scoped weekly windows come as ``7d_oi-…`` and as ``7d-sonnet-…``: both become ``7d_…``.
_UNIFIED_FIELD = re.compile(r"^anthropic-ratelimit-unified-([a-z0-9_-]+?)-(status|reset|utilization)$")


def _anthropic_unified(h: dict[str, str], now: float, model: str) -> list[Headroom]:
    windows: dict[str, dict[str, str]] = {}
    for name, value in h.items():
        if not name.startswith(_UNIFIED):
            continue
        m = _UNIFIED_FIELD.match(name)
        if m is not None:
            windows.setdefault(m.group(1).replace("-", "_"), {})[m.group(2)] = value
    found: list[Headroom] = []
    for window, fields in windows.items():
        if window == "overage":
            # Extra usage billed beyond the plan: not a window to drain, but while it is allowed
            # a rejected plan window still serves (``overage-in-use: true``).
            found.append(
                Headroom(
                    "overage",
                    None,
                    _epoch(fields.get("reset")),
                    "anthropic-unified",
                    now,
                    is_rejected=fields.get("status", "") in HARD_STATUSES,
                )
            )
            continue
        utilization = _opt_float(fields.get("utilization"))
        fraction = None if utilization is None else _clamp(1.0 - _as_fraction(utilization))
        base, _, scope = window.partition("_")  # 7d_oi, 7d_opus: a model-scoped weekly window
        found.append(
            Headroom(
                window,
                fraction,
                _epoch(fields.get("reset")),
                "anthropic-unified",
                now,
                model=(scope if scope in _FAMILIES else model_family(model) or scope) if scope else "",
                is_rejected=fields.get("status", "") in HARD_STATUSES,
                window_s=_UNIFIED_WINDOW_S.get(base),
            )
        )
    status = h.get(_UNIFIED + "status")
    if status is not None and not windows.keys() - {"overage"}:
        # Only the overall verdict was sent (older responses): keep it as an amount-less window.
        found.append(
            Headroom("unified", None, _epoch(h.get(_UNIFIED + "reset")), "anthropic-unified", now,
                     is_rejected=status in HARD_STATUSES)
        )  # fmt: skip
    return found


_ANTHROPIC_API_WINDOWS = ("requests", "tokens", "input-tokens", "output-tokens")


def _anthropic_api(h: dict[str, str], now: float) -> list[Headroom]:
    found = []
    for window in _ANTHROPIC_API_WINDOWS:
        prefix = f"anthropic-ratelimit-{window}-"
        limit = _opt_float(h.get(prefix + "limit"))
        remaining = _opt_float(h.get(prefix + "remaining"))
        if limit is None and remaining is None:
            continue
        fraction = _clamp(remaining / limit) if limit and remaining is not None else None
        found.append(
            Headroom(window, fraction, _rfc3339(h.get(prefix + "reset")), "anthropic-api", now, kind="rate",
                     is_rejected=remaining is not None and remaining <= 0)
        )  # fmt: skip
    return found


def _openai_api(h: dict[str, str], now: float) -> list[Headroom]:
    found = []
    for window in ("requests", "tokens"):
        limit = _opt_float(h.get(f"x-ratelimit-limit-{window}"))
        remaining = _opt_float(h.get(f"x-ratelimit-remaining-{window}"))
        if limit is None and remaining is None:
            continue
        fraction = _clamp(remaining / limit) if limit and remaining is not None else None
        reset = parse_duration_s(h.get(f"x-ratelimit-reset-{window}", ""))
        found.append(
            Headroom(window, fraction, None if reset is None else now + reset, "openai-api", now, kind="rate",
                     is_rejected=remaining is not None and remaining <= 0)
        )  # fmt: skip
    return found


def codex_window(position: str, length_s: float | None) -> str:
    """A Codex window's name by its length, not its position: ``primary`` and ``secondary`` are
    places in a list (in mid-2026 the 5-hour window was absent and the weekly one came as
    ``primary``). ``5h`` up to a day, ``7d`` from six days, else ``<minutes>m``; the position
    only when the length is unknown."""
    if length_s is None or length_s <= 0:
        return position
    if length_s <= 86400.0:
        return "5h"
    if length_s >= 6 * 86400.0:
        return "7d"
    return f"{round(length_s / 60.0)}m"


def _codex(h: dict[str, str], now: float) -> list[Headroom]:
    found = []
    for position in ("primary", "secondary"):
        prefix = f"x-codex-{position}-"
        used = _opt_float(h.get(prefix + "used-percent"))
        reset_at = _epoch(h.get(prefix + "reset-at"))
        if reset_at is None:
            after = _opt_float(h.get(prefix + "reset-after-seconds"))
            reset_at = None if after is None else now + after
        minutes = _opt_float(h.get(prefix + "window-minutes"))
        if used is None and reset_at is None:
            continue
        length_s = None if minutes is None else minutes * 60.0
        found.append(
            Headroom(
                codex_window(position, length_s),
                None if used is None else _clamp(1.0 - used / 100.0),
                reset_at,
                "codex",
                now,
                is_rejected=used is not None and used >= 100.0,
                window_s=length_s,
            )
        )
    return found


# -- bodies ----------------------------------------------------------------------------------


def parse_body(status: int, body: bytes | None, now: float) -> list[Headroom]:
    """Windows a 429 body names: Codex ``usage_limit_reached``, OpenAI ``insufficient_quota``."""
    if status != 429 or not body:
        return []
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return []
    kind = str(err.get("type") or err.get("code") or "")
    if kind == "usage_limit_reached":  # Codex subscription (peers.md §3.2)
        reset_at = _epoch(err.get("resets_at"))
        if reset_at is None and (after := _opt_float(err.get("resets_in_seconds"))) is not None:
            reset_at = now + after
        return [Headroom("usage_limit", 0.0, reset_at, "codex", now, is_rejected=True)]
    if kind == "insufficient_quota":  # OpenAI API key out of credits: no reset to wait for
        return [Headroom("credits", 0.0, None, "openai-api", now, is_rejected=True)]
    return []


# -- value parsing ---------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(text: str) -> float | None:
    """OpenAI's reset durations: ``6m0s`` → 360.0, ``20ms`` → 0.02, ``1h2m3.5s``; a bare number is seconds."""
    text = text.strip()
    if not text:
        return None
    bare = _opt_float(text)
    if bare is not None:
        return bare
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _opt_float(value: Any) -> float | None:
    """A finite number, or None: ``nan``, ``inf`` and ``1e999`` parse as floats too."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _epoch(value: Any) -> float | None:
    """Epoch seconds (unified ``-reset``, Codex ``reset-at``); milliseconds are recognised by size."""
    number = _opt_float(value)
    if number is None:
        return _rfc3339(value) if isinstance(value, str) else None
    return number / 1000.0 if number > 1e11 else number


def _rfc3339(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _as_fraction(utilization: float) -> float:
    # The unified headers send fractions (1.01 = over, peers.md §4); tolerate percentages.
    return utilization / 100.0 if utilization > 2.0 else utilization


def _clamp(fraction: float) -> float:
    return min(max(fraction, 0.0), 1.0)


# Anthropic usage fields → (window key as the unified headers name it, model scope, length).
_CLAUDE_WINDOWS: dict[str, tuple[str, str, float]] = {
    "five_hour": ("5h", "", 5 * 3600.0),
    "seven_day": ("7d", "", 7 * 86400.0),
    "seven_day_opus": ("7d_opus", "opus", 7 * 86400.0),
    "seven_day_sonnet": ("7d_sonnet", "sonnet", 7 * 86400.0),
}


def parse_claude_usage(data: Any, now: float) -> list[Headroom]:
    """Anthropic ``/api/oauth/usage`` → windows ``5h``, ``7d``, ``7d_opus``, ``7d_sonnet``."""
    if not isinstance(data, dict):
        return []
    found = []
    for field, (window, model, length_s) in _CLAUDE_WINDOWS.items():
        entry = data.get(field)
        if not isinstance(entry, dict):
            continue
        used = _opt_float(entry.get("utilization"))
        found.append(
            Headroom(
                window,
                None if used is None else _clamp(1.0 - used / 100.0),
                _epoch(entry.get("resets_at")),
                "anthropic-usage",
                now,
                model=model,
                is_rejected=used is not None and used >= 100.0,
                window_s=length_s,
            )
        )
    return found


def parse_chatgpt_usage(data: Any, now: float) -> list[Headroom]:
    """ChatGPT ``/wham/usage`` → windows named by their length (``5h``, ``7d``: ``codex_window``)."""
    limits = data.get("rate_limit") if isinstance(data, dict) else None
    if not isinstance(limits, dict):
        return []
    found = []
    for position in ("primary", "secondary"):
        entry = limits.get(f"{position}_window")
        if not isinstance(entry, dict):
            continue
        used = _opt_float(entry.get("used_percent"))
        reset_at = _epoch(entry.get("reset_at"))
        if reset_at is None and (after := _opt_float(entry.get("reset_after_seconds"))) is not None:
            reset_at = now + after
        length_s = _opt_float(entry.get("limit_window_seconds"))
        found.append(
            Headroom(
                codex_window(position, length_s),
                None if used is None else _clamp(1.0 - used / 100.0),
                reset_at,
                "codex-usage",
                now,
                is_rejected=(used is not None and used >= 100.0) or bool(limits.get("limit_reached")),
                window_s=length_s,
            )
        )
    return found


def merge(known: Mapping[str, Headroom], fresh: Iterable[Headroom]) -> dict[str, Headroom]:
    """``known`` with each fresh window replacing the one of the same key."""
    merged = dict(known)
    for window in fresh:
        merged[window.key] = window
    return merged
