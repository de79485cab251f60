"""``GET /metrics``: Prometheus text exposition through prometheus_client.

Two sources feed the app's one registry (features/metrics.py owns it):

    RequestMetrics   the pipeline stage: per-request counters and histograms
    LiveCollector    read at scrape time: headroom per account window, cooldowns in
                     force, leases in flight, pool size by state, the store's queue

A middleware counts LLM-route requests refused before the pipeline (bad JSON, wrong
proxy token), so ``proxygate_requests_total`` moves by exactly one per client request;
scrapes, admin calls and health checks are not counted.

With ``serve --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor) every worker's
counters and histograms live in files there and a scrape sums them all, so each request is
counted once whichever worker answers the scrape; the scrape-time gauges are the answering
worker's view (they read state the workers share).

Access: loopback peers need no token; other peers send ``admin_token``, ``metrics_token``
or the generated ``<data_dir>/admin.token`` as ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import Token
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxygate import __version__
from proxygate.broker import Broker
from proxygate.features.metrics import REQUEST_SCOPE, RequestMetrics, RequestScope
from proxygate.server import guard
from proxygate.server.guard import REQUEST_ID
from proxygate.server.keys import BROKER, PIPELINE, POOL, SETTINGS, STORE
from proxygate.wire.ir import Format

log = logging.getLogger("proxygate.metrics")

SCRAPED = web.AppKey("scraped_registry", CollectorRegistry)
"What a scrape reads: the pipeline's registry, or every worker's values plus this worker's gauges."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_TOKEN_FILE = "admin.token"
"Written by the server when admin_token is unset (issue 10 §4); the CLI and scrapers read it."

# The client format of each LLM route, by the last part of its path (ingress.add_routes).
_LLM_PATHS = {
    "messages": Format.anthropic,
    "count_tokens": Format.anthropic,
    "completions": Format.chat,
    "responses": Format.responses,
    "compact": Format.responses,
}


def request_metrics(app: web.Application) -> RequestMetrics | None:
    """The pipeline's metrics stage (None before startup, or when the stage list lacks it)."""
    pipeline = app.get(PIPELINE)
    if pipeline is None:
        return None
    return next((s for s in pipeline.stages if isinstance(s, RequestMetrics)), None)


def llm_format(request: web.Request) -> Format | None:
    """The client format when the request is for an LLM route; None for everything else."""
    path = request.path
    if request.method != "POST" or path.startswith("/admin"):
        return None
    if path.startswith("/v1beta/models/"):
        return Format.gemini
    return _LLM_PATHS.get(path.rsplit("/", 1)[-1])


# -- access ------------------------------------------------------------------------------------


def is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def bearer(authorization: str) -> str:
    return authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""


def may_scrape(remote: str | None, presented: str, tokens: Iterable[str]) -> bool:
    """Loopback peers always; others only with one of the (non-empty) tokens."""
    if is_loopback(remote):
        return True
    given = presented.encode()
    return bool(presented) and any(t and hmac.compare_digest(given, t.encode()) for t in tokens)


