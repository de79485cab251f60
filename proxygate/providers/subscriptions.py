"""What the subscription backends demand beyond the API-key path, whatever route built the body.

One entry point for bodies, ``adjust_body``, called by the pipeline for every OAuth account
after the body is built (fast path or converted), and one for headers, ``subscription_headers``,
called by ``build_request``. So a Codex CLI on the fast path, a Chat Completions client
converted to Responses, and an Anthropic client converted likewise all reach the ChatGPT
backend with the same body rules.

ChatGPT (Codex backend, peers.md §3.2, protocols.md §3.1): ``store: false`` and
``stream: true`` always (a non-streaming client gets the stream collected, see
``server/collect.py``); ``max_output_tokens``/``max_tokens``/``metadata`` are rejected, so
removed; headers ``chatgpt-account-id``, ``originator``, a Codex User-Agent and a stable
``session_id``.

Claude (peers.md §3.1): the Bearer token plus the merged ``oauth-2025-04-20`` beta
(``upstream.build_request``), and a system prompt that opens with Claude Code's identity —
without it the API answers "This credential is only authorized for use with Claude Code".
Claude Code itself already sends it, so its bytes pass untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from proxygate.auth.tokens import CODEX_ORIGINATOR, CODEX_USER_AGENT
from proxygate.pool.records import Account

CLAUDE_CODE_IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."

# Fields the Codex backend rejects with 400 (peers.md §3.2: LiteLLM docs; ccproxy-api PR #59).
CHATGPT_REJECTED_FIELDS = ("max_output_tokens", "max_tokens", "metadata")

# Recent Claude Code puts a billing-header text block before the identity (peers.md §3.1).
_BILLING_PREFIX = "x-anthropic-billing-header:"

_REFUSAL_MARK = "only authorized for use with Claude Code"

# Session ids are derived, not random, so one conversation keeps one id across requests and
# proxygate restarts (the backend keys prompt caching on it).
_SESSION_NAMESPACE = uuid.UUID("5d0c7c53-7f0e-4a43-9d55-0c9b0b6a1f3e")


def prepare_chatgpt_body(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses body as the Codex backend accepts it: always streamed (the relay collects the
    stream for a client that asked for JSON)."""
    adjusted = {k: v for k, v in body.items() if k not in CHATGPT_REJECTED_FIELDS}
    adjusted["store"] = False  # "400 Store must be set to false" (protocols.md §3.1)
    adjusted["stream"] = True
    if adjusted.get("reasoning") is not None:
        # With store:false, reasoning continues only through encrypted_content (protocols.md §3.3).
        include = [i for i in adjusted.get("include") or [] if isinstance(i, str)]
        if "reasoning.encrypted_content" not in include:
            adjusted["include"] = [*include, "reasoning.encrypted_content"]
    return adjusted


def _system_blocks(system: Any) -> list[dict[str, Any]]:
    if isinstance(system, str):
        return [{"type": "text", "text": system}] if system else []
    if isinstance(system, list):
        return [b for b in system if isinstance(b, dict)]
    return []


def has_claude_code_identity(system: Any) -> bool:
    for block in _system_blocks(system):
        text = str(block.get("text") or "")
        if text.startswith(_BILLING_PREFIX):
            continue
        return text.startswith(CLAUDE_CODE_IDENTITY)
    return False


def prepare_claude_body(body: dict[str, Any]) -> dict[str, Any] | None:
    """The body with Claude Code's identity first in ``system``; None when it already is."""
    system = body.get("system")
    if has_claude_code_identity(system):
        return None
    # The caller's own system text follows the identity block, unchanged.
    blocks = [{"type": "text", "text": CLAUDE_CODE_IDENTITY}, *_system_blocks(system)]
    return {**body, "system": blocks}


def adjust_body(account: Account, body: bytes, *, op: str = "generate") -> bytes:
    """The upstream body for ``account``: unchanged for API keys, adjusted for subscriptions."""
    if account.kind == "chatgpt":
        if op == "compact":
            return body  # the compact endpoint takes its own fields (protocols.md §3.10)
        return orjson.dumps(prepare_chatgpt_body(orjson.loads(body)))
    if account.kind == "claude":
        adjusted = prepare_claude_body(orjson.loads(body))
        return body if adjusted is None else orjson.dumps(adjusted)
    return body


def session_id(account: Account, client_headers: Mapping[str, str]) -> str:
    """The client's own session id (Codex sends one), else one stable per account."""
    for name in ("session_id", "session-id", "conversation_id", "x-claude-code-session-id"):
        value = client_headers.get(name)
        if value:
            return value
    return str(uuid.uuid5(_SESSION_NAMESPACE, account.id))


def subscription_headers(account: Account, client_headers: Mapping[str, str]) -> dict[str, str]:
    """Headers a subscription backend needs on top of Bearer auth (set last, overriding the client's)."""
    if account.kind != "chatgpt":
        return {}
    lower = {k.lower(): v for k, v in client_headers.items()}
    return {
        "chatgpt-account-id": account.account_id,
        "originator": lower.get("originator") or CODEX_ORIGINATOR,
        "user-agent": lower["user-agent"]
        if lower.get("user-agent", "").startswith(("codex", "codex_"))
        else CODEX_USER_AGENT,
        "session_id": session_id(account, lower),
        "accept": "text/event-stream",  # the backend only streams
    }


def explain_refusal(account: Account, message: str) -> str | None:
    """A clear account-level explanation when a subscription refuses a request, else None."""
    if account.kind == "claude" and _REFUSAL_MARK in message:
        return (
            f"{account.id}: Anthropic refused this Claude subscription token outside Claude Code "
            f"({message[:160]}); proxygate sent Claude Code's identity as the system prompt, but the "
            "provider still refused: route this model to an API-key account"
        )
    return None
