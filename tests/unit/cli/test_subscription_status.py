"""`status` and `list --json` show quarantines, reserves and the overage policy (issue 16)."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from proxygate.broker import AccountState
from proxygate.cli import app
from proxygate.store import COOLDOWNS, LMDBStore
from tests.oauth_fakes import oauth_account


def test_status_and_list_show_quarantine_reserve_and_overage(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('addr = "127.0.0.1:1"\npool_dir = "pool"\ndata_dir = "data"\n')
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml"), "COLUMNS": "200"}
    claude = tmp_path / "pool" / "claude"
    claude.mkdir(parents=True)
    for name, extra in (("kept", {"reserve_pct": 15, "overage": "last-resort"}), ("banned", {})):
        (claude / f"{name}.json").write_bytes(
            orjson.dumps({**oauth_account("claude", email=f"{name}@x.com"), **extra})
        )
    store = LMDBStore(tmp_path / "data")
    banned = AccountState(quarantined="permission_error: This organization has been disabled.")
    store.put_state(COOLDOWNS, "banned", banned.to_json())
    store.flush()
    store.close()

    listed = {a["id"]: a for a in orjson.loads(CliRunner().invoke(app, ["list", "--json"], env=env).stdout)}
    assert listed["banned"]["state"] == "quarantined"
    assert "permission_error" in listed["banned"]["reason"]
    assert (listed["kept"]["reserve_pct"], listed["kept"]["overage"]) == (15, "last-resort")

    output = CliRunner().invoke(app, ["status"], env=env).output
    assert "quarantined" in output and "permission_error: This organization has been disabled." in output
    assert "reserve 15%" in output and "overage last-resort" in output and "overage never" in output
