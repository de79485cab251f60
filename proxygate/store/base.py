"""The state interface everything above ``store/`` talks to.

A laptop runs the embedded LMDB store; a team would run a shared one (DESIGN.md, "Growing
past one machine"). Nothing above this package knows which: no LMDB handle leaves it.

Writes are queued and committed in small batches off the hot path (``record``/``put_state``
never block); ``flush`` commits what is queued; ``close`` flushes and releases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# State namespaces (one LMDB sub-database each in the embedded store).
COOLDOWNS = "cooldowns"
HEADROOM = "headroom"
PINS = "pins"
SETTINGS = "settings"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One proxied request, as recorded: ties the request id to account, model and tokens."""

    request_id: str
    ts: float
    account_id: str
    model: str
    client_format: str
    upstream_format: str
    status: int
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms: float = 0.0
    error_class: str = ""
    is_stream: bool = False
    tenant: str = ""


@dataclass(slots=True)
class UsageTotals:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def add(self, other: Mapping[str, Any]) -> None:
        for name in (
            "requests",
            "errors",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
        ):
            setattr(self, name, getattr(self, name) + int(other.get(name, 0)))

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: str
    account_id: str
    model: str
    totals: UsageTotals = field(default_factory=UsageTotals)


class Store(Protocol):
    def record(self, rec: UsageRecord) -> None:
        """Queue one usage record (never blocks)."""

    def put_state(self, namespace: str, key: str, value: Mapping[str, Any] | None) -> None:
        """Queue a state write; ``None`` deletes the key."""

    def get_states(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every key of a namespace as committed (queued writes included after ``flush``)."""

    def usage(self, day: str) -> list[UsageRow]:
        """Per account and model totals of one UTC day (``YYYY-MM-DD``)."""

    def recent_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest request-log entries, newest first."""

    def flush(self) -> None:
        """Commit everything queued so far."""

    def close(self) -> None:
        """Flush and release."""
