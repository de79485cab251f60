"""proxygate's intermediate representation (protocols.md §5.0).

Every wire format decodes into these types and encodes from them, so conversion is
client → IR → upstream and back: N codecs, not N² converters. Stream events are small
frozen dataclasses joined in one union and dispatched with ``match``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Format(StrEnum):
    """The four wire formats; one spelling everywhere (STYLE.md §2)."""

    anthropic = "anthropic"
    chat = "chat"
    responses = "responses"
    gemini = "gemini"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts in Anthropic's accounting: ``input_tokens`` excludes cache reads and writes.

    Codecs convert at the edge (protocols.md §5.11): OpenAI's ``prompt_tokens`` include cached
    tokens, so ``input = prompt - cached``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def merge(self, other: Usage) -> Usage:
        """Later reports win field by field where they are non-zero (ANT message_delta is cumulative)."""
        return Usage(
            other.input_tokens or self.input_tokens,
            other.output_tokens or self.output_tokens,
            other.cache_read_tokens or self.cache_read_tokens,
            other.cache_write_tokens or self.cache_write_tokens,
            other.reasoning_tokens or self.reasoning_tokens,
        )
