"""Settings: one frozen, typed tree loaded as defaults < config.toml < PROXYGATE_* < CLI flags.

One rule maps TOML to the environment: ``PROXYGATE_`` + the key path joined by ``_``,
upper-cased, for scalars (``[timeouts] connect_s`` is ``PROXYGATE_TIMEOUTS_CONNECT_S``).
Relative paths resolve against the directory of the config file in use, so ``serve`` and
every other command agree on one pool. A bad value fails at load, naming key, source and type.
``environ`` is an argument, so tests never patch ``os.environ``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from proxygate.errors import ConfigError

DEFAULT_PORT = 19527
HOME_DIR = Path("~/.proxygate")

LogLevel = Literal["debug", "info", "warn", "error"]
LogFormat = Literal["text", "json"]
CaptureMode = Literal["last-turn", "full"]
RoutingPriority = Literal["account-first", "apikey-first"]
Strategy = Literal["drain-aware", "priority", "round-robin", "least-used", "budget-aware"]
StoreBackend = Literal["lmdb", "redis"]


@dataclass(frozen=True, slots=True)
class TimeoutSettings:
    connect_s: float = 10.0
    "TCP + TLS connect to the provider."
    first_byte_s: float = 120.0
    "From sending the request to the first byte of the answer (models think before they speak)."
    idle_s: float = 300.0
    "Longest silence between two chunks of a stream."


@dataclass(frozen=True, slots=True)
class TierSettings:
    accounts: tuple[str, ...] = ("*",)
    "Account ids (globs) serving this tier, in order of preference."
    model: str = ""
    "Upstream model to send instead of the client's (empty: keep the client's)."
    fallback: tuple[str, ...] = ()
    "Account ids (globs) tried when every account of the tier is unavailable."


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    strategy: Strategy = "drain-aware"
    "How to order the eligible accounts."
    tiers: Mapping[str, TierSettings] = field(default_factory=dict)
    "opus / sonnet / haiku / default → accounts and an optional model remap."


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    priority: RoutingPriority = "account-first"
    "Try OAuth subscription accounts before API keys, or the other way round."
    active: str = "default"
    "Name of the routing config in use (switch with `proxygate route use NAME`)."
    cooldown_min_s: float = 15.0
    "First cooldown after a failure; doubles per consecutive failure."
    cooldown_max_s: float = 300.0
    "Longest cooldown when the provider gave no Retry-After."
    overload_cooldown_s: float = 5.0
    "Cooldown after a 529/503 overload: capacity, not quota, so short."
    last_resort_s: float = 3.0
    """When every other account failed for a request, cooling ones are tried once each, soonest
    first; one whose provider-given reset (Retry-After) is further away than this is skipped."""
    pin_ttl_s: float = 3600.0
    "A conversation keeps its account this long after its last request."
    max_wait_s: float = 0.0
    "A pinned conversation whose account cools down for at most this long waits for it (keeping its prompt cache) instead of moving; 0: never wait."
    aliases: Mapping[str, str] = field(default_factory=dict)
    "Client model name → model name the pool serves."
    configs: Mapping[str, RoutingConfig] = field(default_factory=lambda: {"default": RoutingConfig()})
    "Named routing configs."


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    daily_tokens: int = 0
    "Tokens (input + output + cache) an account may use per UTC day; 0: no limit."
    monthly_tokens: int = 0
    "Tokens an account may use per UTC calendar month; 0: no limit."
    daily_usd: float = 0.0
    "Dollars (API price, or API-equivalent value for a subscription) per UTC day; 0: no limit."
    monthly_usd: float = 0.0
    "Dollars per UTC calendar month; 0: no limit."


@dataclass(frozen=True, slots=True)
class UsageSettings:
    retention_days: int = 400
    "Daily usage rows older than this are deleted."
    hourly_retention_days: int = 31
    "Hourly usage rows older than this are deleted (daily rows stay)."
    request_log_max_rows: int = 100_000
    "Newest entries kept in the request log (ids, status, tokens, cost; never bodies)."


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    enabled: bool = False
    "Write request/answer pairs as JSONL in the OpenAI chat fine-tuning shape."
    mode: CaptureMode = "last-turn"
    "last-turn: only each turn's new messages (export rebuilds conversations); full: every request whole."
    dir: Path | None = None
    "Where capture files go (default: <data_dir>/capture)."
    gzip: bool = False
    "Compress capture files."
    max_mb: float = 100.0
    "Rotate a capture file past this size."
    routes: tuple[str, ...] = ()
    "Capture only these routing configs (empty: all)."
    models: tuple[str, ...] = ()
    "Capture only models matching these globs (empty: all)."


@dataclass(frozen=True, slots=True)
class GuardrailDetectors:
    """Each detector on its own; all on when guardrails are enabled (names as in logs and metrics)."""

    email: bool = True
    "Email addresses (replaced by a fake address)."
    phone: bool = True
    "Phone numbers in international or national form, validated with phonenumbers."
    ssn: bool = True
    "US Social Security numbers (ddd-dd-dddd, area/group/serial rules)."
    name: bool = True
    "Person names: first+last from name lists, or after a context word (author:, Signed-off-by:)."
    address: bool = True
    "Street addresses (number, street name, street suffix)."
    passport: bool = True
    "Passport numbers next to a context word (passport, travel document)."
    credit_card: bool = True
    "Card numbers (Luhn; Visa, Mastercard, Amex, Discover)."
    iban: bool = True
    "IBANs (mod-97 checked)."
    api_key: bool = True
    "API keys with a known vendor prefix (sk-ant-, ghp_, xoxb-, AIza, …)."
    aws_key: bool = True
    "AWS access key ids, and secret keys next to their name."
    jwt: bool = True
    "JSON Web Tokens (three parts, decodable header)."
    private_key: bool = True
    "The body of a PEM/OpenSSH/PGP private key block (BEGIN/END lines stay)."
    url_credentials: bool = True
    "The password in scheme://user:password@host."
    password: bool = True
    'Values assigned to password-like names (password=, PGPASSWORD=, "passwd": …).'
    ip_address: bool = True
    "Global IPv4 and IPv6 addresses (see the ip_* options for the others)."


@dataclass(frozen=True, slots=True)
class GuardrailSettings:
    enabled: bool = False
    "Replace secrets and personal data in requests before they leave, and restore them in answers."
    detectors: GuardrailDetectors = GuardrailDetectors()
    allow: tuple[str, ...] = ()
    "Values never replaced: a literal, or a regex written re:PATTERN (must match the whole value)."
    ip_loopback: bool = False
    "Also replace loopback addresses (127.0.0.0/8, ::1)."
    ip_private: bool = False
    "Also replace private, link-local, shared and documentation ranges (10/8, 192.168/16, fe80::/10, …)."
    ip_version_like: bool = False
    "Also replace IPv4-shaped strings after a version word (version 1.2.3.4, v1.2.3.4)."
    key: str = ""
    "Replacement key (64 hex chars); unset: <data_dir>/guardrails.key, generated 0600 on first use."
    reverse_map_max_entries: int = 100_000
    "Replacements remembered in the store so answers can be restored later (oldest dropped first)."


@dataclass(frozen=True, slots=True)
class TenantSettings:
    owner_share: float = 1.0
    "The owner's weight in the fair shares of subscription windows (tenants have --share)."


@dataclass(frozen=True, slots=True)
class ModelLimitSettings:
    """What a model can take, for models whose provider reports it wrongly or not at all."""

    max_output_tokens: int = 0
    "Largest max_tokens sent upstream; a request asking more is clamped (0: no clamp)."
    context_window: int = 0
    "Tokens of prompt + output the model takes; max_tokens is clamped to what the prompt leaves (0: unknown)."
    tools: bool | None = None
    "false: tool definitions are removed and tool calls in the history become text."
    thinking: bool | None = None
    "false: thinking / reasoning settings and thinking blocks in the history are removed."
    reasoning_efforts: tuple[str, ...] = ()
    """Reasoning efforts the upstream model accepts (e.g. ["low", "medium", "high"]) when the
    built-in catalog is wrong or does not know the model; a converted request's effort becomes
    the nearest of these (empty: the catalog's; thinking = false: none)."""
    images: bool | None = None
    "false: images become the text [image omitted: model has no vision]."


@dataclass(frozen=True, slots=True)
class PriceSettings:
    """USD per million tokens; an unset cache price falls back to the shipped entry's."""

    input: float = 0.0
    "Input tokens."
    output: float = 0.0
    "Output tokens."
    cache_read: float | None = None
    "Cache-read (cached input) tokens."
    cache_write: float | None = None
    "Cache writes (Anthropic 5-minute TTL)."
    cache_write_1h: float | None = None
    "Cache writes (Anthropic 1-hour TTL)."


@dataclass(frozen=True, slots=True)
class OpenAIOAuthSettings:
    """ChatGPT/Codex OAuth endpoints (peers.md §3.2); every URL overridable for local fakes."""

    client_id: str = "app_EMoamEEZ73f0CkXaXp7hrann"
    "The Codex CLI's public OAuth client id."
    authorize_url: str = "https://auth.openai.com/oauth/authorize"
    "Where the browser login starts."
    token_url: str = "https://auth.openai.com/oauth/token"
    "Code exchange and refresh."
    device_code_url: str = "https://auth.openai.com/api/accounts/deviceauth/usercode"
    "Device flow: ask for a user code."
    device_token_url: str = "https://auth.openai.com/api/accounts/deviceauth/token"
    "Device flow: poll for the authorization code."
    device_verify_url: str = "https://auth.openai.com/codex/device"
    "Device flow: the page the user opens to enter the code."
    device_redirect_uri: str = "https://auth.openai.com/deviceauth/callback"
    "redirect_uri of the device flow's code exchange."
    callback_port: int = 1455
    "Loopback port of the login callback; the only one the authorization server accepts."
    scope: str = "openid profile email offline_access"
    "Scopes asked for at login."
    usage_url: str = "https://chatgpt.com/backend-api/wham/usage"
    "Quota windows of one account (free to call)."


@dataclass(frozen=True, slots=True)
class ClaudeOAuthSettings:
    """Claude Code OAuth endpoints (peers.md §3.1); every URL overridable for local fakes."""

    client_id: str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    "Claude Code's public OAuth client id."
    authorize_url: str = "https://claude.ai/oauth/authorize"
    "Where the browser login starts."
    token_url: str = "https://platform.claude.com/v1/oauth/token"
    "Code exchange and refresh."
    redirect_uri: str = "https://platform.claude.com/oauth/code/callback"
    "Copy-the-code page: shows code#state for pasting into the terminal."
    scope: str = "user:profile user:inference user:sessions:claude_code"
    "Scopes asked for at login."
    usage_url: str = "https://api.anthropic.com/api/oauth/usage"
    "Quota windows of one subscription (free to call)."


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    refresh_margin_s: float = 300.0
    "Refresh an access token this long before it expires."
    usage_poll_s: float = 300.0
    "How often to poll each subscription's usage endpoint (jittered; 0 turns polling off)."
    lock_timeout_s: float = 60.0
    "Longest wait for another proxygate process refreshing the same account."
    openai: OpenAIOAuthSettings = OpenAIOAuthSettings()
    claude: ClaudeOAuthSettings = ClaudeOAuthSettings()


@dataclass(frozen=True, slots=True)
class SecretsSettings:
    """Account secrets at rest (issue 13): API keys and OAuth tokens in pool files, AES-256-GCM."""

    encrypt: bool = False
    "Encrypt the secrets proxygate writes (logins, refreshes, add-key) and upgrade plaintext files it loads."
    key: str = ""
    "A data key (32 bytes, base64url) to use instead of a generated one, e.g. shared by several instances."
    keyring: bool = True
    "Keep a generated data key in the OS keyring when one is usable; else a 0600 key file in data_dir."


@dataclass(frozen=True, slots=True)
class AlertSettings:
    webhook_url: str = ""
    "POST a JSON body here when an account is quarantined, needs re-auth or runs out of a window (unset: log only)."


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where state lives (issue 17): embedded LMDB for one machine, Redis shared by several instances."""

    backend: StoreBackend = "lmdb"
    "lmdb: the data dir, shared by the processes of one machine; redis: shared by every instance using redis_url."
    redis_url: str = ""
    "redis://[:password@]host:port/db, or rediss:// for TLS, or unix:///path/redis.sock (backend = redis)."
    key_prefix: str = "proxygate"
    "Prefix of every Redis key and channel, so several deployments can share one Redis."


@dataclass(frozen=True, slots=True)
class Settings:
    addr: str = f"127.0.0.1:{DEFAULT_PORT}"
    "Listen address HOST:PORT. Anything but loopback needs proxy_token."
    admin_token: str = ""
    "Token for /admin/* (loopback too); unset: the server generates one into <data_dir>/admin.token."
    proxy_token: str = ""
    "Token clients must present (Bearer, X-ProxyGate-Token or x-api-key). Unset: no check."
    data_dir: Path = HOME_DIR / "data"
    "LMDB usage store and other state."
    pool_dir: Path = HOME_DIR / "pool"
    "Account files: apikeys/, claude/, chatgpt/."
    log_level: LogLevel = "info"
    "debug, info, warn or error."
    log_format: LogFormat = "text"
    "text, or json: one JSON object a line, with the request id."
    log_file: Path | None = None
    "Also write the log to this file, rotated (unset: stderr only)."
    log_file_max_mb: float = 10.0
    "Rotate the log file past this size."
    log_file_count: int = 5
    "Rotated log files kept."
    max_body_mb: float = 32.0
    "Largest request body accepted; larger gets 413 in the client's format."
    max_response_mb: float = 64.0
    "Largest non-streaming upstream answer read; larger is a 502 in the client's format."
    max_stream_s: float = 3600.0
    "Longest an answer may run (pings do not extend it): a stream ends with an error event, else 504."
    header_timeout_s: float = 30.0
    "A client must send its request line and headers within this."
    body_min_bytes_per_s: int = 65536
    "After header_timeout_s, a request body must keep arriving at least this fast."
    max_connections: int = 4096
    "Open client connections at most; more are closed at once."
    max_connections_per_peer: int = 256
    "Open connections per peer address when listening beyond loopback."
    allowed_hosts: tuple[str, ...] = ()
    "Host header values accepted besides 127.0.0.1, localhost and [::1] (DNS-rebinding guard)."
    allowed_origins: tuple[str, ...] = ()
    "Browser Origins allowed to call the proxy (e.g. https://my-web-client.example); none by default."
    metrics_token: str = ""
    "Token for /metrics from non-loopback peers (admin_token works too)."
    ca_bundle: str = ""
    "Extra CA bundle (PEM) for outbound TLS, e.g. behind a corporate proxy."
    expose_account_header: bool = True
    "Send x-proxygate-account (the account id) on responses."
    drain_timeout_s: float = 30.0
    "On SIGTERM, how long streams in flight may take to finish."
    workers: int = 1
    "Processes serving the port (SO_REUSEPORT, Linux); more than 1 runs a supervisor that restarts them."
    timeouts: TimeoutSettings = TimeoutSettings()
    routing: RoutingSettings = RoutingSettings()
    budgets: Mapping[str, BudgetSettings] = field(default_factory=dict)
    "Account id → token and dollar budgets; an account over one is skipped by every strategy."
    usage: UsageSettings = UsageSettings()
    capture: CaptureSettings = CaptureSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    prices: Mapping[str, PriceSettings] = field(default_factory=dict)
    "Model name → price (USD per million tokens), overriding or adding to the shipped table."
    oauth: OAuthSettings = OAuthSettings()
    tenants: TenantSettings = TenantSettings()
    models: Mapping[str, ModelLimitSettings] = field(default_factory=dict)
    "Model glob → what the model can take (issue 14); the first matching entry applies."
    secrets: SecretsSettings = SecretsSettings()
    alerts: AlertSettings = AlertSettings()
    store: StoreSettings = StoreSettings()
    config_path: Path | None = None
    "The config file in use (not a setting: where the others came from)."

    @property
    def host(self) -> str:
        return split_addr(self.addr, "addr")[0]

    @property
    def port(self) -> int:
        return split_addr(self.addr, "addr")[1]

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_response_bytes(self) -> int:
        return int(self.max_response_mb * 1024 * 1024)


def split_addr(addr: str, source: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{source}: {addr!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def find_config(explicit: Path | None, environ: Mapping[str, str], cwd: Path) -> Path | None:
    """--config, then PROXYGATE_CONFIG, then ./config.toml, then ~/.proxygate/config.toml."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"--config: {explicit} does not exist")
        return explicit
    if env := environ.get("PROXYGATE_CONFIG"):
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"PROXYGATE_CONFIG: {path} does not exist")
        return path
    for candidate in (cwd / "config.toml", (HOME_DIR / "config.toml").expanduser()):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    cwd: Path | None = None,
) -> Settings:
    """Load the settings; ``overrides`` are CLI flags as dotted keys (``{"addr": "…"}``)."""
    environ = {} if environ is None else environ
    config_path = find_config(path, environ, cwd or Path.cwd())
    data: dict[str, Any] = {}
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{config_path}: {exc}") from None
    settings: Settings = _build(Settings, data, str(config_path or "defaults"), environ, "")
    for key, value in (overrides or {}).items():
        if value is not None:
            settings = _override(settings, key.split("."), value, f"--{key.replace('_', '-')}")
    base = config_path.parent if config_path else Path.cwd()
    settings = dataclasses.replace(
        settings,
        data_dir=_resolve(settings.data_dir, base),
        pool_dir=_resolve(settings.pool_dir, base),
        log_file=None if settings.log_file is None else _resolve(settings.log_file, base),
        config_path=config_path,
    )
    capture_dir = settings.capture.dir
    settings = dataclasses.replace(
        settings,
        capture=dataclasses.replace(
            settings.capture,
            dir=settings.data_dir / "capture" if capture_dir is None else _resolve(capture_dir, base),
        ),
    )
    if "default" not in settings.routing.configs:  # always there, so `route use default` works
        configs = {"default": RoutingConfig(), **settings.routing.configs}
        settings = dataclasses.replace(
            settings, routing=dataclasses.replace(settings.routing, configs=configs)
        )
    split_addr(settings.addr, "addr")
    _check_secrets_key(settings.secrets.key)
    _check_store(settings.store)
    for key in (
        "max_body_mb",
        "max_response_mb",
        "max_stream_s",
        "header_timeout_s",
        "body_min_bytes_per_s",
        "max_connections",
        "max_connections_per_peer",
    ):
        if getattr(settings, key) <= 0:
            raise ConfigError(f"{key}: must be positive, got {getattr(settings, key)}")
    if settings.routing.active not in settings.routing.configs:
        raise ConfigError(
            f"routing.active: {settings.routing.active!r} is not one of the routing configs "
            f"({', '.join(sorted(settings.routing.configs))})"
        )
    return settings


