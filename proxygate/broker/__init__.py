"""Choosing an account per request: eligibility, ordering, leases and cooldowns. Pure."""

from proxygate.broker.broker import Ask, Broker, Clock, Lease
from proxygate.broker.state import AccountState, Outcome, backoff_s

__all__ = ["AccountState", "Ask", "Broker", "Clock", "Lease", "Outcome", "backoff_s"]
