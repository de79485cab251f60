"""Sealed pool files: opened at load, sealed on write, upgraded when [secrets] encrypt is on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxygate.config import SecretsSettings
from proxygate.errors import PoolError
from proxygate.pool.files import account_lock, add_account_file, load_pool, set_enabled
from proxygate.pool.sealing import clear_copies, keys_in_use, rewrite_pool
from proxygate.store.secrets import Vault, is_sealed, sealed_key_id
from tests.conftest import write_account
from tests.on_disk import clear_text_under

API_KEY = "sk-proj-" + "a1B2c3D4" * 6 + "LAST16chars0123x"
ACCESS = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZXYifQ.SIGNATUREsignatureSIGNATURE0123"
REFRESH = "rt_" + "R" * 40 + "refreshTail01234"
SECRETS = (API_KEY, ACCESS, REFRESH)


def vault(tmp_path: Path, **settings: Any) -> Vault:
    return Vault(SecretsSettings(**settings), tmp_path / "data", keyring=None)


def pool(tmp_path: Path) -> Path:
    root = tmp_path / "pool"
    write_account(root, "apikeys", "work", {"provider": "openai", "api_key": API_KEY, "note": "mine"})
    write_account(
        root,
        "claude",
        "me@example.com",
        {"email": "me@example.com", "access_token": ACCESS, "refresh_token": REFRESH, "disabled": False},
    )
    return root


def test_encrypt_leaves_no_secret_or_its_tail_in_the_pool_dir_and_load_opens_it(tmp_path: Path) -> None:
    root, v = pool(tmp_path), vault(tmp_path)
    assert len(clear_text_under(root, *SECRETS)) == 3
    results = rewrite_pool(root, v, "encrypt")
    assert sorted((r.path.name, r.result) for r in results) == [
        ("me@example.com.json", "changed"),
        ("work.json", "changed"),
    ]
    assert clear_text_under(root, *SECRETS) == []
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == [
        ".me@example.com.lock",
        "me@example.com.json",
        "work.json",
    ]  # no temp file, no plaintext copy beside them
    work = orjson.loads((root / "apikeys" / "work.json").read_bytes())
    assert work["provider"] == "openai" and work["note"] == "mine"  # the rest stays readable
    snapshot = load_pool(root, vault(tmp_path))  # a new process: keys from the key file
    assert snapshot.invalid == ()
    assert {a.id: a.credential for a in snapshot.accounts} == {"work": API_KEY, "me@example.com": ACCESS}
    assert snapshot.by_id["me@example.com"].refresh_token == REFRESH


def test_encrypt_twice_changes_nothing_and_decrypt_restores_the_plaintext(tmp_path: Path) -> None:
    root, v = pool(tmp_path), vault(tmp_path)
    before = {p.name: orjson.loads(p.read_bytes()) for p in root.rglob("*.json")}
    rewrite_pool(root, v, "encrypt")
    sealed = {p.name: p.read_bytes() for p in root.rglob("*.json")}
    assert [r.result for r in rewrite_pool(root, v, "encrypt")] == ["unchanged", "unchanged"]
    assert {p.name: p.read_bytes() for p in root.rglob("*.json")} == sealed
    assert [r.result for r in rewrite_pool(root, v, "decrypt")] == ["changed", "changed"]
    assert {p.name: orjson.loads(p.read_bytes()) for p in root.rglob("*.json")} == before
    assert [r.result for r in rewrite_pool(root, v, "decrypt")] == ["unchanged", "unchanged"]


def test_a_file_under_an_unavailable_key_is_invalid_with_the_reason_and_the_rest_loads(
    tmp_path: Path,
) -> None:
    root = pool(tmp_path)
    rewrite_pool(root, vault(tmp_path), "encrypt")
    write_account(root, "apikeys", "plain", {"provider": "openai", "api_key": "sk-plain-0123456789"})
    other = Vault(SecretsSettings(), tmp_path / "elsewhere", keyring=None)
    snapshot = load_pool(root, other)
    assert [a.id for a in snapshot.accounts] == ["plain"]  # a plaintext file keeps working
    kid = vault(tmp_path).current_key_id()
    assert sorted((bad.path.name, bad.reason) for bad in snapshot.invalid) == [
        (
            "me@example.com.json",
            f'"access_token" is encrypted under key {kid}, which is not available here (not in '
            f"PROXYGATE_SECRETS_KEY, {tmp_path / 'elsewhere' / 'secrets.json'}, or the OS keyring)",
        ),
        (
            "work.json",
            f'"api_key" is encrypted under key {kid}, which is not available here (not in '
            f"PROXYGATE_SECRETS_KEY, {tmp_path / 'elsewhere' / 'secrets.json'}, or the OS keyring)",
        ),
    ]
    no_vault = load_pool(root)
    assert sorted(bad.reason for bad in no_vault.invalid) == [
        f'"access_token" is encrypted (key {kid}) and no keys were given',
        f'"api_key" is encrypted (key {kid}) and no keys were given',
    ]
    failed = rewrite_pool(root, other, "decrypt")
    assert sorted(r.result for r in failed) == ["failed", "failed", "unchanged"]
    assert clear_text_under(root, *SECRETS) == []


def test_encrypt_on_upgrades_plaintext_files_as_they_load(tmp_path: Path) -> None:
    root = pool(tmp_path)
    snapshot = load_pool(root, vault(tmp_path, encrypt=True))
    assert {a.id: a.credential for a in snapshot.accounts} == {"work": API_KEY, "me@example.com": ACCESS}
    assert clear_text_under(root, *SECRETS) == []
    assert keys_in_use(root) == {vault(tmp_path).current_key_id(): 3}


def test_the_upgrade_waits_for_nobody_a_refresh_in_progress_keeps_the_file(tmp_path: Path) -> None:
    """A held account lock means a token refresh is writing the file: the loader leaves it."""
    root = pool(tmp_path)
    path = root / "claude" / "me@example.com.json"
    with account_lock(path, timeout_s=0) as is_locked:
        assert is_locked
        snapshot = load_pool(root, vault(tmp_path, encrypt=True))
    assert snapshot.by_id["me@example.com"].refresh_token == REFRESH
    assert orjson.loads(path.read_bytes())["refresh_token"] == REFRESH  # not upgraded this time
    load_pool(root, vault(tmp_path, encrypt=True))
    assert is_sealed(orjson.loads(path.read_bytes())["refresh_token"])  # the next load does


def test_a_sealed_file_stays_sealed_when_enabled_or_disabled(tmp_path: Path) -> None:
    root, v = pool(tmp_path), vault(tmp_path)
    rewrite_pool(root, v, "encrypt")
    set_enabled(root, "work", enabled=False, vault=v)
    data = orjson.loads((root / "apikeys" / "work.json").read_bytes())
    assert data["disabled"] is True and is_sealed(data["api_key"])
    assert load_pool(root, v).by_id["work"].disabled


def test_add_key_is_sealed_when_encrypt_is_on_and_plain_when_off(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    entry = {"provider": "openai", "api_key": API_KEY}
    sealed = add_account_file(root, "apikey", "k1", entry, vault=vault(tmp_path, encrypt=True))
    plain = add_account_file(root, "apikey", "k2", entry, vault=vault(tmp_path))
    assert is_sealed(orjson.loads(sealed.read_bytes())["api_key"])
    assert orjson.loads(plain.read_bytes())["api_key"] == API_KEY
    assert os.stat(sealed).st_mode & 0o777 == 0o600


def test_a_login_replacing_a_sealed_file_is_sealed_even_with_encrypt_off(tmp_path: Path) -> None:
    root, v = pool(tmp_path), vault(tmp_path)
    rewrite_pool(root, v, "encrypt")
    entry = {
        "email": "me@example.com",
        "access_token": "at-new-0123456789",
        "refresh_token": "rt-new-0123456789",
    }
    path = add_account_file(root, "claude", "me@example.com", entry, replace=True, vault=v)
    data = orjson.loads(path.read_bytes())
    assert is_sealed(data["access_token"]) and is_sealed(data["refresh_token"])
    assert load_pool(root, v).by_id["me@example.com"].access_token == "at-new-0123456789"


def test_without_keys_a_write_never_puts_secrets_in_clear_into_a_sealed_file(tmp_path: Path) -> None:
    from proxygate.pool.files import sealed_for

    v = vault(tmp_path)
    on_disk = {"api_key": v.seal("api_key", API_KEY)}
    with pytest.raises(PoolError, match=r"^the file is encrypted and no keys were given"):
        sealed_for(None, on_disk, {"api_key": API_KEY})


def test_rotate_reseals_every_field_under_the_new_key(tmp_path: Path) -> None:
    root, v = pool(tmp_path), vault(tmp_path)
    rewrite_pool(root, v, "encrypt")
    old, new = v.rotate()
    assert keys_in_use(root) == {old: 3}
    assert [r.result for r in rewrite_pool(root, v, "encrypt")] == ["changed", "changed"]
    assert keys_in_use(root) == {new: 3}
    v.forget(old)
    assert load_pool(root, vault(tmp_path)).invalid == ()
    assert all(
        sealed_key_id(orjson.loads(p.read_bytes())["refresh_token"]) == new
        for p in (root / "claude").glob("*.json")
    )


def test_clear_copies_names_backups_that_still_hold_a_secret(tmp_path: Path) -> None:
    root, v = pool(tmp_path), vault(tmp_path)
    backup = root / "apikeys" / "work.json~"
    backup.write_bytes((root / "apikeys" / "work.json").read_bytes())  # an editor's backup
    leftover = root / "claude" / ".me@example.com.json.x1y2.tmp"
    leftover.write_bytes(b'{"refresh_token": "' + REFRESH.encode() + b'"}')  # a crash's temp file
    rewrite_pool(root, v, "encrypt")
    assert clear_copies(root, v) == [backup, leftover]  # the account files themselves are sealed
    backup.unlink()
    leftover.unlink()
    assert clear_copies(root, v) == []
    assert clear_text_under(root, *SECRETS) == []
