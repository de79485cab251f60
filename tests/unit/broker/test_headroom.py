"""Quota signals: captured header sets of each dialect (peers.md §4) → normalised ``Headroom``."""

from __future__ import annotations

import orjson
import pytest

from proxygate.broker.headroom import (
    Headroom,
    parse_body,
    parse_duration_s,
    parse_headers,
    representative_claim,
)

NOW = 1_790_800_000.0


def test_anthropic_unified_429_five_hour_rejected() -> None:
    """better-ccflare's captured 429 (retryable-429.test.ts): 5 h over, 7 d allowed at 69 %."""
    headers = {
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": "1790807835",
        "anthropic-ratelimit-unified-5h-status": "rejected",
        "anthropic-ratelimit-unified-5h-reset": "1790807835",
        "anthropic-ratelimit-unified-5h-utilization": "1.01",
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d-reset": "1791200000",
        "anthropic-ratelimit-unified-7d-utilization": "0.69",
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "retry-after": "7835",
        "x-should-retry": "true",
    }
    assert parse_headers(headers, NOW) == [
        Headroom("5h", 0.0, 1790807835.0, "anthropic-unified", NOW, is_rejected=True, window_s=18000.0),
        Headroom("7d", pytest.approx(0.31), 1791200000.0, "anthropic-unified", NOW, window_s=604800.0),
    ]
    assert representative_claim(headers) == "five_hour"


def test_anthropic_unified_max_plan_with_model_window_and_overage() -> None:
    """A Max-plan response (shapes verified 2026-09-30): 5 h, 7 d, 7d_oi, overage rejected."""
    headers = {
        "Anthropic-Ratelimit-Unified-5h-Utilization": "0.05",
        "anthropic-ratelimit-unified-5h-reset": "1790814600",
        "anthropic-ratelimit-unified-5h-status": "allowed",
        "anthropic-ratelimit-unified-7d-utilization": "0.4",
        "anthropic-ratelimit-unified-7d-reset": "1791300000",
        "anthropic-ratelimit-unified-7d-status": "allowed_warning",
        "anthropic-ratelimit-unified-7d_oi-utilization": "0.9",
        "anthropic-ratelimit-unified-7d_oi-reset": "1791300000",
        "anthropic-ratelimit-unified-7d_oi-status": "allowed",
        "anthropic-ratelimit-unified-overage-status": "rejected",
        "anthropic-ratelimit-unified-overage-disabled-reason": "out_of_credits",
        "anthropic-ratelimit-unified-status": "allowed",
    }
    assert parse_headers(headers, NOW, model="claude-opus-4-1") == [
        Headroom("5h", pytest.approx(0.95), 1790814600.0, "anthropic-unified", NOW, window_s=18000.0),
        Headroom("7d", pytest.approx(0.6), 1791300000.0, "anthropic-unified", NOW, window_s=604800.0),
        Headroom(
            "7d_oi",
            pytest.approx(0.1),
            1791300000.0,
            "anthropic-unified",
            NOW,
            model="opus",
            window_s=604800.0,
        ),
        Headroom("overage", None, None, "anthropic-unified", NOW, is_rejected=True),
    ]


def test_anthropic_unified_named_model_window() -> None:
    """``7d-sonnet-*`` (a model named in the header) is scoped to that family whatever was asked."""
    headers = {
        "anthropic-ratelimit-unified-7d-sonnet-utilization": "0.02",
        "anthropic-ratelimit-unified-7d-sonnet-reset": "1791000000",
        "anthropic-ratelimit-unified-7d-sonnet-status": "allowed",
    }
    assert parse_headers(headers, NOW, model="claude-opus-4") == [
        Headroom(
            "7d_sonnet",
            pytest.approx(0.98),
            1791000000.0,
            "anthropic-unified",
            NOW,
            model="sonnet",
            window_s=604800.0,
        )
    ]


def test_anthropic_api_key_headers() -> None:
    """Anthropic's documented rate-limit headers: RFC 3339 resets, per requests/tokens."""
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-09-30T22:13:21Z",
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2026-09-30T22:13:25Z",
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-remaining": "30000",
        "anthropic-ratelimit-input-tokens-reset": "2026-09-30T22:13:21Z",
    }
    assert parse_headers(headers, NOW) == [
        Headroom("requests", 0.98, 1790806401.0, "anthropic-api", NOW, kind="rate"),
        Headroom("tokens", 0.0, 1790806405.0, "anthropic-api", NOW, is_rejected=True, kind="rate"),
        Headroom("input-tokens", 1.0, 1790806401.0, "anthropic-api", NOW, kind="rate"),
    ]


def test_openai_api_key_headers() -> None:
    """OpenAI's documented example set: durations such as ``1s`` and ``6m0s``."""
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert parse_headers(headers, NOW) == [
        Headroom("requests", pytest.approx(59 / 60), NOW + 1, "openai-api", NOW, kind="rate"),
        Headroom("tokens", pytest.approx(149984 / 150000), NOW + 360, "openai-api", NOW, kind="rate"),
    ]


