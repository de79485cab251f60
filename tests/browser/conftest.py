"""The real `proxygate serve` with a scripted loopback upstream, driven by Debian's chromium.

Playwright for Python launches the system chromium by ``executable_path`` (``playwright
install`` would download a browser; the project's setup installs chromium with apt instead:
.ci/run). Without chromium or playwright the tests skip with the reason, except under
``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.conftest import free_port, write_account
from tests.upstream import ScriptedUpstream

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """``$PROXYGATE_CHROMIUM`` if it names a program, else the first chromium on PATH."""
    if (chosen := os.environ.get("PROXYGATE_CHROMIUM")) is not None:
        return shutil.which(chosen)
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run; .ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped: while Playwright's sync API runs, its loop is the thread's running loop, so it
    must be gone before any asyncio test of another module starts."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        _missing("no chromium (PROXYGATE_CHROMIUM, or chromium on PATH: apt-get install -y chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


class UpstreamThread:
    """The scripted upstream of the integration tests, on its own loop in a thread."""

    def __init__(self) -> None:
        self.scripted = ScriptedUpstream()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.scripted.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.scripted.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def start(self) -> ScriptedUpstream:
        self.thread.start()
        self.ready.wait(10)
        return self.scripted

    def stop(self) -> None:
        async def cleanup() -> None:
            if self.runner is not None:
                await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Served:
    url: str
    root: Path
    token: str
    upstream: ScriptedUpstream

    @property
    def pool_dir(self) -> Path:
        return self.root / "pool"

    def account_file(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads((self.pool_dir / "apikeys" / f"{name}.json").read_bytes())
        return data


CONFIG = """# the browser tests' server
pool_dir = "pool"
data_dir = "data"
addr = "127.0.0.1:{port}"
expose_account_header = true

[routing]
active = "default"

[routing.configs.default]
strategy = "priority"

[routing.configs.spread]
strategy = "round-robin"

[oauth]
usage_poll_s = 0

[oauth.claude]
authorize_url = "{upstream}/claude/authorize"
token_url = "{upstream}/v1/oauth/token"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``proxygate serve`` (a subprocess, no admin_token: it generates one) over three API keys."""
    root = tmp_path_factory.mktemp("dash")
    upstream_thread = UpstreamThread()
    upstream = upstream_thread.start()
    for name, priority in (("alpha", 3), ("bravo", 2), ("charlie", 1)):
        write_account(
            root / "pool",
            "apikeys",
            name,
            {
                "provider": "anthropic",
                "api_key": f"sk-ant-{name}-0000",
                "base_url": upstream.url,
                "priority": priority,
            },
        )
    port = free_port()
    (root / "config.toml").write_text(CONFIG.format(port=port, upstream=upstream.url))
    log = (root / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "proxygate", "serve", "--config", str(root / "config.toml")],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={  # the caller's PROXYGATE_* would change what the tests expect of the server
            **{k: v for k, v in os.environ.items() if not k.startswith("PROXYGATE_")},
            "PYTHONPATH": str(Path(__file__).parents[2]),
        },
    )
    url = f"http://127.0.0.1:{port}"
    token_file = root / "data" / "admin.token"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (token_file.exists() and _answers(url)):
        if process.poll() is not None:
            break
        time.sleep(0.1)
    if process.poll() is not None or not token_file.exists():
        process.kill()
        pytest.fail(f"proxygate serve did not start: {(root / 'serve.log').read_text()[-2000:]}")
    try:
        yield Served(url, root, token_file.read_text().strip(), upstream)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        upstream_thread.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
