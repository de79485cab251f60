"""api_key (vendor prefixes), aws_key, jwt and private_key."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator

import orjson

# Vendor prefix → the shape of what follows. A key needs its whole shape: `sk-learn`,
# `npm_config_registry` and `task-management` are not keys (CodeGate's prefixes matched
# anywhere, with anything after them).
_VENDOR_KEYS: tuple[tuple[str, str], ...] = (
    (r"sk-ant-(?:api|admin|oat|ort)\d\d-", r"[A-Za-z0-9_-]{32,}"),  # Anthropic
    (r"sk-(?:proj|svcacct|admin)-", r"[A-Za-z0-9_-]{20,}"),  # OpenAI project / service keys
    (r"sk-or-v1-", r"[a-f0-9]{64}"),  # OpenRouter
    (r"sk-", r"[A-Za-z0-9]{32,}"),  # OpenAI (legacy), DeepSeek and others
    (r"gh[pousr]_", r"[A-Za-z0-9]{36,}"),  # GitHub tokens
    (r"github_pat_", r"[A-Za-z0-9_]{50,}"),  # GitHub fine-grained
    (r"glpat-", r"[A-Za-z0-9_-]{20,}"),  # GitLab personal
    (r"gl(?:dt|ptt|rt|soat|ft|imt|agent)-", r"[A-Za-z0-9_-]{20,}"),  # GitLab others
    (r"xox[baprse]-", r"[A-Za-z0-9-]{20,}"),  # Slack
    (r"xapp-", r"[A-Za-z0-9-]{20,}"),  # Slack app-level
    (r"AIza", r"[A-Za-z0-9_-]{35}"),  # Google API
    (r"ya29\.", r"[A-Za-z0-9_-]{30,}"),  # Google OAuth access token
    (r"GOCSPX-", r"[A-Za-z0-9_-]{24,}"),  # Google OAuth client secret
    (r"hf_", r"[A-Za-z0-9]{30,}"),  # Hugging Face
    (r"npm_", r"[A-Za-z0-9]{36}"),  # npm
    (r"pypi-", r"AgEIcHlwaS5vcmc[A-Za-z0-9_-]{40,}"),  # PyPI
    (r"SG\.", r"[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"),  # SendGrid
    (r"(?:sk|rk)_(?:live|test)_", r"[A-Za-z0-9]{20,}"),  # Stripe secret / restricted
    (r"whsec_", r"[A-Za-z0-9+/=]{24,}"),  # Stripe webhook secret
    (r"shp(?:at|ca|pa|ss)_", r"[a-fA-F0-9]{32}"),  # Shopify
    (r"do[opr]_v1_", r"[a-f0-9]{64}"),  # DigitalOcean
    (r"lin_api_", r"[A-Za-z0-9]{40}"),  # Linear
    (r"xai-", r"[A-Za-z0-9]{40,}"),  # xAI
    (r"gsk_", r"[A-Za-z0-9]{40,}"),  # Groq
    (r"pplx-", r"[A-Za-z0-9]{40,}"),  # Perplexity
    (r"r8_", r"[A-Za-z0-9]{37}"),  # Replicate
    (r"nvapi-", r"[A-Za-z0-9_-]{40,}"),  # NVIDIA
    (r"fw_", r"[A-Za-z0-9]{20,}"),  # Fireworks
    (r"tvly-", r"[A-Za-z0-9-]{20,}"),  # Tavily
    (r"sntry[su]_", r"[A-Za-z0-9+/=_]{40,}"),  # Sentry
    (r"dckr_pat_", r"[A-Za-z0-9_-]{27,}"),  # Docker Hub
    (r"PMAK-", r"[a-f0-9]{24}-[a-f0-9]{34}"),  # Postman
    (r"hvs\.", r"[A-Za-z0-9_-]{24,}"),  # HashiCorp Vault service token
    (r"figd_", r"[A-Za-z0-9_-]{40}"),  # Figma
    (r"ntn_", r"[A-Za-z0-9]{40,}"),  # Notion
    (r"ATATT3", r"[A-Za-z0-9_=-]{100,}"),  # Atlassian
    (r"AGE-SECRET-KEY-1", r"[A-Z0-9]{58}"),  # age
    (r"dapi", r"[a-f0-9]{32}"),  # Databricks
    (r"sq0(?:atp|csp)-", r"[A-Za-z0-9_-]{22,}"),  # Square
    (r"key-", r"[a-f0-9]{32}"),  # Mailgun
    (r"glc_", r"[A-Za-z0-9+/=_-]{32,}"),  # Grafana cloud
    (r"glsa_", r"[A-Za-z0-9]{32}_[a-f0-9]{8}"),  # Grafana service account
    (r"pat", r"[A-Za-z0-9]{14}\.[a-f0-9]{64}"),  # Airtable
    (r"EAA[A-Z]", r"[A-Za-z0-9]{80,}"),  # Meta
    (r"FLWSECK-", r"[A-Za-z0-9_-]{32,}"),  # Flutterwave
    (r"AKCp", r"[A-Za-z0-9]{69}"),  # JFrog
    (r"oy2", r"[a-z0-9]{43}"),  # NuGet
)
_API_KEY = re.compile(
    r"(?<![A-Za-z0-9_./-])(?:"
    + "|".join(f"{prefix}{body}" for prefix, body in _VENDOR_KEYS)
    + r")(?![A-Za-z0-9_+/=-])"
)
_HAS_DIGIT_AND_LETTER = re.compile(r"(?=.*\d)(?=.*[A-Za-z])", re.DOTALL)


def api_keys(text: str) -> Iterator[tuple[int, int]]:
    for match in _API_KEY.finditer(text):
        value = match.group(0)
        # Real keys are random: placeholders (`sk-xxxxxxxx…`, `ghp_AAAA…`) have no digits
        # or repeat one character.
        if _HAS_DIGIT_AND_LETTER.match(value) and len(set(value)) > 10:
            yield match.span()


_AWS_ID = re.compile(r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA|ROA|IDA|NPA|IPA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_AWS_SECRET = re.compile(
    r"(?i:aws_?secret(?:_access)?_?key|secret_?access_?key|aws_secret)"
    r"[\"']?\s*(?::=|=>|=|:)\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)


def aws_keys(text: str) -> Iterator[tuple[int, int]]:
    for match in _AWS_ID.finditer(text):
        yield match.span()
    lowered = text.lower()
    if "secret" in lowered:
        for match in _AWS_SECRET.finditer(text):
            value = match.group(1)
            if re.search(r"\d", value) and re.search(r"[A-Za-z]", value):
                yield match.span(1)


_JWT = re.compile(
    r"(?<![A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})(?![A-Za-z0-9_-]|\.[A-Za-z0-9_-])"
)


def _b64url_json(part: str) -> object:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return orjson.loads(raw)
    except (binascii.Error, ValueError):
        return None


def jwts(text: str) -> Iterator[tuple[int, int]]:
    if "eyJ" not in text:
        return
    for match in _JWT.finditer(text):
        header_part = match.group(1).split(".", 1)[0]
        header = _b64url_json(header_part)
        if isinstance(header, dict) and "alg" in header:
            yield match.span(1)


_KEY_BLOCK = re.compile(
    r"-----BEGIN ((?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----"
    r"(.{20,}?)"
    r"-----END \1-----",
    re.DOTALL,
)
_BODY_CHARS = re.compile(r"[A-Za-z0-9+/=]{16}")


def private_keys(text: str) -> Iterator[tuple[int, int]]:
    if "PRIVATE KEY" not in text:
        return
    for match in _KEY_BLOCK.finditer(text):
        body = match.group(2)
        if _BODY_CHARS.search(body):  # real key material, not `...` or a placeholder
            yield match.span(2)
