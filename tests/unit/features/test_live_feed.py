"""The live traffic feed: nothing built without subscribers, slow subscribers drop, end_all ends all."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from proxygate.call import Call
from proxygate.features import live
from proxygate.features.live import LiveFeed
from proxygate.wire.ir import Format


def a_call(n: int = 0) -> Call:
    return Call(
        request_id=f"pg_{n}",
        fmt=Format.anthropic,
        headers=CIMultiDictProxy(CIMultiDict()),
        body={"messages": [{"role": "user", "content": "secret prompt"}]},
        raw_body=b'{"secret prompt"}',
        model="claude-x",
        is_stream=False,
    )


def test_without_subscribers_no_entry_is_built(monkeypatch) -> None:
    built = []
    monkeypatch.setattr(live, "live_entry", lambda call: built.append(call) or {})
    LiveFeed().on_done(a_call())
    assert built == []


def test_each_subscriber_gets_the_entry_and_never_a_body() -> None:
    feed = LiveFeed()
    first, second = feed.subscribe(), feed.subscribe()
    feed.on_done(a_call(1))
    for subscription in (first, second):
        entry = subscription.queue.get_nowait()
        assert entry is not None and entry["request_id"] == "pg_1"
        assert "secret prompt" not in str(entry)


def test_a_slow_subscriber_drops_entries_instead_of_growing(monkeypatch) -> None:
    monkeypatch.setattr(live, "QUEUE_SIZE", 2)
    feed = LiveFeed()
    slow = feed.subscribe()
    for n in range(5):
        feed.on_done(a_call(n))
    assert slow.queue.qsize() == 2 and slow.dropped == 3


def test_end_all_ends_even_a_full_queue_and_later_subscriptions(monkeypatch) -> None:
    monkeypatch.setattr(live, "QUEUE_SIZE", 1)
    feed = LiveFeed()
    full = feed.subscribe()
    feed.on_done(a_call())
    feed.end_all()
    assert full.queue.get_nowait() is None
    assert feed.subscribe().queue.get_nowait() is None
    assert feed.subscribers == set()
