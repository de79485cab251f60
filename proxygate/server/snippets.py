"""Client set-up snippets: the one source for `proxygate setup` and the dashboard's Setup page.

Each client gets one or more ``Snippet``s (a title, the file it belongs in, the text), built from
the server's base URL and whether clients must present a token. A snippet never holds a secret:
with a proxy token it names ``$PROXYGATE_KEY`` (in the client's own way of reading the
environment); without one the key is any value, and the snippet says so.

The structured values ``setup --write`` merges into a client's file (``claude_code_settings``,
``codex_provider``, ``gemini_settings``, ``opencode_config``, ``gemini_env``) are the ones the
texts are rendered from, so the printed snippet and the written file cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import tomli_w
import tomlkit
import tomlkit.exceptions

from proxygate.config import Settings

KEY_ENV = "PROXYGATE_KEY"
"The environment variable snippets read the proxy token from; the token itself is never written."
ANY_KEY = "proxygate"
"The key clients send when the server checks none (they refuse an empty one)."
PROVIDER_ID = "proxygate"
"Name of the provider entry added to Codex's and OpenCode's configs."

CLIENTS: dict[str, str] = {
    "claude-code": "Claude Code",
    "codex": "Codex CLI",
    "gemini": "Gemini CLI",
    "opencode": "OpenCode",
    "aider": "Aider",
    "cursor": "Cursor",
    "continue": "Continue",
    "anthropic-sdk": "anthropic SDK (Python)",
    "openai-sdk": "openai SDK (Python)",
    "curl": "curl",
}
"Client id → display name, in the order the Setup page and `setup --help` list them."


@dataclass(frozen=True, slots=True)
class Snippet:
    client: str
    "Client id (a key of CLIENTS)."
    title: str
    "What this snippet is, e.g. 'Claude Code: ~/.claude/settings.json'."
    file: str
    "Where the text goes: a path (~ for home), or 'shell' for lines to run or put in a profile."
    language: str
    "json, toml, yaml, sh, python, dotenv or text: for highlighting."
    text: str
    "The snippet itself, ending with a newline."
    note: str = ""
    "One line on what to do with it (merge into an existing file, set the key, …)."


def base_url_of(settings: Settings) -> str:
    """http://HOST:PORT of the configured address, as a client on this machine reaches it."""
    host, port = settings.host, settings.port
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"  # a wildcard listener answers on loopback
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def needs_token(settings: Settings) -> bool:
    """Whether clients must present the proxy token."""
    return bool(settings.proxy_token)


def _key_note(needs_key: bool) -> str:
    if needs_key:
        return f"set {KEY_ENV} to the proxy_token in your environment (export {KEY_ENV}=…)"
    return "the key can be any value: this server checks none"


