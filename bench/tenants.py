"""What tenant keys add per request, with 1,000 tenants (issue 14: at most 20 µs).

Measures, in this process and without sockets, the work a request does because tenants
exist: ingress turning the presented key into a tenant (``TenantBook.authenticate``: one
SHA-256 and one dict probe), and the ``TenantLimits`` stage admitting the request against an
rpm/tpm/concurrency/daily limit before the broker and settling its tokens after. Sockets,
parsing and the broker cost the same with or without tenants, so they are left out.

    .venv/bin/python bench/tenants.py [--tenants 1000] [--rounds 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multidict import CIMultiDict, CIMultiDictProxy

from proxygate.call import Call
from proxygate.config import Settings
from proxygate.features.tenants import TenantBook, TenantLimits, created
from proxygate.wire.ir import Format, Usage


def book_of(n: int) -> tuple[TenantBook, list[str]]:
    tenants, keys = {}, []
    for i in range(n):
        tenant, key = created(
            f"t{i:04d}",
            {"rpm": 10**9, "tpm": 10**12, "concurrency": 10**6, "daily_tokens": 10**15},
            now=0.0,
            routes=None,
        )
        tenants[tenant.name] = tenant
        keys.append(key)
    book = TenantBook(Settings(proxy_token="owner-token"), clock=time.time)
    book.replace_all(tenants)
    return book, keys


def per_call_us(fn: object, rounds: int, repeat: int = 5) -> float:
    """The best of ``repeat`` runs of ``rounds`` calls, in µs per call."""
    best = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(rounds):
            fn()  # type: ignore[operator]
        best.append((time.perf_counter() - started) / rounds * 1e6)
    return min(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args()
    book, keys = book_of(args.tenants)
    key = keys[len(keys) // 2]
    stage = TenantLimits(book)
    headers = CIMultiDictProxy(CIMultiDict())
    usage = Usage(input_tokens=1000, output_tokens=200)
    counter = iter(range(10**12))

    def one_request() -> None:
        tenant = book.authenticate(key)
        assert tenant is not None
        call = Call(f"pg_{next(counter)}", Format.anthropic, headers, {}, b"", "m", False, tenant=tenant)
        stage.on_request(call)
        call.usage = usage
        stage.on_done(call)

    def no_tenant_work() -> None:  # what every request does anyway: the Call exists with or without tenants
        call = Call(f"pg_{next(counter)}", Format.anthropic, headers, {}, b"", "m", False, tenant="t0500")
        call.usage = usage

    baseline_us = per_call_us(no_tenant_work, args.rounds // 4)
    figures = {
        "authenticate: a tenant key": per_call_us(lambda: book.authenticate(key), args.rounds),
        "authenticate: an unknown pgk_ key": per_call_us(
            lambda: book.authenticate("pgk_" + "x" * 43), args.rounds
        ),
        "authenticate: the owner's proxy_token": per_call_us(
            lambda: book.authenticate("owner-token"), args.rounds
        ),
        # Conservative: includes building the Call, which every request does with or without tenants.
        "a request's tenant work (key, limits, settle) + its Call": per_call_us(
            one_request, args.rounds // 4
        ),
    }
    print(f"{args.tenants} tenants, Python {sys.version.split()[0]}, best of 5 runs")
    for name, us in figures.items():
        print(f"  {name:55s} {us:6.2f} µs")
    worst = max(figures.values())
    print(f"worst {worst:.2f} µs per request (budget 20 µs): {'ok' if worst <= 20 else 'OVER'}")
    print(f"(of which building the Call, needed with or without tenants: about {baseline_us:.2f} µs)")


if __name__ == "__main__":
    main()
