"""``proxygate doctor``: what is wrong with this install, one line each, with the command that fixes it.

A finding is ``ok`` (✓), a ``problem`` (✗, makes the exit code 1) or a ``note`` (–: optional
things such as a keyring, a client not set up yet, a login that could be imported). A fresh
install is healthy: paths not created yet are fine, and nothing here needs the network unless
``--online`` asks for the clock skew and one cheap call per account. Secrets are never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import os
import socket
import stat
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer

from proxygate.cli.app import ConfigOption, JsonOption, app, console, settings_from
from proxygate.config import Settings
from proxygate.errors import ConfigError, ProxyError

Status = Literal["ok", "problem", "note"]
SYMBOL: dict[Status, str] = {"ok": "✓", "problem": "✗", "note": "–"}

# A token's expiry and a request's signature tolerate a few seconds; a minute off breaks logins.
MAX_CLOCK_SKEW_S = 60.0
CLOCK_URL = "https://api.anthropic.com/"
ONLINE_TIMEOUT_S = 10.0
REDIS_TIMEOUT_S = 3.0
"A PING to a reachable Redis answers in milliseconds; a firewall that drops packets would hang."


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    "What was looked at: config, data_dir, pool_file, port, …"
    status: Status
    message: str
    "One line naming the thing (file, port) and what was found."
    fix: str = ""
    "The command (or edit) that fixes it."

    def line(self) -> str:
        label = "fix" if self.status == "problem" else "try"
        return f"{SYMBOL[self.status]} {self.message}" + (f" — {label}: {self.fix}" if self.fix else "")


@app.command()
def doctor(
    config: ConfigOption = None,
    online: Annotated[
        bool, typer.Option("--online", help="Also check the clock against a provider and each account.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check this install: config, dirs and modes, pool files, store, port, token, clients."""
    findings = list(diagnose(config, online=online))
    if as_json:
        sys.stdout.write(
            orjson.dumps([asdict(f) for f in findings], option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    else:
        for finding in findings:
            console.print(finding.line(), markup=False, highlight=False, soft_wrap=True)
    if any(f.status == "problem" for f in findings):
        raise typer.Exit(1)


def diagnose(config: Path | None, *, online: bool) -> Iterator[Finding]:
    try:
        settings = settings_from(config)
    except ConfigError as exc:
        yield Finding("config", "problem", f"config: {exc.message}", "edit the file it names")
        return
    yield _config(settings)
    yield from _private_dir("data_dir", "data dir", settings.data_dir)
    yield from _private_dir("pool_dir", "pool dir", settings.pool_dir)
    yield from _pool(settings)
    yield _store(settings)
    yield from _admin_token(settings)
    yield _port(settings)
    yield _secrets(settings)
    yield _service()
    yield from _clients(settings)
    if online:
        yield _clock(_clock_url(settings))
        yield from _accounts_online(settings)


def _config(settings: Settings) -> Finding:
    where = str(settings.config_path) if settings.config_path else "none found, defaults in use"
    overrides = sorted(
        name for name in os.environ if name.startswith("PROXYGATE_") and name != "PROXYGATE_CONFIG"
    )
    extra = f"; environment overrides: {', '.join(overrides)}" if overrides else ""
    return Finding("config", "ok", f"config: {where}{extra}")


def _owner_and_mode(check: str, label: str, path: Path, want: int) -> Iterator[Finding]:
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid():
        yield Finding(
            check,
            "problem",
            f"{label} {path}: owned by uid {info.st_uid}, not by you (uid {os.getuid()})",
            f"sudo chown -R {os.getuid()} {path}",
        )
    if mode & ~want & 0o777:
        yield Finding(
            check,
            "problem",
            f"{label} {path}: mode {mode:04o}, others can read it (want {want:04o})",
            f"chmod {want:o} {path}",
        )


def _private_dir(check: str, label: str, path: Path) -> Iterator[Finding]:
    if not path.exists():
        ancestor = next(p for p in path.parents if p.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            what = "not a directory" if not ancestor.is_dir() else "not writable by you"
            yield Finding(
                check,
                "problem",
                f"{label} {path}: missing, and cannot be created ({ancestor} is {what})",
                f"mkdir -m 700 -p {path}, or set {check} in config.toml",
            )
            return
        yield Finding(check, "ok", f"{label} {path}: not created yet (serve creates it, 0700)")
        return
    if not path.is_dir():
        yield Finding(check, "problem", f"{label} {path}: not a directory", f"move {path} aside")
        return
    problems = list(_owner_and_mode(check, label, path, 0o700))
    yield from problems or [Finding(check, "ok", f"{label} {path}: 0700, yours")]


def _pool(settings: Settings) -> Iterator[Finding]:
    from proxygate.pool.files import account_files, load_pool
    from proxygate.store.secrets import Vault

    if not settings.pool_dir.is_dir():
        yield _empty_pool()
        return
    for sub in sorted(p for p in settings.pool_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        yield from _owner_and_mode("pool_dir", "pool dir", sub, 0o700)
    for _, path in account_files(settings.pool_dir):
        with contextlib.suppress(OSError):
            yield from _owner_and_mode("pool_file", "pool file", path, 0o600)
    try:
        snapshot = load_pool(settings.pool_dir, Vault.of(settings))
    except ProxyError as exc:
        yield Finding("pool", "problem", f"pool: {exc.message}")
        return
    for bad in snapshot.invalid:
        yield Finding(
            "pool_file", "problem", f"pool file {bad.path}: {bad.reason}", f"fix or remove {bad.path}"
        )
    kinds = {kind: sum(a.kind == kind for a in snapshot.accounts) for kind in ("claude", "chatgpt", "apikey")}
    if snapshot.accounts:
        counted = ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n)
        yield Finding("pool", "ok", f"pool: {len(snapshot.accounts)} accounts ({counted})")
        return
    yield _empty_pool()


def _empty_pool() -> Finding:
    """No accounts yet: a note with a login found on this machine to import, or how to add one."""
    from proxygate.cli.local_logins import suggestion

    note = suggestion()
    return Finding(
        "pool",
        "note",
        "pool: empty" + (f"; {note}" if note else ""),
        "" if note else "proxygate add-key, add-account or add-claude-account",
    )


def _store(settings: Settings) -> Finding:
    if settings.store.backend == "redis":
        return _shared_store(settings)
    path = settings.data_dir / "proxygate.lmdb"
    if not path.exists():
        return Finding("store", "ok", f"store {path}: not created yet (serve creates it)")
    from proxygate.store import LMDBStore

    try:
        store = LMDBStore(settings.data_dir, settings.usage)
        store.close()
    except ProxyError as exc:
        return Finding(
            "store",
            "problem",
            f"store {path}: does not open: {exc.message}",
            f"check the permissions of {path}, or move it aside (usage history starts over)",
        )
    size_mb = sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 1e6
    return Finding("store", "ok", f"store {path}: opens, {size_mb:.1f} MB")


def _shared_store(settings: Settings) -> Finding:
    """Redis answers a PING; a running server also says whether it is degraded (serving from its mirror)."""
    import redis

    from proxygate.cli.accounts import admin_get

    where = f"store {_without_password(settings.store.redis_url)}"
    client = redis.Redis.from_url(
        settings.store.redis_url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return Finding(
            "store",
            "problem",
            f"{where}: unreachable ({type(exc).__name__}: {exc})",
            "start Redis, or correct [store] redis_url (host, port, password; rediss:// for TLS)",
        )
    finally:
        client.close()
    degraded = ""
    with contextlib.suppress(ProxyError):  # no server running, or it did not answer: nothing to add
        report = admin_get(settings, "/admin/api/status")
        if isinstance(report, dict):
            degraded = str((report.get("store") or {}).get("degraded") or "")
    if degraded:
        return Finding(
            "store",
            "problem",
            f"{where}: reachable, but the running server's shared state is degraded: {degraded}",
            "the server reconnects by itself within seconds; if it stays degraded, restart it",
        )
    return Finding("store", "ok", f"{where}: reachable (shared state)")


def _without_password(url: str) -> str:
    """The Redis URL as it can be shown: a password (in the user info or a ``password=`` query) as ``***``."""
    head, sep, query = url.partition("?")
    parts = urllib.parse.urlsplit(head)
    if parts.password is not None:
        port = f":{parts.port}" if parts.port else ""
        head = urllib.parse.urlunsplit(
            parts._replace(netloc=f"{parts.username or ''}:***@{parts.hostname or ''}{port}")
        )
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    query = urllib.parse.urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    return head + sep + query


def _admin_token(settings: Settings) -> Iterator[Finding]:
    from proxygate.cli.admin_client import TOKEN_FILE

    if settings.admin_token:
        yield Finding("admin_token", "ok", "admin token: set in the settings")
        return
    path = settings.data_dir / TOKEN_FILE
    if not path.exists():
        yield Finding("admin_token", "ok", f"admin token {path}: not created yet (serve generates it)")
        return
    problems = list(_owner_and_mode("admin_token", "admin token", path, 0o600))
    yield from problems or [Finding("admin_token", "ok", f"admin token {path}: 0600, yours")]


def _port(settings: Settings) -> Finding:
    from proxygate.cli.admin_client import find_server
    from proxygate.server.runfile import read_runfile

    host, port = settings.host, settings.port
    where = f"port {port} on {host}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            sock.bind((host, port))
        return Finding("port", "ok", f"{where}: free")
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return Finding(
                "port", "problem", f"{where}: cannot listen: {exc.strerror}", "set addr in config.toml"
            )
    if find_server(settings, settings.addr) is not None:
        running = read_runfile(settings.data_dir)
        ours = running is not None and running.is_alive() and running.addr.endswith(f":{port}")
        version = f"proxygate {running.version}, pid {running.pid}" if ours and running else "a proxygate"
        return Finding("port", "ok", f"{where}: held by our server ({version})")
    return Finding(
        "port",
        "problem",
        f"{where}: taken by another program",
        f'stop it, or listen elsewhere: addr = "{host}:{port + 1}" in config.toml',
    )


def _secrets(settings: Settings) -> Finding:
    from proxygate.cli.secrets import secrets_line

    line = secrets_line(settings)
    if line.startswith("keys unreadable"):
        return Finding("secrets", "problem", f"secrets: {line}", "proxygate secrets --help")
    return Finding("secrets", "note", f"secrets: {line}")


def _service() -> Finding:
    from proxygate.cli.service import Manager, target_for
    from proxygate.cli.service_units import proxygate_command

    target = target_for(Manager.auto, is_system=False)
    if not target.path.is_file():
        return Finding("service", "note", "service: not installed", "proxygate service install")
    try:
        text = target.path.read_text(errors="replace")
    except OSError as exc:
        return Finding("service", "problem", f"service {target.path}: unreadable: {exc.strerror}")
    this = proxygate_command()[0]
    if this in text:
        return Finding("service", "ok", f"service {target.path}: runs this install ({this})")
    starts = [line.split("=", 1)[1].split()[0] for line in text.splitlines() if line.startswith("ExecStart=")]
    runs = starts[0].strip('"') if starts else ""
    if runs and not Path(runs).exists():
        return Finding(
            "service",
            "problem",
            f"service {target.path}: starts {runs}, which does not exist",
            "proxygate service install",
        )
    return Finding(
        "service",
        "note",
        f"service {target.path}: runs another install ({runs or 'unknown'})",
        "proxygate service install",
    )


def _clients(settings: Settings) -> Iterator[Finding]:
    from proxygate.server.snippets import base_url_of

    base = base_url_of(settings)
    home = Path.home()
    claude = home / ".claude" / "settings.json"
    if claude.is_file() or (home / ".claude").is_dir():
        url = ""
        with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError, TypeError):
            url = str(orjson.loads(claude.read_bytes()).get("env", {}).get("ANTHROPIC_BASE_URL") or "")
        yield _client_finding("Claude Code", claude, url, base, "claude-code")
    codex = home / ".codex" / "config.toml"
    if codex.is_file() or (home / ".codex").is_dir():
        url = ""
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError, AttributeError, TypeError, KeyError):
            data = tomllib.loads(codex.read_text())
            url = str(data["model_providers"][data["model_provider"]]["base_url"])
        yield _client_finding("Codex CLI", codex, url.removesuffix("/v1"), base, "codex")


def _client_finding(name: str, path: Path, url: str, base: str, client: str) -> Finding:
    if url.rstrip("/") == base:
        return Finding("client", "ok", f"{name}: points at this server ({path})")
    now = f"points at {url}" if url else "does not point at this server"
    return Finding("client", "note", f"{name}: {now} ({path})", f"proxygate setup {client} --write")


def _clock_url(settings: Settings) -> str:
    """A provider this install talks to: the first enabled account's, else Anthropic's API."""
    from proxygate.pool.files import load_pool
    from proxygate.store.secrets import Vault

    if settings.pool_dir.is_dir():
        with contextlib.suppress(ProxyError):
            for account in load_pool(settings.pool_dir, Vault.of(settings)).accounts:
                if not account.disabled:
                    return account.base_url + "/"
    return CLOCK_URL


def _clock(url: str) -> Finding:
    try:
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=ONLINE_TIMEOUT_S) as resp:
                date = resp.headers.get("Date")
        except urllib.error.HTTPError as exc:  # any answer carries a Date
            date = exc.headers.get("Date")
    except (urllib.error.URLError, OSError) as exc:
        return Finding("clock", "problem", f"clock: {url} did not answer ({exc})", "check the network")
    if not date:
        return Finding("clock", "note", f"clock: {url} sent no Date header")
    skew_s = time.time() - email.utils.parsedate_to_datetime(date).timestamp()
    if abs(skew_s) > MAX_CLOCK_SKEW_S:
        return Finding(
            "clock",
            "problem",
            f"clock: {skew_s:+.0f} s off {url} (tokens and signatures expire early or late)",
            "sudo timedatectl set-ntp true",
        )
    return Finding("clock", "ok", f"clock: {skew_s:+.1f} s from {url}")


def _accounts_online(settings: Settings) -> Iterator[Finding]:
    from proxygate.pool.catalog import PROVIDERS
    from proxygate.pool.files import load_pool
    from proxygate.providers.check import check_account
    from proxygate.store.secrets import Vault

    if not settings.pool_dir.is_dir():
        return
    for account in load_pool(settings.pool_dir, Vault.of(settings)).accounts:
        if account.disabled:
            continue
        literal = [m for m in account.models if not set("*?[") & set(m)]
        model = literal[0] if literal else PROVIDERS[account.provider].check_model
        if not model:
            yield Finding("account", "note", f"account {account.id}: no model to check with")
            continue
        try:
            result = asyncio.run(check_account(account, model, settings.timeouts))
        except ProxyError as exc:
            yield Finding(
                "account", "problem", f"account {account.id}: {exc.message}", f"proxygate check {account.id}"
            )
            continue
        if result.status < 400:
            yield Finding(
                "account", "ok", f"account {account.id}: HTTP {result.status} in {result.latency_ms:.0f} ms"
            )
        else:
            yield Finding(
                "account",
                "problem",
                f"account {account.id}: HTTP {result.status}: {result.said[:120]}",
                f"proxygate check {account.id}",
            )
