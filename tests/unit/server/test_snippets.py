"""Client set-up snippets: right URL per client, parseable files, never the proxy token."""

from __future__ import annotations

import tomllib
from pathlib import Path

import orjson
import pytest

from proxygate.config import load_settings
from proxygate.server.snippets import (
    CLIENTS,
    all_snippets,
    base_url_of,
    needs_token,
    snippets_for,
)


@pytest.mark.parametrize(
    ("addr", "url"),
    [
        ("127.0.0.1:19527", "http://127.0.0.1:19527"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("[::]:8080", "http://[::1]:8080"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("localhost:1234", "http://localhost:1234"),
    ],
)
def test_base_url_is_how_a_local_client_reaches_the_address(addr: str, url: str) -> None:
    assert base_url_of(load_settings(None, {"PROXYGATE_ADDR": addr}, cwd=Path("/"))) == url


def test_every_client_has_snippets_and_none_holds_the_token() -> None:
    settings = load_settings(None, {"PROXYGATE_PROXY_TOKEN": "sk-very-secret-f3a9"}, cwd=Path("/"))
    assert needs_token(settings)
    snippets = all_snippets(base_url_of(settings), needs_token(settings))
    assert {s.client for s in snippets} == set(CLIENTS)
    for snippet in snippets:
        assert "sk-very-secret" not in snippet.text + snippet.note + snippet.title
        assert snippet.text.endswith("\n")


def test_structured_files_parse_and_point_at_the_server() -> None:
    base = "http://127.0.0.1:4000"
    by_file = {s.file: s for s in all_snippets(base, False)}
    claude = orjson.loads(by_file["~/.claude/settings.json"].text)
    assert claude == {"env": {"ANTHROPIC_BASE_URL": base, "ANTHROPIC_AUTH_TOKEN": "proxygate"}}
    codex = tomllib.loads(by_file["~/.codex/config.toml"].text)
    assert codex == {
        "model_provider": "proxygate",
        "model_providers": {
            "proxygate": {"name": "proxygate", "base_url": f"{base}/v1", "wire_api": "responses"}
        },
    }
    opencode = orjson.loads(by_file["~/.config/opencode/opencode.json"].text)
    assert opencode["provider"]["anthropic"]["options"] == {"baseURL": f"{base}/v1", "apiKey": "proxygate"}
    assert by_file["~/.gemini/.env"].text == f"GOOGLE_GEMINI_BASE_URL={base}\nGEMINI_API_KEY=proxygate\n"


def test_with_a_token_clients_read_it_from_the_environment() -> None:
    base = "http://127.0.0.1:4000"
    claude = orjson.loads(snippets_for("claude-code", base, True)[0].text)
    assert claude == {"env": {"ANTHROPIC_BASE_URL": base}, "apiKeyHelper": "printenv PROXYGATE_KEY"}
    codex = tomllib.loads(snippets_for("codex", base, True)[0].text)
    assert codex["model_providers"]["proxygate"]["env_key"] == "PROXYGATE_KEY"
    assert 'api_key=os.environ["PROXYGATE_KEY"]' in snippets_for("openai-sdk", base, True)[0].text
    assert '"x-api-key: $PROXYGATE_KEY"' in snippets_for("curl", base, True)[0].text
