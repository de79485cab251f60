"""``proxygate route list`` / ``route use`` without a running server: the store remembers."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from proxygate.cli import app


def test_route_use_is_remembered_and_listed(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'addr = "127.0.0.1:1"\npool_dir = "pool"\ndata_dir = "data"\n'
        '[routing.configs.cheap]\nstrategy = "priority"\n'
        'tiers.haiku = { accounts = ["deepseek-1"], model = "deepseek-chat" }\n'
    )
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "200"}
    runner = CliRunner()
    before = orjson.loads(runner.invoke(app, ["route", "list", "--json"], env=env).stdout)
    assert [(r["name"], r["strategy"], r["active"]) for r in before] == [
        ("cheap", "priority", False),
        ("default", "drain-aware", True),
    ]
    used = runner.invoke(app, ["route", "use", "cheap"], env=env)
    assert (used.exit_code, used.output.strip()) == (
        0,
        "route: cheap/priority (no server running; applies when the server starts)",
    )
    after = orjson.loads(runner.invoke(app, ["route", "list", "--json"], env=env).stdout)
    assert [(r["name"], r["active"]) for r in after] == [("cheap", True), ("default", False)]
    assert after[0]["tiers"] == {
        "haiku": {"accounts": ["deepseek-1"], "model": "deepseek-chat", "fallback": []}
    }
    missing = runner.invoke(app, ["route", "use", "nope"], env=env)
    assert (missing.exit_code, missing.output.strip()) == (
        1,
        "error: no routing config 'nope' (configs: cheap, default)",
    )
