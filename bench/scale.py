"""Scaling out (issue 17): one worker on LMDB, one on Redis, two on Redis — in the same run.

Starts the mock upstream (bench/mock_upstream.py) and a throwaway ``redis-server`` (no
persistence, a free port), then for each setup starts ``proxygate serve`` with the same pool
and drives Anthropic JSON and canned SSE (200 deltas) at c=64 with wrk (best of ``--repeat``
runs after a warm-up; the built-in client when wrk is missing). For the Redis setups it reads
``INFO commandstats`` before and after each measured run: Redis commands per request, and
the commands the instances send while idle (heartbeats, change feed) per second. All setups
run side by side (each Redis setup with its own redis-server) and the measured runs take turns.

    .venv/bin/python bench/scale.py [--duration 10] [--repeat 2] [--setups lmdb-1,redis-1,redis-2]

On a 2-core machine the load generator, the mock, Redis and the workers share the cores:
the 2-worker figure is a ratio on this machine, not what two dedicated cores would give.
Prints one JSON object and a table (markdown) for bench/README.md's "Scaling out (issue 17)".
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from drivers import Load, Result, Target, have_wrk, process_cpu_s, run_asyncio, run_wrk  # noqa: E402
from run import ANTHROPIC_HEADERS, REPO, STARTUP_LIMIT_S, Servers, child_env, free_port, wait_http  # noqa: E402
from workloads import anthropic_request, body_bytes  # noqa: E402

CONCURRENCY = 64
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
IDLE_S = 3.0
"How long the idle Redis traffic of a setup is counted."


@dataclass(frozen=True)
class Setup:
    name: str
    workers: int
    backend: str

    def config(self, redis_port: int) -> str:
        text = f"workers = {self.workers}\n"
        if self.backend == "redis":
            text += (
                f'[store]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:{redis_port}/0"\n'
                f'key_prefix = "bench-{self.name}"\n'
            )
        return text


SETUPS = {
    "lmdb-1": Setup("lmdb-1", 1, "lmdb"),
    "redis-1": Setup("redis-1", 1, "redis"),
    "redis-2": Setup("redis-2", 2, "redis"),
    "lmdb-2": Setup("lmdb-2", 2, "lmdb"),
}


# -- Redis -------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    """A redis-server on a free loopback port with no persistence; stopped on exit."""
    port = free_port()
    data = workdir / "redis"
    data.mkdir(parents=True)
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while True:
            with contextlib.suppress(OSError):
                if redis_calls(port) is not None:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def redis_calls(port: int) -> dict[str, int]:
    """Calls per command since the server started (``INFO commandstats``), the INFO calls left out."""
    import redis  # the client proxygate uses; imported here so the LMDB-only run does not need it

    client = redis.Redis(port=port, socket_timeout=5)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent not idle (all cores, /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0) > 0}


# -- one setup ---------------------------------------------------------------------------------


class Proxygate:
    """``proxygate serve`` for one setup, on the bench's pool; stopped with SIGTERM."""

    def __init__(self, workdir: Path, mock_port: int, setup: Setup, redis_port: int) -> None:
        self.root = workdir / setup.name
        self.root.mkdir(exist_ok=True)
        # bench/run.py's pool and config (anthropic, openai and deepseek keys on the mock)
        config = Servers(self.root).write_pool(mock_port)
        self.port = free_port()
        config.write_text(config.read_text().replace("{port}", str(self.port)) + setup.config(redis_port))
        self.log = open(self.root / "proxygate.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxygate", "serve", "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=REPO,
        )
        wait_http(self.port, "/healthz", STARTUP_LIMIT_S)
        if setup.workers > 1:
            wait_workers(self.port, setup.workers)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wait_workers(port: int, count: int) -> None:
    """Until ``count`` distinct pids answer /healthz (new connections), so every worker is up."""
    seen: set[int] = set()
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {count} workers answered")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            seen.add(int(orjson.loads(conn.getresponse().read())["pid"]))
            conn.close()


def drive(target: Target, load: Load, duration_s: float, workdir: Path) -> Result:
    if have_wrk():
        return run_wrk(target, load, CONCURRENCY, duration_s, 0, workdir)
    return run_asyncio(target, load, CONCURRENCY, duration_s, 0, processes=2)


@dataclass
class Running:
    """One setup under test: its proxygate and its own Redis (so each counts only its commands)."""

    setup: Setup
    proxygate: Proxygate
    redis_port: int
    runs: dict[str, list[tuple[Result, dict[str, int], float]]] = field(default_factory=dict)
    "Per load: each run's result, Redis calls and the share of the machine's CPU in use (all processes)."

    @property
    def target(self) -> Target:
        return Target(self.setup.name, self.proxygate.port, self.proxygate.proc.pid)

    def calls(self) -> dict[str, int]:
        return redis_calls(self.redis_port) if self.setup.backend == "redis" else {}

    def cpu_s(self) -> float:
        """CPU seconds of proxygate so far: the process and, with workers, each of them."""
        pid = self.proxygate.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return process_cpu_s(pid) + sum(process_cpu_s(int(child)) for child in children)

    def measure(self, kind: str, load: Load, duration_s: float, workdir: Path) -> Result:
        before, cpu_before, busy_before = self.calls(), self.cpu_s(), machine_busy_s()
        result = drive(self.target, load, duration_s, workdir)
        result.cpu_s = self.cpu_s() - cpu_before
        busy = (machine_busy_s() - busy_before) / (os.cpu_count() or 1) / result.seconds
        self.runs.setdefault(kind, []).append((result, calls_between(before, self.calls()), busy))
        return result

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workers": self.setup.workers, "backend": self.setup.backend}
        for kind, runs in self.runs.items():
            result, calls, busy = max(runs, key=lambda run: run[0].rps)
            entry: dict[str, Any] = {
                "rps": round(result.rps, 1),
                "p50_ms": round(result.p50_ms, 2),
                "p99_ms": round(result.p99_ms, 2),
                "errors": sum(run[0].errors for run in runs),
                "proxygate_cpu_us_per_request": round(result.cpu_us_per_request, 1),
                "machine_busy": round(busy, 3),
                "runs_rps": [round(run[0].rps, 1) for run in runs],
            }
            if self.setup.backend == "redis" and result.ok:
                entry["redis_commands_per_request"] = round(sum(calls.values()) / result.ok, 3)
                entry["redis_commands"] = dict(sorted(calls.items(), key=lambda kv: -kv[1])[:8])
            out[kind] = entry
        if self.setup.backend == "redis":
            before = self.calls()
            time.sleep(IDLE_S)
            out["redis_idle_commands_per_s"] = round(
                sum(calls_between(before, self.calls()).values()) / IDLE_S, 1
            )
        return out


