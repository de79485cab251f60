"""What each provider kind is: its real default base URL, auth header, wire formats, models.

``base_url`` is what the provider's own SDK takes as its base (the Anthropic SDK appends
``/v1/messages``, the OpenAI SDK ``/chat/completions``), so a user can paste it from the
provider's docs. ``formats`` are the upstream APIs the provider speaks, in order of preference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


_A, _C, _R, _G = Format.anthropic, Format.chat, Format.responses, Format.gemini

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec("anthropic", "https://api.anthropic.com", "x-api-key", (_A,), ("claude-*",)),
        ProviderSpec(
            "openai",
            "https://api.openai.com/v1",
            "bearer",
            (_R, _C),
            ("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "codex-*"),
        ),
        ProviderSpec("codex", "https://api.openai.com/v1", "bearer", (_R,), ("gpt-*codex*", "codex-*")),
        ProviderSpec("openrouter", "https://openrouter.ai/api/v1", "bearer", (_C,), ("*/*",)),
        ProviderSpec(
            "gemini", "https://generativelanguage.googleapis.com", "x-goog-api-key", (_G,), ("gemini-*",)
        ),
        ProviderSpec("deepseek", "https://api.deepseek.com/v1", "bearer", (_C,), ("deepseek-*",)),
        ProviderSpec("glm", "https://open.bigmodel.cn/api/paas/v4", "bearer", (_C,), ("glm-*",)),
        ProviderSpec("cerebras", "https://api.cerebras.ai/v1", "bearer", (_C,), ("llama*", "qwen-*", "gpt-oss-*")),
        ProviderSpec("minimax", "https://api.minimax.io/v1", "bearer", (_C,), ("minimax-*", "MiniMax-*")),
        ProviderSpec("custom", "", "bearer", (_C,), ("*",)),
        # OAuth subscriptions (pool/claude, pool/chatgpt): Bearer tokens, refreshed by providers/.
        ProviderSpec("claude", "https://api.anthropic.com", "bearer", (_A,), ("claude-*",)),
        ProviderSpec(
            "chatgpt", "https://chatgpt.com/backend-api/codex", "bearer", (_R,), ("gpt-*", "codex-*", "o3*", "o4*")
        ),
    )
}

API_KEY_PROVIDERS = tuple(name for name in PROVIDERS if name not in ("claude", "chatgpt"))
