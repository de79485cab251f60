"""``[store]``: the backend, Redis URL and key prefix, from config.toml and PROXYGATE_STORE_*."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxygate.config import StoreSettings, load_settings
from proxygate.errors import ConfigError
from proxygate.store import LMDBStore, open_store


def test_store_defaults_to_lmdb(tmp_path: Path) -> None:
    settings = load_settings(None, {}, cwd=tmp_path)
    assert settings.store == StoreSettings(backend="lmdb", redis_url="", key_prefix="proxygate")


def test_store_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[store]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:6379/0"\n')
    environ = {
        "PROXYGATE_STORE_REDIS_URL": "rediss://:pw@redis.example:6380/2",
        "PROXYGATE_STORE_KEY_PREFIX": "team",
    }
    assert load_settings(config, environ).store == StoreSettings(
        backend="redis", redis_url="rediss://:pw@redis.example:6380/2", key_prefix="team"
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"PROXYGATE_STORE_BACKEND": "redis"},
            r'^store.redis_url: required with store.backend = "redis" \(e.g. redis://127.0.0.1:6379/0\)$',
        ),
        (
            {"PROXYGATE_STORE_BACKEND": "redis", "PROXYGATE_STORE_REDIS_URL": "http://:secret@host"},
            r"^store.redis_url: must start with redis://, rediss:// or unix://$",
        ),
        (
            {"PROXYGATE_STORE_BACKEND": "redis", "PROXYGATE_STORE_REDIS_URL": "secret-password"},
            r"^store.redis_url: must start with redis://, rediss:// or unix://$",
        ),
        (
            {"PROXYGATE_STORE_BACKEND": "memcached"},
            r"^store.backend \(env PROXYGATE_STORE_BACKEND\): 'memcached' is not one of lmdb, redis$",
        ),
        (
            {"PROXYGATE_STORE_KEY_PREFIX": "a b"},
            r"^store.key_prefix: 'a b' must be non-empty, without spaces$",
        ),
    ],
)
def test_bad_store_settings_fail_at_load(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, environ, cwd=tmp_path)


def test_open_store_gives_lmdb_by_default(tmp_path: Path) -> None:
    store = open_store(load_settings(None, {"PROXYGATE_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path))
    try:
        assert isinstance(store, LMDBStore)
    finally:
        store.close()
