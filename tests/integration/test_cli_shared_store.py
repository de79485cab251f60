"""CLI commands with no server running use the store ``[store] backend`` names (issue 17).

With ``backend = "redis"`` an offline ``route use``, ``tenant add`` or ``usage`` must reach the
shared store every instance reads, not a local LMDB file no instance looks at.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from typer.testing import CliRunner

from proxygate.cli import app
from proxygate.config import StoreSettings
from proxygate.server.broker_state import ACTIVE_ROUTE_KEY
from proxygate.store.base import SETTINGS, TENANTS, UsageRecord
from proxygate.store.redis_store import RedisStore
from tests.conftest import free_port
from tests.serving import write_config

ROUTES = (
    '[routing.configs.default]\nstrategy = "priority"\n[routing.configs.spread]\nstrategy = "round-robin"\n'
)


def _env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}", ROUTES)  # nothing listens there
    return {
        "PROXYGATE_CONFIG": str(config),
        "PROXYGATE_STORE_BACKEND": "redis",
        "PROXYGATE_STORE_REDIS_URL": redis_url,
        "COLUMNS": "200",
    }


def test_offline_route_use_and_tenant_add_write_to_redis(tmp_path, redis_url) -> None:
    env = _env(tmp_path, redis_url)
    runner = CliRunner()
    assert runner.invoke(app, ["route", "use", "spread"], env=env).exit_code == 0
    added = runner.invoke(app, ["tenant", "add", "ci-bot"], env=env)
    assert added.exit_code == 0, added.output

    shared = RedisStore(StoreSettings(backend="redis", redis_url=redis_url))
    try:
        assert shared.get_states(SETTINGS)[ACTIVE_ROUTE_KEY]["name"] == "spread"
        assert "ci-bot" in shared.get_states(TENANTS)
    finally:
        shared.close()
    assert not (tmp_path / "data" / "proxygate.lmdb").exists()  # nothing went to a local file


def test_offline_usage_reads_the_shared_usage(tmp_path, redis_url) -> None:
    shared = RedisStore(StoreSettings(backend="redis", redis_url=redis_url))
    try:
        for n in range(3):
            shared.record(
                UsageRecord(
                    request_id=f"r{n}",
                    ts=time.time(),
                    account_id="team-key",
                    model="claude-sonnet-4-5",
                    client_format="anthropic",
                    upstream_format="anthropic",
                    status=200,
                    input_tokens=100,
                    output_tokens=10,
                )
            )
        shared.flush()
    finally:
        shared.close()

    result = CliRunner().invoke(app, ["usage", "--by", "model", "--json"], env=_env(tmp_path, redis_url))
    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.output)["rows"]
    assert [(r["model"], r["requests"], r["input_tokens"], r["output_tokens"]) for r in rows] == [
        ("claude-sonnet-4-5", 3, 300, 30)
    ]
