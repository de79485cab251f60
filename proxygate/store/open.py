"""``open_store``: the one place that picks the store implementation from ``[store] backend``."""

from __future__ import annotations

from proxygate.config import Settings
from proxygate.store.base import Store
from proxygate.store.lmdb_store import LMDBStore


def open_store(settings: Settings) -> Store:
    """The store ``settings.store.backend`` names: LMDB in the data dir, or Redis at ``redis_url``."""
    if settings.store.backend == "redis":
        from proxygate.store.redis_store import RedisStore  # redis is imported only when used

        return RedisStore(settings.store, settings.usage)
    return LMDBStore(settings.data_dir, settings.usage)