def test_codex_headers() -> None:
    headers = {
        "x-codex-primary-used-percent": "12.5",
        "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-after-seconds": "4000",
        "x-codex-secondary-used-percent": "100",
        "x-codex-secondary-window-minutes": "10080",
        "x-codex-secondary-reset-at": "1791000000",
    }
    assert parse_headers(headers, NOW) == [
        Headroom("5h", 0.875, NOW + 4000, "codex", NOW, window_s=18000.0),
        Headroom("7d", 0.0, 1791000000.0, "codex", NOW, is_rejected=True, window_s=604800.0),
    ]


def test_codex_windows_are_named_by_length_not_position() -> None:
    """Mid-2026: no 5-hour window, the weekly one in the primary position."""
    headers = {
        "x-codex-primary-used-percent": "40",
        "x-codex-primary-window-minutes": "10080",
        "x-codex-primary-reset-after-seconds": "86400",
    }
    (weekly,) = parse_headers(headers, NOW)
    assert (weekly.key, weekly.window_s) == ("7d", 604800.0)
    (unknown,) = parse_headers({"x-codex-secondary-used-percent": "1"}, NOW)
    assert unknown.key == "secondary"  # no length said: only the position is known
    odd = parse_headers({"x-codex-primary-used-percent": "1", "x-codex-primary-window-minutes": "2880"}, NOW)
    assert odd[0].key == "2880m"


def test_no_signal_is_unknown_not_zero() -> None:
    assert parse_headers({"content-type": "application/json", "retry-after": "3"}, NOW) == []
    assert parse_headers({"anthropic-ratelimit-unified-status": "allowed"}, NOW) == [
        Headroom("unified", None, None, "anthropic-unified", NOW)
    ]


def test_codex_429_body() -> None:
    body = {
        "error": {
            "type": "usage_limit_reached",
            "message": "limit",
            "plan_type": "plus",
            "resets_in_seconds": 900,
        }
    }
    assert parse_body(429, orjson.dumps(body), NOW) == [
        Headroom("usage_limit", 0.0, NOW + 900, "codex", NOW, is_rejected=True)
    ]
    body = {"error": {"type": "usage_limit_reached", "resets_at": 1790900000}}
    assert parse_body(429, orjson.dumps(body), NOW)[0].resets_at == 1790900000.0
    assert parse_body(200, orjson.dumps(body), NOW) == []


def test_openai_insufficient_quota_and_other_bodies() -> None:
    body = {
        "error": {
            "message": "You exceeded your current quota",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        }
    }
    assert parse_body(429, orjson.dumps(body), NOW) == [
        Headroom("credits", 0.0, None, "openai-api", NOW, is_rejected=True)
    ]
    assert (
        parse_body(429, b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}', NOW) == []
    )
    assert parse_body(429, b"not json", NOW) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("2.5", 2.5),
        ("", None),
        ("soon", None),
    ],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration_s(text) == seconds


def test_window_past_reset_is_full_and_round_trips_json() -> None:
    w = Headroom("5h", 0.1, NOW + 60, "anthropic-unified", NOW, is_rejected=True, window_s=18000.0)
    assert (w.left(NOW), w.is_blocking(NOW)) == (0.1, True)
    assert (w.left(NOW + 61), w.is_blocking(NOW + 61)) == (1.0, False)
    assert Headroom.from_json(orjson.loads(orjson.dumps(w.to_json()))) == w


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999", "99999999999999999999999h", "1e300"])
def test_numbers_no_window_can_have_read_as_unknown(value: str) -> None:
    """Scores, waits, Retry-After and fair shares do arithmetic and int() on these."""
    openai = {
        "x-ratelimit-limit-requests": value,
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": value,
    }
    unified = {
        "anthropic-ratelimit-unified-5h-utilization": value,
        "anthropic-ratelimit-unified-5h-reset": value,
    }
    codex = {
        "x-codex-primary-used-percent": "50",
        "x-codex-primary-reset-after-seconds": value,
        "x-codex-primary-window-minutes": value,
    }
    windows = [*parse_headers(openai, NOW), *parse_headers(unified, NOW), *parse_headers(codex, NOW)]
    assert windows
    for w in windows:
        assert w.resets_at is None and w.window_s in (None, 18000.0)  # 5h: known by its name
        assert w.fraction_left is None or 0.0 <= w.fraction_left <= 1.0


def test_a_tiny_window_length_reads_as_unknown() -> None:
    codex = {"x-codex-primary-used-percent": "50", "x-codex-primary-window-minutes": "1e-300"}
    assert [w.window_s for w in parse_headers(codex, NOW)] == [None]
