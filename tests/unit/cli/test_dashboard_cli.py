"""`proxygate dashboard --no-browser`: a one-time login link to the running server's dashboard."""

from __future__ import annotations

import os
import re
from pathlib import Path

import aiohttp

import proxygate
from tests.serving import run_cli

SOURCE_ROOT = str(Path(proxygate.__file__).resolve().parent.parent)


async def cli(cwd: Path, *args: str) -> tuple[int, str, str]:
    env = {"HOME": str(cwd), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": SOURCE_ROOT}
    return await run_cli(*args, cwd=cwd, env=env)


async def test_the_printed_link_logs_a_browser_in_once(start_proxy, tmp_path: Path) -> None:
    proxy = await start_proxy({})
    addr = proxy.url.removeprefix("http://")
    code, out, err = await cli(
        tmp_path, "dashboard", "--no-browser", "--addr", addr, "--config", str(tmp_path / "config.toml")
    )
    assert code == 0, err
    token = (proxy.settings.data_dir / "admin.token").read_text().strip()
    assert token not in out  # the link carries a one-time code, never the admin token
    url = re.search(r"http://\S+/login\?code=\S+", out)
    assert url is not None, out
    login_code = url[0].split("code=")[1]
    async with aiohttp.ClientSession() as client:
        results = []
        for _ in range(2):
            async with client.post(
                proxy.url + "/login",
                data={"code": login_code},
                allow_redirects=False,
                headers={"origin": proxy.url},
            ) as resp:
                results.append(resp.status)
    assert results == [303, 401]


async def test_without_a_running_server_it_says_how_to_start_one(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('pool_dir = "pool"\ndata_dir = "data"\naddr = "127.0.0.1:9"\n')
    code, _, err = await cli(tmp_path, "dashboard", "--no-browser", "--config", str(tmp_path / "config.toml"))
    assert code == 1 and "proxygate serve" in err
