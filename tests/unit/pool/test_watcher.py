"""One odd pool file never stops the server: it is named invalid, warned about once per change."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import orjson
import pytest
from typer.testing import CliRunner

from proxygate.cli import app
from proxygate.pool.files import PoolSnapshot, load_pool
from proxygate.pool.records import InvalidAccount, parse_account
from tests.conftest import write_account

KEY = {"provider": "anthropic", "api_key": "sk-ant-0000-1111"}
CLAUDE = {"email": "a@example.com", "access_token": "sk-ant-oat", "refresh_token": "sk-ant-ort"}


@pytest.mark.parametrize("value", [1e300, -1e300, 10**20 * 1000])
def test_out_of_range_expiry_is_an_invalid_account(value: float) -> None:
    with pytest.raises(InvalidAccount, match=r'^"expires_at" is out of range: '):
        parse_account({**CLAUDE, "expires_at": value}, "claude", default_id="a")


def test_huge_priority_is_an_invalid_account() -> None:
    with pytest.raises(InvalidAccount, match=r'^"priority" is out of range: 1e\+300$'):
        parse_account({**KEY, "priority": 1e300}, "apikey", default_id="a")


def test_one_bad_file_or_a_directory_named_json_never_hides_the_others(tmp_path: Path) -> None:
    write_account(tmp_path, "apikeys", "good", KEY)
    write_account(tmp_path, "claude", "far", {**CLAUDE, "expires_at": 1e300})
    (tmp_path / "apikeys" / "folder.json").mkdir()
    snapshot = load_pool(tmp_path)
    assert [a.id for a in snapshot.accounts] == ["good"]
    assert [(f.path.relative_to(tmp_path).as_posix(), f.reason) for f in snapshot.invalid] == [
        ("apikeys/folder.json", "a directory, not an account file"),
        ("claude/far.json", '"expires_at" is out of range: 1e+300'),
    ]


def test_status_json_names_the_out_of_range_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('addr = "127.0.0.1:1"\npool_dir = "pool"\ndata_dir = "data"\n')
    write_account(tmp_path / "pool", "claude", "far", {**CLAUDE, "expires_at": 1e300})
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "HOME": str(tmp_path)}
    result = CliRunner().invoke(app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["invalid_files"] == [
        {
            "path": str(tmp_path / "pool" / "claude" / "far.json"),
            "reason": '"expires_at" is out of range: 1e+300',
        }
    ]


async def _wait_for(predicate, what: str, write=None) -> None:
    """Poll ``predicate``; ``write`` (re)does the change now and then: the watcher may not watch yet."""
    for n in range(200):
        if write is not None and n % 20 == 0:
            write()
        if predicate():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


async def _settled(count, quiet_s: float = 0.5) -> None:
    """Wait until ``count()`` stops changing for ``quiet_s``."""
    last = count()
    for _ in range(100):
        await asyncio.sleep(quiet_s)
        if count() == last:
            return
        last = count()


async def test_a_running_server_survives_an_out_of_range_file_and_starts_with_it(
    tmp_path: Path, start_proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    proxy = await start_proxy({"good": dict(KEY)})
    pool = proxy.pool_dir
    await _wait_for(
        lambda: "far.json" in caplog.text,
        "the reload",
        lambda: write_account(pool, "claude", "far", {**CLAUDE, "expires_at": 1e300}),
    )
    async with aiohttp.ClientSession() as client, client.get(f"{proxy.url}/healthz") as resp:
        assert resp.status == 200
    # a restart with the file still there comes up too
    second = tmp_path / "second"
    second.mkdir()
    restarted = await start_proxy(
        {"good": dict(KEY), "far": {**CLAUDE, "expires_at": 1e300, "_kind": "claude"}}, root=second
    )
    async with aiohttp.ClientSession() as client, client.get(f"{restarted.url}/healthz") as resp:
        assert resp.status == 200


async def test_an_invalid_file_is_warned_about_when_it_changes_not_on_every_reload(
    start_proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    proxy = await start_proxy({"good": dict(KEY)})
    bad = proxy.pool_dir / "apikeys" / "bad.json"

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "bad.json" in r.getMessage()
        ]

    def reloads() -> int:
        return sum(r.getMessage().startswith("pool reloaded") for r in caplog.records)

    await _wait_for(lambda: len(warnings()) >= 1, "the first warning", lambda: bad.write_text("[1, 2"))
    await _settled(reloads)  # a rewrite's reload may still be on its way
    first = len(warnings())
    for n in range(3):  # other files change: no new warning about bad.json
        before = reloads()
        await _wait_for(
            lambda before=before: reloads() > before,
            "a reload",
            lambda n=n: proxy.add_key(f"other{n}", **KEY),
        )
    assert len(warnings()) == first
    bad.write_text("{")  # the file itself changes: warned again
    await _wait_for(lambda: len(warnings()) == first + 1, "the next warning")
    assert not [r for r in caplog.records if r.name.startswith("watchfiles") and r.levelno >= logging.INFO]


def test_negative_weight_is_an_invalid_account() -> None:
    with pytest.raises(InvalidAccount, match=r'^"weight" must be 0 or more$'):
        parse_account({**KEY, "weight": -1}, "apikey", default_id="a")


async def test_a_file_written_before_the_watch_began_is_still_loaded(tmp_path: Path) -> None:
    """It raises no change event: once the server had loaded the pool and before the watch was
    set, such a file was never served (the hot-reload test caught it under load)."""
    from proxygate.pool.watcher import watch_pool

    pool = tmp_path / "pool"
    write_account(pool, "apikeys", "early", {"provider": "anthropic", "api_key": "sk-ant-early-0001"})
    seen: list[list[str]] = []
    loaded, stop = asyncio.Event(), asyncio.Event()

    def on_change(snapshot: PoolSnapshot) -> None:
        seen.append([account.id for account in snapshot.accounts])
        loaded.set()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(watch_pool(pool, on_change, stop))
        try:
            async with asyncio.timeout(10):
                await loaded.wait()
        finally:
            stop.set()
    assert seen[0] == ["early"]
