"""Another instance's state writes, applied to this one's broker and tenants, and never written back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from proxygate.broker import AccountState, Broker, Headroom, Pin
from proxygate.config import RoutingSettings, Settings, load_settings
from proxygate.features.tenants import VERSION_KEY, TenantBook, created, save_tenant
from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.server.broker_state import ACTIVE_ROUTE_KEY, follow_changes
from proxygate.store import LMDBStore
from proxygate.store.base import COOLDOWNS, HEADROOM, OVERAGE, PINS, SETTINGS
from proxygate.wire.ir import Format
from tests.conftest import FakeClock

NOW = 1_800_000_000.0


def wired(store: LMDBStore, routing: RoutingSettings) -> Broker:
    """A broker that persists its changes to ``store`` the way server/app.py wires it."""
    accounts = [
        Account(i, "apikey", "anthropic", "http://x", ("*",), (Format.anthropic,)) for i in ("a", "b")
    ]

    def persist_pin(key: str, pin: Pin | None) -> None:
        store.put_state(PINS, key, None if pin is None else pin.to_json())

    return Broker(
        PoolSnapshot.of(accounts),
        routing,
        clock=FakeClock(NOW),
        on_state=lambda account_id, state: store.put_state(COOLDOWNS, account_id, state.to_json()),
        on_headroom=lambda account_id, windows: store.put_state(
            HEADROOM, account_id, {"windows": [w.to_json() for w in windows]}
        ),
        on_pin=persist_pin,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "config.toml").write_text(
        '[routing]\nactive = "default"\n[routing.configs.default]\nstrategy = "priority"\n'
        '[routing.configs.spread]\nstrategy = "round-robin"\n'
    )
    return load_settings(tmp_path / "config.toml", {})


def test_a_peers_cooldown_quota_window_pin_route_and_overage_apply_without_being_written_back(
    tmp_path: Path, settings: Settings
) -> None:
    store = LMDBStore(tmp_path / "data")
    broker = wired(store, settings.routing)
    apply = follow_changes(broker, TenantBook(settings), store, settings)
    cooled = AccountState(cooldown_until=NOW + 30, cooldown_reason="rate_limited", failures=1)
    window = Headroom("5h", 0.0, NOW + 3600, source="headers", observed_at=NOW, is_rejected=True)

    apply(COOLDOWNS, "a", cooled.to_json())
    apply(HEADROOM, "b", {"windows": [window.to_json()]})
    apply(PINS, "cc:s1", {"account_id": "b", "expires_at": NOW + 600})
    apply(PINS, "cc:s2", {"account_id": "a", "expires_at": NOW + 600})
    apply(PINS, "cc:s2", None)
    apply(SETTINGS, ACTIVE_ROUTE_KEY, {"name": "spread", "configured": "default"})
    apply(OVERAGE, "a", {"requests": 4})

    assert broker.state("a").cooling(NOW) == 30
    assert broker.state("a").cooldown_reason == "rate_limited"
    assert list(broker.state("b").windows.values()) == [window]
    assert [(key, pin.account_id) for key, pin in broker.pins] == [("cc:s1", "b")]
    assert broker.route_label() == "spread/round-robin"
    assert broker.state("a").overage_requests == 4
    assert store.queue_depth == 0  # nothing echoed back to the store

    apply(COOLDOWNS, "a", None)  # the peer's reset deleted it, or wrote a cleared state
    apply(SETTINGS, ACTIVE_ROUTE_KEY, None)
    assert broker.state("a").cooling(NOW) == 0
    assert broker.route_label() == "default/priority"
    assert store.queue_depth == 0
    store.close()


def test_a_route_chosen_before_config_toml_changed_its_active_route_is_ignored(
    tmp_path: Path, settings: Settings
) -> None:
    """As at a restart: the peer chose under another ``[routing] active``, the file is the newer word."""
    store = LMDBStore(tmp_path / "data")
    broker = wired(store, settings.routing)
    apply = follow_changes(broker, TenantBook(settings), store, settings)
    apply(SETTINGS, ACTIVE_ROUTE_KEY, {"name": "spread", "configured": "other"})
    assert broker.route_label() == "default/priority"
    store.close()


def test_a_tenant_written_by_a_peer_is_known_once_its_version_arrives(
    tmp_path: Path, settings: Settings
) -> None:
    store = LMDBStore(tmp_path / "data")
    book = TenantBook(settings)
    apply = follow_changes(wired(store, settings.routing), book, store, settings)
    tenant, key = created("alice", {"rpm": 30}, now=NOW, routes=None)
    save_tenant(store, tenant)  # the tenant record, then the version bump, as a peer commits them
    store.flush()
    apply(SETTINGS, VERSION_KEY, store.get_states(SETTINGS)[VERSION_KEY])
    assert book.authenticate(key) == "alice"
    assert book.tenants["alice"].rpm == 30
    store.close()


def test_a_value_that_cannot_be_read_is_logged_and_skipped(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    store = LMDBStore(tmp_path / "data")
    broker = wired(store, settings.routing)
    apply = follow_changes(broker, TenantBook(settings), store, settings)
    with caplog.at_level(logging.WARNING, "proxygate.store"):
        apply(COOLDOWNS, "a", {"cooldown_until": "soon"})
        apply(HEADROOM, "a", {"windows": [{"no": "window"}]})
    assert [r.getMessage() for r in caplog.records] == [
        "a state change from another instance (cooldowns 'a') cannot be applied: "
        "could not convert string to float: 'soon'",
        "a state change from another instance (headroom 'a') cannot be applied: 'window'",
    ]
    assert broker.state("a").cooling(NOW) == 0
    store.close()
