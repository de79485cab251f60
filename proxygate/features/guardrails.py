"""Stage: secrets and personal data never leave the machine in clear (issue 13).

``on_request`` replaces what the detectors find in every text-bearing field of the request
(system, messages, tool inputs and results, Responses items, Gemini parts, count_tokens
bodies) and writes the body back, so the same-format fast path and the converted route both
send the redacted form. Thinking blocks, signatures, encrypted reasoning and image or file
data pass untouched. If anything was replaced, the call gets an output transform that puts
the originals back in the answer, JSON or stream (``features/restoration.py``).

Off by default: with guardrails off globally and for every tenant the stage is not in the
pipeline at all, so the body reaches the upstream as the client sent it and the fast path pays
nothing. When present, ``switch`` decides per request (a tenant's on/off/inherit, features/tenants.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from proxygate.call import Call
from proxygate.config import GuardrailSettings
from proxygate.errors import ConfigError
from proxygate.features.detectors import NAMES, Allow, ScanOptions
from proxygate.features.redaction import FindingsCache, Redaction, Replacer, load_key
from proxygate.features.restoration import Restorer, StreamRestorer
from proxygate.features.reverse_map import ReverseMap
from proxygate.store.base import Store

log = logging.getLogger("proxygate.guardrails")


class Guardrails:
    def __init__(
        self,
        settings: GuardrailSettings,
        data_dir: Path,
        store: Store | None = None,
        *,
        switch: Callable[[Call], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.switch = switch
        "Per request on or off (a tenant's setting); None: ``settings.enabled``."
        key = load_key(settings.key, data_dir)
        self.replacer = Replacer(key)
        self.reverse_map = None if store is None else ReverseMap(store, key, settings.reverse_map_max_entries)
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
        switch = self.switch
        return self.settings.enabled if switch is None else switch(call)

    def redaction(self) -> Redaction:
        return Redaction(self.replacer, self.detectors, self.options, self.allow, self.cache)

    def on_request(self, call: Call) -> None:
        if not self.is_on(call):
            return
        redaction = self.redaction()
        body = redaction.body(call.body)
        call.redactions = dict(redaction.counts)
        reverse_map = self.reverse_map
        lookup = None if reverse_map is None else reverse_map.recall
        if redaction.reverse:
            call.body = body
            call.raw_body = orjson.dumps(body)
            if reverse_map is not None:
                for fake, original in redaction.reverse.items():
                    if fake.startswith("PG_"):
                        reverse_map.remember(fake, original)
        elif lookup is None or not _continues_stored_state(call.body):
            return  # nothing found: the client's bytes go out as they came
        call.output_transform = StreamRestorer(Restorer(redaction.reverse, lookup), call.fmt)
        log.debug(
            "%s replaced %s",
            call.request_id,
            " ".join(f"{name}={n}" for name, n in sorted(redaction.counts.items())),
        )


def _continues_stored_state(body: dict[str, Any]) -> bool:
    """A Responses turn on a conversation the provider stores: earlier turns' tokens may come back."""
    return bool(body.get("previous_response_id") or body.get("conversation"))


def guardrails(
    settings: GuardrailSettings,
    data_dir: Path,
    store: Store | None = None,
    *,
    switch: Callable[[Call], bool] | None = None,
    tenant_on: bool = False,
) -> list[Guardrails]:
    """The stage when enabled globally or for a tenant (``tenant_on``), else none (nothing runs,
    nothing is read)."""
    if not (settings.enabled or tenant_on):
        return []
    return [Guardrails(settings, data_dir, store, switch=switch)]


__all__ = ["Guardrails", "guardrails"]
