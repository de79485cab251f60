"""``open_store``: the one place that picks the store implementation from ``[store] backend``."""

from __future__ import annotations

from proxygate.config import Settings
from proxygate.errors import ConfigError
from proxygate.store.base import Store
from proxygate.store.lmdb_store import LMDBStore


def open_store(settings: Settings) -> Store:
    """The store ``settings.store.backend`` names: LMDB in the data dir, or Redis at ``redis_url``."""
    if settings.store.backend == "redis":
        raise ConfigError('store.backend = "redis": not available in this build yet')
    return LMDBStore(settings.data_dir, settings.usage)
