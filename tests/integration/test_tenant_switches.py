"""Per-tenant guardrails and capture switches through the real server: on, off or inherit, decided
per request from the tenant key; stages absent when off everywhere; a switch turned on that the
running server lacks applies at its next start."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from proxygate.features.capture import DatasetCapture
from proxygate.features.guardrails import Guardrails
from proxygate.server.keys import PIPELINE
from tests.conftest import admin_headers
from tests.serving import run_cli, start_serve

ANT = {"provider": "anthropic", "api_key": "sk-ant-up-0000-1111", "models": ["*"]}
OWNER_TOKEN = "owner-secret-token"
SECRET = "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
"A GitHub token the api_key detector replaces."


async def serve(start_proxy, upstream, config: str = ""):
    accounts = {"ant": {**ANT, "base_url": upstream.url}}
    return await start_proxy(accounts, config=f'proxy_token = "{OWNER_TOKEN}"\n{config}')


async def admin(http: aiohttp.ClientSession, proxy, method: str, path: str, body: Any = None) -> Any:
    async with http.request(
        method, f"{proxy.url}/admin/api/tenants{path}", json=body, headers=admin_headers(proxy.settings)
    ) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json()


async def ask(http: aiohttp.ClientSession, proxy, key: str, text: str) -> int:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": text}]}
    async with http.post(f"{proxy.url}/v1/messages", json=body, headers={"x-api-key": key}) as resp:
        await resp.read()
        return resp.status


def sent_text(upstream) -> str:
    return str(upstream.requests[-1].body["messages"][-1]["content"])


def stage_types(proxy) -> set[type]:
    return {type(stage) for stage in proxy.app[PIPELINE].stages}


async def test_off_everywhere_means_no_stage_at_all(start_proxy, upstream) -> None:
    proxy = await serve(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        added = await admin(http, proxy, "POST", "", {"name": "alice", "guardrails": False, "capture": "off"})
        assert (added["tenant"]["guardrails"], added["tenant"]["capture"]) == ("off", "off")
        assert "applies_at_next_start" not in added["tenant"]
    await proxy.runner.cleanup()
    again = await serve(start_proxy, upstream)
    assert not stage_types(again) & {Guardrails, DatasetCapture}


async def test_guardrails_for_one_tenant_only_and_switched_live(start_proxy, upstream) -> None:
    proxy = await serve(start_proxy, upstream)
    assert Guardrails not in stage_types(proxy)
    async with aiohttp.ClientSession() as http:
        added = await admin(http, proxy, "POST", "", {"name": "alice", "guardrails": True})
        alice = added["key"]
        assert added["tenant"]["guardrails"] == "on"
        assert added["tenant"]["applies_at_next_start"] == ["guardrails"]  # this server has no stage
        bob = (await admin(http, proxy, "POST", "", {"name": "bob"}))["key"]
        assert await ask(http, proxy, alice, f"token {SECRET}") == 200
        assert SECRET in sent_text(upstream)  # not yet: the stage comes with the next start
    await proxy.runner.cleanup()

    again = await serve(start_proxy, upstream)
    assert Guardrails in stage_types(again)
    async with aiohttp.ClientSession() as http:
        shown = await admin(http, again, "GET", "/alice")
        assert shown["tenant"]["guardrails"] == "on" and "applies_at_next_start" not in shown["tenant"]
        assert await ask(http, again, alice, f"token {SECRET}") == 200
        assert SECRET not in sent_text(upstream) and "PG_API_KEY_" in sent_text(upstream)
        assert await ask(http, again, OWNER_TOKEN, f"token {SECRET}") == 200
        assert SECRET in sent_text(upstream)  # the owner inherits [guardrails] enabled = false
        assert await ask(http, again, bob, f"token {SECRET}") == 200
        assert SECRET in sent_text(upstream)

        # The stage is present: on, off and inherit now apply to the next request.
        changed = await admin(http, again, "PATCH", "/bob", {"guardrails": True})
        assert "applies_at_next_start" not in changed["tenant"]
        assert await ask(http, again, bob, f"token {SECRET}") == 200
        assert SECRET not in sent_text(upstream)
        await admin(http, again, "PATCH", "/alice", {"guardrails": "inherit"})
        assert (await admin(http, again, "GET", "/alice"))["tenant"]["guardrails"] == "inherit"
        assert await ask(http, again, alice, f"token {SECRET}") == 200
        assert SECRET in sent_text(upstream)


async def test_guardrails_on_globally_and_off_for_one_tenant(start_proxy, upstream) -> None:
    proxy = await serve(start_proxy, upstream, "[guardrails]\nenabled = true\n")
    async with aiohttp.ClientSession() as http:
        alice = (await admin(http, proxy, "POST", "", {"name": "alice", "guardrails": "off"}))["key"]
        assert await ask(http, proxy, alice, f"token {SECRET}") == 200
        assert SECRET in sent_text(upstream)
        assert await ask(http, proxy, OWNER_TOKEN, f"token {SECRET}") == 200
        assert SECRET not in sent_text(upstream)


def read_captured(root: Path) -> str:
    return "".join(p.read_text() for p in root.glob("*.jsonl")) if root.exists() else ""


async def captured(root: Path, wanted: str) -> str:
    text = ""
    for _ in range(200):  # the capture writer is a thread: wait for its line
        text = await asyncio.to_thread(read_captured, root)
        if wanted in text:
            break
        await asyncio.sleep(0.05)
    return text


async def test_capture_on_globally_and_off_for_one_tenant(start_proxy, upstream, tmp_path) -> None:
    proxy = await serve(start_proxy, upstream, '[capture]\nenabled = true\ndir = "captured"\n')
    async with aiohttp.ClientSession() as http:
        alice = (await admin(http, proxy, "POST", "", {"name": "alice", "capture": False}))["key"]
        bob = (await admin(http, proxy, "POST", "", {"name": "bob"}))["key"]
        assert await ask(http, proxy, alice, "from alice") == 200
        assert await ask(http, proxy, bob, "from bob") == 200
    await proxy.runner.cleanup()  # the writer flushes
    text = await captured(tmp_path / "captured", "from bob")
    assert "from bob" in text and "from alice" not in text


async def test_capture_off_globally_and_on_for_one_tenant(start_proxy, upstream, tmp_path) -> None:
    config = '[capture]\ndir = "captured"\n'
    proxy = await serve(start_proxy, upstream, config)
    async with aiohttp.ClientSession() as http:
        added = await admin(http, proxy, "POST", "", {"name": "carol", "capture": "on"})
        assert added["tenant"]["applies_at_next_start"] == ["capture"]
        carol = added["key"]
        dave = (await admin(http, proxy, "POST", "", {"name": "dave"}))["key"]
    await proxy.runner.cleanup()
    again = await serve(start_proxy, upstream, config)
    async with aiohttp.ClientSession() as http:
        assert await ask(http, again, dave, "from dave") == 200
        assert await ask(http, again, OWNER_TOKEN, "from the owner") == 200
        assert await ask(http, again, carol, "from carol") == 200
    await again.runner.cleanup()
    text = await captured(tmp_path / "captured", "from carol")
    assert "from carol" in text and "from dave" not in text and "from the owner" not in text


async def test_switch_values_are_checked(start_proxy, upstream) -> None:
    proxy = await serve(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        for bad in ("yes", 1, ["on"]):
            async with http.post(
                f"{proxy.url}/admin/api/tenants",
                json={"name": "alice", "guardrails": bad},
                headers=admin_headers(proxy.settings),
            ) as resp:
                assert resp.status == 400
                assert "guardrails must be" in (await resp.text())


async def cli(root: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli(*args, "--config", str(root / "config.toml"), env={**os.environ, "COLUMNS": "200"})


async def test_tenant_commands_set_and_show_the_switches(tmp_path: Path, upstream) -> None:
    (tmp_path / "config.toml").write_text('addr = "127.0.0.1:1"\ndata_dir = "data"\nproxy_token = "t"\n')
    code, _, err = await cli(tmp_path, "tenant", "add", "carol", "--guardrails", "--no-capture")
    assert code == 0, err
    code, out, _ = await cli(tmp_path, "tenant", "show", "carol", "--json")
    assert (orjson.loads(out)["guardrails"], orjson.loads(out)["capture"]) == ("on", "off")
    code, out, _ = await cli(tmp_path, "tenant", "list")
    assert "guardrails=on" in out and "capture=off" in out
    code, _, err = await cli(tmp_path, "tenant", "set", "carol", "--guardrails", "--guardrails-inherit")
    assert code == 1 and "exclude each other" in err
    code, _, err = await cli(tmp_path, "tenant", "set", "carol", "--guardrails-inherit", "--capture")
    assert code == 0, err
    code, out, _ = await cli(tmp_path, "tenant", "show", "carol", "--json")
    assert (orjson.loads(out)["guardrails"], orjson.loads(out)["capture"]) == ("inherit", "on")

    pool = tmp_path / "pool" / "apikeys"
    pool.mkdir(parents=True)
    (pool / "ant.json").write_bytes(orjson.dumps({**ANT, "base_url": upstream.url}))
    served = await start_serve(tmp_path, 'proxy_token = "t"\n[capture]\ndir = "captured"\n')
    try:
        # carol's capture was on at the start: the stage is there, guardrails' is not.
        code, out, err = await cli(tmp_path, "tenant", "set", "carol", "--guardrails")
        assert code == 0, err
        assert "guardrails is on for this tenant from the server's next start" in err
        assert "capture" not in err
        code, _, err = await cli(tmp_path, "tenant", "set", "carol", "--no-capture")
        assert code == 0 and "capture" not in err  # off applies at once; guardrails still waits
    finally:
        await served.stop()
