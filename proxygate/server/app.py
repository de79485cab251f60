"""The aiohttp application: one factory, shared objects under typed keys, lifetimes in cleanup_ctx.

Startup order (cleanup runs in reverse, and only for what started): store (LMDB or Redis, by
``[store] backend``, with its background loops) → tenants → pool + broker + watcher, the broker
following the state writes of other instances → upstream session + pipeline. On SIGTERM
aiohttp stops accepting, waits up to ``drain_timeout_s`` for requests in flight (streams
included), then the store is flushed (``run`` → server/lifecycle.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.request import getproxies

import aiohttp
from aiohttp import web

from proxygate.auth.credentials import local_login_files
from proxygate.broker import AccountState, Broker, Headroom, Pin
from proxygate.config import Settings
from proxygate.pool.files import PoolSnapshot, load_pool
from proxygate.pool.watcher import log_invalid, watch_pool
from proxygate.prices import load_prices
from proxygate.server import admin, guard, ingress, lifecycle, metrics, pooled_usage, tenants_api, usage_api
from proxygate.server.alerts import alerting
from proxygate.server.broker_state import follow_changes, restore_broker, save_cache_lost, save_overage
from proxygate.server.dashboard import routes as dashboard
from proxygate.server.keys import BROKER, MODELS, PIPELINE, POOL, SETTINGS, STORE, TENANT_BOOK, UPSTREAM
from proxygate.server.models import ModelCatalog
from proxygate.server.pipeline import Pipeline
from proxygate.server.tasks import supervise
from proxygate.store import COOLDOWNS, HEADROOM, PINS
from proxygate.store.open import open_store
from proxygate.store.secrets import Vault
from proxygate.wire.codecs import CODECS

log = logging.getLogger("proxygate")

Clock = Callable[[], float]


def create_app(settings: Settings, *, clock: Clock = time.time) -> web.Application:
    # Bodies over the limit must reach our handler to get a 413 in the client's format.
    app = web.Application(client_max_size=settings.max_body_bytes + 1, middlewares=guard.MIDDLEWARES)
    if settings.allowed_origins:  # no signal to send on every answer when no origin is listed
        app.on_response_prepare.append(guard.expose_to_listed_origins)  # CORS for allowed_origins
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(tenants_api.tenant_book(clock))  # keys and limits, before any request
    app.cleanup_ctx.append(_pool_and_broker(clock))
    app.cleanup_ctx.append(alerting)  # broker events: quarantine, re-auth, spent windows → log, webhook
    app.cleanup_ctx.append(_upstream)
    ingress.add_routes(app)
    admin.add_routes(app)
    pooled_usage.add_routes(app)  # GET /backend-api/wham/usage + subscription quota polling
    metrics.add_routes(app)  # GET /metrics
    usage_api.add_routes(app)  # GET /admin/api/usage, /admin/api/requests
    tenants_api.add_routes(app)  # /admin/api/tenants
    dashboard.add_routes(app)  # the dashboard at / and the admin API calls its pages make
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = open_store(settings)
    try:
        await store.start()  # connect and load the local mirror, before anything reads state
    except BaseException:
        await asyncio.to_thread(store.close)
        raise
    app[STORE] = store
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        for name, loop in store.tasks(stop).items():  # committer, change feed, heartbeat
            tasks.create_task(supervise(name, loop, stop=stop))
        try:
            yield
        finally:
            stop.set()
            store.wake()
    await asyncio.to_thread(store.close)


def _pool_and_broker(clock: Clock) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings, store = app[SETTINGS], app[STORE]
        vault = Vault(settings.secrets, settings.data_dir)  # opens sealed pool files (issue 13)
        snapshot = await asyncio.to_thread(load_pool, settings.pool_dir, vault)
        log_invalid(snapshot)
        holder = [snapshot]
        app[POOL] = holder

        def persist(account_id: str, state: AccountState) -> None:
            store.put_state(COOLDOWNS, account_id, state.to_json())

        def persist_headroom(account_id: str, windows: list[Headroom]) -> None:
            store.put_state(HEADROOM, account_id, {"windows": [w.to_json() for w in windows]})

        def persist_pin(key: str, pin: Pin | None) -> None:
            store.put_state(PINS, key, None if pin is None else pin.to_json())

        broker = Broker(
            snapshot,
            settings.routing,
            clock=clock,
            on_state=persist,
            on_headroom=persist_headroom,
            on_pin=persist_pin,
            on_cache_lost=lambda lost: save_cache_lost(store, lost),
            on_overage=lambda account_id, requests: save_overage(store, account_id, requests),
            budgets=settings.budgets,
            prices=load_prices(settings.data_dir, settings.prices),  # [budgets] in dollars
        )
        restore_broker(broker, store, settings)
        # At once after the restore (no await between): a peer's write lands in one or the other.
        store.on_change(follow_changes(broker, app[TENANT_BOOK], store, settings))
        app[BROKER] = broker
        if not snapshot.accounts:
            log.warning(
                "the pool in %s is empty: add an API key with `proxygate add-key --provider anthropic` "
                "(or openai, gemini, …), a ChatGPT login with `proxygate add-account`, or a Claude "
                "subscription with `proxygate add-claude-account`",
                settings.pool_dir,
            )
            if found := local_login_files(Path.home(), os.environ):  # suggested, never imported silently
                log.warning(
                    "found %s: `proxygate import --local` adds these logins to the pool (shared with the CLI)",
                    " and ".join(str(path) for _, path in found),
                )
        else:
            log.info("pool: %d accounts from %s", len(snapshot.accounts), settings.pool_dir)

        def on_change(new: PoolSnapshot) -> None:
            holder[0] = new
            broker.update_pool(new)

        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(
                supervise(
                    "pool watcher", lambda: watch_pool(settings.pool_dir, on_change, stop, vault), stop=stop
                )
            )
            try:
                yield
            finally:
                stop.set()

    return ctx


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    t = settings.timeouts
    ssl_context: ssl.SSLContext | bool = True
    if settings.ca_bundle:
        ssl_context = ssl.create_default_context(cafile=settings.ca_bundle)
    connector = aiohttp.TCPConnector(limit=0, ssl=ssl_context, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s, sock_read=t.idle_s)
    # No cookie jar: a provider's cookies (Cloudflare's __cf_bm) would otherwise go back with
    # every later request, whichever account sends it.
    # trust_env: HTTPS_PROXY / NO_PROXY are honoured; auto_decompress off: we ask for identity.
    # Only when a proxy is configured: with trust_env aiohttp looks the proxy and ~/.netrc up in
    # a thread on *every* request, which cost a third of the CPU at 700 req/s (bench/README.md).
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=_has_proxy(),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        app[UPSTREAM] = session
        app[PIPELINE] = Pipeline(settings, app[BROKER], session, app[STORE], tenants=app[TENANT_BOOK])
        app[MODELS] = ModelCatalog(session, lambda: app[POOL][0], dict(settings.routing.aliases))
        for _ in CODECS.values():  # import every codec now, not on the first converted request
            pass
        yield
        for stage in app[PIPELINE].stages:  # stages that write on the side (capture) flush
            if close := getattr(stage, "close", None):
                await close()


def _has_proxy() -> bool:
    """A proxy for the schemes aiohttp proxies is set (NO_PROXY alone is not one)."""
    return any(scheme in getproxies() for scheme in ("http", "https", "ws", "wss"))


# A full collection walks every live object: with 1,000 open streams (each holding its parsed
# request) that is a pause of tens of ms, which was the whole TTFT p99 tail in bench/README.md
# (1.5x direct; 1.04x with these settings, RSS unchanged). The hot path makes little cyclic
# garbage, so collections can be rare: gen0 every 50,000 net allocations instead of 700.
GC_THRESHOLDS = (50_000, 20, 20)


async def _tune_gc(app: web.Application) -> None:
    """After startup: freeze what startup built out of every later collection; collect rarely."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM, then drain (server/lifecycle.py: limits, server.json, signals)."""
    app = create_app(settings)
    app.on_startup.append(_tune_gc)  # on_startup runs after every cleanup_ctx has started
    lifecycle.serve(app, settings)
