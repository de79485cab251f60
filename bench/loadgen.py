"""The built-in load client: closed-loop HTTP/1.1 over asyncio streams, keep-alive, loopback only.

One process drives ``--concurrency`` connections, each sending the same prebuilt request
again as soon as the previous answer is read, for ``--duration`` seconds after a
``--warmup`` (or until ``--requests`` answers). It records per request the total latency
and the time to the first body byte (TTFT; for chunked answers the first chunk's data).
``run.py`` starts several of these processes so that one Python client is not the
ceiling, and merges their JSON. With ``--barrier`` it connects everything first, prints
``ready`` and waits for a line on stdin, so 1,000 streams start together.

    python bench/loadgen.py --port 18001 --path /v1/messages --body req.json -c 16 -d 5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REQUEST_TIMEOUT_S = 60.0
# Streams are judged complete when their last bytes hold the format's terminal event.
TERMINATORS = (b"message_stop", b"[DONE]")


@dataclass
class Stats:
    ok: int = 0
    errors: int = 0
    complete: int = 0
    latency_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, float, float, bool]:
    """Send one request, read the whole answer: (status, ttft_s, total_s, ends with a terminator)."""
    t0 = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    tail = b""
    if b"transfer-encoding: chunked" in lower:
        ttft = 0.0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data = await reader.readexactly(size + 2)
            if not ttft:
                ttft = time.perf_counter() - t0
            tail = (tail + data[:-2])[-64:]
    else:
        ttft = time.perf_counter() - t0
        start = lower.find(b"content-length:")
        length = int(lower[start + 15 : lower.index(b"\r\n", start)]) if start >= 0 else 0
        body = await reader.readexactly(length)
        tail = body[-64:]
    total = time.perf_counter() - t0
    return status, ttft, total, any(t in tail for t in TERMINATORS)


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run(args: argparse.Namespace) -> Stats:
    body = Path(args.body).read_bytes()  # noqa: ASYNC240 - read once before any load
    request = build_request(args.host, args.port, args.path, body, orjson.loads(args.headers))
    stats = Stats()
    budget = [args.requests or 10**12]
    conns = await asyncio.gather(
        *(asyncio.open_connection(args.host, args.port) for _ in range(args.concurrency))
    )
    if args.barrier:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    t_start = time.perf_counter()
    measure_from = t_start + args.warmup
    deadline = measure_from + args.duration

    async def worker(index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(index * args.ramp / max(args.concurrency, 1))  # staggered arrivals
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status, ttft, total, complete = await exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                if time.perf_counter() >= measure_from:
                    stats.error(f"{type(exc).__name__}: {exc}"[:200])
                writer.close()
                try:
                    reader, writer = await asyncio.open_connection(args.host, args.port)
                except OSError:
                    return
                continue
            now = time.perf_counter()
            if now < measure_from:
                continue
            if now > deadline:  # finished after the window: not counted, keeps req/s honest
                break
            if status >= 400:
                stats.error(f"HTTP {status}")
                continue
            stats.ok += 1
            stats.complete += complete
            stats.latency_s.append(total)
            stats.ttft_s.append(ttft)
        writer.close()

    async with asyncio.TaskGroup() as tasks:
        for index, (reader, writer) in enumerate(conns):
            tasks.create_task(worker(index, reader, writer))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", required=True, help="file with the request body")
    parser.add_argument("--headers", default="{}", help="JSON object of extra request headers")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="measured seconds (bounded)")
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--requests", type=int, default=0, help="stop after this many requests (0: no limit)")
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="spread the connections' first requests over S"
    )
    parser.add_argument("--barrier", action="store_true", help="connect, print ready, wait for stdin")
    args = parser.parse_args()
    stats = asyncio.run(run(args))
    sys.stdout.write(orjson.dumps(stats.__dict__).decode() + "\n")


if __name__ == "__main__":
    main()
