"""State and usage: the ``Store`` interface, its embedded LMDB and shared Redis implementations."""

from proxygate.store.base import (
    COOLDOWNS,
    HEADROOM,
    NAMESPACES,
    PINS,
    SETTINGS,
    TOKENS,
    StateListener,
    Store,
    StoreUnavailable,
    UsageRecord,
    UsageRow,
    UsageTotals,
)
from proxygate.store.lmdb_store import LMDBStore, today, utc_day, utc_hour
from proxygate.store.open import open_store

__all__ = [
    "COOLDOWNS",
    "HEADROOM",
    "NAMESPACES",
    "PINS",
    "SETTINGS",
    "TOKENS",
    "LMDBStore",
    "StateListener",
    "Store",
    "StoreUnavailable",
    "UsageRecord",
    "UsageRow",
    "UsageTotals",
    "open_store",
    "today",
    "utc_day",
    "utc_hour",
]
