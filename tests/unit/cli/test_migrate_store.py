"""`proxygate migrate-store --to redis`: LMDB's state, usage rows and request log copied into a real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from typer.testing import CliRunner

from proxygate.cli import app
from proxygate.config import StoreSettings
from proxygate.store import COOLDOWNS, TOKENS, LMDBStore, UsageRecord
from proxygate.store.redis_store import RedisStore


def _fill_lmdb(data_dir: Path, now: float) -> LMDBStore:
    store = LMDBStore(data_dir)
    store.put_state(COOLDOWNS, "acct-1", {"until": 99.0})
    store.put_state(TOKENS, "acct-1", {"sealed": "old"})
    for n in range(3):
        store.record(
            UsageRecord(f"r{n}", now - 3600 * n, "acct-1", "claude-sonnet", "anthropic", "anthropic", 200,
                        input_tokens=10 + n, output_tokens=2, cost_usd=0.25, route="default")
        )  # fmt: skip
    store.record(
        UsageRecord("r9", now, "acct-2", "gpt-5", "chat", "responses", 429, error_class="rate_limited")
    )
    store.flush()
    return store


def test_migrate_store_copies_once_and_keeps_newer_redis_state(tmp_path: Path, redis_url: str) -> None:
    now = time.time()
    (tmp_path / "config.toml").write_text('pool_dir = "pool"\ndata_dir = "data"\n')
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "200"}
    lmdb = _fill_lmdb(tmp_path / "data", now)
    daily, hourly = lmdb.usage_rows(0, now), lmdb.usage_rows(0, now, hourly=True)
    lmdb.close()  # one environment handle per process: the command opens its own
    client = redis.Redis.from_url(redis_url)
    client.hset("proxygate:state:tokens", "acct-1", b'{"sealed":"refreshed"}')  # newer than LMDB's

    first = CliRunner().invoke(app, ["migrate-store", "--to", "redis", "--redis-url", redis_url], env=env)
    assert (first.exit_code, first.output.splitlines()) == (
        0,
        [
            "state: 1 keys copied (1 already in Redis, kept)",
            f"usage: {len(daily)} daily and {len(hourly)} hourly rows",
            "request log: 4 entries copied",
        ],
    )
    assert len(hourly) == 4
    redis_store = RedisStore(StoreSettings(backend="redis", redis_url=redis_url))
    lmdb = LMDBStore(tmp_path / "data")
    assert redis_store.usage_rows(0, now) == daily
    assert redis_store.usage_rows(0, now, hourly=True) == hourly
    assert redis_store.requests(10) == lmdb.requests(10)
    assert client.hget("proxygate:state:cooldowns", "acct-1") == b'{"until":99.0}'
    assert client.hget("proxygate:state:tokens", "acct-1") == b'{"sealed":"refreshed"}'
    lmdb.close()

    redis_store.record(UsageRecord("live", now, "acct-2", "gpt-5", "chat", "responses", 200, input_tokens=5))
    redis_store.flush()
    second = CliRunner().invoke(
        app, ["migrate-store", "--to", "redis"], env={**env, "PROXYGATE_STORE_REDIS_URL": redis_url}
    )
    assert second.exit_code == 0, second.output
    assert second.output.splitlines()[0] == "state: 0 keys copied (2 already in Redis, kept)"
    assert second.output.splitlines()[2] == "request log: 0 entries copied"
    lmdb = LMDBStore(tmp_path / "data")
    lmdb.record(UsageRecord("live", now, "acct-2", "gpt-5", "chat", "responses", 200, input_tokens=5))
    lmdb.flush()
    for is_hourly in (False, True):  # nothing doubled; the count made in Redis meanwhile stays
        assert redis_store.usage_rows(0, now, hourly=is_hourly) == lmdb.usage_rows(0, now, hourly=is_hourly)
    redis_store.close()
    lmdb.close()
    client.close()


def test_migrate_store_needs_a_redis_url(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('data_dir = "data"\n')
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "200"}
    missing = CliRunner().invoke(app, ["migrate-store", "--to", "redis"], env=env)
    assert (missing.exit_code, missing.output) == (
        1,
        "error: migrate-store: no Redis to copy into: pass --redis-url or set [store] redis_url\n",
    )
    other = CliRunner().invoke(app, ["migrate-store", "--to", "lmdb"], env=env)
    assert (other.exit_code, other.output) == (2, "error: --to 'lmdb': the only target is redis\n")


def test_migrate_store_reports_an_unreachable_redis(tmp_path: Path) -> None:
    from tests.conftest import free_port

    (tmp_path / "config.toml").write_text('data_dir = "data"\n')
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "200"}
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(app, ["migrate-store", "--to", "redis", "--redis-url", url], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("error: shared store: redis unreachable: ")
    assert "s3cret" not in result.output
