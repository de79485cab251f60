"""Reasoning-state envelopes: foreign state carried through a client's opaque slot (§5.7.3).

A client that speaks format A can only hold A's opaque reasoning slot (an Anthropic thinking
``signature``, a Responses ``encrypted_content``, a Gemini ``thoughtSignature``). When the state
came from provider B, proxygate seals it as ``pgx1.<origin>.<model-hash8>.<base64url(JSON)>``;
on the way back, a slot value starting with ``pgx1.`` is ours, anything else is native to the
slot's own provider. Sealing is deterministic (same state → same string) so cached prefixes
stay byte-identical across turns (§5.13).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import orjson

from proxygate.wire.ir import ReasoningState

PREFIX = "pgx1."


def seal(state: ReasoningState) -> str:
    """The envelope string for ``state``."""
    body = orjson.dumps({"k": state.kind, "v": state.payload, "m": state.model})
    model_hash = hashlib.sha256(state.model.encode()).hexdigest()[:8]
    encoded = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    return f"{PREFIX}{state.origin}.{model_hash}.{encoded}"


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def unseal(value: str) -> ReasoningState | None:
    """The state inside an envelope, or None for a value that is not (a valid) one of ours."""
    if not value.startswith(PREFIX):
        return None
    try:
        origin, _model_hash, encoded = value[len(PREFIX) :].split(".", 2)
        body = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    kind, payload, model = body.get("k"), body.get("v", ""), body.get("m", "")
    if not (isinstance(kind, str) and isinstance(payload, str) and isinstance(model, str)):
        return None
    return ReasoningState(origin=origin, kind=kind, payload=payload, model=model)
