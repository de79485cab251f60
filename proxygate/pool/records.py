"""Account records: what one pool file says, validated, with secrets kept out of reprs.

An ``Account`` is immutable; the broker keeps the changing state (cooldown, in-flight
count) separately, keyed by ``Account.id``. ``raw`` is the file's JSON as read, so a rewrite
by the tool (enable, refreshed tokens) preserves keys it does not know.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from proxygate.pool.catalog import API_KEY_PROVIDERS, PROVIDERS, ProviderSpec
from proxygate.wire.ir import Format

Kind = Literal["apikey", "claude", "chatgpt"]
KINDS: tuple[Kind, ...] = ("apikey", "claude", "chatgpt")
KIND_DIRS: dict[Kind, str] = {"apikey": "apikeys", "claude": "claude", "chatgpt": "chatgpt"}

# What the broker may do once a plan's windows are spent but the provider would bill extra usage:
# never (default: the plan is the budget), allow (like any headroom), last-resort (only when no
# other account can serve).
Overage = Literal["never", "allow", "last-resort"]
OVERAGES: tuple[Overage, ...] = ("never", "allow", "last-resort")


class InvalidAccount(ValueError):
    """A pool file's content is wrong; the message names the problem, never a secret."""


def mask(secret: str) -> str:
    """``sk-…f3a9``: enough to tell keys apart, never enough to use one."""
    if not secret:
        return "-"
    head = secret.split("-", 1)[0] + "-" if "-" in secret[:8] else ""
    return f"{head}…{secret[-4:]}" if len(secret) >= 12 else "…"


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    kind: Kind
    provider: str
    base_url: str
    models: tuple[str, ...]
    formats: tuple[Format, ...]
    path: Path | None = None
    api_key: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    expires_at: datetime | None = None
    email: str = ""
    account_id: str = ""
    plan: str = ""
    weight: float = 1.0
    priority: int = 0
    disabled: bool = False
    overage: Overage = "never"
    # Percent of each window kept for the owner's direct use: proxygate stops using a window once
    # less than this is left.
    reserve_pct: float = 0.0
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def spec(self) -> ProviderSpec:
        return PROVIDERS[self.provider]

    @property
    def accepts_prompt_cache_key(self) -> bool:
        """The pool file's ``"prompt_cache_key": true/false``, else the provider's (catalog)."""
        flag = self.raw.get("prompt_cache_key")
        return flag if isinstance(flag, bool) else self.spec.accepts_prompt_cache_key

    @property
    def is_oauth(self) -> bool:
        return self.kind != "apikey"

    @property
    def credential(self) -> str:
        return self.api_key or self.access_token

    @property
    def label(self) -> str:
        return self.email or self.id

    @property
    def fingerprint(self) -> str:
        """Who this credential is, without it: the same key (or login) under two ids is one account.

        A login is its refresh token (access tokens rotate); a key counts with its endpoint, as
        local servers often share a dummy key.
        """
        secret = self.refresh_token or self.api_key or self.access_token
        where = self.base_url if self.kind == "apikey" else self.kind
        return hashlib.sha256(f"{where}\0{secret}".encode()).hexdigest()[:16]

    def serves(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    def speaks(self, fmt: Format) -> bool:
        return fmt in self.formats


def parse_account(data: Any, kind: Kind, *, default_id: str, path: Path | None = None) -> Account:
    """Validate one pool file's JSON into an ``Account``; raises ``InvalidAccount``."""
    if not isinstance(data, dict):
        raise InvalidAccount("expected a JSON object")
    get = _Getter(data)
    account_id = get.text("id") or default_id
    if not account_id or "/" in account_id:
        raise InvalidAccount(f"invalid id {account_id!r}")
    common: dict[str, Any] = {
        "id": account_id,
        "kind": kind,
        "path": path,
        "weight": get.weight("weight"),
        "priority": int(get.number("priority", 0)),
        "disabled": get.flag("disabled"),
        "overage": get.overage("overage"),
        "reserve_pct": get.percent("reserve_pct"),
        "raw": data,
    }
    get.flag("prompt_cache_key")  # validated here, read by Account.accepts_prompt_cache_key
    if kind == "apikey":
        provider = get.text("provider", required=True)
        if provider not in API_KEY_PROVIDERS:
            raise InvalidAccount(f"unknown provider {provider!r} (one of: {', '.join(API_KEY_PROVIDERS)})")
        spec = PROVIDERS[provider]
        base_url = get.text("base_url") or spec.base_url
        if not base_url:
            raise InvalidAccount(f'provider "{provider}" needs "base_url"')
        return Account(
            provider=provider,
            base_url=_check_url(base_url),
            api_key=get.text("api_key", required=True),
            models=get.globs("models") or spec.models,
            formats=get.formats("formats", spec.formats_at(base_url)),
            **common,
        )
    provider = "claude" if kind == "claude" else "chatgpt"
    spec = PROVIDERS[provider]
    return Account(
        provider=provider,
        base_url=_check_url(get.text("base_url") or spec.base_url),
        email=get.text("email", required=True),
        account_id=get.text("account_id", required=kind == "chatgpt"),
        plan=get.text("plan") or get.text("subscription_type"),
        access_token=get.text("access_token", required=True),
        refresh_token=get.text("refresh_token", required=True),
        expires_at=get.time("expires_at"),
        models=get.globs("models") or spec.models,
        formats=spec.formats,
        **common,
    )


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise InvalidAccount(f'"base_url" must start with http:// or https://, got {url!r}')
    return url.rstrip("/")


class _Getter:
    """Typed field access with messages that name the field (and never its value if secret)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def text(self, key: str, *, required: bool = False) -> str:
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise InvalidAccount(f'missing "{key}"')
            return ""
        if not isinstance(value, str):
            raise InvalidAccount(f'"{key}" must be a string')
        return value.strip()

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidAccount(f'"{key}" must be a number')
        if not -1e9 <= value <= 1e9:  # weights and priorities are small; huge ints overflow a float
            raise InvalidAccount(f'"{key}" is out of range: {value!r}')
        return float(value)

    def weight(self, key: str) -> float:
        value = self.number(key, 1.0)
        if value < 0:  # a share of traffic; negative would rank the account below nothing
            raise InvalidAccount(f'"{key}" must be 0 or more')
        return value

    def percent(self, key: str) -> float:
        value = self.number(key, 0.0)
        if not 0 <= value <= 100:
            raise InvalidAccount(f'"{key}" must be a percent from 0 to 100')
        return value

    def overage(self, key: str) -> Overage:
        value = self.text(key) or "never"
        for choice in OVERAGES:
            if value == choice:
                return choice
        raise InvalidAccount(f'"{key}" must be one of: {", ".join(OVERAGES)}')

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise InvalidAccount(f'"{key}" must be true or false')
        return value

    def globs(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise InvalidAccount(f'"{key}" must be a non-empty list of model names or globs')
        return tuple(value)

    def formats(self, key: str, default: tuple[Format, ...]) -> tuple[Format, ...]:
        names = self.globs(key)
        if not names:
            return default
        try:
            return tuple(Format(n) for n in names)
        except ValueError:
            raise InvalidAccount(
                f'"{key}" entries must be among {", ".join(f.value for f in Format)}'
            ) from None

    def time(self, key: str) -> datetime | None:
        value = self.data.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):  # epoch s or ms (Claude Code)
            try:
                return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
            except (OverflowError, OSError, ValueError):  # 1e300, or past year 9999
                raise InvalidAccount(f'"{key}" is out of range: {value!r}') from None
        if not isinstance(value, str):
            raise InvalidAccount(f'"{key}" must be an RFC 3339 time')
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidAccount(f'"{key}" is not an RFC 3339 time: {value!r}') from None
        if parsed.tzinfo is None:
            raise InvalidAccount(f'"{key}" needs a time zone: {value!r}')
        return parsed
