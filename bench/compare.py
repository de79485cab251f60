"""Two proxygate trees under one load, interleaved: is this tree slower than that one?

    .venv/bin/python bench/compare.py --before /tmp/before-src [--workload anthropic|chat|sse]
                                      [--concurrency 16] [--seconds 3] [--rounds 8]

Starts the mock upstream, the bare pass-through, proxygate from ``--before`` and proxygate
from this tree, all at once. Each round drives the three with wrk one after the other (the
order reversed every other round) and reads each server's CPU µs per request. On a shared
machine a figure moves by ±10 % from one minute to the next; a before and an after taken in
the same minute move together, so the paired ratio (after ÷ before, round by round) is what
to read, with its median. Minima are printed beside it, as ``run.py`` reports best of N.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from drivers import Load, run_wrk
from run import ANTHROPIC_HEADERS, CHAT_HEADERS, REPO, Servers
from workloads import anthropic_request, body_bytes, chat_request

WORKLOADS = {
    "anthropic": ("/v1/messages", lambda: anthropic_request(), ANTHROPIC_HEADERS),
    "chat": ("/v1/chat/completions", lambda: chat_request(), CHAT_HEADERS),
    "sse": ("/v1/messages", lambda: anthropic_request(stream=True), ANTHROPIC_HEADERS),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, required=True, help="the other proxygate source tree")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="anthropic")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    path, body, headers = WORKLOADS[args.workload]
    here = Servers(Path(tempfile.mkdtemp(prefix="pg-compare-")), REPO)
    there = Servers(Path(tempfile.mkdtemp(prefix="pg-compare-before-")), args.before.resolve())
    try:
        here.start()
        there.targets["proxygate"] = there.start_proxygate(here.targets["direct"].port)
        file = here.workdir / "body.json"
        file.write_bytes(body_bytes(body()))
        load = Load(path, file, headers)
        targets = {
            "baseline": here.targets["baseline"],
            "before": there.targets["proxygate"],
            "after": here.targets["proxygate"],
        }
        for target in targets.values():  # warm-up, figures dropped
            run_wrk(target, load, args.concurrency, 1, 0, here.workdir)
        cpu: dict[str, list[float]] = {name: [] for name in targets}
        p50: dict[str, list[float]] = {name: [] for name in targets}
        for n in range(args.rounds):
            order = list(targets.items())
            for name, target in order if n % 2 == 0 else order[::-1]:
                result = run_wrk(target, load, args.concurrency, args.seconds, 0, here.workdir)
                cpu[name].append(result.cpu_us_per_request)
                p50[name].append(result.p50_ms)
        paired = [a / b for a, b in zip(cpu["after"], cpu["before"], strict=True)]
        print(f"{args.workload} c={args.concurrency}, {args.rounds} rounds of {args.seconds:g} s")
        for name, values in cpu.items():
            print(
                f"  {name:9} CPU µs/request: min {min(values):4.0f}  median {statistics.median(values):4.0f}"
                f"   p50 ms: median {statistics.median(p50[name]):.3f}"
            )
        print(f"  after ÷ before, paired by round: median {statistics.median(paired):.3f}  "
              f"(min {min(paired):.3f}, max {max(paired):.3f}); of the minima {min(cpu['after']) / min(cpu['before']):.3f}")  # fmt: skip
    finally:
        here.stop()
        there.stop()


if __name__ == "__main__":
    main()
