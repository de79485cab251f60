"""Shell completion: `proxygate --install-completion` is offered, and completion names commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROXYGATE = Path(sys.executable).parent / "proxygate"


def test_bash_completion_completes_command_names() -> None:
    env = {
        **os.environ,
        "_PROXYGATE_COMPLETE": "complete_bash",
        "COMP_WORDS": "proxygate se",
        "COMP_CWORD": "1",
    }
    result = subprocess.run(
        [str(PROXYGATE)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {"serve", "service", "setup"}


def test_help_offers_installing_completion() -> None:
    result = subprocess.run(
        [str(PROXYGATE), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "--install-completion" in result.stdout
