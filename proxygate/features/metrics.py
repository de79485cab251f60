"""Stage: count every client request in Prometheus metrics (served at ``GET /metrics``).

One ``RequestMetrics`` per app, with its own ``CollectorRegistry`` (never the process-wide
one: a test process runs several apps). ``on_done`` sees each request that reached the
pipeline exactly once, after failover, so ``proxygate_requests_total`` moves by one per
client request however many accounts were tried. Requests refused before the pipeline
(bad JSON, wrong proxy token) are counted by the server's middleware, which learns from
the ``RequestScope`` in a context variable whether this stage already counted the request.

Label cardinality stays bounded: accounts come from the pool, routes from the config,
and a model is named only when the config names it or an upstream answered it with a
success (the upstream vouches that it exists), at most ``MAX_MODEL_LABELS`` of them;
every other model name a client makes up is ``other``.
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from proxygate.call import Call
from proxygate.config import RoutingSettings

MAX_MODEL_LABELS = 200
"Distinct model label values, at most: each is a time series per account, format and status."
OTHER_MODEL = "other"

# Seconds. First bytes of a healthy upstream land in 0.3-3 s; long agentic answers stream
# for minutes, so the total reaches the 10-minute mark.
FIRST_BYTE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


@dataclass(slots=True)
class RequestScope:
    """What the current request's task knows about itself, for the middleware and the log lines."""

    request_id: str = ""
    is_counted: bool = False
    tenant: str | None = None
    "The caller's tenant as logged (``-``: the owner) once authenticated; None before."


REQUEST_SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "proxygate_request_scope", default=None
)


def mark_counted() -> None:
    """The current request reached the pipeline, whose metrics stage counts it: the edge's
    refused-request count must not (its ``leave`` runs before the stage's deferred ``on_done``)."""
    scope = REQUEST_SCOPE.get()
    if scope is not None:
        scope.is_counted = True


def status_class(status: int) -> str:
    """``2xx`` … ``5xx``; a request that never got a status (client gone at once) is ``4xx`` (499)."""
    return f"{min(max(status or 499, 100), 599) // 100}xx"