def _check_secrets_key(text: str) -> None:
    """A bad shared key fails at load, not at the first file it should open (never echoes it)."""
    if not text:
        return
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise ConfigError("secrets.key: not base64url (generate one: openssl rand -base64 32)") from None
    if len(key) != 32:
        raise ConfigError(f"secrets.key: must be 32 bytes (base64url), got {len(key)}")


def _check_store(store: StoreSettings) -> None:
    """A Redis store needs a URL it can use; said at load, without echoing a password."""
    if not store.key_prefix.strip() or any(c.isspace() for c in store.key_prefix):
        raise ConfigError(f"store.key_prefix: {store.key_prefix!r} must be non-empty, without spaces")
    if store.backend != "redis":
        return
    if not store.redis_url:
        raise ConfigError(
            'store.redis_url: required with store.backend = "redis" (e.g. redis://127.0.0.1:6379/0)'
        )
    scheme, sep, _ = store.redis_url.partition("://")
    if not sep or scheme.lower() not in ("redis", "rediss", "unix"):
        raise ConfigError("store.redis_url: must start with redis://, rediss:// or unix://")


def _resolve(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _build(cls: Any, data: Mapping[str, Any], source: str, environ: Mapping[str, str], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} ({source}): expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "config_path"}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{prefix}{sorted(unknown)[0]} ({source}): unknown setting")
    kwargs: dict[str, Any] = {}
    for name in names:
        key = prefix + name
        hint = hints[name]
        env_name = "PROXYGATE_" + key.replace(".", "_").upper()
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, data.get(name, {}), source, environ, key + ".")
        elif env_name in environ:
            kwargs[name] = _coerce(hint, environ[env_name], f"{key} (env {env_name})", from_env=True)
        elif name in data:
            kwargs[name] = _coerce(hint, data[name], f"{key} ({source})", from_env=False)
    return cls(**kwargs)