def read_admin_token_file(data_dir: Path) -> str:
    try:
        return (data_dir / ADMIN_TOKEN_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


# -- scrape-time collector ---------------------------------------------------------------------


def cooldown_reason(text: str) -> str:
    """Classify a free-text cooldown reason (broker/state.py) into a bounded label value."""
    head = text.lower()
    if head.startswith("429") or head.startswith("rate limited"):
        return "rate_limited"
    if head.startswith(("529", "503", "overloaded")):
        return "overloaded"
    return "error"


class LiveCollector(Collector):
    """Gauges read from the broker, the pool and the store at scrape time."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def describe(self) -> Iterable[Metric]:
        return []  # families vary with the pool; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        app = self.app
        broker: Broker = app[BROKER]
        snapshot = app[POOL][0]
        now = broker.clock()

        info = GaugeMetricFamily("proxygate_build_info", "The running version.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info

        pool = GaugeMetricFamily(
            "proxygate_pool_accounts",
            "Pool accounts by state (ready, cooling_down, needs_reauth, quarantined, disabled).",
            labels=["state"],
        )
        inflight = GaugeMetricFamily(
            "proxygate_leases_in_flight", "Requests holding a lease on the account now.", labels=["account"]
        )
        cooling = GaugeMetricFamily(
            "proxygate_cooldown_seconds",
            "Seconds until the account is usable again (0: not cooling).",
            labels=["account"],
        )
        cooldowns = GaugeMetricFamily(
            "proxygate_cooldowns",
            "Cooldowns in force, by reason and scope (account-wide or one model).",
            labels=["reason", "scope"],
        )
        left = GaugeMetricFamily(
            "proxygate_headroom_left_percent",
            "Percent of a quota window left, as the provider last said.",
            labels=["account", "window"],
        )
        resets = GaugeMetricFamily(
            "proxygate_headroom_reset_seconds",
            "Seconds until a quota window refills.",
            labels=["account", "window"],
        )
        states = dict.fromkeys(("ready", "cooling_down", "needs_reauth", "quarantined", "disabled"), 0)
        quarantines = GaugeMetricFamily(
            "proxygate_account_quarantined",
            "1 while the account is quarantined (refused for good by its provider; `reset` lifts it).",
            labels=["account", "reason"],
        )
        overage = CounterMetricFamily(
            "proxygate_overage_requests",
            "Requests a subscription answered from billed extra usage beyond its plan.",
            labels=["account"],
        )
        reasons: dict[tuple[str, str], int] = {}
        for account in snapshot.accounts:
            state = broker.state(account.id)
            wait_s = state.cooling(now)
            if state.overage_requests:
                overage.add_metric([account.id], float(state.overage_requests))
            if account.disabled:
                states["disabled"] += 1
            elif state.quarantined:
                states["quarantined"] += 1
                quarantines.add_metric([account.id, state.quarantined.split(":", 1)[0][:40]], 1.0)
            elif state.needs_reauth:
                states["needs_reauth"] += 1
                reasons[("auth_failed", "account")] = reasons.get(("auth_failed", "account"), 0) + 1
            elif wait_s > 0:
                states["cooling_down"] += 1
            else:
                states["ready"] += 1
            if wait_s > 0:
                key = (cooldown_reason(state.cooldown_reason), "account")
                reasons[key] = reasons.get(key, 0) + 1
            for until in state.model_cooldowns.values():
                if until > now:
                    key = (cooldown_reason(state.cooldown_reason), "model")
                    reasons[key] = reasons.get(key, 0) + 1
            inflight.add_metric([account.id], float(state.inflight))
            cooling.add_metric([account.id], round(wait_s, 3))
            for window in state.windows.values():
                fraction = window.left(now)
                if fraction is not None:
                    left.add_metric([account.id, window.key], round(fraction * 100, 2))
                if window.resets_at is not None:
                    resets.add_metric([account.id, window.key], round(max(window.resets_at - now, 0.0), 1))
        for name, count in states.items():
            pool.add_metric([name], float(count))
        for (reason, scope), count in sorted(reasons.items()):
            cooldowns.add_metric([reason, scope], float(count))
        invalid = GaugeMetricFamily(
            "proxygate_pool_invalid_files", "Pool files that failed to load (see `proxygate status`)."
        )
        invalid.add_metric([], float(len(snapshot.invalid)))
        yield from (pool, invalid, inflight, cooling, cooldowns, left, resets, quarantines, overage)

        store = app[STORE]
        depth = GaugeMetricFamily("proxygate_store_queue_depth", "Store writes queued, not yet committed.")
        depth.add_metric([], float(store.queue_depth))
        yield depth
        failures = CounterMetricFamily(
            "proxygate_store_commit_failures", "Store commits that failed since start."
        )
        failures.add_metric([], float(store.commit_failures))
        yield failures
        degraded = GaugeMetricFamily(
            "proxygate_store_degraded",
            "1 while the shared store is unreachable (served from the last state).",
        )
        degraded.add_metric([], 1.0 if getattr(store, "degraded", "") else 0.0)
        yield degraded
        signatures = CounterMetricFamily(
            "proxygate_signature_retries",
            "Requests sent once more without thinking blocks another account had signed (400 recovered).",
        )
        signatures.add_metric([], float(getattr(app.get(PIPELINE), "signature_retries", 0)))
        yield signatures


# -- the route and the middleware --------------------------------------------------------------


def _refused(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message}),
        content_type="application/json",
        headers={"www-authenticate": "Bearer"} if status == 401 else None,
    )


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    presented = bearer(request.headers.get("authorization", ""))
    if not is_loopback(request.remote):
        file_token = await asyncio.to_thread(read_admin_token_file, settings.data_dir) if presented else ""
        if not may_scrape(
            request.remote, presented, (settings.admin_token, settings.metrics_token, file_token)
        ):
            return _refused(401, "/metrics from another machine needs metrics_token or the admin token")
    registry = app.get(SCRAPED)
    if registry is None:
        return _refused(503, "metrics are not enabled in this pipeline")
    if stage := request_metrics(app):
        stage.flush()  # the requests' summed counters (features/metrics.py)
    body = generate_latest(registry)
    return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})


class RefusedCount:
    """Counts LLM-route requests that ended before the pipeline's metrics stage saw them
    (a ``guard.RequestWatch``: told by the edge middleware, no coroutine layer of its own)."""

    def enter(self, request: web.Request) -> tuple[Format, RequestScope, Token[RequestScope | None]] | None:
        fmt = llm_format(request)
        if fmt is None:
            return None
        scope = RequestScope(request_id=request.get(REQUEST_ID) or "")  # log lines carry it from here on
        return fmt, scope, REQUEST_SCOPE.set(scope)

    def leave(
        self,
        request: web.Request,
        entered: tuple[Format, RequestScope, Token[RequestScope | None]] | None,
        status: int,
    ) -> None:
        if entered is None:
            return
        fmt, scope, token = entered
        REQUEST_SCOPE.reset(token)
        if not scope.is_counted and status not in (404, 405) and (stage := request_metrics(request.app)):
            broker = request.app.get(BROKER)
            stage.count_refused(fmt.value, broker.route_name if broker else "", status)


async def _register_live(app: web.Application) -> None:
    stage = request_metrics(app)
    if stage is None:
        return
    registry = stage.registry
    if workers_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=workers_dir)  # type: ignore[no-untyped-call]
    registry.register(LiveCollector(app))
    app[SCRAPED] = registry


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    guard.watch(app, RefusedCount())
    app.on_startup.append(_register_live)  # after the cleanup contexts built broker and pipeline


__all__ = ["LiveCollector", "add_routes", "cooldown_reason", "llm_format", "may_scrape"]
