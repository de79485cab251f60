"""What guardrails cost: CPU per request and +p50 at c=1 on the 21.6 KB bench request.

Two parts, one JSON line each and a sentence:

1. In process: ``Guardrails.on_request`` on the bench request (and on the same request with
   secrets pasted into its last turn, which adds replacing them and restoring the answer),
   cold (nothing scanned before: every string is new) and warm (the text was seen: an agent
   resends its history each turn, so only the new turn is cold).
2. End to end: ``proxygate serve`` (bench/run.py's ``Servers``) with guardrails off, then on,
   alternately; the same non-streaming request at concurrency 1; server CPU per request from
   /proc and the client's p50. Best of ``--rounds`` per mode, in the same run.

    .venv/bin/python bench/guardrails.py [--requests 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from live_feed import cpu_s, loadgen_batch  # noqa: E402
from run import Servers  # noqa: E402
from workloads import anthropic_message, anthropic_request, body_bytes  # noqa: E402

from proxygate.call import Call  # noqa: E402
from proxygate.config import GuardrailSettings  # noqa: E402
from proxygate.features.guardrails import Guardrails  # noqa: E402
from proxygate.features.redaction import FindingsCache  # noqa: E402
from proxygate.wire.ir import Format  # noqa: E402

SECRETS = (
    "\n\nHere is my .env:\nDATABASE_URL=postgres://app:s3cr3tPw@db.internal:5432/app\n"
    "ANTHROPIC_API_KEY=sk-ant-api03-R2D2c3poABCdefGHIjklMNOpqrSTUvwxYZ0123456789_-abcdEFGH\n"
    "ADMIN_EMAIL=jane.doe@acme-corp.com\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
)


def with_secrets(body: dict[str, Any]) -> dict[str, Any]:
    body = orjson.loads(orjson.dumps(body))
    last = body["messages"][-1]
    if isinstance(last["content"], str):
        last["content"] += SECRETS
    else:
        last["content"].append({"type": "text", "text": SECRETS})
    return body


def in_process(raw: bytes, answer: bytes, n: int) -> dict[str, float]:
    guardrails = Guardrails(GuardrailSettings(enabled=True, key="ab" * 32), Path(tempfile.mkdtemp()))

    def one() -> None:
        call = Call(
            "r", Format.anthropic, CIMultiDictProxy(CIMultiDict()), orjson.loads(raw), raw, "m", False
        )
        guardrails.on_request(call)
        if call.output_transform is not None:
            call.output_transform.whole(answer)

    parse_only = time.process_time()
    for _ in range(n):
        orjson.loads(raw)
    parse_s = time.process_time() - parse_only
    for _ in range(20):
        one()
    t0 = time.process_time()
    for _ in range(n):
        one()
    warm_ms = (time.process_time() - t0 - parse_s) / n * 1000
    t0 = time.process_time()
    for _ in range(n // 4):
        guardrails.cache = FindingsCache()
        one()
    cold_ms = (time.process_time() - t0 - parse_s / 4) / (n // 4) * 1000
    return {"cold_ms": round(cold_ms, 3), "warm_ms": round(warm_ms, 3)}


def batch(port: int, body_file: Path, requests: int) -> list[float]:
    stats = loadgen_batch(port, body_file, requests, concurrency=1, duration_s=300)
    return [float(x) for x in stats["latency_s"]]


def end_to_end(workdir: Path, body: bytes, requests: int, rounds: int) -> dict[str, Any]:
    servers = Servers(workdir)
    body_file = workdir / "request.json"
    body_file.write_bytes(body)
    config = workdir / "proxygate" / "config.toml"
    results: dict[str, dict[str, list[float]]] = {m: {"cpu_us": [], "p50_ms": []} for m in ("off", "on")}
    try:
        servers.start()
        plain = config.read_text()
        for _ in range(rounds):
            for mode in ("off", "on"):
                config.write_text(plain + ("\n[guardrails]\nenabled = true\n" if mode == "on" else ""))
                servers.restart_proxygate()
                target = servers.targets["proxygate"]
                batch(target.port, body_file, 300)  # warm up: imports, connections, caches
                before = cpu_s(target.pid)
                latencies = sorted(batch(target.port, body_file, requests))
                used = cpu_s(target.pid) - before
                results[mode]["cpu_us"].append(used / len(latencies) * 1e6)
                results[mode]["p50_ms"].append(latencies[len(latencies) // 2] * 1000)
    finally:
        servers.stop()
    best = {
        m: {k: round(min(v), 1 if k == "cpu_us" else 3) for k, v in r.items()} for m, r in results.items()
    }
    return {"best": best, "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    plain = anthropic_request()
    answer = anthropic_message()
    report: dict[str, Any] = {
        "request_bytes": len(body_bytes(plain)),
        "in_process": {
            "bench_request": in_process(body_bytes(plain), answer, 400),
            "with_secrets": in_process(body_bytes(with_secrets(plain)), answer, 400),
        },
    }
    if not args.skip_e2e:
        with tempfile.TemporaryDirectory(prefix="proxygate-guardrails-") as tmp:
            report["end_to_end"] = end_to_end(Path(tmp), body_bytes(plain), args.requests, args.rounds)
    print(orjson.dumps(report).decode())
    ip = report["in_process"]
    print(
        f"in process, {report['request_bytes']} B request: cold {ip['bench_request']['cold_ms']} ms, "
        f"warm {ip['bench_request']['warm_ms']} ms; with secrets cold {ip['with_secrets']['cold_ms']} ms, "
        f"warm {ip['with_secrets']['warm_ms']} ms"
    )
    if "end_to_end" in report:
        best = report["end_to_end"]["best"]
        print(
            f"end to end at c=1: server CPU {best['off']['cpu_us']} → {best['on']['cpu_us']} µs per request, "
            f"p50 {best['off']['p50_ms']} → {best['on']['p50_ms']} ms "
            f"({best['on']['p50_ms'] - best['off']['p50_ms']:+.3f} ms)"
        )


if __name__ == "__main__":
    main()
