"""Encrypted pool files through the real server and the real `proxygate secrets` command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import keyring
import orjson

from proxygate.config import SecretsSettings
from proxygate.server.keys import POOL
from proxygate.store.secrets import Vault, is_sealed
from tests.conftest import admin_headers
from tests.keyring_backend import FileKeyring
from tests.on_disk import clear_text_under
from tests.upstream import ScriptedUpstream, anthropic_message, ok_json

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-ant-api03-" + "k9" * 40 + "-Tail16charsABCD"
OTHER = "sk-ant-api03-" + "z8" * 40 + "-Other16charsXYZ"
NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
ENCRYPT_ON = {**NO_KEYRING, "PROXYGATE_SECRETS_ENCRYPT": "true"}


def proxygate(base: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a user runs it: its own process, the config of ``base``, no keyring."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROXYGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "proxygate", *args, "--config", str(base / "config.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **NO_KEYRING, "COLUMNS": "200", **(env or {})},
        timeout=60,
    )


async def ask(proxy: Any, upstream: ScriptedUpstream) -> str:
    """One request; the x-api-key the upstream received."""
    upstream.push(ok_json(anthropic_message("hi")))
    body = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as client, client.post(f"{proxy.url}/v1/messages", json=body) as resp:
        assert resp.status == 200, await resp.text()
    return str(upstream.requests[-1].headers["x-api-key"])


async def settled(proxy: Any, check: Any, within_s: float = 10.0) -> float:
    """Seconds until the server's pool satisfies ``check`` (fails past ``within_s``, a bound for a
    loaded machine: the watcher reloads in ~50 ms)."""
    start = time.monotonic()
    while not check(proxy.app[POOL][0]):
        assert time.monotonic() - start < within_s, f"not within {within_s}s: {proxy.app[POOL][0].invalid}"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_encrypt_under_a_running_server_keeps_serving_and_leaves_no_key_in_clear(
    upstream: ScriptedUpstream, start_proxy: Any, tmp_path: Path
) -> None:
    proxy = await start_proxy(
        {
            "ant": {"provider": "anthropic", "api_key": KEY, "base_url": upstream.url, "priority": 1},
            "spare": {"provider": "anthropic", "api_key": OTHER, "base_url": upstream.url},
        },
        env=NO_KEYRING,
    )
    assert await ask(proxy, upstream) == KEY
    before = proxy.app[POOL][0]

    done = await asyncio.to_thread(proxygate, tmp_path, "secrets", "encrypt")
    assert done.returncode == 0, done.stderr
    key_file = tmp_path / "data" / "secrets.json"
    assert done.stdout.splitlines() == [
        f"encrypted {tmp_path / 'pool' / 'apikeys' / 'ant.json'}",
        f"encrypted {tmp_path / 'pool' / 'apikeys' / 'spare.json'}",
        "2 file(s) encrypted, 0 already so",
        f"data key {orjson.loads(key_file.read_bytes())['current']} in the key file {key_file} (no usable "
        "keyring backend); [secrets] encrypt off",
        "note: encrypted files stay encrypted when refreshed; set [secrets] encrypt = true "
        "(PROXYGATE_SECRETS_ENCRYPT=true) so new logins and keys are written encrypted too",
    ]
    assert clear_text_under(tmp_path / "pool", KEY, OTHER) == []
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    # The watcher reloads the rewritten files (issue 13: within 2 s; ~50 ms here) and they open.
    await settled(proxy, lambda snap: snap is not before and not snap.invalid and len(snap.accounts) == 2)
    assert await ask(proxy, upstream) == KEY

    again = await asyncio.to_thread(proxygate, tmp_path, "secrets", "encrypt")
    assert "0 file(s) encrypted, 2 already so" in again.stdout

    rotated = await asyncio.to_thread(proxygate, tmp_path, "secrets", "rotate", "--drop-old")
    assert rotated.returncode == 0, rotated.stderr
    assert "2 file(s) encrypted, 0 already so" in rotated.stdout and "deleted old key" in rotated.stdout
    assert clear_text_under(tmp_path / "pool", KEY, OTHER) == []
    assert len(orjson.loads(key_file.read_bytes())["keys"]) == 1
    await asyncio.sleep(0.3)  # the watcher's reload of the rotated files
    await settled(proxy, lambda snap: not snap.invalid and len(snap.accounts) == 2)
    assert await ask(proxy, upstream) == KEY

    listed = await asyncio.to_thread(proxygate, tmp_path, "list")
    assert listed.returncode == 0 and "spare" in listed.stdout and KEY[-16:] not in listed.stdout

    plain = await asyncio.to_thread(proxygate, tmp_path, "secrets", "decrypt")
    assert plain.returncode == 0, plain.stderr
    assert orjson.loads((tmp_path / "pool" / "apikeys" / "ant.json").read_bytes())["api_key"] == KEY


async def test_a_missing_key_makes_an_invalid_file_with_the_reason_and_the_rest_serves(
    upstream: ScriptedUpstream, start_proxy: Any, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    first.mkdir()
    (first / "config.toml").write_text('pool_dir = "pool"\ndata_dir = "data"\n')
    apikeys = first / "pool" / "apikeys"
    apikeys.mkdir(parents=True)
    (apikeys / "ant.json").write_bytes(
        orjson.dumps({"provider": "anthropic", "api_key": KEY, "base_url": upstream.url})
    )
    assert (await asyncio.to_thread(proxygate, first, "secrets", "encrypt")).returncode == 0
    kid = orjson.loads((first / "data" / "secrets.json").read_bytes())["current"]

    # Another instance: the sealed file copied over, but not the key.
    proxy = await start_proxy(
        {"spare": {"provider": "anthropic", "api_key": OTHER, "base_url": upstream.url}}, env=NO_KEYRING
    )
    sealed = proxy.pool_dir / "apikeys" / "ant.json"
    sealed.write_bytes((apikeys / "ant.json").read_bytes())
    await settled(proxy, lambda snap: len(snap.invalid) == 1)
    [bad] = proxy.app[POOL][0].invalid
    assert bad.path == sealed
    assert bad.reason == (
        f'"api_key" is encrypted under key {kid}, which is not available here (not in '
        f"PROXYGATE_SECRETS_KEY, {tmp_path / 'data' / 'secrets.json'}, or the OS keyring)"
    )
    assert await ask(proxy, upstream) == OTHER  # the other account serves

    status = await asyncio.to_thread(proxygate, tmp_path, "status")
    assert f'"api_key" is encrypted under key {kid}, which is not available here' in status.stdout
    # A wrong shared key is no better than none.
    wrong = await asyncio.to_thread(
        proxygate, tmp_path, "secrets", "decrypt", env={"PROXYGATE_SECRETS_KEY": "A" * 43}
    )
    assert wrong.returncode == 1 and "not decrypted" in wrong.stderr and f"key {kid}" in wrong.stderr
    assert is_sealed(orjson.loads(sealed.read_bytes())["api_key"])


async def test_encrypt_on_upgrades_plaintext_files_at_start_and_add_key_writes_sealed(
    upstream: ScriptedUpstream, start_proxy: Any, tmp_path: Path
) -> None:
    proxy = await start_proxy(
        {"ant": {"provider": "anthropic", "api_key": KEY, "base_url": upstream.url}}, env=ENCRYPT_ON
    )
    assert clear_text_under(tmp_path / "pool", KEY) == []  # upgraded as the server loaded it
    assert await ask(proxy, upstream) == KEY

    added = await asyncio.to_thread(
        lambda: subprocess.run(
            [sys.executable, "-m", "proxygate", "add-key", "--provider", "openai", "--id", "oai"],
            input=OTHER + "\n",
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, **ENCRYPT_ON, "PROXYGATE_CONFIG": str(tmp_path / "config.toml")},
            timeout=60,
        )
    )
    assert added.returncode == 0, added.stderr
    assert "…" in added.stdout and OTHER[-16:] not in added.stdout
    assert clear_text_under(tmp_path / "pool", KEY, OTHER) == []
    await settled(proxy, lambda snap: "oai" in snap.by_id)
    assert proxy.app[POOL][0].by_id["oai"].api_key == OTHER


async def test_the_admin_api_disables_a_sealed_account_and_adds_keys_sealed(
    upstream: ScriptedUpstream, start_proxy: Any, tmp_path: Path
) -> None:
    """The dashboard's actions reload the pool with the keys: a sealed file stays a valid account."""
    proxy = await start_proxy(
        {"ant": {"provider": "anthropic", "api_key": KEY, "base_url": upstream.url}}, env=ENCRYPT_ON
    )
    async with aiohttp.ClientSession(headers=admin_headers(proxy.settings)) as client:
        async with client.post(f"{proxy.url}/admin/api/accounts/ant/disable") as resp:
            assert resp.status == 200, await resp.text()
        snapshot = proxy.app[POOL][0]
        assert snapshot.invalid == () and snapshot.by_id["ant"].disabled
        body = {"provider": "openai", "api_key": OTHER, "id": "oai"}
        async with client.post(f"{proxy.url}/admin/api/accounts", json=body) as resp:
            assert resp.status == 201, await resp.text()
            assert OTHER[-16:] not in await resp.text()
    assert proxy.app[POOL][0].by_id["oai"].api_key == OTHER
    assert clear_text_under(tmp_path / "pool", KEY, OTHER) == []


