"""`proxygate tenant …` as a user runs it: with no server, against a running `proxygate serve`, across SIGTERM."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import orjson

from tests.serving import run_cli, start_serve


async def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli(
        *args, "--config", str(tmp_path / "config.toml"), env={**os.environ, "COLUMNS": "200"}
    )


def key_in(text: str) -> str:
    return next(line.strip() for line in text.splitlines() if line.strip().startswith("pgk_"))


async def ask(port: int, key: str | None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}/v1/messages", json=body, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status


def files_holding(root: Path, secret: str) -> list[Path]:
    needle = secret.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_tenant_add_offline_then_live_then_usage_survives_sigterm(tmp_path: Path, upstream) -> None:
    port_config = 'addr = "127.0.0.1:1"\npool_dir = "pool"\ndata_dir = "data"\n'
    (tmp_path / "config.toml").write_text(port_config)
    code, out, err = await cli(tmp_path, "tenant", "add", "alice", "--rpm", "50")
    assert code == 0, err
    alice = key_in(out)
    assert "proxy_token" in err  # tenants and no proxy_token: keyless owner access ends

    pool = tmp_path / "pool" / "apikeys"
    pool.mkdir(parents=True)
    (pool / "ant.json").write_bytes(
        orjson.dumps({"provider": "anthropic", "api_key": "sk-ant-upstream-0000", "base_url": upstream.url})
    )
    served = await start_serve(tmp_path, 'log_file = "logs/proxygate.log"\nlog_format = "json"\n')
    port = served.port
    try:
        assert await ask(port, alice) == 200  # added before the server started
        assert await ask(port, None) == 401
        code, out, err = await cli(tmp_path, "tenant", "add", "bob")
        assert code == 0, err
        bob = key_in(out)
        assert await ask(port, bob) == 200  # applied live
        gemini = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/v1beta/models/gemini-x:generateContent?key={bob}", json=gemini
            ) as resp,
        ):
            assert resp.status == 404  # authenticated, then: no account serves the model
        code, out, err = await cli(tmp_path, "tenant", "list", "--json")
        assert code == 0, err
        listed = {t["name"]: t for t in orjson.loads(out)}
        assert sorted(listed) == ["-", "alice", "bob"]
        assert (listed["alice"]["requests_today"], listed["alice"]["tokens_today"]) == (1, 21)
        assert listed["alice"]["rpm"] == 50
    finally:
        await served.stop()
    code, out, err = await cli(tmp_path, "tenant", "list", "--json")  # no server: from the store
    listed = {t["name"]: t for t in orjson.loads(out)}
    assert (listed["alice"]["requests_today"], listed["alice"]["tokens_today"]) == (1, 21)
    assert (listed["bob"]["requests_today"], listed["bob"]["tokens_today"]) == (1, 21)
    for key in (alice, bob):
        assert files_holding(tmp_path, key[4:]) == []  # the log, the store, the pool: nowhere
    logged = [orjson.loads(line) for line in (tmp_path / "logs" / "proxygate.log").read_text().splitlines()]
    answered = [e for e in logged if e["logger"] == "proxygate.request"]
    assert sorted(e["tenant"] for e in answered) == ["alice", "bob", "bob"]
    assert all(f"tenant={e['tenant']} " in e["message"] for e in answered)
    upstream_headers = str([r.headers for r in upstream.requests])
    assert alice[4:] not in upstream_headers and bob[4:] not in upstream_headers


async def test_tenant_commands_offline(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'addr = "127.0.0.1:1"\ndata_dir = "data"\nproxy_token = "t-owner"\n'
    )
    code, out, err = await cli(tmp_path, "tenant", "add", "carol", "--models", "claude-*", "--share", "2")
    assert code == 0 and err == ""
    first = key_in(out)
    code, out, _ = await cli(tmp_path, "tenant", "rotate-key", "carol")
    assert code == 0 and key_in(out) != first
    code, _, _ = await cli(tmp_path, "tenant", "set", "carol", "--tpm", "1000")
    assert code == 0
    code, out, _ = await cli(tmp_path, "tenant", "show", "carol", "--json")
    shown = orjson.loads(out)
    assert (shown["tpm"], shown["models"], shown["share"]) == (1000, ["claude-*"], 2.0)
    code, _, err = await cli(tmp_path, "tenant", "add", "carol")
    assert code == 1 and "exists" in err
    code, _, err = await cli(tmp_path, "tenant", "set", "carol", "--rpm", "-1")
    assert code == 1 and "rpm" in err
    code, _, _ = await cli(tmp_path, "tenant", "remove", "carol")
    assert code == 0
    code, out, _ = await cli(tmp_path, "tenant", "list", "--json")
    assert [t["name"] for t in orjson.loads(out)] == ["-"]


async def test_a_tenant_written_into_the_store_beside_a_running_server_applies_within_a_second(
    tmp_path: Path, upstream
) -> None:
    pool = tmp_path / "pool" / "apikeys"
    pool.mkdir(parents=True)
    (pool / "ant.json").write_bytes(
        orjson.dumps({"provider": "anthropic", "api_key": "sk-ant-upstream-0000", "base_url": upstream.url})
    )
    served = await start_serve(tmp_path)
    port = served.port
    try:
        code, _, err = await cli(tmp_path, "tenant", "add", "erin")  # live: keys are required from now on
        assert code == 0, err
        unknown = "pgk_" + "B" * 43
        for _ in range(100):  # live, or (a slow machine's probe timed out) through the store and the poll
            if await ask(port, unknown) == 401:  # keys are required now: dana's is refused until the poll
                break
            await asyncio.sleep(0.1)
        assert await ask(port, unknown) == 401
        # --addr names no server: the command writes the store, as it does with none running
        code, out, err = await cli(tmp_path, "tenant", "add", "dana", "--addr", "127.0.0.1:1")
        assert code == 0, err
        assert "no server running" in out
        key = key_in(out)
        statuses = []
        for _ in range(100):  # the server polls the store once a second
            statuses.append(await ask(port, key))
            if statuses[-1] == 200:
                break
            await asyncio.sleep(0.1)
        assert statuses[-1] == 200
        assert await ask(port, None) == 401
    finally:
        await served.stop()
