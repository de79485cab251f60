"""The dashboard in a real browser (chromium) against the real server and a scripted upstream.

One server and one logged-in browser context for the module: the tests run in file order,
each leaving the pool as the next expects. Screenshots go to tests/browser/artifacts/.
"""

from __future__ import annotations

import http.client
import stat
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import anthropic
import orjson
import pytest

from tests.browser.conftest import ARTIFACTS, Served
from tests.upstream import anthropic_message, ok_json, status

PAGES = ("/", "/add", "/traffic", "/usage", "/routing", "/setup")
PRICED_MODEL = "claude-sonnet-4-5"


def wait_until(check: Any, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def ask(served: Served, model: str = PRICED_MODEL) -> Any:
    """One request as a client makes it: the anthropic SDK, through the proxy."""
    client = anthropic.Anthropic(base_url=served.url, api_key="any", max_retries=0)
    return client.messages.with_raw_response.create(
        model=model, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )


@pytest.fixture(scope="module")
def context(browser: Any, served: Served) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=served.url)
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.url)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def console_errors() -> list[str]:
    return []


@pytest.fixture(scope="module")
def page(context: Any, console_errors: list[str]) -> Any:
    p = context.new_page()
    p.on("console", lambda m: console_errors.append(f"{p.url}: {m.text}") if m.type == "error" else None)
    p.on("pageerror", lambda e: console_errors.append(f"{p.url}: {e}"))
    return p