class ThreadRecordingKeyring(FileKeyring):
    """A keyring that notes which thread asks it: keyring calls block, so never the loop's."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: list[int] = []

    def get_password(self, service: str, username: str) -> str | None:
        self.threads.append(threading.get_ident())
        return super().get_password(service, username)


async def test_the_server_asks_the_keyring_from_threads_only_and_once_per_key(
    upstream: ScriptedUpstream, start_proxy: Any, tmp_path: Path
) -> None:
    ring = ThreadRecordingKeyring(tmp_path / "ring.json")
    sealing = Vault(SecretsSettings(), tmp_path / "data", keyring=ring)
    apikeys = tmp_path / "pool" / "apikeys"
    apikeys.mkdir(parents=True)
    (apikeys / "ant.json").write_bytes(
        orjson.dumps(
            {"provider": "anthropic", "api_key": sealing.seal("api_key", KEY), "base_url": upstream.url}
        )
    )
    assert orjson.loads((tmp_path / "data" / "secrets.json").read_bytes())["keys"] == {}  # key in the keyring
    ring.threads.clear()
    previous = keyring.get_keyring()
    keyring.set_keyring(ring)
    try:
        proxy = await start_proxy(env=NO_KEYRING)
        assert await ask(proxy, upstream) == KEY
        before = proxy.app[POOL][0]
        (apikeys / "ant.json").write_bytes((apikeys / "ant.json").read_bytes())  # the watcher reloads
        await settled(proxy, lambda snap: snap is not before and "ant" in snap.by_id)
        assert await ask(proxy, upstream) == KEY
    finally:
        keyring.set_keyring(previous)
    loop_thread = threading.get_ident()
    assert ring.threads and loop_thread not in ring.threads
    assert len(ring.threads) == 1  # the key is cached in memory after the first lookup


def test_the_cli_keeps_a_new_key_in_a_usable_keyring_and_status_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('pool_dir = "pool"\ndata_dir = "data"\n')
    apikeys = tmp_path / "pool" / "apikeys"
    apikeys.mkdir(parents=True)
    (apikeys / "ant.json").write_bytes(orjson.dumps({"provider": "anthropic", "api_key": KEY}))
    ring = {
        "PYTHON_KEYRING_BACKEND": "tests.keyring_backend.FileKeyring",
        "PROXYGATE_TEST_KEYRING": str(tmp_path / "ring.json"),
    }
    done = proxygate(tmp_path, "secrets", "encrypt", env=ring)
    assert done.returncode == 0, done.stderr
    kid = orjson.loads((tmp_path / "data" / "secrets.json").read_bytes())["current"]
    assert orjson.loads((tmp_path / "data" / "secrets.json").read_bytes()) == {
        "current": kid,
        "keys": {},
        "keyring": [kid],
    }  # the key file names the key; the keyring holds it
    assert f"proxygate/{kid}" in orjson.loads((tmp_path / "ring.json").read_bytes())
    assert clear_text_under(tmp_path / "pool", KEY) == [] and clear_text_under(tmp_path / "data", KEY) == []
    status = proxygate(tmp_path, "status", env=ring)
    assert (
        f"secrets: data key {kid} in the OS keyring (tests.keyring_backend.FileKeyring); [secrets] encrypt off"
        in status.stdout
    )
    listed = proxygate(tmp_path, "list", "--json", env=ring)
    assert [a["id"] for a in orjson.loads(listed.stdout)] == ["ant"]
    # Without that keyring the file cannot be opened: invalid, with the reason.
    without = proxygate(tmp_path, "status", "--json")
    [bad] = orjson.loads(without.stdout)["invalid_files"]
    assert bad["reason"].startswith(f'"api_key" is encrypted under key {kid}, which is not available here')
