"""Every tenant's limits, usage and share of each subscription window, for the admin API.

``tenant list`` and the tenants API (server/tenants_api.py) show it whole; ``status`` shows it
when tenants exist (server/admin.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxygate.features.tenants import OWNER
from proxygate.server.keys import BROKER, PIPELINE, POOL, TENANT_BOOK


def tenants_report(app: web.Application) -> list[dict[str, Any]]:
    """Every tenant's report, the owner first, with its use and share of each subscription window."""
    book, broker, fair = app[TENANT_BOOK], app[BROKER], app[PIPELINE].fair
    now = broker.clock()
    uses: dict[str, list[dict[str, Any]]] = {}
    for account in app[POOL][0].accounts:
        if account.is_oauth:
            windows = broker.state(account.id).windows.values()
            for row in fair.report(account.id, windows, now, reserve=account.reserve_pct / 100.0):
                uses.setdefault(row.pop("tenant"), []).append(row)
    reports = []
    for name in (OWNER, *sorted(book.tenants)):
        report = book.report(name)
        report["windows"] = uses.get(name, [])
        reports.append(report)
    return reports


__all__ = ["tenants_report"]
