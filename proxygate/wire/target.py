"""What the upstream accepts beyond its wire format, for the encoders.

Real providers differ inside one format: some reject fields they do not know (422/400), some
models take no reasoning effort or only some of its values, some need a field others never
send. ``pool/catalog.py`` knows which provider and model want what and builds a ``Target``;
the encoders only obey it. ``Target()`` is the permissive default (every field sent as asked),
for callers that encode without an account (capture export, unit tests).
"""

from __future__ import annotations

from dataclasses import dataclass

EFFORT_ORDER: tuple[str, ...] = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True, slots=True)
class Target:
    accepts_cache_key: bool = True
    "The endpoint takes ``prompt_cache_key`` (Cerebras, Groq, NIM, Azure reject it)."
    reasoning_efforts: tuple[str, ...] | None = None
    "Efforts the model accepts (Chat ``reasoning_effort``, Responses ``reasoning.effort``); empty: none; None: any."
    max_output_tokens: int = 0
    "The model's output limit: the default ``max_tokens`` where one is required, and its cap; 0: unknown."
    needs_reasoning_content: bool = False
    "Assistant tool-call messages must carry ``reasoning_content`` (DeepSeek reasoner)."
    exclusive_sampling: bool = False
    "The model refuses ``temperature`` and ``top_p`` together: keep ``temperature`` only."

    def effort(self, asked: str) -> str | None:
        """The accepted effort nearest to ``asked`` (a tie goes to the higher), or None if none is."""
        if self.reasoning_efforts is None or asked in self.reasoning_efforts:
            return asked
        if not self.reasoning_efforts or asked not in EFFORT_ORDER:
            return None
        rank = EFFORT_ORDER.index(asked)
        return min(
            self.reasoning_efforts, key=lambda e: (abs(EFFORT_ORDER.index(e) - rank), -EFFORT_ORDER.index(e))
        )


PERMISSIVE = Target()
"Every field sent as asked: the default for encoding without a known account."
