"""Load drivers: wrk when installed (C, not the bottleneck), else the built-in asyncio client.

Both answer one question, "drive this request at concurrency c for d seconds", with the
same ``Result``. wrk gives req/s and latency percentiles; TTFT and stream completeness need
the built-in client (``loadgen.py``), which is split over several processes so that one
Python client does not cap the figure it measures.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import orjson

BENCH_DIR = Path(__file__).resolve().parent
# A single wrk run never takes longer than this beyond its duration (startup, last answers).
WRK_GRACE_S = 30


@dataclass
class Target:
    """One server under test: ``direct`` (the mock), ``baseline`` (pass-through) or ``proxygate``."""

    name: str
    port: int
    pid: int = 0


@dataclass
class Load:
    """What to send: a path, a body file and the headers a client would add."""

    path: str
    body: Path
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    ok: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float = math.nan
    ttft_p99_ms: float = math.nan
    complete: int = 0
    cpu_s: float = math.nan
    "CPU seconds the server process (all its threads) used during the measured run."
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.ok * 1e6 if self.ok else math.nan


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far, all threads (/proc/<pid>/stat)."""
    if not pid:
        return math.nan
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(int(q / 100 * len(ordered)), len(ordered) - 1)]


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


_WRK_SCRIPT = """
wrk.method = "POST"
local f = assert(io.open({body!r}, "rb"))
wrk.body = f:read("*a")
f:close()
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nRESULT {{"ok":%d,"errors":%d,"duration_us":%d,"p50":%d,"p99":%d}}\\n',
    summary.requests - e.status, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    target: Target, load: Load, concurrency: int, duration_s: float, warmup_s: float, workdir: Path
) -> Result:
    """Closed-loop load with wrk; a warm-up run first, whose figures are dropped."""
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in load.headers.items())
    script = workdir / "wrk.lua"
    script.write_text(_WRK_SCRIPT.format(body=str(load.body), headers=headers))
    threads = min(2, concurrency)
    url = f"http://127.0.0.1:{target.port}{load.path}"

    def wrk(seconds: float) -> str:
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(seconds, 1):.0f}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + WRK_GRACE_S, check=False)
        return out.stdout

    if warmup_s > 0:
        wrk(warmup_s)
    cpu0 = process_cpu_s(target.pid)
    stdout = wrk(duration_s)
    cpu = process_cpu_s(target.pid) - cpu0
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return Result(0, 1, duration_s, math.nan, math.nan, error_samples=[stdout[-300:]])
    data = orjson.loads(line[7:])
    return Result(
        ok=data["ok"],
        errors=data["errors"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        cpu_s=cpu,
    )


def run_asyncio(
    target: Target,
    load: Load,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    *,
    processes: int = 2,
    requests: int = 0,
    barrier: bool = False,
    ramp_s: float = 0.0,
    on_ready: object = None,
) -> Result:
    """The built-in client in ``processes`` processes; ``requests`` caps answers per process."""
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    procs = []
    for share in shares:
        cmd = [
            sys.executable,
            str(BENCH_DIR / "loadgen.py"),
            "--port",
            str(target.port),
            "--path",
            load.path,
            "--body",
            str(load.body),
            "--headers",
            orjson.dumps(load.headers).decode(),
            "-c",
            str(share),
            "-d",
            str(duration_s),
            "--warmup",
            str(warmup_s),
        ]
        if requests:
            cmd += ["--requests", str(share if barrier else requests)]
        if barrier:
            cmd.append("--barrier")
        if ramp_s:
            cmd += ["--ramp", str(ramp_s)]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    cpu0 = process_cpu_s(target.pid)
    if barrier:
        for proc in procs:  # every connection is open before the first request goes out
            assert proc.stdout is not None
            proc.stdout.readline()
        if callable(on_ready):
            on_ready()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
    latencies: list[float] = []
    ttfts: list[float] = []
    ok = errors = complete = 0
    samples: list[str] = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=duration_s + warmup_s + 120)
        data = orjson.loads(stdout.strip().splitlines()[-1])
        ok += data["ok"]
        errors += data["errors"]
        complete += data["complete"]
        latencies += data["latency_s"]
        ttfts += data["ttft_s"]
        samples += data["error_samples"]
    cpu = process_cpu_s(target.pid) - cpu0
    seconds = duration_s if not requests else max(latencies, default=0.0)
    return Result(
        ok=ok,
        errors=errors,
        seconds=seconds,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        ttft_p50_ms=percentile(ttfts, 50) * 1000,
        ttft_p99_ms=percentile(ttfts, 99) * 1000,
        complete=complete,
        cpu_s=cpu,
        error_samples=samples[:5],
    )