def test_log_in_with_the_token_and_see_every_account(page: Any, served: Served) -> None:
    page.goto("/")
    assert "/login" in page.url
    page.get_by_label("Admin token").fill(served.token)
    page.keyboard.press("Enter")
    page.wait_for_url(served.url + "/")
    for name in ("alpha", "bravo", "charlie"):
        page.get_by_role("heading", name=name, exact=True).wait_for()
    cookie = next(c for c in page.context.cookies() if c["name"] == "proxygate_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_a_one_time_link_logs_a_fresh_browser_in_without_typing(browser: Any, served: Served) -> None:
    request = urllib.request.Request(
        served.url + "/admin/api/dashboard/login-link",
        method="POST",
        headers={"authorization": f"Bearer {served.token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        link = served.url + orjson.loads(resp.read())["path"]
    fresh = browser.new_context(base_url=served.url)
    try:
        tab = fresh.new_page()
        tab.goto(link)
        tab.wait_for_url(served.url + "/")
        tab.get_by_role("heading", name="alpha", exact=True).wait_for()
        other = browser.new_context(base_url=served.url)  # the same link again: refused
        try:
            again = other.new_page()
            again.goto(link)
            again.get_by_role("alert").wait_for()
            assert "/login" in again.url
        finally:
            other.close()
    finally:
        fresh.close()


def _card(page: Any, name: str) -> Any:
    return page.locator(f'article[data-account="{name}"]')


def _tab_to(page: Any, key: str) -> None:
    """Keyboard only: Tab until the control ``data-key=key`` has the focus."""
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement?.dataset?.key") == key:
            return
    raise AssertionError(f"Tab never reached {key}")


def test_disable_by_keyboard_and_the_next_request_goes_elsewhere_then_enable(
    page: Any, served: Served
) -> None:
    assert ask(served).headers["x-proxygate-account"] == "alpha"  # highest priority
    page.goto("/")
    _card(page, "alpha").get_by_role("button", name="Disable").wait_for()
    _tab_to(page, "toggle:alpha")
    page.keyboard.press("Enter")
    assert wait_until(lambda: served.account_file("alpha").get("disabled") is True)
    assert ask(served).headers["x-proxygate-account"] == "bravo"
    _card(page, "alpha").get_by_text("disabled", exact=True).wait_for()
    enable = _card(page, "alpha").get_by_role("button", name="Enable")
    enable.wait_for()
    assert page.evaluate("document.activeElement?.dataset?.key") == "toggle:alpha"  # focus kept
    page.keyboard.press("Enter")
    assert wait_until(lambda: served.account_file("alpha").get("disabled") is False)
    assert ask(served).headers["x-proxygate-account"] == "alpha"


def test_add_an_api_key_through_the_form(page: Any, served: Served) -> None:
    page.goto("/add")
    page.get_by_label("Provider").select_option("anthropic")
    page.get_by_label("API key", exact=True).fill("sk-ant-delta-secret-4242")
    page.get_by_label("Account id").fill("delta")
    page.get_by_label("Base URL").fill(served.upstream.url)
    page.get_by_label("Priority").fill("0")
    page.get_by_role("button", name="Add key").click()
    page.wait_for_url(served.url + "/")
    page.get_by_role("heading", name="delta", exact=True).wait_for()
    path = served.pool_dir / "apikeys" / "delta.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert orjson.loads(path.read_bytes())["api_key"] == "sk-ant-delta-secret-4242"
    assert "sk-ant-delta-secret-4242" not in page.content()


def test_a_claude_login_started_from_the_page_ends_on_the_pool_page(page: Any, served: Served) -> None:
    page.goto("/add")
    page.get_by_role("button", name="Log in with Claude").click()
    link = page.get_by_role("link", name="Open the Claude sign-in page")
    link.wait_for()
    state = parse_qs(urlparse(link.get_attribute("href")).query)["state"][0]
    # The token endpoint's answer (the upstream mock stands in for Claude's authorization server).
    served.upstream.push(
        ok_json(
            {
                "access_token": "sk-ant-oat-page",
                "refresh_token": "sk-ant-ort-page",
                "expires_in": 3600,
                "account": {"email_address": "max@example.com"},
            }
        )
    )
    page.get_by_label("Paste the code shown after signing in").fill(f"pasted-code#{state}")
    page.get_by_role("button", name="Finish login").click()
    page.wait_for_url(served.url + "/")
    page.get_by_role("heading", name="max@example.com", exact=True).wait_for()
    assert served.upstream.requests[-1].body["code"] == "pasted-code"
    path = served.pool_dir / "claude" / "max@example.com.json"
    assert path.exists()
    # Delete it again (after a confirmation): a subscription would send the next requests to the
    # real provider, and these tests stay on loopback.
    _card(page, "max@example.com").get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Delete").click()
    page.get_by_role("heading", name="max@example.com", exact=True).wait_for(state="detached")
    assert not path.exists()


def test_reset_a_cooling_account(page: Any, served: Served) -> None:
    served.upstream.standing["sk-ant-alpha"] = status(429, headers={"retry-after": "600"})
    try:
        assert ask(served).headers["x-proxygate-account"] == "bravo"  # alpha 429s, failover
    finally:
        del served.upstream.standing["sk-ant-alpha"]
    page.goto("/")
    card = _card(page, "alpha")
    card.get_by_text("cooling down", exact=False).wait_for()
    card.get_by_role("button", name="Reset").click()
    card.get_by_text("ready", exact=True).wait_for()
    assert ask(served).headers["x-proxygate-account"] == "alpha"


def test_switch_the_routing_config(page: Any, served: Served) -> None:
    page.goto("/routing")
    page.get_by_role("button", name="Use spread").click()
    page.get_by_text("Routing now: spread/round-robin").wait_for()
    page.get_by_role("heading", name="spread (active)").wait_for()
    assert ask(served).headers["x-proxygate-route"].startswith("spread/")
    page.get_by_role("button", name="Use default").click()
    page.get_by_role("heading", name="default (active)").wait_for()


def test_aliases_edited_on_the_routing_page_are_written_to_config_toml_and_apply_at_once(
    page: Any, served: Served
) -> None:
    page.goto("/routing")
    page.get_by_label("Aliases, one per line").fill("fast = claude-sonnet-4-5")
    page.get_by_role("button", name="Save aliases").click()
    page.get_by_text("applied now.", exact=False).wait_for()
    text = (served.root / "config.toml").read_text()
    assert "# the browser tests' server" in text and 'fast = "claude-sonnet-4-5"' in text
    assert (served.root / "config.toml.bak").exists()
    ask(served, model="fast")
    assert served.upstream.requests[-1].body["model"] == "claude-sonnet-4-5"


def test_a_request_made_by_the_sdk_appears_live_on_traffic(page: Any, served: Served) -> None:
    page.goto("/traffic")
    page.get_by_text("Live: new requests appear at the top.").wait_for()
    rid = ask(served).headers["x-proxygate-request-id"]
    page.get_by_role("button", name=rid).wait_for(timeout=5000)
    page.get_by_role("button", name=rid).click()
    page.get_by_text("attempt(s); served by").first.wait_for()


def test_usage_shows_a_cost(page: Any, served: Served) -> None:
    page.goto("/usage")
    cost = page.locator(".totals dt", has_text="API cost").locator("xpath=following-sibling::dd")
    cost.wait_for()
    assert wait_until(lambda: cost.inner_text().startswith("$"))
    assert cost.inner_text() != "$0.0000"
    page.locator("#chart-group svg").wait_for()


def test_copy_the_claude_code_snippet_and_find_the_server_url(page: Any, served: Served) -> None:
    page.goto("/setup")
    section = page.locator("#client-claude-code")
    section.get_by_role("button", name="Copy").first.click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert served.url in copied and "ANTHROPIC_BASE_URL" in copied
    assert served.token not in page.content()


def test_a_post_without_the_csrf_token_and_a_foreign_host_are_refused(context: Any, served: Served) -> None:
    quiet = context.new_page()  # a page of its own: the refusals log console errors by design
    quiet.goto("/")
    refused = quiet.evaluate(
        """async () => (await fetch('/admin/api/accounts/alpha/disable',
             {method: 'POST', headers: {'content-type': 'application/json'}})).status"""
    )
    assert refused == 403
    assert served.account_file("alpha").get("disabled") is not True
    cookie = next(c for c in context.cookies() if c["name"] == "proxygate_session")
    for path in ("/", "/admin/api/status"):
        conn = http.client.HTTPConnection(served.url.removeprefix("http://"), timeout=5)
        conn.request(
            "GET",
            path,
            headers={
                "host": "evil.example",
                "cookie": f"proxygate_session={cookie['value']}",
                "authorization": f"Bearer {served.token}",
            },
        )
        assert conn.getresponse().status == 403, path
        conn.close()
    quiet.close()


def test_quota_windows_show_as_bars_with_time_to_reset(page: Any, served: Served) -> None:
    reset = datetime.fromtimestamp(time.time() + 2 * 3600 + 300, UTC).isoformat()
    headers = {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "640",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "400000",
        "anthropic-ratelimit-tokens-remaining": "92000",
        "anthropic-ratelimit-tokens-reset": reset,
    }
    served.upstream.standing["sk-ant-alpha"] = status(200, anthropic_message(), headers)
    try:
        assert ask(served).headers["x-proxygate-account"] == "alpha"
    finally:
        del served.upstream.standing["sk-ant-alpha"]
    page.goto("/")
    card = _card(page, "alpha")
    card.get_by_role("meter", name="tokens: 23% left").wait_for()
    card.get_by_text("64% left · resets in 2h 4m", exact=False).or_(
        card.get_by_text("64% left · resets in 2h 5m", exact=False)
    ).wait_for()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_screenshotted_readable_at_390_px_with_named_controls(
    context: Any, page: Any, scheme: str, console_errors: list[str]
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.emulate_media(color_scheme=scheme)
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        for path in PAGES:
            page.goto(path)
            page.wait_for_load_state("networkidle") if path != "/traffic" else page.wait_for_timeout(500)
            page.wait_for_timeout(300)
            name = (path.strip("/") or "pool") + f"-{width}-{scheme}.png"
            page.screenshot(path=str(ARTIFACTS / name), full_page=True)
            if width == 390:
                assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
            unnamed = page.evaluate(
                """() => [...document.querySelectorAll('a, button, input:not([type=hidden]), select, meter')]
                    .filter((el) => !(el.getAttribute('aria-label') || (el.labels && el.labels.length &&
                        el.labels[0].textContent.trim()) || el.textContent.trim()))
                    .map((el) => el.outerHTML.slice(0, 80))"""
            )
            assert unnamed == [], path
    page.set_viewport_size({"width": 1280, "height": 800})
    assert console_errors == []
