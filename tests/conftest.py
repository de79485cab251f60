"""Shared fixtures: a fake clock, a scripted loopback upstream, and the real proxy on port 0."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxygate.config import Settings, load_settings
from proxygate.server.app import create_app
from proxygate.server.guard import EdgeRunner
from tests.redis_server import RedisServer, require_redis_server
from tests.upstream import ScriptedUpstream


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    scripted = ScriptedUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    scripted.url = f"http://127.0.0.1:{port}"
    yield scripted
    await runner.cleanup()


def write_account(pool_dir: Path, kind_dir: str, name: str, data: dict[str, Any]) -> Path:
    path = pool_dir / kind_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data))
    os.chmod(path, 0o600)
    return path


@dataclass
class Proxy:
    url: str
    settings: Settings
    app: web.Application
    runner: web.AppRunner

    @property
    def pool_dir(self) -> Path:
        return self.settings.pool_dir

    def add_key(self, name: str, **data: Any) -> Path:
        return write_account(self.pool_dir, "apikeys", name, data)


ProxyFactory = Callable[..., Any]


def admin_headers(settings: Settings) -> dict[str, str]:
    """What the admin API needs: ``admin_token``, or the one a started server wrote to the data dir."""
    token = settings.admin_token or (settings.data_dir / "admin.token").read_text().strip()
    return {"authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def start_proxy(tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    """``await start_proxy(accounts={name: data}, env={...})`` → a running ``Proxy``."""
    runners: list[web.AppRunner] = []

    async def start(
        accounts: dict[str, dict[str, Any]] | None = None,
        *,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] | None = None,
        config: str = "",
        root: Path | None = None,
    ) -> Proxy:
        base = root or tmp_path
        (base / "config.toml").write_text(f'pool_dir = "pool"\ndata_dir = "data"\n{config}')
        for name, data in (accounts or {}).items():
            kind = data.pop("_kind", "apikeys")
            write_account(base / "pool", kind, name, data)
        settings = load_settings(base / "config.toml", env or {})
        kwargs = {"clock": clock} if clock else {}
        app = create_app(settings, **kwargs)
        runner = EdgeRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return Proxy(f"http://127.0.0.1:{port}", settings, app, runner)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port (``.url``), with ``stop()``/``start()``.

    Skips without redis-server, except under ``CI=true``, where that fails.
    """
    server = RedisServer(require_redis_server(), free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a fresh real redis-server (``redis_server`` for stopping and starting it)."""
    return redis_server.url
