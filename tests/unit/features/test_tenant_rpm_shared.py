"""The shared rpm: TenantLimits counts a tenant's requests in the store, refusals use nothing up."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxygate.call import Call
from proxygate.config import Settings
from proxygate.errors import TenantLimitReached
from proxygate.features.tenants import TenantBook, TenantLimits, created
from proxygate.store.lmdb_store import LMDBStore
from proxygate.wire.ir import Format


def call(request_id: str, tenant: str) -> Call:
    return Call(
        request_id, Format.anthropic, CIMultiDictProxy(CIMultiDict()), {}, b"", "m", False, tenant=tenant
    )


async def test_the_store_window_admits_rpm_requests_and_a_refusal_is_withdrawn(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path / "data")  # its hit() is the per-process window Redis stands in for
    alice, _ = created("alice", {"rpm": 2}, now=0.0, routes=None)
    bob, _ = created("bob", {}, now=0.0, routes=None)
    book = TenantBook(Settings())
    book.replace_all({"alice": alice, "bob": bob})
    stage = TenantLimits(book, store)
    for n in range(2):
        stage.on_request(call(f"r{n}", "alice"))
        await stage.on_admit(call(f"r{n}", "alice"))
    refused = call("r2", "alice")
    stage.on_request(refused)  # the local limits pass: the rpm is the store's
    with pytest.raises(
        TenantLimitReached, match=r"^tenant 'alice': 2 requests per minute reached \(rpm\)$"
    ) as exc:
        await stage.on_admit(refused)
    assert 59.0 < (exc.value.retry_after_s or 0) <= 60.0
    stage.on_done(refused)
    usage = book.report("alice")["usage"]
    assert (usage["inflight"], usage["requests_today"], usage["requests_last_minute"]) == (2, 2, 2)
    for n in range(5):  # no rpm: no store round-trip, no limit
        stage.on_request(call(f"b{n}", "bob"))
        await stage.on_admit(call(f"b{n}", "bob"))
    assert book.report("bob")["usage"]["requests_today"] == 5
    store.close()
