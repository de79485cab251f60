"""The per-model route cache keys on the client's model name: only routable names, and bounded."""

from __future__ import annotations

import pytest

from proxygate.broker import Ask, Outcome
from proxygate.broker.routing import MAX_CACHED_ROUTES, RouteCache
from proxygate.errors import NoAccountForModel
from proxygate.wire.ir import Format
from tests.conftest import FakeClock
from tests.unit.broker.test_scenarios import account, broker


def test_a_name_nothing_serves_is_refused_and_not_cached(clock: FakeClock) -> None:
    b = broker([account("a")], clock)
    for n in range(100):
        with pytest.raises(NoAccountForModel):
            b.acquire(Ask(f"gpt-{n}-" + "x" * 200, Format.chat))
    assert len(b._routes) == 0
    b.acquire(Ask("claude-sonnet-4-5", Format.anthropic)).release(Outcome.ok())
    assert len(b._routes) == 1


def test_routable_names_are_cached_up_to_the_bound_oldest_out(clock: FakeClock) -> None:
    b = broker([account("a")], clock)
    for n in range(MAX_CACHED_ROUTES + 50):  # a glob serves names a client can invent
        b.acquire(Ask(f"claude-{n}", Format.anthropic)).release(Outcome.ok())
    assert len(b._routes) == MAX_CACHED_ROUTES
    assert b._routes.get("claude-0") is None
    assert b._routes.get(f"claude-{MAX_CACHED_ROUTES + 49}") is not None


def test_the_cache_keeps_a_route_it_already_holds_without_evicting() -> None:
    cache = RouteCache(max_entries=2)
    b = broker([account("a")], FakeClock())
    first, second = b.route("claude-1"), b.route("claude-2")
    cache.put(first)
    cache.put(second)
    cache.put(first)  # already held: nothing is evicted
    assert (cache.get("claude-1"), cache.get("claude-2")) == (first, second)