def claude_code_settings(base_url: str, needs_key: bool) -> dict[str, Any]:
    """Keys for ~/.claude/settings.json: the base URL, and a token or a helper reading $PROXYGATE_KEY."""
    if needs_key:
        # apiKeyHelper's output is sent as x-api-key and Bearer; a settings.json value cannot
        # read the environment, and the token must not be written into the file.
        return {"env": {"ANTHROPIC_BASE_URL": base_url}, "apiKeyHelper": f"printenv {KEY_ENV}"}
    return {"env": {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_AUTH_TOKEN": ANY_KEY}}


def codex_provider(base_url: str, needs_key: bool) -> dict[str, Any]:
    """Keys for ~/.codex/config.toml: the top-level model_provider and its [model_providers] table."""
    table: dict[str, Any] = {"name": PROVIDER_ID, "base_url": f"{base_url}/v1", "wire_api": "responses"}
    if needs_key:
        table["env_key"] = KEY_ENV  # Codex reads the token from this variable, sends it as Bearer
    return {"model_provider": PROVIDER_ID, "model_providers": {PROVIDER_ID: table}}


def gemini_settings() -> dict[str, Any]:
    """Keys for ~/.gemini/settings.json: authenticate with an API key (ours), not a Google login."""
    return {"security": {"auth": {"selectedType": "gemini-api-key"}}}


def gemini_env(base_url: str, needs_key: bool) -> dict[str, str]:
    """Lines for ~/.gemini/.env, which Gemini CLI loads at start (no secret: without a token only)."""
    env = {"GOOGLE_GEMINI_BASE_URL": base_url}
    if not needs_key:
        env["GEMINI_API_KEY"] = ANY_KEY
    return env


def opencode_config(base_url: str, needs_key: bool) -> dict[str, Any]:
    """Keys for opencode.json: the built-in anthropic and openai providers sent to this server."""
    key = f"{{env:{KEY_ENV}}}" if needs_key else ANY_KEY  # OpenCode substitutes {env:NAME}
    options = {"baseURL": f"{base_url}/v1", "apiKey": key}
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {"anthropic": {"options": dict(options)}, "openai": {"options": dict(options)}},
    }


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"


def _sh_key(needs_key: bool) -> str:
    return f'"${KEY_ENV}"' if needs_key else ANY_KEY


def snippets_for(client: str, base_url: str, needs_key: bool) -> tuple[Snippet, ...]:
    """The snippets of one client (KeyError for an unknown client id)."""
    title = CLIENTS[client]
    note = _key_note(needs_key)
    match client:
        case "claude-code":
            return (
                Snippet(
                    client,
                    f"{title}: ~/.claude/settings.json",
                    "~/.claude/settings.json",
                    "json",
                    _json(claude_code_settings(base_url, needs_key)),
                    f"merge into the file's top level; {note}",
                ),
            )
        case "codex":
            shell = (
                Snippet(client, f"{title}: environment", "shell", "sh", f"export {KEY_ENV}=…\n", note)
                if needs_key
                else None
            )
            config = Snippet(
                client,
                f"{title}: ~/.codex/config.toml",
                "~/.codex/config.toml",
                "toml",
                tomli_w.dumps(codex_provider(base_url, needs_key)),
                "model_provider goes at the top of the file, before any table",
            )
            return (config, shell) if shell else (config,)
        case "gemini":
            env = gemini_env(base_url, needs_key)
            parts = [
                Snippet(
                    client,
                    f"{title}: ~/.gemini/settings.json",
                    "~/.gemini/settings.json",
                    "json",
                    _json(gemini_settings()),
                    "merge into the file's top level",
                ),
                Snippet(
                    client,
                    f"{title}: ~/.gemini/.env",
                    "~/.gemini/.env",
                    "dotenv",
                    "".join(f"{name}={value}\n" for name, value in env.items()),
                    "Gemini CLI loads it at start (a project's own .gemini/.env or .env wins over it)",
                ),
            ]
            if needs_key:
                parts.append(
                    Snippet(
                        client,
                        f"{title}: environment",
                        "shell",
                        "sh",
                        f'export GEMINI_API_KEY="${KEY_ENV}"\n',
                        note,
                    )
                )
            return tuple(parts)
        case "opencode":
            return (
                Snippet(
                    client,
                    f"{title}: ~/.config/opencode/opencode.json",
                    "~/.config/opencode/opencode.json",
                    "json",
                    _json(opencode_config(base_url, needs_key)),
                    f"or a project's opencode.json; {note}",
                ),
            )
        case "aider":
            key = _sh_key(needs_key)
            return (
                Snippet(
                    client,
                    f"{title}: environment",
                    "shell",
                    "sh",
                    f"export ANTHROPIC_API_BASE={base_url} ANTHROPIC_API_KEY={key}\n"
                    f"export OPENAI_API_BASE={base_url}/v1 OPENAI_API_KEY={key}\n"
                    "aider --model anthropic/claude-sonnet-4-5   # or --model openai/gpt-5\n",
                    note,
                ),
            )
        case "cursor":
            return (
                Snippet(
                    client,
                    f"{title}: Settings → Models",
                    "Cursor Settings → Models",
                    "text",
                    "Cursor calls a custom base URL from its own servers, so they must reach this one:\n"
                    f"1. expose it through a tunnel, e.g.  cloudflared tunnel --url {base_url}\n"
                    "2. set proxy_token in config.toml (anything reachable from outside needs one)\n"
                    "   and add the tunnel's host name to allowed_hosts\n"
                    "3. Override OpenAI Base URL: https://<tunnel host>/v1\n"
                    "4. OpenAI API Key: the proxy_token\n",
                    "there is nothing to write on this machine: Cursor keeps these settings itself",
                ),
            )
        case "continue":
            key = f"${{{{ secrets.{KEY_ENV} }}}}" if needs_key else ANY_KEY
            return (
                Snippet(
                    client,
                    f"{title}: ~/.continue/config.yaml",
                    "~/.continue/config.yaml",
                    "yaml",
                    "models:\n"
                    "  - name: Claude via proxygate\n"
                    "    provider: anthropic\n"
                    "    model: claude-sonnet-4-5\n"
                    f"    apiBase: {base_url}/v1/\n"
                    f"    apiKey: {key}\n"
                    "  - name: GPT via proxygate\n"
                    "    provider: openai\n"
                    "    model: gpt-5\n"
                    f"    apiBase: {base_url}/v1/\n"
                    f"    apiKey: {key}\n",
                    f"add to the models list; {KEY_ENV}=… goes in ~/.continue/.env"
                    if needs_key
                    else "add to the models list; the key can be any value",
                ),
            )
        case "anthropic-sdk" | "openai-sdk":
            module, cls, path = (
                ("anthropic", "Anthropic", "") if client == "anthropic-sdk" else ("openai", "OpenAI", "/v1")
            )
            key = f'os.environ["{KEY_ENV}"]' if needs_key else f'"{ANY_KEY}"  # any value'
            imports = f"import os\n\nimport {module}\n" if needs_key else f"import {module}\n"
            return (
                Snippet(
                    client,
                    f"{title}",
                    "your code",
                    "python",
                    f'{imports}\nclient = {module}.{cls}(base_url="{base_url}{path}", api_key={key})\n',
                    note,
                ),
            )
        case "curl":
            header = f'-H "x-api-key: ${KEY_ENV}"' if needs_key else f"-H 'x-api-key: {ANY_KEY}'"
            body = (
                '{"model": "claude-sonnet-4-5", "max_tokens": 64, '
                '"messages": [{"role": "user", "content": "Hello"}]}'
            )
            return (
                Snippet(
                    client,
                    f"{title}: one request",
                    "shell",
                    "sh",
                    f"curl {base_url}/v1/messages {header} \\\n"
                    f"  -H 'content-type: application/json' \\\n  -d '{body}'\n",
                    note,
                ),
            )
    raise KeyError(client)  # pragma: no cover  (CLIENTS and the match list the same ids)


def all_snippets(base_url: str, needs_key: bool) -> list[Snippet]:
    """Every client's snippets, in CLIENTS order."""
    return [snippet for client in CLIENTS for snippet in snippets_for(client, base_url, needs_key)]


@dataclass(frozen=True, slots=True)
class ClientFile:
    """A file ``setup --write`` changes: where, and how its old text becomes the new one."""

    path: str
    "~-relative path of the client's file."
    merge: Callable[[str | None], str]
    "Old text (None: no file yet) → new text; ValueError when the old text cannot be parsed."


WRITABLE = ("claude-code", "codex", "gemini", "opencode")
"Clients whose configuration `setup --write` edits; the others only print their snippets."


def client_files(client: str, base_url: str, needs_key: bool) -> tuple[ClientFile, ...]:
    """The files ``setup --write`` merges this client's settings into (empty: print only)."""
    match client:
        case "claude-code":
            return (
                ClientFile(
                    "~/.claude/settings.json", lambda old: merged_claude_code(old, base_url, needs_key)
                ),
            )
        case "codex":
            provider = codex_provider(base_url, needs_key)
            return (ClientFile("~/.codex/config.toml", lambda old: merged_codex_toml(old, provider)),)
        case "gemini":
            env = gemini_env(base_url, needs_key)
            return (
                ClientFile("~/.gemini/settings.json", lambda old: merged_json(old, gemini_settings())),
                ClientFile("~/.gemini/.env", lambda old: merged_dotenv(old, env)),
            )
        case "opencode":
            config = opencode_config(base_url, needs_key)
            return (ClientFile("~/.config/opencode/opencode.json", lambda old: merged_json(old, config)),)
    return ()


def _deep_merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def merged_json(old: str | None, patch: Mapping[str, Any]) -> str:
    """``patch`` merged into a JSON object: nested objects merged, other keys kept as they were."""
    current: Any = {}
    if old is not None and old.strip():
        try:
            current = orjson.loads(old)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(current, dict):
            raise ValueError("not a JSON object")
    return _json(_deep_merge(current, patch))


def merged_claude_code(old: str | None, base_url: str, needs_key: bool) -> str:
    """Claude Code's settings merged; the other mode's key setting (ours) dropped, since
    ANTHROPIC_AUTH_TOKEN would win over apiKeyHelper and send a placeholder instead of the token."""
    merged = orjson.loads(merged_json(old, claude_code_settings(base_url, needs_key)))
    if needs_key and merged.get("env", {}).get("ANTHROPIC_AUTH_TOKEN") == ANY_KEY:
        del merged["env"]["ANTHROPIC_AUTH_TOKEN"]
    if not needs_key and merged.get("apiKeyHelper") == f"printenv {KEY_ENV}":
        del merged["apiKeyHelper"]
    return _json(merged)


def merged_codex_toml(old: str | None, provider: Mapping[str, Any]) -> str:
    """The top-level ``model_provider`` and its ``[model_providers.NAME]`` table set; every other
    key, comment and table kept as written (tomlkit edits the document in place)."""
    try:
        doc = tomlkit.parse(old or "")
    except tomlkit.exceptions.ParseError as exc:
        raise ValueError(f"not valid TOML ({exc})") from None
    doc["model_provider"] = provider["model_provider"]
    providers = doc.get("model_providers")
    if providers is None:
        providers = tomlkit.table(is_super_table=True)
        doc["model_providers"] = providers
    elif not isinstance(providers, dict):
        raise ValueError("model_providers is not a table")
    for name, values in provider["model_providers"].items():
        table = tomlkit.table()
        table.update(values)
        providers[name] = table
    return tomlkit.dumps(doc)


def merged_dotenv(old: str | None, env: Mapping[str, str]) -> str:
    """``NAME=value`` lines set: a line of the same name replaced in place, a new one appended."""
    lines = (old or "").splitlines()
    missing = dict(env)
    for i, line in enumerate(lines):
        name = line.removeprefix("export ").split("=", 1)[0].strip()
        if name in missing and "=" in line:
            lines[i] = f"{name}={missing.pop(name)}"
    lines += [f"{name}={value}" for name, value in missing.items()]
    return "\n".join(lines) + "\n"
