"""Stage: secrets and personal data never leave the machine in clear (issue 13).

``on_request`` replaces what the detectors find in every text-bearing field of the request
(system, messages, tool inputs and results, Responses items, Gemini parts, count_tokens
bodies) and writes the body back, so the same-format fast path and the converted route both
send the redacted form. Thinking blocks, signatures, encrypted reasoning and image or file
data pass untouched. If anything was replaced, the call gets an output transform that puts
the originals back in the answer, JSON or stream (``features/restoration.py``).

Off by default: with guardrails off the stage is not in the pipeline at all, so the body
reaches the upstream as the client sent it and the fast path pays nothing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import orjson

from proxygate.call import Call
from proxygate.config import GuardrailSettings
from proxygate.errors import ConfigError
from proxygate.features.detectors import NAMES, Allow, ScanOptions
from proxygate.features.redaction import FindingsCache, Redaction, Replacer, load_key
from proxygate.features.restoration import Restorer, StreamRestorer

log = logging.getLogger("proxygate.guardrails")


class Guardrails:
    def __init__(self, settings: GuardrailSettings, data_dir: Path) -> None:
        self.settings = settings
        self.replacer = Replacer(load_key(settings.key, data_dir))
        self.detectors = tuple(name for name in NAMES if getattr(settings.detectors, name))
        self.options = ScanOptions(
            ip_loopback=settings.ip_loopback,
            ip_private=settings.ip_private,
            ip_version_like=settings.ip_version_like,
        )
        self.cache = FindingsCache()
        try:
            self.allow = Allow.parse(settings.allow)
        except re.error as exc:
            raise ConfigError(f"guardrails.allow: bad regex: {exc}") from None

    def is_on(self, call: Call) -> bool:
        """Per request, so a tenant can switch guardrails for its own requests."""
        return self.settings.enabled

    def redaction(self) -> Redaction:
        return Redaction(self.replacer, self.detectors, self.options, self.allow, self.cache)

    def on_request(self, call: Call) -> None:
        if not self.is_on(call):
            return
        redaction = self.redaction()
        body = redaction.value(call.body)
        call.redactions = dict(redaction.counts)
        if not redaction.reverse:
            return  # nothing found: the client's bytes go out as they came
        call.body = body
        call.raw_body = orjson.dumps(body)
        call.output_transform = StreamRestorer(Restorer(redaction.reverse), call.fmt)
        log.debug(
            "%s replaced %s",
            call.request_id,
            " ".join(f"{name}={n}" for name, n in sorted(redaction.counts.items())),
        )


def guardrails(settings: GuardrailSettings, data_dir: Path) -> list[Guardrails]:
    """The stage when enabled, else none (nothing runs, nothing is read)."""
    return [Guardrails(settings, data_dir)] if settings.enabled else []


__all__ = ["Guardrails", "guardrails"]
