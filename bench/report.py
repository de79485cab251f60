"""The markdown report: every figure beside ``direct`` and the baseline of the same run, then the targets."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

TARGETS = ("direct", "baseline", "proxygate")
LEVELS = ("c=1", "c=16", "c=64", "c=256")


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _fmt(value: float, digits: int = 0) -> str:
    return "–" if math.isnan(value) else f"{value:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    return "–" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}×"


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


class View:
    def __init__(self, results: dict[str, Any]) -> None:
        self.r = results

    def get(self, section: str, key: str, target: str, field: str) -> float:
        try:
            return _num(self.r[section][key][target][field])
        except KeyError:
            return math.nan

    def has(self, section: str) -> bool:
        return section in self.r


def _rate_table(v: View, section: str, keys: tuple[str, ...], unit: str) -> list[str]:
    lines = [
        f"| | direct {unit} | baseline {unit} | proxygate {unit} | pg / direct | pg / baseline "
        "| p50 ms d / b / pg | p99 ms d / b / pg | server CPU µs/req b / pg | pg errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in keys:
        rps = {t: v.get(section, key, t, "rps") for t in TARGETS}
        p50 = " / ".join(_fmt(v.get(section, key, t, "p50_ms"), 2) for t in TARGETS)
        p99 = " / ".join(_fmt(v.get(section, key, t, "p99_ms"), 2) for t in TARGETS)
        cpu = " / ".join(_fmt(v.get(section, key, t, "cpu_us")) for t in ("baseline", "proxygate"))
        errors = _fmt(v.get(section, key, "proxygate", "errors"))
        lines.append(
            f"| {key} | {_fmt(rps['direct'])} | {_fmt(rps['baseline'])} | {_fmt(rps['proxygate'])} "
            f"| {_ratio(rps['proxygate'], rps['direct'])} | {_ratio(rps['proxygate'], rps['baseline'])} "
            f"| {p50} | {p99} | {cpu} | {errors} |"
        )
    return lines


def _stream_table(v: View, section: str, key: str) -> list[str]:
    lines = [
        "| | TTFT p50 ms | +TTFT vs direct | total p50 ms | +total vs direct | TTFT p99 ms | streams | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    d_ttft, d_total = v.get(section, key, "direct", "ttft_p50_ms"), v.get(section, key, "direct", "p50_ms")
    for t in TARGETS:
        ttft, total = v.get(section, key, t, "ttft_p50_ms"), v.get(section, key, t, "p50_ms")
        lines.append(
            f"| {t} | {_fmt(ttft, 2)} | {_fmt(ttft - d_ttft, 2)} | {_fmt(total, 2)} | {_fmt(total - d_total, 2)} "
            f"| {_fmt(v.get(section, key, t, 'ttft_p99_ms'), 2)} | {_fmt(v.get(section, key, t, 'ok'))} "
            f"| {_fmt(v.get(section, key, t, 'errors'))} |"
        )
    return lines


def targets(v: View) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met?) for every target in issue #7 and the related issues."""
    out: list[tuple[str, str, bool | None]] = []

    def check(name: str, measured: str, ok: bool | None) -> None:
        out.append((name, measured, ok))

    def rate(section: str, key: str) -> tuple[float, float, float]:
        return tuple(v.get(section, key, t, "rps") for t in TARGETS)  # type: ignore[return-value]

    for key in ("c=16", "c=64", "c=256"):
        _, base, pg = rate("json_anthropic", key)
        errors = v.get("json_anthropic", key, "proxygate", "errors")
        extra = f", {_fmt(errors)} errors" if key == "c=256" else ""
        ok = pg >= 0.5 * base and (key != "c=256" or errors == 0) if not math.isnan(pg) else None
        check(
            f"Anthropic JSON req/s {key} ≥ 0.5 × baseline" + (", 0 errors" if key == "c=256" else ""),
            f"{_fmt(pg)} = {_ratio(pg, base)}{extra}",
            ok,
        )
    d, b, p = (v.get("json_anthropic", "c=1", t, "p50_ms") for t in TARGETS)
    check(
        "added p50 at c=1 ≤ 1 ms",
        f"+{_fmt(p - d, 3)} ms (baseline +{_fmt(b - d, 3)} ms)",
        None if math.isnan(p) else p - d <= 1.0,
    )
    b99, p99 = (
        v.get("json_anthropic", "c=64", "baseline", "p99_ms"),
        v.get("json_anthropic", "c=64", "proxygate", "p99_ms"),
    )
    check(
        "p99 at c=64 ≤ 2 × baseline's",
        f"{_fmt(p99, 2)} ms = {_ratio(p99, b99)}",
        None if math.isnan(p99) else p99 <= 2 * b99,
    )
    _, base, pg = rate("sse", "c=64")
    check(
        "canned SSE streams/s c=64 ≥ 0.4 × baseline",
        f"{_fmt(pg)} = {_ratio(pg, base)}",
        None if math.isnan(pg) else pg >= 0.4 * base,
    )
    dt, pt = v.get("paced", "c=4", "direct", "ttft_p50_ms"), v.get("paced", "c=4", "proxygate", "ttft_p50_ms")
    dd, pd = v.get("paced", "c=4", "direct", "p50_ms"), v.get("paced", "c=4", "proxygate", "p50_ms")
    check("paced stream +TTFT ≤ 2 ms", f"+{_fmt(pt - dt, 2)} ms", None if math.isnan(pt) else pt - dt <= 2.0)
    check(
        "paced stream +total ≤ 10 ms", f"+{_fmt(pd - dd, 2)} ms", None if math.isnan(pd) else pd - dd <= 10.0
    )
    key = next(iter(v.r.get("slow", {})), "")
    if key:
        n = int(key.split()[0])
        done = v.get("slow", key, "proxygate", "complete")
        check(f"{n} concurrent streams all complete", f"{_fmt(done)} / {n}", done == n)
        sd, sp = v.get("slow", key, "direct", "ttft_p99_ms"), v.get("slow", key, "proxygate", "ttft_p99_ms")
        check("… TTFT p99 ≤ 1.15 × direct", f"{_fmt(sp, 1)} ms = {_ratio(sp, sd)}", sp <= 1.15 * sd)
        peak = v.r.get("rss_peak_streams_kb", {}).get("proxygate", 0) / 1024
        check("… peak RSS ≤ 150 MB", f"{peak:.0f} MB", peak <= 150)
    idle = v.r.get("rss_kb", {}).get("idle", {}).get("proxygate", 0) / 1024
    check("idle RSS ≤ 60 MB", f"{idle:.0f} MB", idle <= 60 if idle else None)
    start = v.r.get("startup_s", {}).get("median", math.nan)
    check(
        "startup (spawn → /healthz) ≤ 1 s", f"{_fmt(start, 2)} s", None if math.isnan(start) else start <= 1.0
    )
    conv = v.get("converted", "c=16", "proxygate", "rps")
    conv_err = v.get("converted", "c=16", "proxygate", "errors")
    check(
        "converted route ≥ 1,000 req/s at c=16 (20 KB request)",
        f"{_fmt(conv)} req/s, {_fmt(conv_err)} errors",
        None if math.isnan(conv) else conv >= 1000 and conv_err == 0,
    )
    ct, cd = (
        v.get("converted", "paced c=4", "proxygate", "ttft_p50_ms"),
        v.get("converted", "paced c=4", "direct", "ttft_p50_ms"),
    )
    check(
        "converted route +TTFT ≤ 3 ms", f"+{_fmt(ct - cd, 2)} ms", None if math.isnan(ct) else ct - cd <= 3.0
    )
    broker = v.r.get("broker_acquire_us", {})
    if broker:
        check(
            "Broker.acquire median ≤ 10 µs (10 accounts)",
            f"{broker['10']['median']:.1f} µs",
            broker["10"]["median"] <= 10,
        )
        check(
            "Broker.acquire median ≤ 50 µs (100 accounts)",
            f"{broker['100']['median']:.1f} µs",
            broker["100"]["median"] <= 50,
        )
    return out


