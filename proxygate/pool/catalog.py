"""What each provider kind is: its real default base URL, auth header, wire formats, models.

``base_url`` is what the provider's own SDK takes as its base (the Anthropic SDK appends
``/v1/messages``, the OpenAI SDK ``/chat/completions``), so a user can paste it from the
provider's docs. ``formats`` are the upstream APIs the provider speaks, in order of preference.

What a provider or model accepts beyond its format (``prompt_cache_key``, reasoning effort,
output limits) is a property here, turned into a ``wire.target.Target`` for the encoders, never
a special case in a codec.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from proxygate.wire.ir import Effort, Format
from proxygate.wire.target import EFFORT_ORDER, Target

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
    accepts_prompt_cache_key: bool = False
    """Its Chat/Responses endpoints take ``prompt_cache_key``; Cerebras, Groq, NIM and Azure answer
    422/400 to unknown fields, so only providers known to accept it get it (a pool file's
    ``"prompt_cache_key": true`` turns it on for one account, e.g. a ``custom`` one)."""

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
            accepts_prompt_cache_key=True,
        ),
        ProviderSpec(
            "codex",
            "https://api.openai.com/v1",
            "bearer",
            (_R,),
            ("gpt-*codex*", "codex-*"),
            "gpt-5-codex",
            accepts_prompt_cache_key=True,
        ),
        ProviderSpec(
            "openrouter",
            "https://openrouter.ai/api/v1",
            "bearer",
            (_C,),
            ("*/*",),
            "openai/gpt-4o-mini",
            accepts_prompt_cache_key=True,
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
            accepts_prompt_cache_key=True,
        ),
    )
}

API_KEY_PROVIDERS = tuple(name for name in PROVIDERS if name not in ("claude", "chatgpt"))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What one model accepts, as far as its provider documents it."""

    reasoning_efforts: tuple[Effort, ...] = ()
    "Accepted ``reasoning_effort`` / ``reasoning.effort`` values; empty: the model takes none."
    max_output_tokens: int = 0
    "Largest ``max_tokens`` it accepts; 0: unknown."
    needs_reasoning_content: bool = False
    "Assistant tool-call messages must carry ``reasoning_content``."
    exclusive_sampling: bool = False
    "Refuses ``temperature`` together with ``top_p``."


_O_SERIES: tuple[Effort, ...] = ("low", "medium", "high")
_GPT5: tuple[Effort, ...] = ("minimal", "low", "medium", "high")
_GPT51: tuple[Effort, ...] = ("none", "low", "medium", "high")
_NO_REASONING = ModelSpec()

# First matching glob wins, so specific names come before their family. A model named here
# with no efforts takes none: gpt-4o and gpt-4.1 answer 400 unsupported_parameter.
MODELS: tuple[tuple[str, ModelSpec], ...] = (
    ("gpt-5.2*", ModelSpec(("none", "low", "medium", "high", "xhigh"))),
    ("gpt-5.1-codex-max*", ModelSpec(("low", "medium", "high", "xhigh"))),
    ("gpt-5.1-codex*", ModelSpec(_O_SERIES)),
    ("gpt-5.1-chat*", _NO_REASONING),
    ("gpt-5.1*", ModelSpec(_GPT51)),
    ("gpt-5-codex*", ModelSpec(_O_SERIES)),
    ("gpt-5-chat*", _NO_REASONING),
    ("gpt-5-pro*", ModelSpec(("high",))),
    ("gpt-5*", ModelSpec(_GPT5)),
    ("codex-*", ModelSpec(_O_SERIES)),
    ("gpt-oss-*", ModelSpec(_O_SERIES)),
    ("o1-mini*", _NO_REASONING),
    ("o1-preview*", _NO_REASONING),
    ("o1*", ModelSpec(_O_SERIES)),
    ("o3*", ModelSpec(_O_SERIES)),
    ("o4*", ModelSpec(_O_SERIES)),
    ("gpt-4*", _NO_REASONING),
    ("gpt-3.5*", _NO_REASONING),
    ("chatgpt-*", _NO_REASONING),
    ("deepseek-reasoner*", ModelSpec(needs_reasoning_content=True, max_output_tokens=65536)),
    ("deepseek-chat*", ModelSpec(max_output_tokens=8192)),
    ("claude-opus-4-5*", ModelSpec(max_output_tokens=64000, exclusive_sampling=True)),
    ("claude-opus-4-1*", ModelSpec(max_output_tokens=32000, exclusive_sampling=True)),
    ("claude-opus-4*", ModelSpec(max_output_tokens=32000)),
    ("claude-sonnet-4-5*", ModelSpec(max_output_tokens=64000, exclusive_sampling=True)),
    ("claude-haiku-4-5*", ModelSpec(max_output_tokens=64000, exclusive_sampling=True)),
    ("claude-sonnet-4*", ModelSpec(max_output_tokens=64000)),
    ("claude-3-7-sonnet*", ModelSpec(max_output_tokens=64000)),
    ("claude-3-5-*", ModelSpec(max_output_tokens=8192)),
    ("claude-3-*", ModelSpec(max_output_tokens=4096)),
)


def model_spec(model: str) -> ModelSpec | None:
    """The catalog's entry for ``model`` (OpenRouter's ``vendor/name`` by its name), None if unknown."""
    for name in (model, model.rsplit("/", 1)[-1]):
        for pattern, spec in MODELS:
            if fnmatch.fnmatchcase(name, pattern):
                return spec
    return None


def target(
    provider: ProviderSpec,
    model: str,
    *,
    prompt_cache_key: bool | None = None,
    reasoning_efforts: tuple[str, ...] | None = None,
    max_output_tokens: int = 0,
) -> Target:
    """What to send ``model`` at ``provider``; the keyword arguments override the catalog (the
    pool file's ``prompt_cache_key``, config ``[models."NAME"]``).

    A model the catalog does not know takes no reasoning effort: a field it may reject costs the
    whole request, leaving it out costs only the thinking depth.
    """
    spec = model_spec(model) or ModelSpec()
    return Target(
        accepts_cache_key=provider.accepts_prompt_cache_key if prompt_cache_key is None else prompt_cache_key,
        reasoning_efforts=spec.reasoning_efforts
        if reasoning_efforts is None
        else tuple(e for e in reasoning_efforts if e in EFFORT_ORDER),
        max_output_tokens=max_output_tokens or spec.max_output_tokens,
        needs_reasoning_content=spec.needs_reasoning_content,
        exclusive_sampling=spec.exclusive_sampling,
    )
