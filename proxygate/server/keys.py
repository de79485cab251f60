"""Typed keys for what the app shares (aiohttp's AppKey): no module globals."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from proxygate.broker import Broker
from proxygate.config import Settings
from proxygate.features.tenants import TenantBook
from proxygate.pool.files import PoolSnapshot
from proxygate.server.models import ModelCatalog
from proxygate.server.pipeline import Pipeline
from proxygate.store.base import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
BROKER = web.AppKey("broker", Broker)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
PIPELINE = web.AppKey("pipeline", Pipeline)
MODELS = web.AppKey("models", ModelCatalog)
TENANT_BOOK = web.AppKey("tenant_book", TenantBook)
"Tenant keys, limits and live usage (features/tenants.py)."
POOL = web.AppKey("pool", list[PoolSnapshot])
"The current pool snapshot in a one-item list (replaced on every reload)."
