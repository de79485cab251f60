"""Benchmark proxygate against a direct call and a bare aiohttp pass-through, in one command.

    .venv/bin/python bench/run.py [--quick] [--out bench/out/report.md] [--before OLD.json]

Starts the mock upstream, the pass-through baseline and proxygate (pool pointed at the
mock) on loopback, drives each workload against all three, and writes a markdown report
(and ``results.json`` beside it) with every figure as a ratio against ``direct`` and the
baseline of the same run. Every load is bounded in time and count; the servers are
stopped at the end, also on errors. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from drivers import Load, Result, Target, have_wrk, run_asyncio, run_wrk
from report import render
from workloads import (
    MODEL_ANTHROPIC,
    MODEL_PACED,
    MODEL_SLOW,
    SLOW_RAMP_S,
    anthropic_request,
    body_bytes,
    chat_request,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
STARTUP_LIMIT_S = 20.0
SLOW_STREAMS = 1000

ANTHROPIC_HEADERS = {
    "content-type": "application/json",
    "x-api-key": "bench",
    "anthropic-version": "2023-06-01",
}
CHAT_HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    """The environment for the servers: no PROXYGATE_* from the caller, no HTTP proxy on loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYGATE_") and "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def wait_http(port: int, path: str, limit_s: float) -> float:
    """Seconds until GET ``path`` answers 200 (polled every 5 ms); raises after ``limit_s``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {limit_s:.0f}s")


class Servers:
    """The three processes under test, started in a temp dir and always stopped."""

    def __init__(self, workdir: Path, proxygate_src: Path = REPO) -> None:
        self.workdir = workdir
        self.proxygate_src = proxygate_src
        self.procs: list[subprocess.Popen[bytes]] = []
        self.targets: dict[str, Target] = {}
        self.startup_s: list[float] = []

    def _spawn(self, cmd: list[str], log_name: str, cwd: Path = REPO) -> subprocess.Popen[bytes]:
        log = open(self.workdir / log_name, "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=cwd)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        mock_port, base_port = free_port(), free_port()
        mock = self._spawn(
            [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--port", str(mock_port)], "mock.log"
        )
        wait_http(mock_port, "/", STARTUP_LIMIT_S)
        self.targets["direct"] = Target("direct", mock_port, mock.pid)
        base = self._spawn(
            [
                sys.executable,
                str(BENCH_DIR / "passthrough.py"),
                "--port",
                str(base_port),
                "--upstream",
                f"http://127.0.0.1:{mock_port}",
            ],
            "passthrough.log",
        )
        wait_http(base_port, "/healthz", STARTUP_LIMIT_S)
        self.targets["baseline"] = Target("baseline", base_port, base.pid)
        self.targets["proxygate"] = self.start_proxygate(mock_port)

    def write_pool(self, mock_port: int) -> Path:
        root = self.workdir / "proxygate"
        keys = root / "pool" / "apikeys"
        keys.mkdir(parents=True, exist_ok=True)
        upstream = f"http://127.0.0.1:{mock_port}"
        accounts = {
            "anthropic": {
                "provider": "anthropic",
                "api_key": "k",
                "base_url": upstream,
                "models": ["claude-*"],
            },
            "openai": {
                "provider": "openai",
                "api_key": "k",
                "base_url": upstream + "/v1",
                "models": ["gpt-*"],
                "formats": ["responses", "chat"],  # as api.openai.com; elsewhere openai means chat
            },
            # Speaks only Chat: an Anthropic client asking for deepseek-* takes the converted route.
            "deepseek": {
                "provider": "deepseek",
                "api_key": "k",
                "base_url": upstream + "/v1",
                "models": ["deepseek-*"],
            },
        }
        for name, data in accounts.items():
            path = keys / f"{name}.json"
            path.write_bytes(orjson.dumps(data))
            path.chmod(0o600)
        config = root / "config.toml"
        config.write_text(
            'pool_dir = "pool"\ndata_dir = "data"\naddr = "127.0.0.1:{port}"\ndrain_timeout_s = 1\n'
        )
        return config

    def start_proxygate(self, mock_port: int) -> Target:
        port = free_port()
        config = self.write_pool(mock_port)
        config.write_text(config.read_text().replace("{port}", str(port)))
        t0 = time.perf_counter()
        # `python -m` imports the package from the working directory first: --proxygate-src.
        cmd = [sys.executable, "-m", "proxygate", "serve", "--config", str(config)]
        proc = self._spawn(cmd, "proxygate.log", cwd=self.proxygate_src)
        wait_http(port, "/healthz", STARTUP_LIMIT_S)
        self.startup_s.append(time.perf_counter() - t0)
        return Target("proxygate", port, proc.pid)

    def restart_proxygate(self) -> float:
        """Stop proxygate and start it again; returns the new startup time (spawn → /healthz)."""
        old = self.targets["proxygate"]
        proc = next(p for p in self.procs if p.pid == old.pid)
        self._stop(proc)
        self.procs.remove(proc)
        self.targets["proxygate"] = self.start_proxygate(self.targets["direct"].port)
        return self.startup_s[-1]

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            self._stop(proc)


@contextlib.contextmanager
def rss_sampler(pids: dict[str, int], interval_s: float = 0.02) -> Iterator[dict[str, int]]:
    """Peak RSS (kB) per process while the block runs, sampled from /proc."""
    peaks = dict.fromkeys(pids, 0)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            for name, pid in pids.items():
                with contextlib.suppress(OSError):
                    peaks[name] = max(peaks[name], rss_kb(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()


class Bench:
    def __init__(
        self,
        servers: Servers,
        workdir: Path,
        *,
        duration_s: float,
        warmup_s: float,
        repeat: int,
        driver: str,
        log: Callable[[str], None],
    ) -> None:
        self.servers = servers
        self.workdir = workdir
        self.duration_s = duration_s
        self.warmup_s = warmup_s
        self.repeat = repeat
        self.driver = driver
        self.log = log
        self.results: dict[str, Any] = {}

    def load(self, name: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Load:
        file = self.workdir / f"{name}.json"
        file.write_bytes(body_bytes(body))
        return Load(path, file, headers)

    def throughput(self, target: Target, load: Load, c: int) -> Result:
        """Best of ``repeat`` runs (other work on the machine only ever makes a run slower)."""
        runs = []
        for _ in range(self.repeat):
            if self.driver == "wrk":
                runs.append(run_wrk(target, load, c, self.duration_s, self.warmup_s, self.workdir))
            else:
                runs.append(run_asyncio(target, load, c, self.duration_s, self.warmup_s, processes=2))
        return max(runs, key=lambda r: r.rps)

    def streams(self, target: Target, load: Load, c: int, seconds: float) -> Result:
        """TTFT and total per stream from the built-in client (one process: c is small)."""
        runs = [run_asyncio(target, load, c, seconds, self.warmup_s, processes=1) for _ in range(self.repeat)]
        return min(runs, key=lambda r: r.ttft_p50_ms)

    def record(self, section: str, key: str, target: str, result: Result) -> None:
        self.results.setdefault(section, {}).setdefault(key, {})[target] = asdict(result) | {
            "rps": result.rps,
            "cpu_us": result.cpu_us_per_request,
        }
        errs = f" errors={result.errors} {result.error_samples[:1]}" if result.errors else ""
        self.log(
            f"  {section:10} {key:18} {target:9} {result.rps:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  ttft50 {result.ttft_p50_ms:7.2f} ms  "
            f"cpu {result.cpu_us_per_request:6.0f} µs/req{errs}"
        )

    # -- sections ----------------------------------------------------------------------------

    def json_rates(self, levels: list[int]) -> None:
        loads = {
            "anthropic": self.load("anthropic", "/v1/messages", anthropic_request(), ANTHROPIC_HEADERS),
            "chat": self.load("chat", "/v1/chat/completions", chat_request(), CHAT_HEADERS),
        }
        for fmt, load in loads.items():
            for c in levels:
                for name, target in self.servers.targets.items():
                    self.record(f"json_{fmt}", f"c={c}", name, self.throughput(target, load, c))

    def sse_rates(self, levels: list[int]) -> None:
        load = self.load("sse", "/v1/messages", anthropic_request(stream=True), ANTHROPIC_HEADERS)
        for c in levels:
            for name, target in self.servers.targets.items():
                self.record("sse", f"c={c}", name, self.throughput(target, load, c))

    def paced(self) -> None:
        load = self.load(
            "paced", "/v1/messages", anthropic_request(MODEL_PACED, stream=True), ANTHROPIC_HEADERS
        )
        for name, target in self.servers.targets.items():
            self.record("paced", "c=4", name, self.streams(target, load, 4, self.duration_s))

    def converted(self) -> None:
        """Anthropic client → Chat upstream; direct and baseline carry the same request in Chat form."""
        t = self.servers.targets
        chat = self.load("conv_chat", "/v1/chat/completions", chat_request(), CHAT_HEADERS)
        conv = self.load("conv_ant", "/v1/messages", anthropic_request("deepseek-bench-1"), ANTHROPIC_HEADERS)
        self.record("converted", "c=16", "direct", self.throughput(t["direct"], chat, 16))
        self.record("converted", "c=16", "baseline", self.throughput(t["baseline"], chat, 16))
        self.record("converted", "c=16", "proxygate", self.throughput(t["proxygate"], conv, 16))
        chat_paced = self.load(
            "conv_chat_paced",
            "/v1/chat/completions",
            chat_request("gpt-bench-paced", stream=True),
            CHAT_HEADERS,
        )
        conv_paced = self.load(
            "conv_ant_paced",
            "/v1/messages",
            anthropic_request("deepseek-bench-paced", stream=True),
            ANTHROPIC_HEADERS,
        )
        self.record(
            "converted", "paced c=4", "direct", self.streams(t["direct"], chat_paced, 4, self.duration_s)
        )
        self.record(
            "converted", "paced c=4", "baseline", self.streams(t["baseline"], chat_paced, 4, self.duration_s)
        )
        self.record(
            "converted",
            "paced c=4",
            "proxygate",
            self.streams(t["proxygate"], conv_paced, 4, self.duration_s),
        )

    def slow_streams(self, count: int) -> None:
        """``count`` streams of 20 × 250 ms, arriving over SLOW_RAMP_S: all open together for 1 s.

        Connections are opened first (untimed), so TTFT measures the proxy, not the accept queue.
        """
        load = self.load(
            "slow", "/v1/messages", anthropic_request(MODEL_SLOW, stream=True), ANTHROPIC_HEADERS
        )
        pids = {n: t.pid for n, t in self.servers.targets.items()}
        peaks: dict[str, int] = {}
        for name, target in self.servers.targets.items():
            with rss_sampler({name: pids[name]}) as sampled:
                result = run_asyncio(
                    target,
                    load,
                    count,
                    60.0,
                    0.0,
                    processes=4,
                    requests=count,
                    barrier=True,
                    ramp_s=SLOW_RAMP_S,
                )
            peaks[name] = sampled[name]
            self.record("slow", f"{count} streams", name, result)
        self.results["rss_peak_streams_kb"] = peaks

    def rss(self, when: str) -> None:
        self.results.setdefault("rss_kb", {})[when] = {
            n: rss_kb(t.pid) for n, t in self.servers.targets.items()
        }

    def broker(self) -> None:
        self.results["broker_acquire_us"] = {str(n): broker_acquire_us(n) for n in (10, 100)}
        self.log(f"  broker.acquire median µs: {self.results['broker_acquire_us']}")


def broker_acquire_us(accounts: int, iterations: int = 20_000) -> dict[str, float]:
    """Median and p99 µs of ``Broker.acquire`` with ``accounts`` eligible API-key accounts (pure, in-process)."""
    from proxygate.broker import Ask, Broker, Outcome
    from proxygate.config import RoutingSettings
    from proxygate.pool.files import PoolSnapshot
    from proxygate.pool.records import Account
    from proxygate.wire.ir import Format

    pool = PoolSnapshot.of(
        Account(
            id=f"key{i:03d}",
            kind="apikey",
            provider="anthropic",
            base_url="http://127.0.0.1:1",
            models=("claude-*",),
            formats=(Format.anthropic,),
            api_key="k",
        )
        for i in range(accounts)
    )
    broker = Broker(pool, RoutingSettings(), clock=time.time)
    ask = Ask(MODEL_ANTHROPIC, Format.anthropic)
    ok = Outcome.ok()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        t0 = clock()
        lease = broker.acquire(ask)
        samples.append(clock() - t0)
        lease.release(ok)
    samples.sort()
    return {"median": samples[len(samples) // 2] / 1000, "p99": samples[int(len(samples) * 0.99)] / 1000}


def machine() -> dict[str, str]:
    import aiohttp

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "unknown",
    )
    wrk = "not installed"
    if have_wrk():
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        wrk = (out.stdout or out.stderr).split(" [")[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=False
    ).stdout.strip()
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "wrk": wrk,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


README_START, README_END = "<!-- report:start -->", "<!-- report:end -->"


def update_readme(readme: Path, report: str) -> None:
    """Replace the text between the report markers in bench/README.md with ``report``."""
    text = readme.read_text()
    head, _, rest = text.partition(README_START)
    _, _, tail = rest.partition(README_END)
    readme.write_text(f"{head}{README_START}\n{report}{README_END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs (2 s) for a smoke test; ~2 min")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out" / "report.md")
    parser.add_argument("--driver", choices=("auto", "wrk", "asyncio"), default="auto")
    parser.add_argument(
        "--repeat", type=int, default=0, help="runs per throughput figure, best kept (default 1/2)"
    )
    parser.add_argument("--before", type=Path, help="a results.json to show as 'before' next to this run")
    parser.add_argument(
        "--merge",
        type=Path,
        help="an earlier results.json: keep its figures except the sections run now (--only)",
    )
    parser.add_argument("--update-readme", action="store_true", help="copy the report into bench/README.md")
    parser.add_argument(
        "--proxygate-src",
        type=Path,
        default=REPO,
        help="run proxygate from this source tree (a 'before' copy)",
    )
    parser.add_argument("--only", default="", help="comma list: json,sse,paced,converted,slow,broker (dev)")
    args = parser.parse_args()

    driver = ("wrk" if have_wrk() else "asyncio") if args.driver == "auto" else args.driver
    duration_s, warmup_s = (2.0, 1.0) if args.quick else (5.0, 1.0)
    repeat = args.repeat or (1 if args.quick else 2)
    levels = [1, 16, 64, 256]
    only = set(filter(None, args.only.split(",")))

    def wanted(section: str) -> bool:
        return not only or section in only

    def log(line: str) -> None:
        print(line, flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    info = machine() | {
        "driver": driver,
        "mode": "quick" if args.quick else "full",
        "duration_s": f"{duration_s:g}",
        "repeat": str(repeat),
    }
    log(f"bench: {info}")
    with tempfile.TemporaryDirectory(prefix="proxygate-bench-") as tmp:
        workdir = Path(tmp)
        servers = Servers(workdir, args.proxygate_src.resolve())
        try:
            servers.start()
            bench = Bench(
                servers,
                workdir,
                duration_s=duration_s,
                warmup_s=warmup_s,
                repeat=repeat,
                driver=driver,
                log=log,
            )
            startups = [servers.startup_s[0]] + [servers.restart_proxygate() for _ in range(2)]
            bench.results["startup_s"] = {"median": statistics.median(startups), "all": startups}
            time.sleep(1.0)
            bench.rss("idle")
            log(f"  startup {startups} s; idle RSS kB {bench.results['rss_kb']['idle']}")
            if wanted("json"):
                bench.json_rates(levels)
            if wanted("sse"):
                bench.sse_rates([16, 64])
            bench.rss("after load")
            if wanted("paced"):
                bench.paced()
            if wanted("converted"):
                bench.converted()
            if wanted("slow"):
                bench.slow_streams(SLOW_STREAMS)
            bench.rss("end")
            pg = servers.targets["proxygate"].pid
            bench.results["rss_hwm_kb"] = {"proxygate": rss_kb(pg, "VmHWM")}
        finally:
            servers.stop()
            for name in ("proxygate.log", "mock.log", "passthrough.log"):
                with contextlib.suppress(OSError):
                    (args.out.parent / name).write_bytes((workdir / name).read_bytes())
    if wanted("broker"):
        bench.broker()
    info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = {"machine": info, **bench.results}
    if args.merge:  # a re-run of noisy sections on top of an earlier full run
        earlier = orjson.loads(args.merge.read_bytes())
        keys = {
            "json": ("json_anthropic", "json_chat"),
            "sse": ("sse",),
            "paced": ("paced",),
            "converted": ("converted",),
            "slow": ("slow", "rss_peak_streams_kb"),
            "broker": ("broker_acquire_us",),
        }
        fresh = {k: bench.results[k] for section in only for k in keys[section] if k in bench.results}
        results = {**earlier, **fresh, "machine": earlier["machine"] | {"rerun": ", ".join(sorted(fresh))}}
    (args.out.parent / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    before = orjson.loads(args.before.read_bytes()) if args.before else None
    report = render(results, before)
    args.out.write_text(report)
    log(f"report: {args.out}")
    if args.update_readme:
        update_readme(BENCH_DIR / "README.md", report)
        log("report copied into bench/README.md")


if __name__ == "__main__":
    main()
