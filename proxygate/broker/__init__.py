"""Choosing an account per request: routes, pins, drain-aware score, leases and cooldowns. Pure."""

from proxygate.broker.broker import Ask, Broker, Clock, Lease
from proxygate.broker.headroom import Headroom, parse_body, parse_headers
from proxygate.broker.pins import Pin, PinTable, conversation, conversation_key
from proxygate.broker.routing import STRATEGIES, tier_of
from proxygate.broker.state import AccountState, Outcome, backoff_s

__all__ = [
    "STRATEGIES",
    "AccountState",
    "Ask",
    "Broker",
    "Clock",
    "Headroom",
    "Lease",
    "Outcome",
    "Pin",
    "PinTable",
    "backoff_s",
    "conversation",
    "conversation_key",
    "parse_body",
    "parse_headers",
    "tier_of",
]