class RequestMetrics:
    """The per-request counters and histograms; ``registry`` is this app's registry.

    The counters of a request are summed in a plain dict and handed to prometheus_client by
    ``flush``, which the ``/metrics`` handler calls before every scrape: a scrape sees every
    request, and a request pays one dict update instead of five locked increments (~8 µs).
    With several workers (``PROMETHEUS_MULTIPROC_DIR``) another process answers scrapes,
    so each request is flushed at once.
    """

    def __init__(self, routing: RoutingSettings, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._pending: dict[tuple[str, str, str, str, str, str], list[float]] = {}
        "(format, route, account, model, status class, tenant) → requests, four token kinds, cost, unpriced, failovers."
        self._flush_each = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._known_models: set[str] = {m for m in _configured_models(routing) if not _is_glob(m)}
        self._learned_models: set[str] = set()
        r = self.registry
        self.requests = Counter(
            "proxygate_requests",
            "Client requests on LLM routes, each counted once whatever the failovers.",
            ["format", "route", "account", "model", "status", "tenant"],
            registry=r,
        )
        self.first_byte = Histogram(
            "proxygate_first_byte_seconds",
            "From a request's arrival to the first body byte sent to the client.",
            ["format", "account"],
            buckets=FIRST_BYTE_BUCKETS_S,
            registry=r,
        )
        self.duration = Histogram(
            "proxygate_request_duration_seconds",
            "From a request's arrival to its last byte (streams included).",
            ["format", "account"],
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.tokens = Counter(
            "proxygate_tokens",
            "Tokens the upstream reported, by kind (input, output, cache_read, cache_write).",
            ["format", "account", "model", "kind", "tenant"],
            registry=r,
        )
        self.cost = Counter(
            "proxygate_cost_usd",
            "Cost at API prices (for subscriptions: the API-equivalent value); unpriced models add nothing.",
            ["account", "model"],
            registry=r,
        )
        self.unpriced = Counter(
            "proxygate_unpriced_requests",
            "Answered requests whose model has no price, so their cost is unknown.",
            ["account", "model"],
            registry=r,
        )
        self.failovers = Counter(
            "proxygate_failovers",
            "Accounts given up on for another within a request (attempts - 1).",
            ["format", "route"],
            registry=r,
        )
        self.replacements = Counter(
            "proxygate_guardrail_replacements",
            "Values the guardrails replaced in requests, by detector (counts only, never values).",
            ["detector"],
            registry=r,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    # -- the stage's hooks -------------------------------------------------------------------

    def on_request(self, call: Call) -> None:
        scope = REQUEST_SCOPE.get()
        if scope is not None:
            scope.request_id = call.request_id

    def on_done(self, call: Call) -> None:
        fmt = call.fmt.value
        account = call.account_id or "none"
        if call.first_byte_ms > 0:
            self._child(self.first_byte, fmt, account).observe(call.first_byte_ms / 1000)
        self._child(self.duration, fmt, account).observe(call.elapsed_ms / 1000)
        # Bounded: call.tenant is only ever a name the tenant book authenticated.
        key = (
            fmt,
            call.route or "none",
            account,
            self.model_label(call),
            status_class(call.status),
            call.tenant or "-",
        )
        sums = self._pending.get(key)
        if sums is None:
            sums = self._pending[key] = [0, 0, 0, 0, 0, 0.0, 0, 0]
        u = call.usage
        sums[0] += 1
        sums[1] += u.input_tokens
        sums[2] += u.output_tokens
        sums[3] += u.cache_read_tokens
        sums[4] += u.cache_write_tokens
        if call.cost_usd is not None:
            sums[5] += call.cost_usd
        elif call.account_id and call.status < 400:
            sums[6] += 1
        if call.attempts > 1:
            sums[7] += call.attempts - 1
        for detector, n in call.redactions.items():  # detector names are a fixed set of 15
            self._child(self.replacements, detector).inc(n)
        if self._flush_each:
            self.flush()

    def flush(self) -> None:
        """Hand the summed counters to prometheus_client (before a scrape reads them)."""
        pending, self._pending = self._pending, {}
        for (fmt, route, account, model, status, tenant), sums in pending.items():
            self._child(self.requests, fmt, route, account, model, status, tenant).inc(sums[0])
            for kind, n in zip(TOKEN_KINDS, sums[1:5], strict=True):
                if n:
                    self._child(self.tokens, fmt, account, model, kind, tenant).inc(n)
            if sums[5]:
                self._child(self.cost, account, model).inc(sums[5])
            if sums[6]:
                self._child(self.unpriced, account, model).inc(sums[6])
            if sums[7]:
                self._child(self.failovers, fmt, route).inc(sums[7])

    def count_refused(self, fmt: str, route: str, status: int) -> None:
        """A request refused before the pipeline saw it: no account, no model."""
        self._child(
            self.requests, fmt, route or "none", "none", OTHER_MODEL, status_class(status), "none"
        ).inc()  # rare (refusals): straight to prometheus_client

    # -- labels ------------------------------------------------------------------------------

    def model_label(self, call: Call) -> str:
        """The model the account served, when the config names it or an upstream answered it."""
        if not call.account_id:
            return OTHER_MODEL
        model = call.upstream_model or call.model
        if model in self._known_models or model in self._learned_models:
            return model
        if 200 <= call.status < 400 and len(self._learned_models) < MAX_MODEL_LABELS:
            self._learned_models.add(model)
            return model
        return OTHER_MODEL

    def _child(self, metric: Any, *labels: str) -> Any:
        # .labels() validates and locks on every call; the labelled child is kept instead.
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


def _configured_models(routing: RoutingSettings) -> set[str]:
    names = {*routing.aliases.keys(), *routing.aliases.values()}
    for config in routing.configs.values():
        names.update(t.model for t in config.tiers.values() if t.model)
    return names


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


__all__ = ["REQUEST_SCOPE", "RequestMetrics", "RequestScope", "mark_counted", "status_class"]
