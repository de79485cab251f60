"""The fault soak (bench/soak.py), CI size: `proxygate serve` as a subprocess in front of
accounts that fail on purpose before and after the first byte, plus one healthy account."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_fault_soak_ci_size(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--requests", "1200", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert out.exists(), run.stdout + run.stderr
    result = orjson.loads(out.read_bytes())
    assert result["checks"] == {
        "0 client-visible failures for faults before the first byte": True,
        "every cut stream ended with a well-formed error event": True,
        "every cut JSON answer failed over or is a JSON error in the client's format": True,
        "RSS drift < 25%": True,
        "0 leases left": True,
        "no traceback in the proxy's log": True,
        "every fault was injected": True,
    }, run.stdout
    assert result["requests"] == sum(result["outcomes"].values()) == 1200
    assert run.returncode == 0, run.stdout + run.stderr
