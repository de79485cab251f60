from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import lmdb
import orjson
import pytest

from proxygate.call import new_request_id
from proxygate.config import UsageSettings
from proxygate.errors import StoreError
from proxygate.store import COOLDOWNS, LMDBStore, UsageRecord, UsageRow, UsageTotals, utc_day

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def rec(
    n: int,
    account: str = "a",
    model: str = "m",
    status: int = 200,
    ts: float = T0,
    **fields: object,
) -> UsageRecord:
    return UsageRecord(
        f"pg_{n}", ts + n, account, model, "anthropic", "anthropic", status, 10, 5, 2, 1, **fields
    )  # type: ignore[arg-type]


def counts(requests: int, errors: int = 0, **extra: object) -> dict[str, object]:
    return {
        "requests": requests,
        "errors": errors,
        "input_tokens": 10 * requests,
        "output_tokens": 5 * requests,
        "cache_read_tokens": 2 * requests,
        "cache_write_tokens": 1 * requests,
        "unpriced_requests": requests,
        "cost_usd": 0.0,
        **extra,
    }


def test_usage_is_summed_per_day_account_model_and_survives_reopen(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path / "data")
    for n in range(3):
        store.record(rec(n))
    store.record(rec(3, status=429))
    store.record(rec(4, account="b"))
    store.record(rec(5, route="work"))  # another route: a separate row, summed by usage(day)
    store.close()
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    store = LMDBStore(tmp_path / "data")
    rows = {(r.account_id, r.model): r.totals.as_dict() for r in store.usage(utc_day(T0))}
    assert rows == {("a", "m"): counts(5, errors=1), ("b", "m"): counts(1)}
    assert [e["request_id"] for e in store.recent_requests(2)] == ["pg_5", "pg_4"]
    store.close()


