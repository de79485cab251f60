"""What a dashboard watching live traffic costs the fast path: server CPU µs per request.

Starts the mock upstream and `proxygate serve` (bench/run.py's ``Servers``), then sends the
same non-streaming 21.6 KB Anthropic request N times (bench/loadgen.py, 8 connections),
alternately with no subscriber and with one reader of ``/admin/api/traffic/stream`` (what
the Traffic page holds open). Server CPU is read from /proc/<pid>/stat around each batch.
Best of 3 per mode, in the same run; prints one JSON line and a sentence.

    .venv/bin/python bench/live_feed.py [--requests 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from run import Servers, child_env  # noqa: E402
from workloads import anthropic_request, body_bytes  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Subscriber:
    """One live-traffic reader, as the Traffic page: reads every event as it comes."""

    def __init__(self, port: int, token: str) -> None:
        self.events = 0
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", "/admin/api/traffic/stream", headers={"authorization": f"Bearer {token}"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.status
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.response:
                if line.startswith(b"data: "):
                    self.events += 1
        except (OSError, ValueError):
            pass  # closed by stop()

    def stop(self) -> None:
        self.conn.sock.close() if self.conn.sock else None
        self.thread.join(5)


def loadgen_batch(
    port: int, body_file: Path, requests: int, *, concurrency: int, duration_s: float
) -> dict[str, Any]:
    """``requests`` Anthropic JSON requests through the built-in client; its stats, errors refused."""
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH_DIR / "loadgen.py"),
            "--port",
            str(port),
            "--path",
            "/v1/messages",
            "--body",
            str(body_file),
            "-c",
            str(concurrency),
            "-d",
            str(duration_s),
            "--requests",
            str(requests),
            "--headers",
            orjson.dumps({"content-type": "application/json", "anthropic-version": "2023-06-01"}).decode(),
        ],
        capture_output=True,
        check=True,
        env=child_env(),
    )
    stats: dict[str, Any] = orjson.loads(out.stdout)
    assert not stats["errors"], stats.get("error_samples", stats["errors"])
    return stats


def batch(port: int, body_file: Path, requests: int) -> int:
    return int(loadgen_batch(port, body_file, requests, concurrency=8, duration_s=120)["ok"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="proxygate-live-") as tmp:
        workdir = Path(tmp)
        servers = Servers(workdir)
        try:
            servers.start()
            target = servers.targets["proxygate"]
            token = (workdir / "proxygate" / "data" / "admin.token").read_text().strip()
            body_file = workdir / "request.json"
            body_file.write_bytes(body_bytes(anthropic_request()))
            batch(target.port, body_file, 500)  # warm up: imports, connections, caches
            results: dict[str, list[float]] = {"none": [], "subscribed": []}
            delivered = 0
            for _ in range(args.rounds):
                for mode in ("none", "subscribed"):
                    subscriber = Subscriber(target.port, token) if mode == "subscribed" else None
                    before = cpu_s(target.pid)
                    ok = batch(target.port, body_file, args.requests)
                    used = cpu_s(target.pid) - before
                    if subscriber is not None:
                        subscriber.stop()
                        delivered += subscriber.events
                    results[mode].append(used / ok * 1e6)
        finally:
            servers.stop()
    best = {mode: min(values) for mode, values in results.items()}
    ratio = best["subscribed"] / best["none"]
    print(
        orjson.dumps(
            {
                "cpu_us_per_request": {m: round(v, 1) for m, v in best.items()},
                "runs": {m: [round(v, 1) for v in vs] for m, vs in results.items()},
                "ratio": round(ratio, 4),
                "events_delivered": delivered,
                "requests_per_batch": args.requests,
            }
        ).decode()
    )
    print(
        f"server CPU per request, best of {args.rounds}: {best['none']:.0f} µs without a subscriber, "
        f"{best['subscribed']:.0f} µs with one ({(ratio - 1) * 100:+.1f} %)"
    )


if __name__ == "__main__":
    main()
