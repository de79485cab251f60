"""Fault soak: mixed traffic through accounts that fail on purpose, all on 127.0.0.1.

`proxygate serve` runs as a subprocess (its RSS is the one measured) in front of a scripted
upstream in this process. Seven Anthropic API-key accounts, tried in priority order, each
inject one fault; the last, lowest-priority one is healthy:

    429     429 with Retry-After: 1             before the first byte: failover
    529     529 overloaded                       before the first byte: failover
    500     500                                  before the first byte: failover
    reset   connection reset before headers      before the first byte: failover
    slow    first byte after 1.5 × first_byte_s  before the first byte: failover
    cut     streams and JSON cut after their first bytes
    ok      healthy

Requests mix the Anthropic (same format), Chat and Responses (converted) endpoints, streamed
and not. Cooldowns are short so the faulty accounts keep being tried. What must hold:

- no client-visible failure unless the `cut` account served a stream (faults before the
  first byte are invisible: failover);
- every stream `cut` served ends with a well-formed error event in the client's format;
- every cut JSON answer failed over (a 200 from another account) or is a JSON error in the
  client's format with `x-proxygate-request-id`;
- the proxy's RSS grows < 25 % from after the first `--warmup` requests to the end;
- no lease is left (`/admin/api/status`: every account's `inflight` is 0).

    python bench/soak.py                    # 3,000 requests, concurrency 32: a report
    python bench/soak.py --requests 1200 --json out.json    # the CI size (tests/soak/)

Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

MODEL = "claude-soak"
FIRST_BYTE_S = 1.0  # the healthy account answers in ms: 1 s is slack for a loaded machine
FAULTS = ("429", "529", "500", "reset", "slow", "cut")
FORMATS = ("anthropic", "chat", "responses")
PATHS = {"anthropic": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses"}
RSS_DRIFT_MAX = 0.25


# -- the scripted upstream ------------------------------------------------------------------


def _message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_soak",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": 20},
    }


def _sse(text: str) -> bytes:
    start = {
        **_message(""),
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 40, "output_tokens": 1},
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        *[
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w + " "}},
            )
            for w in text.split()
        ],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 20},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for n, d in events)


TEXT = " ".join(["soak"] * 40)
JSON_BODY = orjson.dumps(_message(TEXT))
SSE_BODY = _sse(TEXT)
# The cut stream stops after its first deltas; the cut JSON half-way through its body.
SSE_CUT_AT = SSE_BODY.index(b"event: content_block_delta") + 300
JSON_CUT_AT = len(JSON_BODY) // 2


@dataclass
class Upstream:
    served: Counter[str] = field(default_factory=Counter)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fault = request.match_info["fault"]
        body = orjson.loads(await request.read())
        is_stream = body.get("stream") is True
        self.served[f"{fault} {'stream' if is_stream else 'json'}"] += 1
        transport = request.transport
        assert transport is not None
        match fault:
            case "429":
                return _error(429, "rate_limit_error", {"retry-after": "1"})
            case "529":
                return _error(529, "overloaded_error")
            case "500":
                return _error(500, "api_error")
            case "reset":
                transport.abort()
                return web.Response()
            case "slow":
                await asyncio.sleep(FIRST_BYTE_S * 1.5)
            case "cut":
                out = web.StreamResponse(
                    headers={"content-type": "text/event-stream" if is_stream else "application/json"}
                )
                payload, cut_at = (SSE_BODY, SSE_CUT_AT) if is_stream else (JSON_BODY, JSON_CUT_AT)
                out.content_length = len(payload)
                await out.prepare(request)
                await out.write(payload[:cut_at])
                await asyncio.sleep(0.02)
                transport.abort()
                return out
        if is_stream:
            return web.Response(body=SSE_BODY, content_type="text/event-stream")
        return web.Response(body=JSON_BODY, content_type="application/json")


def _error(status: int, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": f"soak {status}"}}
    return web.Response(
        status=status, body=orjson.dumps(body), headers=headers, content_type="application/json"
    )


# -- the proxy under test -------------------------------------------------------------------


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[str]:
    """A temporary directory for the pool, the data dir and serve.log; ``keep`` leaves it."""
    path = tempfile.mkdtemp(prefix="proxygate-soak-")
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_pool(root: Path, upstream_url: str) -> None:
    pool = root / "pool" / "apikeys"
    pool.mkdir(parents=True)
    names = [*FAULTS, "ok"]
    for rank, name in enumerate(names):
        account = {
            "provider": "anthropic",
            "api_key": f"sk-ant-soak-{name}-0000000000",
            "base_url": f"{upstream_url}/f/{name}",
            "models": ["claude-*"],
            "priority": len(names) - rank,  # the healthy account last
        }
        path = pool / f"{name}.json"
        path.write_bytes(orjson.dumps(account))
        path.chmod(0o600)
    (root / "config.toml").write_text(
        'pool_dir = "pool"\ndata_dir = "data"\n'
        f"[timeouts]\nfirst_byte_s = {FIRST_BYTE_S}\n"
        "[routing]\ncooldown_min_s = 0.05\ncooldown_max_s = 0.2\noverload_cooldown_s = 0.05\n"
        '[routing.configs.default]\nstrategy = "priority"\n'
    )


def _rss_bytes(pid: int) -> dict[str, int]:
    """VmRSS, and its parts: RssAnon (the heap) and RssFile (mapped files: the LMDB map)."""
    sizes = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            sizes[name] = int(value.split()[0]) * 1024
    return sizes


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(300):
            if proc.returncode is not None:
                tail = (await asyncio.to_thread(log.read_text))[-2000:]
                raise RuntimeError(f"proxygate serve exited {proc.returncode}:\n{tail}")
            with contextlib.suppress(aiohttp.ClientError):
                async with client.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError("proxygate serve did not answer /healthz within 15 s")


# -- judging one answer ---------------------------------------------------------------------


def _events(body: bytes) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for block in body.decode("utf-8", "replace").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            out.append((name, "\n".join(data)))
    return out


def _stream_end(fmt: str, body: bytes) -> str:
    """ "complete", "error" (a well-formed error event in the client's format, last) or "broken"."""
    events = _events(body)
    if not events:
        return "broken"
    name, data = events[-1]
    if fmt == "chat" and data == "[DONE]":
        return "complete" if not any(d.startswith('{"error"') for _, d in events) else "broken"
    try:
        last = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "broken"
    match fmt:
        case "anthropic":
            if name == "message_stop":
                return "complete"
            ok = (
                name == "error"
                and last.get("type") == "error"
                and isinstance(last["error"].get("message"), str)
            )
        case "chat":
            error = last.get("error")
            ok = isinstance(error, dict) and isinstance(error.get("message"), str) and "type" in error
        case _:
            if name == "response.completed":
                return "complete"
            response = last.get("response") or {}
            ok = (
                name == "response.failed"
                and response.get("status") == "failed"
                and "message" in response.get("error", {})
            )
    return "error" if ok else "broken"


def _json_ok(fmt: str, body: Any) -> bool:
    try:
        match fmt:
            case "anthropic":
                return body["type"] == "message" and str(body["content"][0]["text"]).strip() == TEXT
            case "chat":
                return str(body["choices"][0]["message"]["content"]).strip() == TEXT
            case _:
                return body["status"] == "completed" and bool(body["output"])
    except (KeyError, IndexError, TypeError):
        return False


def _json_error_ok(fmt: str, body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return False
    return body.get("type") == "error" if fmt == "anthropic" else "type" in error


def _ask(fmt: str, is_stream: bool, i: int, prompts: int) -> dict[str, Any]:
    # Each new first message is a new conversation whose pin is kept pin_ttl_s (1 h): by
    # design, but growth the drift would count. Real agents repeat their conversations.
    text = f"soak request {i % prompts if prompts else i}"
    if fmt == "responses":
        return {"model": MODEL, "input": text, "stream": is_stream}
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "stream": is_stream,
    }
    if fmt == "anthropic":
        body["max_tokens"] = 64
    return body


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    done: int = 0
    rss_after_warmup: dict[str, int] = field(default_factory=dict)


async def _one(client: aiohttp.ClientSession, url: str, i: int, prompts: int, tally: Tally) -> None:
    fmt = FORMATS[i % 3]
    is_stream = (i // 3) % 2 == 0
    kind = f"{fmt} {'stream' if is_stream else 'json'}"
    try:
        async with client.post(url + PATHS[fmt], json=_ask(fmt, is_stream, i, prompts)) as resp:
            body = await resp.read()
            account = resp.headers.get("x-proxygate-account", "-")
            has_id = resp.headers.get("x-proxygate-request-id", "").startswith("pg_")
            status = resp.status
            streamed = resp.headers.get("content-type", "").startswith("text/event-stream")
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.failures.append(f"#{i} {kind}: {type(exc).__name__}: {exc}")
        return
    if status == 200 and is_stream and streamed:
        end = _stream_end(fmt, body)
        if account == "cut":
            tally.outcomes["cut stream: " + ("error event" if end == "error" else end)] += 1
            if end != "error":
                tally.failures.append(f"#{i} {kind} from cut: stream {end}: {body[-300:]!r}")
        elif end == "complete":
            tally.outcomes[f"{kind}: complete"] += 1
        else:
            tally.outcomes["stream broken by a fault before its first byte"] += 1
            tally.failures.append(f"#{i} {kind} from {account}: stream {end}: {body[-300:]!r}")
        return
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if status == 200 and not is_stream and account != "cut" and _json_ok(fmt, parsed):
        tally.outcomes[f"{kind}: complete"] += 1
    elif status >= 400 and has_id and _json_error_ok(fmt, parsed):
        # Right for a cut JSON answer with no account left; here the healthy one always is.
        tally.outcomes["JSON error in the client's format"] += 1
        tally.failures.append(f"#{i} {kind}: HTTP {status}: {body[:200]!r}")
    else:
        tally.outcomes["malformed answer"] += 1
        tally.failures.append(f"#{i} {kind} from {account}: HTTP {status}: {body[:200]!r}")


async def _soak(
    url: str, pid: int, requests: int, concurrency: int, warmup: int, prompts: int, tally: Tally
) -> None:
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker() -> None:
        for i in counter:
            await _one(client, url, i, prompts, tally)
            tally.done += 1
            if tally.done == warmup:
                tally.rss_after_warmup = _rss_bytes(pid)

    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as client,
        asyncio.TaskGroup() as group,
    ):
        for _ in range(concurrency):
            group.create_task(worker())


async def _inflight(url: str, data_dir: Path) -> dict[str, int]:
    """Leases still held per account, after a short grace for the last releases."""
    token_file = data_dir / "admin.token"
    headers = {"authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.exists() else {}
    async with aiohttp.ClientSession() as client:
        for _ in range(40):
            async with client.get(url + "/admin/api/status", headers=headers) as resp:
                report = await resp.json()
            held = {a["id"]: a["inflight"] for a in report["accounts"] if a["inflight"]}
            if not held:
                return {}
            await asyncio.sleep(0.05)
    return held


async def run(
    requests: int, concurrency: int, warmup: int, *, prompts: int = 100, keep: bool = False
) -> dict[str, Any]:
    upstream = Upstream()
    app = web.Application()
    app.router.add_post("/f/{fault}/v1/messages", upstream.handle)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    with _workdir(keep) as tmp:
        root = Path(tmp)
        _write_pool(root, upstream_url)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = root / "serve.log"
        env = {**os.environ, "HOME": str(root)}
        env.pop("PROXYGATE_CONFIG", None)
        with log.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxygate", "serve", "--config", str(root / "config.toml"),
                "--addr", f"127.0.0.1:{port}", "--log-level", "warn",
                stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=env, cwd=root,
            )  # fmt: skip
        try:
            await _wait_ready(url, proc, log)
            tally = Tally()
            started = time.monotonic()
            await _soak(url, proc.pid, requests, concurrency, warmup, prompts, tally)
            elapsed_s = time.monotonic() - started
            rss_end = _rss_bytes(proc.pid)
            held = await _inflight(url, root / "data")
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            await runner.cleanup()
        log_lines = log.read_text().splitlines()
        traceback_lines = [n for n, line in enumerate(log_lines) if "Traceback" in line]
        first_traceback = (
            log_lines[traceback_lines[0] - 2 : traceback_lines[0] + 40] if traceback_lines else []
        )
        healthy_failed = [line for line in log_lines if " ok: " in line][:10]
    start = tally.rss_after_warmup
    drift = (rss_end["VmRSS"] - start["VmRSS"]) / start["VmRSS"] if start else None
    outcomes = tally.outcomes
    cut_streams_ok = outcomes["cut stream: error event"]
    visible = len(tally.failures) - (
        sum(v for k, v in outcomes.items() if k.startswith("cut stream:")) - cut_streams_ok
    )
    checks = {
        "0 client-visible failures for faults before the first byte": visible == 0,
        "every cut stream ended with a well-formed error event": cut_streams_ok > 0
        and cut_streams_ok == sum(v for k, v in outcomes.items() if k.startswith("cut stream:")),
        "every cut JSON answer failed over or is a JSON error in the client's format": (
            upstream.served["cut json"] > 0 and outcomes["malformed answer"] == 0
        ),
        f"RSS drift < {RSS_DRIFT_MAX:.0%}": drift is not None and drift < RSS_DRIFT_MAX,
        "0 leases left": not held,
        "no traceback in the proxy's log": not traceback_lines,
        "every fault was injected": all(
            upstream.served[f"{f} {k}"] for f in FAULTS for k in ("stream", "json")
        ),
    }
    return {
        "requests": requests,
        "concurrency": concurrency,
        "prompts": prompts,
        "elapsed_s": round(elapsed_s, 1),
        "requests_per_s": round(requests / elapsed_s, 1),
        "outcomes": dict(sorted(tally.outcomes.items())),
        "upstream_served": dict(sorted(upstream.served.items())),
        "failures": tally.failures[:20],
        "failure_count": len(tally.failures),
        "rss_after_warmup_mb": {k: round(v / 2**20, 1) for k, v in start.items()},
        "rss_end_mb": {k: round(v / 2**20, 1) for k, v in rss_end.items()},
        "rss_drift": None if drift is None else round(drift, 4),
        "leases_left": held,
        "tracebacks": len(traceback_lines),
        "first_traceback": first_traceback,
        "healthy_account_failures": healthy_failed,
        "checks": checks,
        "ok": all(checks.values()),
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"fault soak: {result['requests']} requests ({result['prompts'] or 'all'} distinct prompts), "
        f"concurrency {result['concurrency']}, "
        f"{result['elapsed_s']} s ({result['requests_per_s']} req/s)",
        "",
        "what the clients got:",
        *(f"  {k:<36} {v:>6}" for k, v in result["outcomes"].items()),
        "",
        "what the upstream accounts served (attempts, failover included):",
        *(f"  {k:<36} {v:>6}" for k, v in result["upstream_served"].items()),
        "",
        *(
            f"proxy {k:<7} {result['rss_after_warmup_mb'][k]:6.1f} MB after warm-up → "
            f"{result['rss_end_mb'][k]:6.1f} MB at the end"
            for k in ("VmRSS", "RssAnon", "RssFile")
            if k in result["rss_end_mb"]
        ),
        f"RSS drift (VmRSS): {result['rss_drift']:+.1%}"
        if result["rss_drift"] is not None
        else "RSS: not measured",
        f"leases left: {result['leases_left'] or 0}",
        "",
        *(f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in result["checks"].items()),
    ]
    if result["failures"]:
        lines += [
            "",
            f"failures ({result['failure_count']}, first 20):",
            *(f"  {f}" for f in result["failures"]),
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=500, help="RSS drift is measured from here")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument(
        "--prompts", type=int, default=100, help="distinct first messages (0: every request a new one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary pool, data and serve.log")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.requests, args.concurrency, args.warmup, prompts=args.prompts, keep=args.keep)
    )
    print(report(result))
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
