"""The broker's memory across restarts: cooldowns, quota windows, pins, budgets' usage, active route,
prompt cache lost by moves, answers served from overage.

The broker is pure and only announces changes through its ``on_*`` callbacks, which app.py
turns into queued store writes; ``restore_broker`` reads them back at startup, so a restart
forgets neither a spent quota window nor a conversation's account (issue #4).

With several instances or worker processes on one store (issue 17), ``follow_changes`` applies
the state writes of the others as they arrive: a cooldown, a quota window, a pin, the active
route, the tenants. It goes through the broker's ``restore*`` methods, which do not call the
``on_*`` callbacks, so a change from a peer is never written back (no echo between instances).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from proxygate.broker import AccountState, Broker, Headroom
from proxygate.config import Settings
from proxygate.errors import ProxyError
from proxygate.features.tenants import VERSION_KEY, TenantBook, load_tenants, stored_version
from proxygate.store.base import (
    CACHE_LOST,
    COOLDOWNS,
    HEADROOM,
    OVERAGE,
    PINS,
    SETTINGS,
    StateListener,
    Store,
)

log = logging.getLogger("proxygate.store")

ACTIVE_ROUTE_KEY = "active_route"
"SETTINGS key of the routing config chosen with `proxygate route use` (survives a restart)."
CACHE_LOST_KEY = "totals"
"The one CACHE_LOST key: ``CacheBook.lost_json()``."


def restore_broker(broker: Broker, store: Store, settings: Settings) -> None:
    """Load everything the broker persisted, and today's / this month's usage for budgets."""
    broker.restore({k: AccountState.from_json(v) for k, v in store.get_states(COOLDOWNS).items()})
    windows: dict[str, list[Headroom]] = {}
    for account_id, data in store.get_states(HEADROOM).items():
        windows[account_id] = [Headroom.from_json(w) for w in data.get("windows", []) if isinstance(w, dict)]
    broker.restore_headroom(windows)
    broker.restore_pins(store.get_states(PINS))
    broker.cache.restore_lost(store.get_states(CACHE_LOST).get(CACHE_LOST_KEY, {}))
    broker.restore_overage(
        {k: int(v.get("requests", 0)) for k, v in store.get_states(OVERAGE).items() if v.get("requests")}
    )
    chosen = active_route(store, settings)
    if chosen is not None:
        broker.use_route(chosen)
    if settings.budgets:
        _restore_usage(broker, store, settings)


def follow_changes(broker: Broker, book: TenantBook, store: Store, settings: Settings) -> StateListener:
    """The ``Store.on_change`` listener: apply another instance's state write to this one.

    Called on the event loop after ``store.get_states`` already shows the write. A value that
    cannot be read is logged and skipped: nothing a peer writes may stop this server.
    """

    def apply(namespace: str, key: str, value: dict[str, Any] | None) -> None:
        try:
            _apply(namespace, key, value)
        except (KeyError, TypeError, ValueError, AttributeError, ProxyError) as exc:
            log.warning(
                "a state change from another instance (%s %r) cannot be applied: %s", namespace, key, exc
            )

    def _apply(namespace: str, key: str, value: dict[str, Any] | None) -> None:
        if namespace == COOLDOWNS:  # None: deleted, i.e. nothing wrong with the account
            broker.restore({key: AccountState() if value is None else AccountState.from_json(value)})
        elif namespace == HEADROOM and value is not None:  # quota windows are facts: merged, never dropped
            broker.restore_headroom(
                {key: [Headroom.from_json(w) for w in value.get("windows", []) if isinstance(w, dict)]}
            )
        elif namespace == PINS:
            if value is None:
                broker.pins.forget(key)
            else:
                broker.restore_pins({key: value})
        elif namespace == OVERAGE:
            broker.restore_overage({key: int(value.get("requests", 0)) if value else 0})
        elif namespace == SETTINGS and key == ACTIVE_ROUTE_KEY:
            broker.use_route(_still_chosen(value, settings) or settings.routing.active)
        elif namespace == SETTINGS and key == VERSION_KEY:  # written after the tenant records it covers
            version = stored_version(store)
            if version != book.version:
                book.replace_all(load_tenants(store), version)

    return apply


def save_cache_lost(store: Store, lost: dict[str, Any]) -> None:
    store.put_state(CACHE_LOST, CACHE_LOST_KEY, lost)


def save_overage(store: Store, account_id: str, requests: int) -> None:
    store.put_state(OVERAGE, account_id, {"requests": requests})


def active_route(store: Store, settings: Settings) -> str | None:
    """The routing config chosen at runtime, if it still applies.

    Ignored once config.toml's own ``[routing] active`` changed since the choice: an edit of
    the file is the newer decision.
    """
    return _still_chosen(store.get_states(SETTINGS).get(ACTIVE_ROUTE_KEY), settings)


def _still_chosen(saved: dict[str, Any] | None, settings: Settings) -> str | None:
    if not saved:
        return None
    name = saved.get("name")
    if saved.get("configured") != settings.routing.active or name not in settings.routing.configs:
        return None
    return str(name)


def save_active_route(store: Store, settings: Settings, name: str) -> None:
    if name not in settings.routing.configs:
        configs = ", ".join(sorted(settings.routing.configs))
        raise ProxyError(
            f"no routing config {name!r} (configs: {configs})", status=404, error_class="not_found"
        )
    value: dict[str, Any] = {"name": name, "configured": settings.routing.active}
    store.put_state(SETTINGS, ACTIVE_ROUTE_KEY, value)


def _restore_usage(broker: Broker, store: Store, settings: Settings) -> None:
    now_ts = broker.clock()
    now = datetime.fromtimestamp(now_ts, UTC)
    today = now.strftime("%Y-%m-%d")
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    day_tokens: dict[str, int] = {}
    month_tokens: dict[str, int] = {}
    day_usd: dict[str, float] = {}
    month_usd: dict[str, float] = {}
    for row in store.usage_rows(month_start.timestamp(), now_ts):  # this month's daily rows, one read
        account = row.account_id
        if account in settings.budgets:
            month_tokens[account] = month_tokens.get(account, 0) + row.totals.tokens
            month_usd[account] = month_usd.get(account, 0.0) + row.totals.cost_usd
            if row.day == today:
                day_tokens[account] = day_tokens.get(account, 0) + row.totals.tokens
                day_usd[account] = day_usd.get(account, 0.0) + row.totals.cost_usd
    for account_id in settings.budgets:
        broker.restore_usage(
            account_id,
            day_tokens=day_tokens.get(account_id, 0),
            month_tokens=month_tokens.get(account_id, 0),
            day_usd=day_usd.get(account_id, 0.0),
            month_usd=month_usd.get(account_id, 0.0),
        )
