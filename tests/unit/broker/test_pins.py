"""Conversation keys, first found, per client (peers.md §3.1, §3.2)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from proxygate.broker import PinTable, conversation
from proxygate.wire.ir import Format

SESSION = "0b5a4b6e-3c1f-4f7e-9a51-2d1c6f0e8b77"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("fmt", "headers", "body", "expected"),
    [
        (
            Format.anthropic,
            {"x-claude-code-session-id": SESSION},
            {"messages": MESSAGES},
            (f"cc:{SESSION}", True),
        ),
        (
            Format.anthropic,
            {},
            {
                "metadata": {
                    "user_id": orjson.dumps(
                        {"device_id": "ab" * 32, "account_uuid": "", "session_id": SESSION}
                    ).decode()
                },
                "messages": MESSAGES,
            },
            (f"cc:{SESSION}", True),
        ),
        (
            Format.anthropic,
            {},
            {
                "metadata": {"user_id": f"user_{'ab' * 32}_account_{SESSION}_session_{SESSION}"},
                "messages": MESSAGES,
            },
            (f"cc:{SESSION}", True),
        ),
        (Format.responses, {"session_id": SESSION}, {"input": "hi"}, (f"codex:{SESSION}", True)),
        (Format.responses, {}, {"input": "hi", "prompt_cache_key": "pck-1"}, ("cache:pck-1", True)),
        (Format.responses, {}, {"input": "hi", "conversation": {"id": "conv_1"}}, ("conv:conv_1", True)),
        (Format.responses, {}, {"input": "hi", "previous_response_id": "resp_9"}, ("resp:resp_9", True)),
    ],
)
def test_explicit_keys(
    fmt: Format, headers: dict[str, str], body: dict[str, Any], expected: tuple[str, bool]
) -> None:
    assert conversation(fmt, headers, body) == expected


def test_prefix_hash_is_stable_across_turns_and_formats_differ_by_system() -> None:
    chat = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}
    key, follows = conversation(Format.chat, {}, chat)
    assert (key.startswith("h:"), len(key), follows) == (True, 34, False)
    later = {
        "messages": [
            *chat["messages"],
            {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "more"},
        ]
    }
    assert conversation(Format.chat, {}, later) == (key, True)
    other = {"messages": [{"role": "system", "content": "t"}, {"role": "user", "content": "hi"}]}
    assert conversation(Format.chat, {}, other)[0] != key
    assert conversation(Format.chat, {}, {"messages": []}) == ("", False)


@pytest.mark.parametrize("size", [10, 2_013, 2_014, 5_000])  # 2,013: a prefix of exactly 2 KB
def test_prefix_hash_keys_of_short_and_long_prefixes_stay_as_stored(size: int) -> None:
    """Pins persist under these keys: the digest of the prefix (or, past 2 KB, of its first
    and last KB and its length) must not change from one release to the next."""
    system, user = "s" * size, {"role": "user", "content": "hi"}
    prefix = orjson.dumps([system, user], option=orjson.OPT_SORT_KEYS)
    if len(prefix) > 2048:
        prefix = prefix[:1024] + len(prefix).to_bytes(8, "big") + prefix[-1024:]
    expected = "h:" + hashlib.sha256(prefix).hexdigest()[:32]
    assert conversation(Format.anthropic, {}, {"system": system, "messages": [user]}) == (expected, False)


def test_long_client_keys_are_hashed() -> None:
    key, _ = conversation(Format.responses, {}, {"input": "x", "prompt_cache_key": "k" * 500})
    assert (key.startswith("cache:"), len(key)) == (True, 6 + 32)


def test_pin_table_persists_new_and_moved_pins_and_a_quarter_ttl_of_sliding() -> None:
    table = PinTable(ttl_s=100)
    pin = table.put("k", "a", 0.0)
    assert table.needs_persist(pin, moved=True)
    pin.persisted_expires_at = pin.expires_at
    pin = table.put("k", "a", 10.0)
    assert not table.needs_persist(pin, moved=False)
    pin = table.put("k", "a", 25.0)
    assert table.needs_persist(pin, moved=False)
    table.restore(
        {"old": {"account_id": "b", "expires_at": 50.0}, "gone": {"account_id": "b", "expires_at": 1.0}}, 2.0
    )
    assert (table.count_by_account(2.0), table.sweep(200.0)) == ({"a": 1, "b": 1}, ["k", "old"])


def test_pin_table_is_bounded_and_drops_the_least_recently_used_conversation() -> None:
    table = PinTable(ttl_s=3600, max_pins=3)
    for key in ("a", "b", "c"):
        table.put(key, "acct-1", now=0)
    table.put("a", "acct-1", now=1)  # a turn of "a": now the most recently used
    table.put("d", "acct-2", now=2)
    assert [key for key, _ in table] == ["c", "a", "d"]
    assert table.expired == ["b"]  # the owner deletes it from the store too
