"""``proxygate serve --workers N``: one port, N worker processes, a supervisor that restarts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import write_account
from tests.serving import ServeProcess, read_until, run_cli, start_serve, write_config
from tests.upstream import ScriptedUpstream, anthropic_sse, hold_after, paced_events, status

ASK = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
RESTART_WITHIN_S = 10.0
"The contract: a worker killed with SIGKILL is replaced within this."


def one_key(tmp_path: Path, upstream: ScriptedUpstream, name: str = "a") -> None:
    write_account(
        tmp_path / "pool",
        "apikeys",
        name,
        {"provider": "anthropic", "api_key": f"sk-ant-{name}-0000", "base_url": upstream.url},
    )


@pytest.fixture
async def two_workers(tmp_path: Path, upstream: ScriptedUpstream) -> AsyncIterator[ServeProcess]:
    one_key(tmp_path, upstream)
    served = await start_serve(tmp_path, "", "--workers", "2", stderr=asyncio.subprocess.PIPE)
    yield served
    if served.proc.returncode is None:
        await served.stop()


async def answering_pid(url: str) -> int | None:
    """The pid ``/healthz`` names, over a new connection (so the kernel picks a worker afresh)."""
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client,
            client.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            return int((await resp.json())["pid"]) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def pids_seen(url: str, want: int, within_s: float, *, besides: set[int] = frozenset()) -> set[int]:
    """Distinct pids answering ``/healthz`` until ``want`` of them are not in ``besides`` (or time is up)."""
    seen: set[int] = set()
    deadline = time.monotonic() + within_s
    while len(seen - besides) < want and time.monotonic() < deadline:
        if (pid := await answering_pid(url)) is not None:
            seen.add(pid)
        else:
            await asyncio.sleep(0.05)
    return seen


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state letter


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_two_workers_answer_on_one_port_as_children_of_serve(two_workers: ServeProcess) -> None:
    served = two_workers
    workers = await pids_seen(served.url, 2, 15)
    assert len(workers) == 2, f"only {workers} answered"
    assert served.proc.pid not in workers
    assert {parent_of(pid) for pid in workers} == {served.proc.pid}
    runfile = orjson.loads((served.data_dir / "server.json").read_bytes())
    assert (runfile["pid"], runfile["addr"]) == (served.proc.pid, f"127.0.0.1:{served.port}")
    assert served.admin_token()  # written once, by the supervisor


async def test_a_killed_worker_is_replaced_and_the_other_serves_on(two_workers: ServeProcess) -> None:
    served = two_workers
    workers = await pids_seen(served.url, 2, 15)
    assert len(workers) == 2
    victim, survivor = sorted(workers)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    seen = await pids_seen(served.url, 1, RESTART_WITHIN_S, besides=workers)
    replacements = seen - workers
    assert replacements, f"no new worker answered within {RESTART_WITHIN_S}s of the kill (saw {seen})"
    assert time.monotonic() - killed_at < RESTART_WITHIN_S
    assert victim not in seen or not is_running(victim)
    assert is_running(survivor)
    assert {parent_of(pid) for pid in replacements} == {served.proc.pid}
    # the survivor kept answering while its sibling was replaced
    assert survivor in await pids_seen(served.url, 2, 15, besides={victim})


async def test_sigterm_drains_every_worker_and_exits_0_also_when_each_worker_gets_it_too(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    payload = anthropic_sse("a slow answer of many words to keep the stream open")
    upstream.push(paced_events(payload, 0.1))
    one_key(tmp_path, upstream)
    served = await start_serve(tmp_path, "", "--workers", "2", stderr=asyncio.subprocess.PIPE)
    workers = await pids_seen(served.url, 2, 15)
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{served.url}/v1/messages", json={**ASK, "stream": True}) as resp,
    ):
        first = await resp.content.readany()
        served.proc.send_signal(signal.SIGTERM)
        for pid in workers:  # as systemd does by default: every process of the service too
            os.kill(pid, signal.SIGTERM)
        rest = await resp.read()
    assert first + rest == payload  # the stream in flight finished during the drain
    _, stderr = await asyncio.wait_for(served.proc.communicate(), 30)
    err = stderr.decode()
    assert served.proc.returncode == 0, err
    assert not (served.data_dir / "server.json").exists()
    assert not any(is_running(pid) for pid in workers)
    assert "Traceback" not in err


async def test_metrics_count_each_request_once_whichever_worker_answers(
    two_workers: ServeProcess,
) -> None:
    served = two_workers
    assert len(await pids_seen(served.url, 2, 15)) == 2
    made = 24
    for _ in range(made):  # a new connection each: the kernel spreads them over both workers
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client,
            client.post(f"{served.url}/v1/messages", json=ASK) as resp,
        ):
            assert resp.status == 200
    totals = []
    for _ in range(8):  # scrapes answered by either worker
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client,
            client.get(f"{served.url}/metrics") as resp,
        ):
            text = await resp.text()
        counted = re.findall(r'^proxygate_requests_total\{[^}]*status="2xx"[^}]*\} (\S+)$', text, re.M)
        totals.append(sum(float(v) for v in counted))
        assert "proxygate_store_degraded 0.0" in text
    assert totals == [float(made)] * 8
    values = list((served.data_dir / "metrics").iterdir())
    assert values and {oct(v.stat().st_mode & 0o777) for v in values} == {"0o600"}  # private as the data dir


async def test_a_cooldown_seen_by_one_worker_is_honoured_by_the_other(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    one_key(tmp_path, upstream, "a")
    one_key(tmp_path, upstream, "b")
    upstream.standing["sk-ant-a-"] = status(
        429, {"error": {"type": "rate_limit_error"}}, {"retry-after": "600"}
    )
    extra = '[routing.configs.default]\nstrategy = "priority"\n'  # a first, while it can serve
    served = await start_serve(tmp_path, extra, "--workers", "2", stderr=asyncio.subprocess.PIPE)
    try:
        assert len(await pids_seen(served.url, 2, 15)) == 2
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client,
            client.post(f"{served.url}/v1/messages", json=ASK) as resp,
        ):
            assert (resp.status, resp.headers["x-proxygate-account"]) == (200, "b")  # a said 429
        asked_a = sum("sk-ant-a-" in r.headers.get("x-api-key", "") for r in upstream.requests)
        assert asked_a == 1
        await asyncio.sleep(1.0)  # the contract: the others skip the account within 1 s
        for _ in range(12):  # fresh connections: both workers answer some
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client,
                client.post(f"{served.url}/v1/messages", json=ASK) as resp,
            ):
                assert (resp.status, resp.headers["x-proxygate-account"]) == (200, "b")
        assert sum("sk-ant-a-" in r.headers.get("x-api-key", "") for r in upstream.requests) == asked_a
    finally:
        await served.stop()


async def test_a_dashboard_session_works_whichever_worker_answers(two_workers: ServeProcess) -> None:
    served = two_workers
    assert len(await pids_seen(served.url, 2, 15)) == 2
    fresh = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=fresh, cookie_jar=aiohttp.DummyCookieJar()) as client:
        async with client.post(
            f"{served.url}/login",
            data={"token": served.admin_token(), "next": "/"},
            headers={"origin": served.url},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
            cookie = {"cookie": f"proxygate_session={resp.cookies['proxygate_session'].value}"}
        statuses = []
        for _ in range(12):  # a new connection each: both workers see the cookie
            async with client.get(f"{served.url}/admin/api/status", headers=cookie) as resp:
                statuses.append(resp.status)
        assert statuses == [200] * 12
        admin = {"authorization": f"Bearer {served.admin_token()}"}
        async with client.post(f"{served.url}/admin/api/dashboard/login-link", headers=admin) as resp:
            path = (await resp.json())["path"]
        code = path.split("code=", 1)[1]
        redeemed = []
        for _ in range(6):  # one worker made the code; it opens one session, on whichever worker
            async with client.post(
                f"{served.url}/login",
                data={"code": code, "next": "/"},
                headers={"origin": served.url},
                allow_redirects=False,
            ) as resp:
                redeemed.append(resp.status)
        assert sorted(redeemed) == [303] + [401] * 5


async def test_a_taken_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write_config(tmp_path, f"127.0.0.1:{port}")
        code, out, err = await run_cli("serve", "--config", str(config), "--workers", "2")
    assert (code, out) == (1, "")
    errors = [line for line in err.splitlines() if not re.match(r"\d{4}-\d\d-\d\dT", line)]  # no log records
    assert errors == [f"error: 127.0.0.1:{port} is in use (another proxygate?); try --addr HOST:PORT"]
    assert not (tmp_path / "data" / "server.json").exists()


async def test_a_second_signal_to_the_supervisor_cuts_the_workers_drain(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    head = anthropic_sse("held").split(b"\n\n")[0] + b"\n\n"
    upstream.push(hold_after(head))
    one_key(tmp_path, upstream)
    served = await start_serve(
        tmp_path, "", "--workers", "2", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert served.proc.stdout is not None
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{served.url}/v1/messages", json={**ASK, "stream": True}) as resp,
    ):
        assert await resp.content.readany() == head
        served.proc.send_signal(signal.SIGTERM)
        assert "draining 1 streams (up to 30s)…" in await read_until(served.proc.stdout, "draining 1")
        served.proc.send_signal(signal.SIGTERM)
        # Each worker answers the second signal; the idle one says "cut 0", maybe first.
        said = await read_until(served.proc.stdout, "second signal: cut 1")
        assert "second signal: cut 1 requests still in flight; stopping now" in said
        with contextlib.suppress(aiohttp.ClientPayloadError):
            await resp.read()
    await asyncio.wait_for(served.proc.communicate(), 20)  # well before drain_timeout_s (30 s)
    assert served.proc.returncode == 0
    assert not (served.data_dir / "server.json").exists()
