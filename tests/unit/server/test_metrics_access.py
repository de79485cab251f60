"""Who may scrape /metrics, and how free-text cooldown reasons become bounded labels."""

from __future__ import annotations

import os
from pathlib import Path

from proxygate.features.metrics import status_class
from proxygate.server.metrics import cooldown_reason, may_scrape, read_admin_token_file

TOKENS = ("admin-1", "", "from-file-3")


def test_loopback_peers_need_no_token() -> None:
    assert [may_scrape(peer, "", TOKENS) for peer in ("127.0.0.1", "::1", "127.0.0.9")] == [True] * 3


def test_other_peers_need_one_of_the_tokens() -> None:
    assert [may_scrape("192.0.2.7", given, TOKENS) for given in ("admin-1", "from-file-3")] == [True, True]
    assert [may_scrape("192.0.2.7", given, TOKENS) for given in ("", "admin-2", "x")] == [False] * 3
    assert may_scrape(None, "admin-1", TOKENS) is True
    assert may_scrape(None, "", TOKENS) is False


def test_an_unset_token_never_matches_an_empty_bearer() -> None:
    assert may_scrape("192.0.2.7", "", ("", "")) is False


def test_the_generated_admin_token_file_is_read_stripped(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("tok-from-file\n")
    os.chmod(tmp_path / "admin.token", 0o600)
    assert read_admin_token_file(tmp_path) == "tok-from-file"
    assert read_admin_token_file(tmp_path / "missing") == ""


def test_cooldown_reasons_fold_into_three_labels() -> None:
    reasons = ["429: slow down (window 5h)", "rate limited", "529: overloaded", "overloaded", "500: boom", ""]
    assert [cooldown_reason(r) for r in reasons] == [
        "rate_limited",
        "rate_limited",
        "overloaded",
        "overloaded",
        "error",
        "error",
    ]


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 302, 404, 499, 529, 0)] == [
        "2xx",
        "3xx",
        "4xx",
        "4xx",
        "5xx",
        "4xx",
    ]


def test_only_llm_routes_are_counted() -> None:
    from aiohttp.test_utils import make_mocked_request

    from proxygate.server.metrics import llm_format

    cases = [
        ("POST", "/v1/messages"),
        ("POST", "/messages/count_tokens"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/responses/compact"),
        ("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent"),
        ("GET", "/metrics"),
        ("GET", "/v1/models"),
        ("GET", "/healthz"),
        ("POST", "/admin/api/route"),
        ("POST", "/admin/api/messages"),
    ]
    found = [llm_format(make_mocked_request(method, path)) for method, path in cases]
    assert [f.value if f else None for f in found] == [
        "anthropic",
        "anthropic",
        "chat",
        "responses",
        "gemini",
        None,
        None,
        None,
        None,
        None,
    ]
