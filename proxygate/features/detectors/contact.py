"""email and phone."""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers

# Top-level domains an address may end in: the common generic ones and every two-letter
# country code shape. A fixed list keeps `x@self.weight` (numpy's matmul) out.
_GENERIC_TLDS = (
    "com|org|net|edu|gov|mil|int|info|biz|name|pro|mobi|io|dev|app|ai|co|me|tech|cloud|email|"
    "test|example|online|site|page|xyz|blog|shop|store|live|news|work|company|inc|ltd|agency|"
    "digital|solutions|systems|services|network|software|studio|team|world|zone|local|internal|"
    "corp|home|lan|berlin|london|nyc|paris|tokyo|asia|eu|africa"
)
_EMAIL = re.compile(
    r"(?<![\w.+%/-])"
    r"([^\W_](?:[\w.%+-]{0,62}[\w+-])?)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    rf"(?i:{_GENERIC_TLDS}|[a-z]{{2}}))"
    r"(?![\w-]|\.[A-Za-z0-9])"
)
# Local parts that name a service, not a person: ssh remotes (git@github.com:org/repo.git).
_SERVICE_USERS = frozenset({"git", "hg", "svn"})


def emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" not in text:
        return
    for match in _EMAIL.finditer(text):
        local = match.group(1)
        if local.lower() in _SERVICE_USERS:
            continue
        if ".." in local:
            continue
        yield match.span()


# A phone number is written for people: a leading +, or digit groups split by one kind of
# separator, or (area) code. A bare run of digits (a timestamp, an id) is never one.
_PHONE = re.compile(
    r"(?:"
    r"\+(?<![\w+.:/#-]\+)\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,5}"  # +44 20 7946 0958
    r"|\((?<![\w+.:/#-]\()\d{3}\)[ ]?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d(?<![\w+.:/#-]\d)\d\d([ .-])\d{3}\1\d{4}"  # 555-123-4567, 555.123.4567
    r")"
    r"(?![\w+]|[.:/-]\d)"
)


def phones(text: str) -> Iterator[tuple[int, int]]:
    for match in _PHONE.finditer(text):
        value = match.group(0)
        digits = sum(c.isdigit() for c in value)
        if not 7 <= digits <= 15:
            continue
        try:
            number = phonenumbers.parse(value, "US")
        except phonenumbers.NumberParseException:
            continue
        # Possible, not only assigned: fictitious 555 numbers are still someone's shape.
        if phonenumbers.is_possible_number(number):
            yield match.span()