def _before_after(now: View, before: View) -> list[str]:
    rows: list[tuple[str, Callable[[View], float], int]] = []
    for fmt in ("anthropic", "chat"):
        for key in LEVELS:
            rows.append(
                (
                    f"{fmt} JSON req/s {key}",
                    lambda v, f=fmt, k=key: v.get(f"json_{f}", k, "proxygate", "rps"),
                    0,
                )
            )
    rows += [
        ("anthropic JSON p50 ms c=1", lambda v: v.get("json_anthropic", "c=1", "proxygate", "p50_ms"), 3),
        ("anthropic JSON p99 ms c=64", lambda v: v.get("json_anthropic", "c=64", "proxygate", "p99_ms"), 2),
        ("SSE streams/s c=64", lambda v: v.get("sse", "c=64", "proxygate", "rps"), 0),
        ("paced TTFT p50 ms", lambda v: v.get("paced", "c=4", "proxygate", "ttft_p50_ms"), 2),
        (
            "anthropic JSON server CPU µs/req c=64",
            lambda v: v.get("json_anthropic", "c=64", "proxygate", "cpu_us"),
            0,
        ),
        ("SSE server CPU µs/stream c=64", lambda v: v.get("sse", "c=64", "proxygate", "cpu_us"), 0),
        ("converted req/s c=16", lambda v: v.get("converted", "c=16", "proxygate", "rps"), 0),
        (
            "converted paced TTFT p50 ms",
            lambda v: v.get("converted", "paced c=4", "proxygate", "ttft_p50_ms"),
            2,
        ),
        ("1,000 streams TTFT p99 ms", lambda v: v.get("slow", "1000 streams", "proxygate", "ttft_p99_ms"), 1),
        (
            "1,000 streams peak RSS MB",
            lambda v: _num(v.r.get("rss_peak_streams_kb", {}).get("proxygate")) / 1024,
            0,
        ),
    ]
    lines = ["| proxygate | before | after |", "|---|---:|---:|"]
    for label, get, digits in rows:
        lines.append(f"| {label} | {_fmt(get(before), digits)} | {_fmt(get(now), digits)} |")
    return lines


