"""The CLI through typer's CliRunner: output as lines, exit codes, secrets masked."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from proxygate.cli import app


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "config.toml").write_text('addr = "127.0.0.1:1"\npool_dir = "pool"\ndata_dir = "data"\n')
    return {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "200"}


def run(env: dict[str, str], *args: str, stdin: str | None = None):
    return CliRunner().invoke(app, list(args), env=env, input=stdin)


def test_add_key_reads_stdin_writes_0600_and_never_prints_the_key(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = run(
        env,
        "add-key",
        "--provider",
        "openai",
        "--id",
        "work",
        "--models",
        "gpt-*,o3*",
        stdin="sk-proj-abcdef123456f3a9\n",
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "pool" / "apikeys" / "work.json"
    assert result.output.splitlines()[0].startswith("added work (openai, key sk-…f3a9) → ")
    assert "abcdef" not in result.output
    assert orjson.loads(path.read_bytes()) == {
        "provider": "openai",
        "api_key": "sk-proj-abcdef123456f3a9",
        "id": "work",
        "models": ["gpt-*", "o3*"],
    }
    assert path.stat().st_mode & 0o777 == 0o600
    again = run(env, "add-key", "--provider", "openai", "--id", "work", stdin="sk-2\n")
    assert (again.exit_code, again.output.strip()) == (
        1,
        f"error: {path} already exists: name this key with --id (e.g. --id work-2)",
    )


def test_add_key_takes_formats_priority_and_weight(tmp_path: Path, env: dict[str, str]) -> None:
    args = ("add-key", "--provider", "openai", "--base-url", "http://127.0.0.1:8000/v1")
    result = run(env, *args, "--formats", "responses, chat", "--priority", "2", "--weight", "0.5",
                 stdin="sk-local-000000000\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert orjson.loads((tmp_path / "pool" / "apikeys" / "openai.json").read_bytes()) == {
        "provider": "openai",
        "api_key": "sk-local-000000000",
        "base_url": "http://127.0.0.1:8000/v1",
        "formats": ["responses", "chat"],
        "priority": 2,
        "weight": 0.5,
    }
    clash = run(env, *args, stdin="sk-other\n")
    assert clash.exit_code == 1
    assert clash.output.strip().endswith("already exists: name this key with --id (e.g. --id openai-2)")
    bad = run(env, *args, "--id", "x", "--formats", "soap", stdin="sk-other\n")
    assert (bad.exit_code, bad.output.strip()) == (
        1,
        'error: not added: "formats" entries must be among anthropic, chat, responses, gemini',
    )


def test_bad_provider_and_empty_key_fail_with_one_line(env: dict[str, str]) -> None:
    result = run(env, "add-key", "--provider", "acme", stdin="k\n")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: unknown provider 'acme' (one of: anthropic, openai,")
    assert run(env, "add-key", "--provider", "openai", stdin="\n").output.strip() == "error: no API key given"


def test_list_disable_enable_and_status(tmp_path: Path, env: dict[str, str]) -> None:
    run(env, "add-key", "--provider", "anthropic", "--id", "ant", stdin="sk-ant-api03-zzzzzzzz9999\n")
    (tmp_path / "pool" / "apikeys" / "bad.json").write_text("[1, 2")
    listed = run(env, "list", "--json")
    assert listed.exit_code == 0
    [entry] = orjson.loads(listed.stdout)
    assert {k: entry[k] for k in ("id", "kind", "provider", "enabled", "state")} == {
        "id": "ant",
        "kind": "apikey",
        "provider": "anthropic",
        "enabled": True,
        "state": "ready",
    }
    assert "zzzz" not in listed.output
    note = " (no server running; applies when the server starts)"
    assert run(env, "disable", "ant").output.strip() == "disabled ant" + note
    assert orjson.loads(run(env, "list", "--json").stdout)[0]["state"] == "disabled"
    assert run(env, "enable", "ant").output.strip() == "enabled ant" + note
    status = run(env, "status")
    lines = status.output.splitlines()
    assert lines[0] == "proxygate not running on http://127.0.0.1:1"
    assert any(
        line.startswith(f"  {tmp_path / 'pool' / 'apikeys' / 'bad.json'}: malformed JSON") for line in lines
    )
    missing = run(env, "disable", "ghost")
    assert (missing.exit_code, missing.output.strip()) == (
        1,
        "error: no account 'ghost' in the pool (see `proxygate list`)",
    )


def test_import_keys_reports_each_entry(tmp_path: Path, env: dict[str, str]) -> None:
    source = tmp_path / "keys.json"
    source.write_bytes(
        orjson.dumps(
            {
                "keys": [
                    {"id": "k1", "provider": "deepseek", "api_key": "sk-1111111111"},
                    {"id": "k1", "provider": "deepseek", "api_key": "sk-2222222222"},
                    {"id": "k3", "provider": "nope", "api_key": "sk-3"},
                ]
            }
        )
    )
    result = run(env, "import-keys", "--from", str(source))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"added {tmp_path / 'pool' / 'apikeys' / 'k1.json'}",
        "duplicate entry 2: k1 is already in the pool; skipped",
        "invalid entry 3: unknown provider 'nope' (one of: anthropic, openai, codex, openrouter, gemini, deepseek, glm, cerebras, minimax, custom)",
        "1 added, 1 duplicate, 1 invalid",
    ]


def test_serve_refuses_a_public_address_without_a_token(env: dict[str, str]) -> None:
    result = run(env, "serve", "--addr", "0.0.0.0:19999")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: addr: 0.0.0.0:19999 listens beyond this machine")


def test_bad_config_value_is_one_line(env: dict[str, str]) -> None:
    result = run({**env, "PROXYGATE_TIMEOUTS_IDLE_S": "soon"}, "list")
    assert (result.exit_code, result.output.strip()) == (
        1,
        "error: timeouts.idle_s (env PROXYGATE_TIMEOUTS_IDLE_S): expected a number, got 'soon'",
    )
