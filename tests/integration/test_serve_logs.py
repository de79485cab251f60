"""``serve``'s log as a process: json lines on stderr, escaped client input, the log file (issue 11)."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import stat
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import write_account
from tests.serving import ServeProcess, spawn_serve, start_serve, write_config
from tests.upstream import status

FORGED = "\r\n2026-12-05T00:00:00 INFO forged"
ASK = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


async def stop(served: ServeProcess) -> tuple[str, str]:
    out, err = await served.stop()
    assert served.proc.returncode == 0, err
    return out, err


async def post(url: str, body: object, path: str = "/v1/messages") -> tuple[int, str]:
    async with aiohttp.ClientSession() as client, client.post(url + path, json=body) as resp:
        await resp.read()
        return resp.status, resp.headers.get("x-proxygate-request-id", "")


def forged_pool_file(pool: Path) -> None:
    """A file name is chosen by whoever writes the pool dir; the server names invalid files."""
    bad = pool / "apikeys" / f"bad{FORGED}.json"
    bad.write_text("{not json")
    os.chmod(bad, 0o600)


def two_keys(pool: Path, url: str) -> None:
    for name, prio in (("a", 2), ("b", 1)):
        write_account(
            pool,
            "apikeys",
            name,
            {
                "provider": "anthropic",
                "api_key": f"sk-ant-{name * 4}-0000",
                "base_url": url,
                "priority": prio,
            },
        )


async def test_json_format_writes_only_json_objects_with_request_ids(tmp_path: Path, upstream) -> None:
    upstream.push(status(429, headers={"retry-after": "30"}))  # a fails over to b: a warning line
    two_keys(tmp_path / "pool", upstream.url)
    forged_pool_file(tmp_path / "pool")
    served = await start_serve(
        tmp_path,
        'log_format = "json"\nmax_body_mb = 1\n[routing.configs.default]\nstrategy = "priority"\n',
        "--log-level",
        "debug",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    url = served.url
    failover = await post(url, ASK)
    async with aiohttp.ClientSession() as client:
        async with client.post(url + "/v1/chat/completions", data=b"{oops") as resp:
            assert resp.status == 400
        async with client.get(url + "/metrics") as resp:
            assert resp.status == 200
        # a body over max_body_mb: refused at ingress (413), logged with its id
        async with client.post(url + "/v1/messages", data=io.BytesIO(b"x" * (1024 * 1024 + 10))) as resp:
            too_large = (resp.status, resp.headers["x-proxygate-request-id"])
    out, err = await stop(served)
    assert out == ""
    lines = err.splitlines()
    entries = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(e, dict) and {"ts", "level", "logger", "message"} <= e.keys() for e in entries)
    assert any(e["message"] == f"proxygate listening on {url}" for e in entries)
    assert any(e["level"] == "debug" for e in entries)  # --log-level took effect
    about_failover = [e for e in entries if e.get("request_id") == failover[1]]
    assert [e["level"] for e in about_failover] == ["warning", "info"]  # failing over, then the request line
    assert "failing over" in about_failover[0]["message"]
    assert failover[0] == 200
    assert any(f"bad{FORGED}.json" in e["message"] for e in entries)
    assert too_large[0] == 413
    assert [e["level"] for e in entries if e.get("request_id") == too_large[1]] == ["warning"]
    assert not any(line.startswith("2026-12-05T00:00:00") for line in lines)


async def test_text_format_escapes_a_crlf_in_a_file_name_on_stderr_and_in_the_log_file(
    tmp_path: Path, upstream
) -> None:
    two_keys(tmp_path / "pool", upstream.url)
    forged_pool_file(tmp_path / "pool")
    log_file = tmp_path / "logs" / "proxygate.log"
    served = await start_serve(
        tmp_path, f'log_file = "{log_file}"\n', stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    url = served.url
    code, request_id = await post(url, ASK)
    _, err = await stop(served)
    for text in (err, log_file.read_text()):
        lines = text.splitlines()
        assert not any(line.startswith("2026-12-05T00:00:00 INFO forged") for line in lines)
        assert any("bad\\x0d\\x0a2026-12-05T00:00:00 INFO forged.json" in line for line in lines)
        assert len([line for line in lines if request_id in line]) == 1
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(log_file.parent.stat().st_mode) == 0o700
    assert code == 200


async def test_json_format_covers_the_commands_own_error_line(tmp_path: Path) -> None:
    """A port in use: the one-line error is a JSON record too, and the exit code stays 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, f"127.0.0.1:{port}", 'log_format = "json"\n')
        proc = await spawn_serve(config, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert out == b""
    entries = [orjson.loads(line) for line in err.decode().splitlines()]
    assert entries[-1]["level"] in ("error", "critical")  # reported, or an uncaught exception
    assert str(port) in entries[-1]["message"] + entries[-1].get("exc", "")