def render(results: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    v = View(results)
    m = results["machine"]
    out = [
        "## Latest report",
        "",
        f"{m['date']}, commit `{m['commit']}`, {m['mode']} mode ({m['duration_s']} s per figure, best of "
        f"{m['repeat']}), driver: {m['driver']}.",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}, aiohttp "
        f"{m['aiohttp']}, wrk: {m['wrk']}. Load average at start {m['loadavg_start']}, at end "
        f"{m.get('loadavg_end', '?')}. Client, mock and server share the same cores."
        + (
            f" Re-run afterwards with the same code, the rest kept from the full run: {m['rerun']}."
            if m.get("rerun")
            else ""
        ),
        "",
        "### Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    out += [f"| {name} | {measured} | {_mark(ok)} |" for name, measured, ok in targets(v)]
    for fmt, title in (("anthropic", "Anthropic"), ("chat", "OpenAI Chat")):
        if v.has(f"json_{fmt}"):
            out += ["", f"### {title} JSON, 20 KB request (req/s)", ""]
            out += _rate_table(v, f"json_{fmt}", LEVELS, "req/s")
    if v.has("json_anthropic"):
        d = v.get("json_anthropic", "c=1", "direct", "p50_ms")
        out += [
            "",
            "Added p50 at c=1 (Anthropic): baseline "
            f"+{_fmt(v.get('json_anthropic', 'c=1', 'baseline', 'p50_ms') - d, 3)} ms, proxygate "
            f"+{_fmt(v.get('json_anthropic', 'c=1', 'proxygate', 'p50_ms') - d, 3)} ms.",
        ]
    if v.has("sse"):
        out += ["", "### Canned SSE, 200 deltas (streams/s)", ""]
        out += _rate_table(v, "sse", ("c=16", "c=64"), "streams/s")
    if v.has("paced"):
        out += ["", "### Paced stream, 20 chunks × 25 ms, c=4", ""]
        out += _stream_table(v, "paced", "c=4")
    if v.has("converted"):
        out += [
            "",
            "### Converted route: Anthropic client → Chat upstream",
            "",
            "direct and baseline carry the same conversation as a Chat request (nothing to convert).",
            "",
        ]
        out += _rate_table(v, "converted", ("c=16",), "req/s")
        out += ["", "Paced stream (Chat upstream 20 × 25 ms, converted to Anthropic events), c=4:", ""]
        out += _stream_table(v, "converted", "paced c=4")
    key = next(iter(results.get("slow", {})), "")
    if key:
        peaks = results.get("rss_peak_streams_kb", {})
        out += [
            "",
            f"### {key} open together: 20 chunks × 250 ms each, arriving over 4 s",
            "",
            "| | complete | errors | TTFT p50 ms | TTFT p99 ms | TTFT p99 / direct | total p99 ms | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        d99 = v.get("slow", key, "direct", "ttft_p99_ms")
        for t in TARGETS:
            p99 = v.get("slow", key, t, "ttft_p99_ms")
            out.append(
                f"| {t} | {_fmt(v.get('slow', key, t, 'complete'))} | {_fmt(v.get('slow', key, t, 'errors'))} "
                f"| {_fmt(v.get('slow', key, t, 'ttft_p50_ms'), 1)} | {_fmt(p99, 1)} | {_ratio(p99, d99)} "
                f"| {_fmt(v.get('slow', key, t, 'p99_ms'), 1)} | {_num(peaks.get(t)) / 1024:.0f} |"
            )
    rss = results.get("rss_kb", {})
    if rss:
        out += [
            "",
            "### Memory (RSS MB) and startup",
            "",
            "| | " + " | ".join(rss) + " | peak, 1,000 streams |",
            "|---|" + "---:|" * (len(rss) + 1),
        ]
        for t in ("baseline", "proxygate"):
            peak = _num(results.get("rss_peak_streams_kb", {}).get(t)) / 1024
            out.append(
                f"| {t} | " + " | ".join(f"{w[t] / 1024:.0f}" for w in rss.values()) + f" | {_fmt(peak)} |"
            )
        start = results.get("startup_s", {})
        if start:
            out += [
                "",
                f"proxygate startup, spawn → first 200 from /healthz: median {start['median']:.2f} s "
                f"(runs: {', '.join(f'{s:.2f}' for s in start['all'])}).",
            ]
    broker = results.get("broker_acquire_us", {})
    if broker:
        out += [
            "",
            "### Broker.acquire (in-process, API-key accounts all eligible)",
            "",
            "| accounts | median µs | p99 µs |",
            "|---:|---:|---:|",
        ]
        out += [f"| {n} | {b['median']:.1f} | {b['p99']:.1f} |" for n, b in broker.items()]
    if before:
        b = before["machine"]
        out += [
            "",
            "### Before / after (proxygate, this change set)",
            "",
            f"Before: {b['date']}, {b['mode']} mode, best of {b['repeat']}, load average {b['loadavg_start']}; "
            "after: this run. The direct and baseline figures of both runs are in their results.json.",
            "",
        ]
        out += _before_after(v, View(before))
    return "\n".join(out) + "\n"
