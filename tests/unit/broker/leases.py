"""Which accounts a broker serves: sequential requests, each released ok before the next."""

from __future__ import annotations

from proxygate.broker import Ask, Broker, Outcome
from proxygate.wire.ir import Format

SONNET = Ask("claude-sonnet-4-5", Format.anthropic)


def served(b: Broker, ask: Ask = SONNET, n: int = 1) -> list[str]:
    """Account ids of ``n`` sequential requests (each released ok before the next)."""
    ids = []
    for _ in range(n):
        lease = b.acquire(ask)
        ids.append(lease.account.id)
        lease.release(Outcome.ok())
    return ids