def test_rows_by_day_and_hour_keep_format_route_tenant_and_cost(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    store.record(rec(1, cost_usd=0.25, route="work", tenant="t1"))
    store.record(rec(2, cost_usd=0.5, route="work", tenant="t1"))
    store.record(rec(3, route="work", tenant="t1"))  # no price: unpriced, not 0
    store.record(rec(4, ts=T0 + 3600, cost_usd=1.0, route="work", tenant="t1"))  # the next hour
    store.record(rec(5, ts=T0 + 86400, cost_usd=2.0))  # the next day, default route
    store.record(UsageRecord("pg_6", T0, "a", "m", "chat", "responses", 500, error_class="overloaded"))
    store.flush()

    def totals(
        requests: int, cost_usd: float, unpriced: int, errors: int = 0, tokens: int = 1
    ) -> UsageTotals:
        return UsageTotals(
            requests, errors, 10 * tokens, 5 * tokens, 2 * tokens, 1 * tokens, cost_usd, unpriced
        )

    assert store.usage_rows(T0, T0 + 86400) == [
        UsageRow("2027-01-15", "a", "m", "anthropic", "work", "t1", totals(4, 1.75, 1, tokens=4)),
        UsageRow("2027-01-15", "a", "m", "chat", "", "", UsageTotals(requests=1, errors=1)),
        UsageRow("2027-01-16", "a", "m", "anthropic", "", "", totals(1, 2.0, 0)),
    ]
    assert store.usage_rows(T0 + 86400, T0 + 86400) == [
        UsageRow("2027-01-16", "a", "m", "anthropic", "", "", totals(1, 2.0, 0)),
    ]
    assert store.usage_rows(T0, T0 + 3600, hourly=True) == [
        UsageRow("2027-01-15T08", "a", "m", "anthropic", "work", "t1", totals(3, 0.75, 1, tokens=3)),
        UsageRow("2027-01-15T08", "a", "m", "chat", "", "", UsageTotals(requests=1, errors=1)),
        UsageRow("2027-01-15T09", "a", "m", "anthropic", "work", "t1", totals(1, 1.0, 0)),
    ]
    assert store.usage_rows(T0 - 86400, T0 - 9 * 3600) == []  # the day before ends at 23:59
    store.close()


def test_request_log_entries_pages_and_filters(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    statuses = [200, 429, 500, 200, 503, 200, 400]
    for n, status in enumerate(statuses):
        store.record(
            rec(
                n,
                account="b" if n % 2 else "a",
                status=status,
                model_asked="sonnet",
                attempts=2,
                first_byte_ms=12.5,
                cost_usd=0.01,
            )
        )
    store.flush()
    [newest] = store.requests(1)
    assert newest == {
        "request_id": "pg_6",
        "ts": T0 + 6,
        "account_id": "a",
        "model": "m",
        "client_format": "anthropic",
        "upstream_format": "anthropic",
        "status": 400,
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_tokens": 2,
        "cache_write_tokens": 1,
        "latency_ms": 0.0,
        "error_class": "",
        "is_stream": False,
        "tenant": "",
        "model_asked": "sonnet",
        "route": "",
        "attempts": 2,
        "first_byte_ms": 12.5,
        "cost_usd": 0.01,
        "guardrails": {},
    }
    ids = lambda entries: [e["request_id"] for e in entries]  # noqa: E731
    assert ids(store.requests(3)) == ["pg_6", "pg_5", "pg_4"]
    assert ids(store.requests(3, before="pg_4")) == ["pg_3", "pg_2", "pg_1"]
    assert ids(store.requests(3, before="pg_1")) == ["pg_0"]
    assert ids(store.requests(3, before="pg_0")) == []
    assert ids(store.requests(3, before="pg_unknown")) == []
    assert ids(store.requests(status="5xx")) == ["pg_4", "pg_2"]
    assert ids(store.requests(status="4XX")) == ["pg_6", "pg_1"]
    assert ids(store.requests(status="429")) == ["pg_1"]
    assert ids(store.requests(account="b")) == ["pg_5", "pg_3", "pg_1"]
    assert ids(store.requests(1, account="b", status="2xx", before="pg_5")) == ["pg_3"]
    with pytest.raises(
        ValueError, match=r"^status filter '5xxx': expected three digits or x, like 429 or 5xx$"
    ):
        store.requests(status="5xxx")
    store.close()


def test_request_log_pages_follow_older_entries_and_are_trimmed_in_part(tmp_path: Path) -> None:
    """A commit writes its records as one page; entries an earlier version wrote one a key
    (time + id, indexed by id) are listed after the pages, paged through and trimmed first."""
    store = LMDBStore(tmp_path, UsageSettings(request_log_max_rows=5))
    old = rec(0)
    old_key = int(old.ts * 1e9).to_bytes(8, "big") + b"pg_0"
    with store._env.begin(write=True) as txn:
        txn.put(old_key, orjson.dumps(old), db=store._dbs["requests"])
        txn.put(b"pg_0", old_key, db=store._dbs["request_ids"])
    ours = [new_request_id() for _ in range(6)]
    for rid in ours[:2]:
        store.record(dataclasses.replace(rec(1), request_id=rid))
    store.flush()  # page 1
    for rid in ours[2:4]:
        store.record(dataclasses.replace(rec(2), request_id=rid))
    store.flush()  # page 2: five entries in all, the bound
    ids = lambda entries: [e["request_id"] for e in entries]  # noqa: E731
    assert ids(store.requests(10)) == [*reversed(ours[:4]), "pg_0"]
    assert ids(store.requests(2, before=ours[3])) == [ours[2], ours[1]]  # across two pages
    assert ids(store.requests(10, before=ours[0])) == ["pg_0"]
    assert ids(store.requests(10, before="pg_0")) == []
    assert ids(store.requests(10, before=new_request_id())) == []  # not in the log
    with store._env.begin() as txn:
        assert txn.stat(store._dbs["requests"])["entries"] == 3  # the old entry and two pages
    for rid in ours[4:]:
        store.record(dataclasses.replace(rec(3), request_id=rid))
    store.flush()  # two over: the old entry and its index entry go, then page 1's older half
    assert ids(store.requests(10)) == list(reversed(ours[1:]))
    with store._env.begin() as txn:
        assert txn.stat(store._dbs["request_ids"])["entries"] == 0
        assert txn.get(b"request_log_rows", db=store._dbs["meta"]) == b"5"
    store.close()
    reopened = LMDBStore(tmp_path, UsageSettings(request_log_max_rows=5))
    assert ids(reopened.requests(3, before=ours[4])) == [ours[3], ours[2], ours[1]]
    reopened.close()


@pytest.mark.parametrize(
    "before",
    ["\udcff", "pg_" + "f" * 24, "x" * 100_000, 'pg_0","status":200', "pg_01a2494260540000ddfc379"],
    ids=["lone surrogate", "our shape, far future", "100 KB", "JSON inside", "one digit short"],
)
def test_paging_from_an_id_not_in_the_log_lists_nothing(tmp_path: Path, before: str) -> None:
    """``--before`` comes from a user or a URL: whatever it holds, an id the log lacks pages to []."""
    store = LMDBStore(tmp_path)
    for n in range(3):
        store.record(rec(n))
    store.flush()
    assert store.requests(10, before=before) == []
    assert [e["request_id"] for e in store.requests(10, before="pg_1")] == ["pg_0"]
    store.close()


def test_rows_of_the_first_layout_are_read_as_format_and_route_unknown(tmp_path: Path) -> None:
    """Daily rows keyed ``day\\0account\\0model`` (before formats and routes were kept) move once."""
    (tmp_path / "proxygate.lmdb").mkdir(mode=0o700)
    env = lmdb.open(str(tmp_path / "proxygate.lmdb"), max_dbs=16)
    old = env.open_db(b"usage")
    with env.begin(write=True, db=old) as txn:
        txn.put(b"2027-01-15\0a\0m", orjson.dumps({"requests": 3, "errors": 1, "input_tokens": 30}))
        txn.put(b"2027-01-16\0b\0m2", orjson.dumps({"requests": 1, "output_tokens": 7}))
    env.close()
    store = LMDBStore(tmp_path)
    store.record(rec(1))
    store.flush()
    assert store.usage_rows(T0, T0 + 86400) == [
        UsageRow("2027-01-15", "a", "m", "", "", "", UsageTotals(requests=3, errors=1, input_tokens=30)),
        UsageRow("2027-01-15", "a", "m", "anthropic", "", "", UsageTotals(1, 0, 10, 5, 2, 1, 0.0, 1)),
        UsageRow("2027-01-16", "b", "m2", "", "", "", UsageTotals(requests=1, output_tokens=7)),
    ]
    assert {r.account_id: r.totals.requests for r in store.usage("2027-01-15")} == {"a": 4}
    store.close()
    store = LMDBStore(tmp_path)  # moved once: reopening does not count them twice
    assert {r.account_id: r.totals.requests for r in store.usage("2027-01-15")} == {"a": 4}
    store.close()


def test_state_put_and_delete(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    store.put_state(COOLDOWNS, "a", {"until": 5})
    store.put_state(COOLDOWNS, "b", {"until": 6})
    store.put_state(COOLDOWNS, "a", None)
    assert store.queue_depth == 3
    store.flush()
    assert store.queue_depth == 0
    assert store.get_states(COOLDOWNS) == {"b": {"until": 6}}
    store.close()


async def test_committer_commits_within_the_interval_without_flush(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(store.run_committer(stop))
        store.record(rec(1))
        await asyncio.sleep(0.3)
        assert [e["request_id"] for e in store.recent_requests()] == ["pg_1"]
        stop.set()
    store.close()


def test_request_log_is_bounded(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, UsageSettings(request_log_max_rows=5))
    for n in range(12):
        store.record(rec(n))
    store.flush()
    assert [e["request_id"] for e in store.recent_requests(100)] == [f"pg_{n}" for n in range(11, 6, -1)]
    assert store.requests(before="pg_5") == []  # trimmed entries leave the id index too
    store.close()


def test_an_unreadable_store_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(
        StoreError,
        match=r"^cannot open the usage store in (.*)/file: \[Errno 20\] Not a directory: '\1/file'$",
    ):
        LMDBStore(tmp_path / "file")
    (tmp_path / "d" / "proxygate.lmdb").mkdir(parents=True)
    (tmp_path / "d" / "proxygate.lmdb" / "data.mdb").write_bytes(b"garbage" * 1000)
    with pytest.raises(
        StoreError, match=r"^cannot open the usage store in .*/d: .*(not an LMDB file|Invalid argument)"
    ):
        LMDBStore(tmp_path / "d")


def test_request_filters_are_not_fooled_by_field_text_in_values(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    store.record(rec(1, account="a", model='"status":503,"account_id":"b"', status=200))
    store.record(rec(2, account="b", status=503))
    store.flush()
    assert [e["request_id"] for e in store.requests(status="5xx")] == ["pg_2"]
    assert [e["request_id"] for e in store.requests(account="b")] == ["pg_2"]
    assert [e["request_id"] for e in store.requests(account="a", status="200")] == ["pg_1"]
    store.close()


def test_adding_totals_adds_every_counter() -> None:
    """``add`` spells the counters out for speed: none may be left behind."""
    names = [f.name for f in dataclasses.fields(UsageTotals)]
    other = UsageTotals(**{name: n + 1 for n, name in enumerate(names)})
    total = UsageTotals(**{name: 100 for name in names})
    total.add(other)
    expected = {name: 100 + n + 1 for n, name in enumerate(names)}
    assert total.as_dict() == expected
    from_dict = UsageTotals(**{name: 100 for name in names})
    from_dict.add(other.as_dict())
    assert from_dict.as_dict() == expected
