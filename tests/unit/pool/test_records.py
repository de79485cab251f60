from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxygate.errors import PoolError
from proxygate.pool.files import add_account_file, load_pool, set_enabled
from proxygate.pool.importing import import_entries
from proxygate.pool.records import InvalidAccount, mask, parse_account
from proxygate.store.files import write_json_atomic
from proxygate.wire.ir import Format


def test_api_key_defaults_come_from_the_provider() -> None:
    a = parse_account({"provider": "deepseek", "api_key": "sk-deep-0000"}, "apikey", default_id="ds")
    assert (a.id, a.base_url, a.models, a.formats, a.weight, a.priority, a.disabled) == (
        "ds",
        "https://api.deepseek.com/v1",
        ("deepseek-*",),
        (Format.chat,),
        1.0,
        0,
        False,
    )
    assert a.serves("deepseek-chat") and not a.serves("gpt-4o")
    assert "sk-deep" not in repr(a)


def test_formats_order_and_custom_needs_base_url() -> None:
    a = parse_account(
        {"provider": "openai", "api_key": "k", "formats": ["chat", "responses"]}, "apikey", default_id="o"
    )
    assert a.formats == (Format.chat, Format.responses)
    with pytest.raises(InvalidAccount, match=r'^provider "custom" needs "base_url"$'):
        parse_account({"provider": "custom", "api_key": "k"}, "apikey", default_id="c")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a JSON object"),
        ({"api_key": "k"}, 'missing "provider"'),
        ({"provider": "acme", "api_key": "k"}, "unknown provider 'acme'"),
        ({"provider": "openai"}, 'missing "api_key"'),
        ({"provider": "openai", "api_key": "k", "models": []}, '"models" must be a non-empty list'),
        ({"provider": "openai", "api_key": "k", "formats": ["soap"]}, '"formats" entries must be among'),
        ({"provider": "openai", "api_key": "k", "weight": "x"}, '"weight" must be a number'),
        ({"provider": "openai", "api_key": "k", "base_url": "ftp://x"}, '"base_url" must start with http'),
    ],
)
def test_invalid_api_key_files(data: object, message: str) -> None:
    with pytest.raises(InvalidAccount, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_account(data, "apikey", default_id="x")


def test_oauth_files() -> None:
    claude = parse_account(
        {
            "email": "me@x.com",
            "access_token": "sk-ant-oat-1",
            "refresh_token": "r",
            "expires_at": "2026-01-01T00:00:00Z",
            "subscription_type": "max",
        },
        "claude",
        default_id="me@x.com",
    )
    assert (claude.provider, claude.plan, claude.expires_at, claude.is_oauth) == (
        "claude",
        "max",
        datetime(2026, 1, 1, tzinfo=UTC),
        True,
    )
    with pytest.raises(InvalidAccount, match=r'^missing "account_id"$'):
        parse_account({"email": "e", "access_token": "a", "refresh_token": "r"}, "chatgpt", default_id="e")
    with pytest.raises(InvalidAccount, match="needs a time zone"):
        parse_account(
            {"email": "e", "access_token": "a", "refresh_token": "r", "expires_at": "2026-01-01T00:00:00"},
            "claude",
            default_id="e",
        )


def test_mask_never_shows_enough_to_use() -> None:
    assert [mask("sk-abcdefghijklmnf3a9"), mask("AIzaSyabcdefghijkl"), mask("short"), mask("")] == [
        "sk-…f3a9",
        "…ijkl",
        "…",
        "-",
    ]


def test_load_pool_skips_bad_files_and_duplicates_but_keeps_the_rest(tmp_path: Path) -> None:
    keys = tmp_path / "apikeys"
    keys.mkdir()
    (keys / "good.json").write_text('{"provider": "anthropic", "api_key": "k"}')
    (keys / "bad.json").write_text("{")
    (keys / "dup.json").write_text('{"id": "good", "provider": "openai", "api_key": "k"}')
    (keys / "ignored.json.example").write_text("{")
    (tmp_path / "claude").mkdir()
    (tmp_path / "claude" / "me.json").write_text('{"email": "me@x", "access_token": "a"}')
    snapshot = load_pool(tmp_path)
    assert [(a.id, a.provider) for a in snapshot.accounts] == [("good", "openai")]  # first file by name wins
    assert [(f.path.name, f.reason) for f in snapshot.invalid] == [
        ("bad.json", "malformed JSON: unexpected end of data: line 1 column 2 (char 1)"),
        ("good.json", f"duplicate id 'good' (also in {keys / 'dup.json'}); skipped"),
        ("me.json", 'missing "refresh_token"'),
    ]


def test_atomic_write_is_0600_and_enable_preserves_unknown_keys(tmp_path: Path) -> None:
    path = add_account_file(tmp_path, "apikey", "k1", {"provider": "openai", "api_key": "k", "note": "mine"})
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    set_enabled(tmp_path, "k1", enabled=False)
    assert orjson.loads(path.read_bytes()) == {
        "provider": "openai",
        "api_key": "k",
        "note": "mine",
        "disabled": True,
    }
    assert load_pool(tmp_path).accounts[0].disabled
    assert [p.name for p in path.parent.iterdir()] == ["k1.json"]  # no temp files left behind
    with pytest.raises(PoolError, match=r"^no account 'nope' in the pool \(see `proxygate list`\)$"):
        set_enabled(tmp_path, "nope", enabled=True)


def test_write_json_atomic_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "d" / "x.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"b": 2})
    assert orjson.loads(target.read_bytes()) == {"b": 2}


def test_import_reports_duplicates_and_invalid_entries(tmp_path: Path) -> None:
    entries = [
        {"id": "k1", "provider": "openai", "api_key": "sk-1"},
        {"id": "k1", "provider": "openai", "api_key": "sk-2"},
        {"provider": "openai"},
        {"email": "me@x.com", "access_token": "sk-ant-oat01-x", "refresh_token": "r"},
        "junk",
    ]
    report = import_entries(tmp_path, entries)
    assert [p.relative_to(tmp_path).as_posix() for p in report.written] == [
        "apikeys/k1.json",
        "claude/me@x.com.json",
    ]
    assert report.duplicates == ["entry 2: k1 is already in the pool; skipped"]
    assert report.invalid == ['entry 3: missing "api_key"', "entry 5: expected a JSON object"]


def test_import_names_entries_without_id_like_pool_files_and_finds_keys_already_there(
    tmp_path: Path,
) -> None:
    import_entries(tmp_path, [{"id": "mine", "provider": "deepseek", "api_key": "sk-deep-1"}])
    report = import_entries(
        tmp_path,
        [
            {"provider": "deepseek", "api_key": "sk-deep-2"},
            {"provider": "deepseek", "api_key": "sk-deep-3"},
            {"provider": "deepseek", "api_key": "sk-deep-1"},  # already there as "mine"
            {"id": "again", "provider": "deepseek", "api_key": "sk-deep-2"},  # earlier in this file
            {"provider": "deepseek", "api_key": "sk-deep-1", "base_url": "http://127.0.0.1:9/v1"},
        ],
    )
    assert [p.name for p in report.written] == ["deepseek.json", "deepseek-2.json", "deepseek-3.json"]
    assert report.duplicates == [
        "entry 3: the same credential as mine is already in the pool; skipped",
        "entry 4: the same credential as deepseek is already in the pool; skipped",
    ]
    assert "id" not in orjson.loads(report.written[0].read_bytes())
    assert sorted(a.id for a in load_pool(tmp_path).accounts) == [
        "deepseek",
        "deepseek-2",
        "deepseek-3",
        "mine",
    ]


def test_private_dirs_are_0700_at_every_new_level(tmp_path: Path) -> None:
    from proxygate.store.files import ensure_private_dir

    ensure_private_dir(tmp_path / "home" / ".proxygate" / "pool" / "apikeys")
    modes = [
        (tmp_path / p).stat().st_mode & 0o777 for p in ("home", "home/.proxygate", "home/.proxygate/pool")
    ]
    assert modes == [0o700, 0o700, 0o700]


@pytest.mark.parametrize(
    ("data", "formats"),
    [
        ({}, (Format.responses, Format.chat)),
        ({"base_url": "https://api.openai.com/v1/"}, (Format.responses, Format.chat)),
        ({"base_url": "http://127.0.0.1:8000/v1"}, (Format.chat,)),
        ({"base_url": "https://llm.example.com/v1", "formats": ["responses"]}, (Format.responses,)),
    ],
)
def test_openai_speaks_responses_only_at_the_official_endpoint(data: dict, formats: tuple) -> None:
    account = parse_account({"provider": "openai", "api_key": "k", **data}, "apikey", default_id="o")
    assert account.formats == formats


async def test_an_anthropic_client_reaches_an_openai_compatible_server_by_chat(start_proxy, upstream) -> None:
    proxy = await start_proxy(
        {"local": {"provider": "openai", "api_key": "sk-l", "base_url": f"{upstream.url}/v1"}}
    )
    body = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as client:
        for path in ("/v1/messages", "/v1/responses"):
            payload = body if path == "/v1/messages" else {"model": "gpt-4o", "input": "hi"}
            async with client.post(f"{proxy.url}{path}", json=payload) as resp:
                assert resp.status == 200, await resp.text()
    assert upstream.paths() == ["/v1/chat/completions", "/v1/chat/completions"]


_CLAUDE = {"email": "me@x.com", "access_token": "a", "refresh_token": "r"}


def test_overage_and_reserve_are_top_level_keys_with_safe_defaults() -> None:
    plain = parse_account(_CLAUDE, "claude", default_id="c")
    assert (plain.overage, plain.reserve_pct) == ("never", 0.0)
    set_ = parse_account({**_CLAUDE, "overage": "last-resort", "reserve_pct": 15}, "claude", default_id="c")
    assert (set_.overage, set_.reserve_pct) == ("last-resort", 15.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"overage": "sometimes"}, '"overage" must be one of: never, allow, last-resort'),
        ({"overage": True}, '"overage" must be a string'),
        ({"reserve_pct": 101}, '"reserve_pct" must be a percent from 0 to 100'),
        ({"reserve_pct": -1}, '"reserve_pct" must be a percent from 0 to 100'),
        ({"reserve_pct": "15%"}, '"reserve_pct" must be a number'),
    ],
)
def test_invalid_overage_and_reserve(extra: dict, message: str) -> None:
    with pytest.raises(InvalidAccount, match="^" + message):
        parse_account({**_CLAUDE, **extra}, "claude", default_id="c")
