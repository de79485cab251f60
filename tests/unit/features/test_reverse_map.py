"""The persisted reverse map: sealed in a real LMDB store, bounded, back after a restart."""

from __future__ import annotations

from pathlib import Path

from proxygate.config import UsageSettings
from proxygate.features.restoration import Restorer
from proxygate.features.reverse_map import ReverseMap
from proxygate.store.lmdb_store import LMDBStore

KEY = bytes(range(32))
TOKEN = "PG_API_KEY_abcdefghijklmnop"
SECRET = "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"


def test_sealed_in_the_store_and_recalled_after_a_restart(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, UsageSettings())
    ReverseMap(store, KEY, 10).remember(TOKEN, SECRET)
    store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "proxygate.lmdb").iterdir())
    assert SECRET.encode() not in raw and TOKEN.encode() in raw
    store = LMDBStore(tmp_path, UsageSettings())
    again = ReverseMap(store, KEY, 10)
    assert again.recall(TOKEN) == SECRET
    assert ReverseMap(store, bytes(32), 10).recall(TOKEN) is None  # another key: not restorable
    store.close()


def test_bounded_least_recently_used_dropped(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, UsageSettings())
    rmap = ReverseMap(store, KEY, 3)
    tokens = [f"PG_EMAIL_{c * 16}" for c in "abcd"]
    for token in tokens[:3]:
        rmap.remember(token, token.lower())
    rmap.remember(tokens[0], "again")  # used again: now the newest
    rmap.remember(tokens[3], "d")
    assert len(rmap) == 3 and rmap.recall(tokens[1]) is None and rmap.recall(tokens[0]) is not None
    store.flush()
    assert sorted(ReverseMap(store, KEY, 3)._entries) == sorted([tokens[0], tokens[2], tokens[3]])
    store.close()


def test_restorer_uses_the_map_for_tokens_the_request_did_not_send(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, UsageSettings())
    rmap = ReverseMap(store, KEY, 10)
    rmap.remember(TOKEN, 'pa"ss\nword')
    restorer = Restorer({}, rmap.recall)
    assert restorer.text(f"use {TOKEN} and PG_API_KEY_zzzzzzzzzzzzzzzz") == (
        'use pa"ss\nword and PG_API_KEY_zzzzzzzzzzzzzzzz'
    )
    assert restorer.text(f'{{"k": "{TOKEN}"}}', is_json=True) == '{"k": "pa\\"ss\\nword"}'
    # A token split anywhere in a stream is held back until it is whole.
    for cut in range(1, len(TOKEN)):
        ready, held = restorer.split("x " + TOKEN[:cut])
        assert (ready, held) == ("x ", TOKEN[:cut])
    store.close()
