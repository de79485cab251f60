from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proxygate.errors import StoreError
from proxygate.store import COOLDOWNS, LMDBStore, UsageRecord, utc_day


def rec(
    n: int, account: str = "a", model: str = "m", status: int = 200, ts: float = 1_800_000_000.0
) -> UsageRecord:
    return UsageRecord(f"pg_{n}", ts + n, account, model, "anthropic", "anthropic", status, 10, 5, 2, 1)


def test_usage_is_summed_per_day_account_model_and_survives_reopen(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path / "data")
    for n in range(3):
        store.record(rec(n))
    store.record(rec(3, status=429))
    store.record(rec(4, account="b"))
    store.close()
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    store = LMDBStore(tmp_path / "data")
    rows = {(r.account_id, r.model): r.totals.as_dict() for r in store.usage(utc_day(1_800_000_000.0))}
    assert rows == {
        ("a", "m"): {
            "requests": 4,
            "errors": 1,
            "input_tokens": 40,
            "output_tokens": 20,
            "cache_read_tokens": 8,
            "cache_write_tokens": 4,
        },
        ("b", "m"): {
            "requests": 1,
            "errors": 0,
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_tokens": 2,
            "cache_write_tokens": 1,
        },
    }
    assert [e["request_id"] for e in store.recent_requests(2)] == ["pg_4", "pg_3"]
    store.close()


def test_state_put_and_delete(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    store.put_state(COOLDOWNS, "a", {"until": 5})
    store.put_state(COOLDOWNS, "b", {"until": 6})
    store.put_state(COOLDOWNS, "a", None)
    store.flush()
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


def test_request_log_is_bounded(tmp_path: Path, monkeypatch) -> None:
    import proxygate.store.lmdb_store as mod

    monkeypatch.setattr(mod, "REQUEST_LOG_MAX", 5)
    store = LMDBStore(tmp_path)
    for n in range(12):
        store.record(rec(n))
    store.flush()
    assert [e["request_id"] for e in store.recent_requests(100)] == [f"pg_{n}" for n in range(11, 6, -1)]
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