def _override(obj: Any, path: list[str], value: Any, source: str) -> Any:
    hint = typing.get_type_hints(type(obj))[path[0]]
    if len(path) == 1:
        new = _coerce(hint, value, f"{path[0]} ({source})", from_env=isinstance(value, str))
    else:
        new = _override(getattr(obj, path[0]), path[1:], value, source)
    return dataclasses.replace(obj, **{path[0]: new})


def _coerce(hint: Any, value: Any, where: str, *, from_env: bool) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (types.UnionType, typing.Union):  # Path | None
        return _coerce(
            next(a for a in get_args(hint) if a is not type(None)), value, where, from_env=from_env
        )
    if hint is bool:
        if (
            from_env
            and isinstance(value, str)
            and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off")
        ):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint in (int, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if origin is tuple:
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if origin in (Mapping, dict) or hint is Mapping:
        _, val_t = get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        if dataclasses.is_dataclass(val_t):
            return {k: _build(val_t, v, where, {}, f"{where.split(' ')[0]}.{k}.") for k, v in value.items()}
        return {
            str(k): _coerce(val_t, v, f"{where.split(' ')[0]}.{k}", from_env=False) for k, v in value.items()
        }
    raise ConfigError(f"{where}: unsupported setting type {hint}")  # pragma: no cover