def measure_all(
    running: list[Running], loads: dict[str, Load], args: argparse.Namespace, workdir: Path, log: Any
) -> None:
    """Every setup stays up (idle ones cost next to nothing); runs take turns, so a busy moment
    of the machine falls on every setup alike rather than on the one measured then."""
    for kind, load in loads.items():
        for one in running:
            drive(one.target, load, args.warmup, workdir)  # imports, pools, caches
        for round_ in range(args.repeat):
            for one in running:
                result = one.measure(kind, load, args.duration, workdir)
                log(
                    f"  round {round_ + 1} {one.setup.name:8} {kind:5} {result.rps:8.0f} req/s  "
                    f"p99 {result.p99_ms:7.1f} ms  proxygate {result.cpu_us_per_request:5.0f} µs/req  "
                    f"machine busy {one.runs[kind][-1][2]:.0%}  errors {result.errors}"
                )


# -- the report --------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lmdb = results.get("lmdb-1", {})
    one = results.get("redis-1", {})
    lines = [
        "| setup | JSON c=64 (req/s) | SSE c=64 (streams/s) | vs 1 worker LMDB (JSON / SSE) "
        "| vs 1 worker Redis (JSON / SSE) | Redis commands per request (JSON / SSE) "
        "| proxygate CPU µs per request (JSON / SSE) | machine CPU busy (JSON / SSE) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(a: dict[str, Any], b: dict[str, Any], kind: str) -> str:
        return (
            f"{a[kind]['rps'] / b[kind]['rps']:.2f}×" if kind in a and kind in b and b[kind]["rps"] else "—"
        )

    for r in results.values():
        per_req = " / ".join(str(r[k].get("redis_commands_per_request", "—")) for k in ("json", "sse"))
        lines.append(
            f"| {r['workers']} worker{'s' if r['workers'] > 1 else ''}, {r['backend']} "
            f"| {r['json']['rps']:.0f} | {r['sse']['rps']:.0f} "
            f"| {ratio(r, lmdb, 'json')} / {ratio(r, lmdb, 'sse')} "
            f"| {ratio(r, one, 'json')} / {ratio(r, one, 'sse')} | {per_req} "
            f"| {r['json']['proxygate_cpu_us_per_request']:.0f} / {r['sse']['proxygate_cpu_us_per_request']:.0f} "
            f"| {r['json']['machine_busy']:.0%} / {r['sse']['machine_busy']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per setup and load")
    parser.add_argument("--repeat", type=int, default=2, help="measured runs per setup and load (best kept)")
    parser.add_argument("--setups", default="lmdb-1,redis-1,redis-2", help=f"of {', '.join(SETUPS)}")
    args = parser.parse_args()
    setups = [SETUPS[name] for name in args.setups.split(",")]

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="proxygate-scale-") as tmp:
        workdir = Path(tmp)
        mock_port = free_port()
        mock = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--port", str(mock_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_env(),
        )
        try:
            wait_http(mock_port, "/", STARTUP_LIMIT_S)
            loads = {}
            for kind, stream in (("json", False), ("sse", True)):
                body = workdir / f"{kind}.json"
                body.write_bytes(body_bytes(anthropic_request(stream=stream)))
                loads[kind] = Load("/v1/messages", body, ANTHROPIC_HEADERS)
            with contextlib.ExitStack() as stack:
                running = []
                for setup in setups:
                    redis_port = (
                        stack.enter_context(redis_server(workdir / setup.name))
                        if setup.backend == "redis"
                        else 0
                    )
                    proxygate = Proxygate(workdir, mock_port, setup, redis_port)
                    stack.callback(proxygate.stop)
                    running.append(Running(setup, proxygate, redis_port))
                measure_all(running, loads, args, workdir, log)
                results = {one.setup.name: one.report() for one in running}
        finally:
            mock.terminate()
            mock.wait(10)
    summary: dict[str, Any] = {
        "setups": results,
        "cpus": os.cpu_count(),
        "driver": "wrk" if have_wrk() else "asyncio",
    }
    if "lmdb-1" in results and "redis-1" in results:
        summary["redis_1_vs_lmdb_1"] = {
            k: round(results["redis-1"][k]["rps"] / results["lmdb-1"][k]["rps"], 3) for k in ("json", "sse")
        }
    if "redis-1" in results and "redis-2" in results:
        summary["redis_2_vs_redis_1"] = {
            k: round(results["redis-2"][k]["rps"] / results["redis-1"][k]["rps"], 3) for k in ("json", "sse")
        }
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    print()
    print(table(results))


if __name__ == "__main__":
    main()
