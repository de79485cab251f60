"""``proxygate check``: one minimal live call straight to the provider, latency and answer printed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import orjson
import pytest
from typer.testing import CliRunner

from proxygate.cli import app
from tests.conftest import write_account


class Provider(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str], dict[str, object]]]] = []
    status = 200

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        Provider.seen.append((self.path, dict(self.headers), body))
        payload = orjson.dumps({"type": "message", "content": [{"type": "text", "text": "ok"}]})
        self.send_response(Provider.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Provider.seen, Provider.status = [], 200
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_check_calls_the_provider_directly_and_reports(tmp_path: Path, provider: str) -> None:
    (tmp_path / "config.toml").write_text('pool_dir = "pool"\ndata_dir = "data"\n')
    write_account(
        tmp_path / "pool",
        "apikeys",
        "ant",
        {"provider": "anthropic", "api_key": "sk-ant-check-4242", "base_url": provider},
    )
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["check", "ant"], env=env)
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()[:2]
    assert first.startswith("ant (claude-haiku-4-5): HTTP 200 in ") and first.endswith(" ms")
    assert second == '{"type":"message","content":[{"type":"text","text":"ok"}]}'
    [(path, headers, body)] = Provider.seen
    assert (path, headers["x-api-key"], body) == (
        "/v1/messages",
        "sk-ant-check-4242",
        {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "Say ok."}]},
    )
    Provider.status = 401
    failed = CliRunner().invoke(app, ["check", "ant", "--model", "claude-x"], env=env)
    assert failed.exit_code == 1
    assert failed.output.splitlines()[0].startswith("ant (claude-x): HTTP 401 in ")


def test_check_an_openai_compatible_server_uses_chat_completions(tmp_path: Path, provider: str) -> None:
    """A custom base_url is not api.openai.com: Responses would 404 there (issue 10 §8)."""
    (tmp_path / "config.toml").write_text('pool_dir = "pool"\ndata_dir = "data"\n')
    write_account(
        tmp_path / "pool",
        "apikeys",
        "local",
        {"provider": "openai", "api_key": "sk-local-0000", "base_url": f"{provider}/v1"},
    )
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["check", "local"], env=env)
    assert result.exit_code == 0, result.output
    assert [path for path, _, _ in Provider.seen] == ["/v1/chat/completions"]
