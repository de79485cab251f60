"""Prompt-cache economics: hit rates per account and conversation, and what moving a conversation costs.

A provider's prompt cache lives with the account (and provider) that wrote it: a conversation
that moves pays its whole prefix again as a cache write on the new account. From each answer's
usage the book keeps

    hit rate          cache-read tokens ÷ all input tokens (input + cache reads + cache writes),
                      per account and per conversation;
    last input size   per conversation: the prefix a move would rewrite;
    cache lost        one event per move of a conversation with a known prefix, with its
                      estimated cost: last input size × (cache-write price − cache-read price)
                      of the model (proxygate/prices), None when the model has no price.

Bounded: the newest ``MAX_CONVERSATIONS`` conversations and ``MAX_EVENTS`` events are kept.
The cache-lost totals and the newest ``PERSISTED_EVENTS`` events survive a restart
(``lost_json``/``restore_lost``, store namespace CACHE_LOST); hit rates start afresh.
Pure: the broker calls it with ``now``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from proxygate.prices import PriceTable
from proxygate.wire.ir import Usage

MAX_CONVERSATIONS = 10_000
MAX_EVENTS = 1_000
PERSISTED_EVENTS = 100
"Events kept across a restart: the totals carry the rest."


@dataclass(slots=True)
class CacheStats:
    read_tokens: int = 0
    input_tokens: int = 0
    "Every prompt token: fresh input, cache reads and cache writes."

    def add(self, usage: Usage) -> None:
        self.read_tokens += usage.cache_read_tokens
        self.input_tokens += usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens

    @property
    def hit_rate(self) -> float | None:
        return None if not self.input_tokens else self.read_tokens / self.input_tokens


@dataclass(slots=True)
class ConversationCache:
    account_id: str
    model: str
    last_input_tokens: int
    stats: CacheStats


@dataclass(frozen=True, slots=True)
class CacheLost:
    """A conversation moved away from the account holding its prompt cache."""

    at: float
    conversation: str
    from_account: str
    to_account: str
    model: str
    tokens: int
    "The prefix the new account writes again (the conversation's last input size)."
    cost_usd: float | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "conversation": self.conversation,
            "from": self.from_account,
            "to": self.to_account,
            "model": self.model,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CacheLost:
        cost = data.get("cost_usd")
        return cls(
            at=float(data.get("at", 0.0)),
            conversation=str(data.get("conversation", "")),
            from_account=str(data.get("from", "")),
            to_account=str(data.get("to", "")),
            model=str(data.get("model", "")),
            tokens=int(data.get("tokens", 0)),
            cost_usd=None if cost is None else float(cost),
            reason=str(data.get("reason", "")),
        )


class CacheBook:
    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices
        self.accounts: dict[str, CacheStats] = {}
        self.conversations: OrderedDict[str, ConversationCache] = OrderedDict()
        self.lost: deque[CacheLost] = deque(maxlen=MAX_EVENTS)
        self.lost_count = 0
        self.lost_usd = 0.0

    def record(self, account_id: str, conversation: str, model: str, usage: Usage) -> None:
        """Count one answer's prompt tokens for its account and conversation."""
        stats = self.accounts.get(account_id)
        if stats is None:  # a CacheStats built only for a new account, not on every answer
            stats = self.accounts[account_id] = CacheStats()
        stats.add(usage)
        if not conversation:
            return
        prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        conversations = self.conversations
        known = conversations.get(conversation)
        if known is None:
            if len(conversations) >= MAX_CONVERSATIONS:
                conversations.popitem(last=False)
            known = conversations[conversation] = ConversationCache(account_id, model, 0, CacheStats())
        else:
            conversations.move_to_end(conversation)  # the newest last: the oldest go first
        known.account_id, known.model = account_id, model
        if prompt:
            known.last_input_tokens = prompt
        known.stats.add(usage)

    def rewrite_cost_usd(self, model: str, tokens: int) -> float | None:
        """What writing ``tokens`` of prefix again costs over reading them from cache."""
        if self.prices is None or not tokens:
            return None
        write = self.prices.cost_usd(model, Usage(cache_write_tokens=tokens))
        read = self.prices.cost_usd(model, Usage(cache_read_tokens=tokens))
        return None if write is None or read is None else max(write - read, 0.0)

    def moved(self, conversation: str, to_account: str, now: float, reason: str) -> CacheLost | None:
        """Record a move of ``conversation`` to ``to_account``; None when nothing was cached."""
        known = self.conversations.get(conversation)
        if known is None or known.account_id == to_account or not known.last_input_tokens:
            return None
        cost = self.rewrite_cost_usd(known.model, known.last_input_tokens)
        event = CacheLost(now, conversation, known.account_id, to_account, known.model,
                          known.last_input_tokens, cost, reason)  # fmt: skip
        self.lost.append(event)
        self.lost_count += 1
        self.lost_usd += cost or 0.0
        return event

    def lost_json(self) -> dict[str, Any]:
        """What a restart keeps: the cache-lost totals and the newest events (oldest first)."""
        return {
            "count": self.lost_count,
            "usd": self.lost_usd,
            "events": [e.to_json() for e in list(self.lost)[-PERSISTED_EVENTS:]],
        }

    def restore_lost(self, data: dict[str, Any]) -> None:
        """Load ``lost_json``'s figures after a restart, before any new event."""
        self.lost_count = int(data.get("count", 0))
        self.lost_usd = float(data.get("usd", 0.0))
        events = data.get("events", [])
        if isinstance(events, list):
            self.lost.extend(CacheLost.from_json(e) for e in events if isinstance(e, dict))

    def report_account(self, account_id: str) -> float | None:
        stats = self.accounts.get(account_id)
        return None if stats is None else _rate(stats)

    def lost_summary(self, recent: int = 10) -> dict[str, Any]:
        """Conversations moved off their cache (kept across restarts): count, estimated cost, the newest events."""
        events = list(self.lost)[-recent:]
        return {
            "count": self.lost_count,
            "usd": round(self.lost_usd, 6),
            "recent": [e.to_json() for e in reversed(events)],
        }

    def report(self) -> dict[str, Any]:
        """Hit rates and cache-lost events for status displays and the admin API."""
        return {
            "accounts": {
                account_id: {
                    "hit_rate": _rate(s),
                    "read_tokens": s.read_tokens,
                    "input_tokens": s.input_tokens,
                }
                for account_id, s in sorted(self.accounts.items())
            },
            "conversations": len(self.conversations),
            "recent_conversations": [
                {
                    "conversation": key,
                    "account": c.account_id,
                    "model": c.model,
                    "hit_rate": _rate(c.stats),
                    "last_input_tokens": c.last_input_tokens,
                }
                for key, c in list(self.conversations.items())[-10:][::-1]
            ],
            "lost_count": self.lost_count,
            "lost_usd": round(self.lost_usd, 6),
            "lost": [e.to_json() for e in reversed(self.lost)],
        }


def _rate(stats: CacheStats) -> float | None:
    rate = stats.hit_rate
    return None if rate is None else round(rate, 4)
