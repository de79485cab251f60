"""State and usage: the ``Store`` interface and its embedded LMDB implementation."""

from proxygate.store.base import (
    COOLDOWNS,
    HEADROOM,
    PINS,
    SETTINGS,
    Store,
    UsageRecord,
    UsageRow,
    UsageTotals,
)
from proxygate.store.lmdb_store import LMDBStore, today, utc_day, utc_hour

__all__ = [
    "COOLDOWNS",
    "HEADROOM",
    "PINS",
    "SETTINGS",
    "LMDBStore",
    "Store",
    "UsageRecord",
    "UsageRow",
    "UsageTotals",
    "today",
    "utc_day",
    "utc_hour",
]
