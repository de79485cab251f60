"""``proxygate setup``: snippets printed from the configured address; --write merges into the
client's own file keeping everything else, --undo gives the old file back byte for byte."""

from __future__ import annotations

import tomllib
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from proxygate.cli import app

CODEX_CONFIG = """\
# my settings, keep this comment
model = "gpt-5-codex"   # trailing comment
approval_policy = "on-request"

[projects."/home/me/src"]
trust_level = "trusted"

[model_providers.ollama]
name = "Ollama"
base_url = "http://localhost:11434/v1"

[mcp_servers.docs]
command = "docs-mcp"
args = ["--stdio"]
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "config.toml").write_text('addr = "127.0.0.1:4321"\ndata_dir = "data"\npool_dir = "pool"\n')
    return tmp_path


def invoke(home: Path, *args: str, proxy_token: str | None = None) -> tuple[int, str]:
    env = {"HOME": str(home), "PROXYGATE_CONFIG": str(home / "config.toml"), "COLUMNS": "200"}
    if proxy_token is not None:
        env["PROXYGATE_PROXY_TOKEN"] = proxy_token
    result = CliRunner().invoke(app, ["setup", *args], env=env)
    return result.exit_code, result.output


def test_codex_write_keeps_every_other_key_and_undo_restores_byte_for_byte(home: Path) -> None:
    config = home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(CODEX_CONFIG)
    config.chmod(0o644)
    code, output = invoke(home, "codex", "--write")
    assert code == 0, output
    assert f"+++ {config}" in output and '+model_provider = "proxygate"' in output  # the diff came first
    text = config.read_text()
    assert "# my settings, keep this comment" in text and "# trailing comment" in text
    written = tomllib.loads(text)
    before = tomllib.loads(CODEX_CONFIG)
    assert written["model_provider"] == "proxygate"
    assert written["model_providers"] == {
        **before["model_providers"],
        "proxygate": {"name": "proxygate", "base_url": "http://127.0.0.1:4321/v1", "wire_api": "responses"},
    }
    assert {k: v for k, v in written.items() if k not in ("model_provider", "model_providers")} == {
        k: v for k, v in before.items() if k != "model_providers"
    }
    # a second write (say, after the port changed) keeps the first backup
    (home / "config.toml").write_text('addr = "127.0.0.1:5555"\n')
    assert invoke(home, "codex", "--write")[0] == 0
    assert tomllib.loads(config.read_text())["model_providers"]["proxygate"]["base_url"] == (
        "http://127.0.0.1:5555/v1"
    )
    code, output = invoke(home, "codex", "--undo")
    assert code == 0, output
    assert output == f"restored {config}\n"
    assert config.read_bytes() == CODEX_CONFIG.encode()
    assert oct(config.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.toml"]


def test_write_without_a_file_creates_it_and_undo_removes_it(home: Path) -> None:
    code, output = invoke(home, "claude-code", "--write", "--yes")
    assert code == 0, output
    settings = home / ".claude" / "settings.json"
    assert orjson.loads(settings.read_bytes()) == {
        "env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:4321", "ANTHROPIC_AUTH_TOKEN": "proxygate"}
    }
    assert oct(settings.stat().st_mode & 0o777) == "0o600"
    code, output = invoke(home, "claude-code", "--undo")
    assert (code, output) == (0, f"removed {settings} (proxygate had created it)\n")
    assert list((home / ".claude").iterdir()) == []


def test_claude_code_write_merges_env_and_keeps_the_rest(home: Path) -> None:
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir()
    original = b'{"model": "opus", "env": {"DISABLE_TELEMETRY": "1"}, "permissions": {"allow": ["Bash(ls)"]}}'
    settings.write_bytes(original)
    code, output = invoke(home, "claude-code", "--write", proxy_token="pt-secret-0123")
    assert code == 0, output
    assert "pt-secret-0123" not in output + settings.read_text()
    assert orjson.loads(settings.read_bytes()) == {
        "model": "opus",
        "env": {"DISABLE_TELEMETRY": "1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:4321"},
        "permissions": {"allow": ["Bash(ls)"]},
        "apiKeyHelper": "printenv PROXYGATE_KEY",
    }
    assert invoke(home, "claude-code", "--undo")[0] == 0
    assert settings.read_bytes() == original


def test_an_unparsable_file_is_named_and_left_alone(home: Path) -> None:
    config = home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text("model = [unclosed\n")
    code, output = invoke(home, "codex", "--write")
    assert code == 1
    assert output.startswith(f"error: {config}: not valid TOML")
    assert output.rstrip().endswith("nothing was written")
    assert config.read_text() == "model = [unclosed\n"
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.toml"]


def test_gemini_write_sets_api_key_auth_and_the_env_file(home: Path) -> None:
    env_file = home / ".gemini" / ".env"
    env_file.parent.mkdir()
    env_file.write_text("FOO=bar\nGOOGLE_GEMINI_BASE_URL=https://elsewhere\n")
    assert invoke(home, "gemini", "--write")[0] == 0
    assert env_file.read_text() == (
        "FOO=bar\nGOOGLE_GEMINI_BASE_URL=http://127.0.0.1:4321\nGEMINI_API_KEY=proxygate\n"
    )
    assert orjson.loads((home / ".gemini" / "settings.json").read_bytes()) == {
        "security": {"auth": {"selectedType": "gemini-api-key"}}
    }
    assert invoke(home, "gemini", "--write")[1] == "gemini already points at this server; nothing to change\n"


def test_printing_shows_the_snippet_for_the_configured_address(home: Path) -> None:
    code, output = invoke(home, "claude-code")
    assert code == 0
    assert '"ANTHROPIC_BASE_URL": "http://127.0.0.1:4321"' in output
    assert not (home / ".claude").exists()


def test_cursor_prints_tunnel_advice_and_has_no_write(home: Path) -> None:
    code, output = invoke(home, "cursor")
    assert code == 0 and "tunnel" in output
    code, output = invoke(home, "cursor", "--write")
    assert code == 2
    assert output == (
        "error: setup cursor only prints its settings (--write and --undo are for "
        "claude-code, codex, gemini, opencode)\n"
    )


def test_unknown_client_is_a_usage_error(home: Path) -> None:
    code, output = invoke(home, "vim")
    assert code == 2 and "'vim' is not one of claude-code, codex" in output


def test_claude_code_switching_to_a_token_drops_the_placeholder_key(home: Path) -> None:
    """ANTHROPIC_AUTH_TOKEN wins over apiKeyHelper: a leftover placeholder would be sent instead."""
    settings = home / ".claude" / "settings.json"
    assert invoke(home, "claude-code", "--write")[0] == 0
    assert invoke(home, "claude-code", "--write", proxy_token="pt-1")[0] == 0
    assert orjson.loads(settings.read_bytes()) == {
        "env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:4321"},
        "apiKeyHelper": "printenv PROXYGATE_KEY",
    }
    assert invoke(home, "claude-code", "--write")[0] == 0
    assert orjson.loads(settings.read_bytes()) == {
        "env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:4321", "ANTHROPIC_AUTH_TOKEN": "proxygate"}
    }
    assert invoke(home, "claude-code", "--undo")[0] == 0
    assert not settings.exists()


def test_a_file_that_cannot_be_written_is_one_error_line(home: Path) -> None:
    (home / ".codex").write_text("a file where the directory should be")
    code, output = invoke(home, "codex", "--write")
    assert code == 1
    error = f"error: cannot write {home / '.codex' / 'config.toml'}: Not a directory"
    assert error in output.splitlines()


def test_opencode_write_keeps_the_users_providers_and_settings(home: Path) -> None:
    config = home / ".config" / "opencode" / "opencode.json"
    config.parent.mkdir(parents=True)
    original = (
        b'{"theme": "dark", "provider": {"ollama": {"options": {"baseURL": "http://localhost:11434/v1"}}}}'
    )
    config.write_bytes(original)
    assert invoke(home, "opencode", "--write")[0] == 0
    options = {"baseURL": "http://127.0.0.1:4321/v1", "apiKey": "proxygate"}
    assert orjson.loads(config.read_bytes()) == {
        "theme": "dark",
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "ollama": {"options": {"baseURL": "http://localhost:11434/v1"}},
            "anthropic": {"options": options},
            "openai": {"options": options},
        },
    }
    assert invoke(home, "opencode", "--undo")[0] == 0
    assert config.read_bytes() == original
