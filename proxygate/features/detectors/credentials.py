"""url_credentials and password (values assigned to password-like names)."""

from __future__ import annotations

import re
from collections.abc import Iterator

_URL_CREDENTIALS = re.compile(
    r"(?<![\w+.-])[A-Za-z][A-Za-z0-9+.-]{1,20}://"
    r"[^:@/\s\"'<>\\]{0,128}:([^@/\s\"'<>\\]{1,256})@"
    r"(?=[A-Za-z0-9\[])"
)
# Template placeholders and variables, not values: ${PASS}, $PASS, <password>, {{ pass }}, %s, ***.
_PLACEHOLDER = re.compile(r"^(?:\$.*|<.*>|\{.*\}|%.*|\*+|x+|X+|\.\.\.|…|\[.*\])$")


def _is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value))


def url_credentials(text: str) -> Iterator[tuple[int, int]]:
    if "://" not in text:
        return
    for match in _URL_CREDENTIALS.finditer(text):
        if not _is_placeholder(match.group(1)):
            yield match.span(1)


# A name that ends in a password word (password_hint, passwordPolicy do not), then an
# assignment, then a quoted or bare value.
_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9_])"
    r"(?P<name>[A-Za-z0-9_.-]*?(?i:password|passwd|passphrase|pwd)|[A-Z][A-Z0-9_]*_PASS|(?i:client_secret))"
    r"(?P<q>[\"']?)\s*(?::=|=>|=|:)\s*"
    r"(?:\"(?P<dq>[^\"\n\\]{1,256})\"|'(?P<sq>[^'\n\\]{1,256})'|(?P<bare>[^\s\"',;)}\]]{1,256}))"
)
# Bare values that are code, not a password: types, literals, expressions.
_CODE_VALUE = re.compile(
    r"^(?:str|string|String|int|bool|bytes|None|null|nil|true|false|True|False|undefined|"
    r"SecretStr|Optional\[.*|Secret.*|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+.*|"
    r"[A-Za-z_][A-Za-z0-9_]*\(.*|[A-Za-z_][A-Za-z0-9_]*\[.*|[=<>!&|?].*)$"
)


_XML_PASSWORD = re.compile(r"<((?i:[\w.-]*(?:password|passwd|pwd)))>([^<\s]{1,256})</\1>")


def passwords(text: str) -> Iterator[tuple[int, int]]:
    lowered = text.lower()
    if not any(word in lowered for word in ("pass", "pwd", "client_secret")):
        return
    for match in _PASSWORD.finditer(text):
        group = next(g for g in ("dq", "sq", "bare") if match.group(g) is not None)
        value = match.group(group)
        if _is_placeholder(value) or not value.strip():
            continue
        if group == "bare":
            if _CODE_VALUE.match(value):
                continue
            name = match.group("name")
            # In code (lower-case names), a bare word is a variable; in .env files
            # (UPPER_CASE names) and command lines it is the value itself. A word with a
            # digit in it (hunter2) is a value anywhere.
            if not (name.isupper() or "-" in name) and value.isidentifier() and not re.search(r"\d", value):
                continue
        yield match.span(group)
    if "</" in text:
        for match in _XML_PASSWORD.finditer(text):
            if not _is_placeholder(match.group(2)):
                yield match.span(2)
