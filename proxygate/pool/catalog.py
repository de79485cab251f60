"""What each provider kind is: its real default base URL, auth header, wire formats, models.

``base_url`` is what the provider's own SDK takes as its base (the Anthropic SDK appends
``/v1/messages``, the OpenAI SDK ``/chat/completions``), so a user can paste it from the
provider's docs. ``formats`` are the upstream APIs the provider speaks, in order of preference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from proxygate.wire.ir import Format

AuthStyle = Literal["x-api-key", "bearer", "x-goog-api-key"]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    base_url: str
    auth: AuthStyle
    formats: tuple[Format, ...]
    models: tuple[str, ...]
    "Globs of client model names served when the account file names none."
    check_model: str = ""
    "A cheap model for `proxygate check`."

    def formats_at(self, base_url: str) -> tuple[Format, ...]:
        """The formats to use at ``base_url``: Responses only at the provider's own host.

        OpenAI-compatible servers (vLLM, LiteLLM, Ollama, Azure deployments…) speak Chat
        Completions and answer ``/v1/responses`` with 404; only api.openai.com has both.
        """
        if Format.chat not in self.formats or urlsplit(base_url).hostname == urlsplit(self.base_url).hostname:
            return self.formats
        return (Format.chat,)


_A, _C, _R, _G = Format.anthropic, Format.chat, Format.responses, Format.gemini

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "anthropic", "https://api.anthropic.com", "x-api-key", (_A,), ("claude-*",), "claude-haiku-4-5"
        ),
        ProviderSpec(
            "openai",
            "https://api.openai.com/v1",
            "bearer",
            (_R, _C),
            ("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "codex-*"),
            "gpt-4o-mini",
        ),
        ProviderSpec(
            "codex", "https://api.openai.com/v1", "bearer", (_R,), ("gpt-*codex*", "codex-*"), "gpt-5-codex"
        ),
        ProviderSpec(
            "openrouter", "https://openrouter.ai/api/v1", "bearer", (_C,), ("*/*",), "openai/gpt-4o-mini"
        ),
        ProviderSpec(
            "gemini",
            "https://generativelanguage.googleapis.com",
            "x-goog-api-key",
            (_G,),
            ("gemini-*",),
            "gemini-2.5-flash",
        ),
        ProviderSpec(
            "deepseek", "https://api.deepseek.com/v1", "bearer", (_C,), ("deepseek-*",), "deepseek-chat"
        ),
        ProviderSpec(
            "glm", "https://open.bigmodel.cn/api/paas/v4", "bearer", (_C,), ("glm-*",), "glm-4.5-flash"
        ),
        ProviderSpec(
            "cerebras",
            "https://api.cerebras.ai/v1",
            "bearer",
            (_C,),
            ("llama*", "qwen-*", "gpt-oss-*"),
            "llama3.1-8b",
        ),
        ProviderSpec(
            "minimax", "https://api.minimax.io/v1", "bearer", (_C,), ("minimax-*", "MiniMax-*"), "MiniMax-M2"
        ),
        ProviderSpec("custom", "", "bearer", (_C,), ("*",)),
        # OAuth subscriptions (pool/claude, pool/chatgpt): Bearer tokens, refreshed by providers/.
        ProviderSpec(
            "claude", "https://api.anthropic.com", "bearer", (_A,), ("claude-*",), "claude-haiku-4-5"
        ),
        ProviderSpec(
            "chatgpt",
            "https://chatgpt.com/backend-api/codex",
            "bearer",
            (_R,),
            ("gpt-*", "codex-*", "o3*", "o4*"),
            "gpt-5-codex",
        ),
    )
}

API_KEY_PROVIDERS = tuple(name for name in PROVIDERS if name not in ("claude", "chatgpt"))
